"""The targets Headway is measured against, with etcd, Redis and the baseline beside it.

Each target names the figure it reads in results.json, so the same target is
read for every system that ran the scenario in the same run: Headway and the
baseline from their own sections (`paced`, `max_writes`), etcd and Redis from
`peers` (same scenario keys). The status is Headway's; the other columns say
whether each of them would meet it. A figure that is not in results.json is
"not measured": the section that would produce it did not run, or does not
exist yet. Scenarios added later plug in by storing their figure under the
name the target reads:

- `starvation.idle_ack_p99_ratio`: ack p99 of 100 writes/s beside 2,000
  idle subscribers over the ack p99 with none (Headway);
- `starvation.live_ack_p99_ratio`: the same beside 1,000 live subscribers;
- `history.loaded.rss_after_start_mib`: RSS after start-up on a history of
  100,000 tasks and 1,000,000 events (counted only at that size).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

BYTES_PER_MIB = 1 << 20
PEERS = ("etcd", "redis")
OTHERS = ("etcd", "redis", "baseline")  # the columns beside Headway
# What the other systems' max writes are, since they do not store durably like Headway.
NOT_DURABLE = {"redis": "not durable", "baseline": "stores nothing"}
# Headway's run in a section, where it is not simply called "headway".
HEADWAY_RUN = {"max_writes": "headway_full"}
HELD = 0.98  # writes are held when at least this share of the paced rate is acknowledged

# (results, system) -> the figure, or None when it was not measured.
Measure = Callable[[dict[str, Any], str], float | None]


@dataclass(frozen=True)
class Target:
    name: str
    unit: str
    limit: float
    at_most: bool  # True: measured <= limit; False: measured >= limit
    section: str  # the results.json key whose figures it reads
    measure: Measure
    durable_only: bool = False  # a figure of a non-durable system is shown with a note


def run_figures(results: dict[str, Any], section: str, key: str, system: str) -> dict[str, Any]:
    """One system's figures of scenario `key` in `section` ({} if it did not run or failed)."""
    if system in PEERS:
        node = results.get("peers", {}).get(section, {}).get(key, {}).get(system)
    else:
        run = HEADWAY_RUN.get(section, system) if system == "headway" else system
        node = results.get(section, {}).get(key, {}).get(run)
    return node if isinstance(node, dict) and "error" not in node else {}


def _number(node: Any) -> float | None:
    return float(node) if isinstance(node, int | float) and not isinstance(node, bool) else None


def _path(node: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _figure(section: str, key: str, *path: str) -> Measure:
    def measure(results: dict[str, Any], system: str) -> float | None:
        return _number(_path(run_figures(results, section, key, system), path))

    return measure


def _headway_named(name: str) -> Measure:
    """A figure of Headway's by its dotted name in results.json; the others have none."""

    def measure(results: dict[str, Any], system: str) -> float | None:
        return _number(_path(results, tuple(name.split(".")))) if system == "headway" else None

    return measure


def _cpu_vs_baseline(key: str) -> Measure:
    """Server CPU per write of the system over the baseline's, in the same run."""

    def measure(results: dict[str, Any], system: str) -> float | None:
        cpu = _figure("paced", key, "server_cpu_us_per_write")
        mine, baseline = cpu(results, system), cpu(results, "baseline")
        return mine / baseline if mine is not None and baseline else None

    return measure


def _rss_at_1000(results: dict[str, Any], system: str) -> float | None:
    """The highest peak server RSS over the N=1000 paced scenarios, in MB (10^6 bytes)."""
    section = results.get("peers", {}) if system in PEERS else results
    peaks = [
        _number(run_figures(results, "paced", key, system).get("server_peak_rss_mib"))
        for key, scenario in section.get("paced", {}).items()
        if scenario.get("subscribers") == 1000
    ]
    found = [peak for peak in peaks if peak is not None]
    return max(found) * BYTES_PER_MIB / 1e6 if found else None


def _startup_rss(results: dict[str, Any], system: str) -> float | None:
    """Headway's RSS after start-up on 100k tasks and 1M events, in MB."""
    history = results.get("history", {})
    if system != "headway" or history.get("tasks", 0) < 100_000:
        return None
    if history.get("events", 0) < 1_000_000:
        return None
    rss = _headway_named("history.loaded.rss_after_start_mib")(results, system)
    return None if rss is None else rss * BYTES_PER_MIB / 1e6


def targets() -> list[Target]:
    return [
        Target("deliveries/s, N=1000, 200 updates/s", "/s", 180_000, False, "paced",
               _figure("paced", "n1000_200", "deliveries_per_s")),
        Target("p99 latency, N=1000, 200 updates/s", "ms", 500, True, "paced",
               _figure("paced", "n1000_200", "latency", "p99_ms")),
        Target("writes held, N=1000, 200 updates/s (acknowledged/s)", "/s", 200 * HELD, False,
               "paced", _figure("paced", "n1000_200", "writes_per_s")),
        Target("writes held, N=1000, 20 updates/s (acknowledged/s)", "/s", 20 * HELD, False,
               "paced", _figure("paced", "n1000_20", "writes_per_s")),
        Target("p99 latency, N=1000, 20 updates/s", "ms", 150, True, "paced",
               _figure("paced", "n1000_20", "latency", "p99_ms")),
        Target("p99 latency, N=100, 200 updates/s", "ms", 10, True, "paced",
               _figure("paced", "n100_200", "latency", "p99_ms")),
        Target("p99 latency, N=1, 200 updates/s", "ms", 2.5, True, "paced",
               _figure("paced", "n1_200", "latency", "p99_ms")),
        Target("p50 latency, N=1, 200 updates/s", "ms", 1.2, True, "paced",
               _figure("paced", "n1_200", "latency", "p50_ms")),
        Target("max durable writes/s, 8 agents, N=1", "/s", 2_800, False, "max_writes",
               _figure("max_writes", "8", "writes_per_s"), durable_only=True),
        Target("server CPU per write vs the baseline's, N=1, 200 updates/s", "x", 1.2, True,
               "paced", _cpu_vs_baseline("n1_200")),
        Target("ack p99, 100 writes/s beside 2,000 idle subscribers, vs none", "x", 2.0, True,
               "starvation", _headway_named("starvation.idle_ack_p99_ratio")),
        Target("ack p99, 100 writes/s beside 1,000 live subscribers, vs none", "x", 2.0, True,
               "starvation", _headway_named("starvation.live_ack_p99_ratio")),
        Target("server peak RSS with N=1000 subscribers", "MB", 100, True, "paced",
               _rss_at_1000),
        Target("RSS after start-up, 100k tasks and 1M events", "MB", 150, True, "history",
               _startup_rss),
    ]  # fmt: skip


def met(target: Target, measured: float | None) -> bool | None:
    if measured is None:
        return None
    return measured <= target.limit if target.at_most else measured >= target.limit


def verdict(target: Target, measured: float | None, results: dict[str, Any]) -> str:
    if measured is None:
        if target.section not in results:
            return f"not measured: no `{target.section}` figures in this run"
        return "not measured in this profile"
    limit = target.limit
    if target.at_most:
        if measured <= limit:
            return f"met ({(1 - measured / limit) * 100:.0f}% under the limit)"
        return f"not met: {measured / limit:.2f}x the limit"
    if measured >= limit:
        return f"met ({measured / limit:.2f}x the target)"
    return f"not met: {measured / limit * 100:.0f}% of the target"


def _limit(limit: float) -> str:
    return f"{limit:,.0f}" if limit >= 1000 else f"{limit:g}"


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for target in targets():
        measured = target.measure(results, "headway")
        others = {}
        for system in OTHERS:
            value = target.measure(results, system)
            others[system] = {
                "measured": _rounded(value),
                "met": met(target, value),
                "note": NOT_DURABLE.get(system) if target.durable_only else None,
            }
        rows.append(
            {
                "target": target.name,
                "limit": f"{'<=' if target.at_most else '>='} {_limit(target.limit)} {target.unit}",
                "measured": _rounded(measured),
                "unit": target.unit,
                "met": met(target, measured),
                "verdict": verdict(target, measured, results),
                "others": others,
            }
        )
    return rows
