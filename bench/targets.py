"""The targets Headway is measured against, and the verdict on each.

The absolute targets are etcd's figures measured on the same kind of machine;
the relative ones compare Headway with the baseline server in the same run,
which is the fairer test of the server itself, because on two shared cores
the Python load generator is part of every figure at N >= 100.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

BYTES_PER_MIB = 1 << 20


@dataclass(frozen=True)
class Target:
    name: str
    unit: str
    limit: float
    at_most: bool  # True: measured <= limit; False: measured >= limit
    measure: Callable[[dict[str, Any]], float | None]


def _paced(key: str, *path: str) -> Callable[[dict[str, Any]], float | None]:
    def measure(results: dict[str, Any]) -> float | None:
        node: Any = results.get("paced", {}).get(key)
        for part in path:
            if not isinstance(node, dict):
                return None
            node = node.get(part)
        return float(node) if isinstance(node, int | float) else None

    return measure


def _max_writes(agents: int) -> Callable[[dict[str, Any]], float | None]:
    def measure(results: dict[str, Any]) -> float | None:
        run = results.get("max_writes", {}).get(str(agents), {}).get("headway_full")
        return None if run is None else float(run["writes_per_s"])

    return measure


def _rss_at_1000(results: dict[str, Any]) -> float | None:
    """The highest peak RSS of Headway over the N=1000 scenarios, in MB (10^6 bytes)."""
    peaks = [
        scenario["headway"]["server_peak_rss_mib"]
        for scenario in results.get("paced", {}).values()
        if scenario["subscribers"] == 1000 and "headway" in scenario
    ]
    return max(peaks) * BYTES_PER_MIB / 1e6 if peaks else None


def _cpu_per_write_ratio(key: str) -> Callable[[dict[str, Any]], float | None]:
    """Headway's server CPU per acknowledged write over the baseline's, in one paced scenario."""

    def measure(results: dict[str, Any]) -> float | None:
        scenario = results.get("paced", {}).get(key, {})
        ours = scenario.get("headway", {}).get("server_cpu_us_per_write")
        theirs = scenario.get("baseline", {}).get("server_cpu_us_per_write")
        return float(ours) / float(theirs) if ours and theirs else None

    return measure


def _rss_after_start(results: dict[str, Any]) -> float | None:
    """RSS just after start-up on the large history (100k tasks, 1M events), in MB."""
    history = results.get("history", {})
    if history.get("tasks", 0) < 100_000:  # the quick profile's history is smaller
        return None
    rss = history.get("loaded", {}).get("rss_after_start_mib")
    return float(rss) * BYTES_PER_MIB / 1e6 if isinstance(rss, int | float) else None


def targets(paced_keys: list[tuple[str, str]]) -> list[Target]:
    """Every target; `paced_keys` are the (key, title) of the paced scenarios that ran."""
    fixed = [
        Target("p99 latency, N=1, 200 updates/s", "ms", 1.2, True,
               _paced("n1_200", "headway", "latency", "p99_ms")),
        Target("p99 latency, N=100, 200 updates/s", "ms", 5.0, True,
               _paced("n100_200", "headway", "latency", "p99_ms")),
        Target("p99 latency, N=1000, 20 updates/s", "ms", 35.0, True,
               _paced("n1000_20", "headway", "latency", "p99_ms")),
        Target("deliveries/s, N=1000, 200 updates/s (keeps up)", "/s", 190_000, False,
               _paced("n1000_200", "headway", "deliveries_per_s")),
        Target("p99 latency, N=1000, 200 updates/s", "ms", 250.0, True,
               _paced("n1000_200", "headway", "latency", "p99_ms")),
        Target("max durable writes/s, 8 agents, N=1", "/s", 3300, False, _max_writes(8)),
        Target("server peak RSS with N=1000 subscribers", "MB", 100, True,
               _rss_at_1000),
        Target("max durable writes/s, 8 agents, N=1 (write path)", "/s", 2800, False,
               _max_writes(8)),
        Target("server CPU per write vs baseline, N=1, 200 updates/s", "x", 1.2, True,
               _cpu_per_write_ratio("n1_200")),
        Target("RSS after start with the large history (100k tasks, 1M events)", "MB", 150,
               True, _rss_after_start),
    ]  # fmt: skip
    relative = []
    for key, title in paced_keys:
        relative.append(
            Target(f"deliveries vs baseline, {title}", "x", 0.8, False,
                   _paced(key, "deliveries_ratio"))
        )  # fmt: skip
        relative.append(
            Target(f"p99 vs baseline, {title}", "x", 1.5, True, _paced(key, "p99_ratio"))
        )
    return fixed + relative


def verdict(target: Target, measured: float | None) -> tuple[bool | None, str]:
    """(met, words): met is None when the figure was not measured in this profile."""
    if measured is None:
        return None, "not measured in this profile"
    limit = target.limit
    if target.at_most:
        if measured <= limit:
            return True, f"met ({(1 - measured / limit) * 100:.0f}% under the limit)"
        return False, f"not met: {measured / limit:.2f}x the limit"
    if measured >= limit:
        return True, f"met ({measured / limit:.2f}x the target)"
    return False, f"not met: {measured / limit * 100:.0f}% of the target"


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    keys = [(key, scenario["title"]) for key, scenario in results.get("paced", {}).items()]
    rows = []
    for target in targets(keys):
        measured = target.measure(results)
        met, words = verdict(target, measured)
        rows.append(
            {
                "target": target.name,
                "limit": f"{'<=' if target.at_most else '>='} {target.limit:,.4g} {target.unit}",
                "measured": None if measured is None else round(measured, 3),
                "unit": target.unit,
                "met": met,
                "verdict": words,
            }
        )
    return rows
