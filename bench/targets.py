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


def _starvation(key: str) -> Callable[[dict[str, Any]], float | None]:
    def measure(results: dict[str, Any]) -> float | None:
        value = results.get("starvation", {}).get(key)
        return float(value) if isinstance(value, int | float) else None

    return measure


def fanout_targets() -> list[Target]:
    """Writers first (bench/starvation.py) and the fan-out tick at the paced loads."""
    return [
        Target("ack p99, idle subscribers (2,000; quick 200) vs none, 100/s", "x", 2.0, True,
               _starvation("idle_ack_p99_ratio")),
        Target("ack p99, live subscribers (1,000; quick 100) vs none, 100/s", "x", 2.0, True,
               _starvation("live_ack_p99_ratio")),
        Target("fan-out: deliveries/s, N=1000, 200 updates/s", "/s", 180_000, False,
               _paced("n1000_200", "headway", "deliveries_per_s")),
        Target("fan-out: p99 latency, N=1000, 200 updates/s", "ms", 500.0, True,
               _paced("n1000_200", "headway", "latency", "p99_ms")),
        Target("fan-out: writes held, N=1000, 200 updates/s", "/s", 196, False,
               _paced("n1000_200", "headway", "writes_per_s")),
        Target("fan-out: writes held, N=1000, 20 updates/s", "/s", 19.6, False,
               _paced("n1000_20", "headway", "writes_per_s")),
        Target("fan-out: p99 latency, N=1000, 20 updates/s", "ms", 150.0, True,
               _paced("n1000_20", "headway", "latency", "p99_ms")),
        Target("fan-out: p99 latency, N=100, 200 updates/s", "ms", 10.0, True,
               _paced("n100_200", "headway", "latency", "p99_ms")),
        Target("fan-out: p99 latency, N=1, 200 updates/s", "ms", 2.5, True,
               _paced("n1_200", "headway", "latency", "p99_ms")),
        Target("fan-out: p50 latency, N=1, 200 updates/s", "ms", 1.2, True,
               _paced("n1_200", "headway", "latency", "p50_ms")),
    ]  # fmt: skip


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
    return fixed + relative + fanout_targets()


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
