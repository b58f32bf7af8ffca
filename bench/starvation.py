"""Writers first: what subscribers cost the writers, and what the fan-out tick does.

The writers' acknowledgement latency at a steady rate is measured three times
against fresh servers, back to back: with no subscriber, with many idle ones
(streams on every task that stop reading once synced, as a dashboard left in a
background tab does), and with many live ones reading everything. Idle and
live streams share the writers' event loop on the server, so their cost shows
as the ratio of each ack p99 to the one with none, measured in the same run.

The fan-out tick's effect is read off the paced scenarios: events per
response and responses/s, beside the baseline's, which writes on every wake.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from bench.load import LoadSpec
from bench.servers import ServerSpec
from bench.stats import ratio


@dataclass(frozen=True)
class Starvation:
    rate: float  # writes/s, paced over `agents`
    idle: int  # idle streams beside the writers
    idle_procs: int
    live: int  # live streams beside the writers
    live_procs: int
    warmup: float
    duration: float


PROFILES = {
    "full": Starvation(
        rate=100, idle=2000, idle_procs=2, live=1000, live_procs=2, warmup=2.0, duration=10.0
    ),
    "quick": Starvation(
        rate=100, idle=200, idle_procs=1, live=100, live_procs=1, warmup=0.3, duration=1.5
    ),
}
AGENTS = 16
DRAIN_TIMEOUT = 20.0

Load = Callable[[str, ServerSpec, LoadSpec], dict[str, Any]]


def run(profile: str, server: ServerSpec, load: Load) -> dict[str, Any]:
    """The three runs and their ratios; `load(label, spec, load)` runs one."""
    s = PROFILES[profile]
    # Thousands of streams from one tenant: the per-tenant stream quota is off here.
    spec = replace(server, args=(*server.args, "--quota-subscriptions", "0"))
    none = LoadSpec(
        subscribers=0,
        agents=AGENTS,
        rate=s.rate,
        warmup=s.warmup,
        duration=s.duration,
        drain_timeout=DRAIN_TIMEOUT,
    )
    section: dict[str, Any] = {
        "rate": s.rate,
        "idle_subscribers": s.idle,
        "live_subscribers": s.live,
    }
    section["none"] = load("starvation-none", spec, none)
    section["idle"] = load(
        "starvation-idle", spec, replace(none, idle_subscribers=s.idle, idle_procs=s.idle_procs)
    )
    section["live"] = load(
        "starvation-live",
        spec,
        replace(none, subscribers=s.live, subscriber_procs=s.live_procs),
    )
    base = _ack_p99(section["none"])
    section["idle_ack_p99_ratio"] = ratio(_ack_p99(section["idle"]), base)
    section["live_ack_p99_ratio"] = ratio(_ack_p99(section["live"]), base)
    return section


def _ack_p99(figures: dict[str, Any]) -> float | None:
    value = figures.get("ack_latency", {}).get("p99_ms")
    return float(value) if isinstance(value, int | float) else None


def runs(results: dict[str, Any]) -> list[tuple[str, dict[str, Any], float | None]]:
    """(where, figures, paced rate) of each run, for the sanity checks."""
    section = results.get("starvation", {})
    return [
        (f"starvation {part}", section.get(part, {}), section.get("rate"))
        for part in ("none", "idle", "live")
        if section
    ]


def _row(label: str, figures: dict[str, Any]) -> list[str]:
    ack = figures.get("ack_latency", {})
    cells = [
        figures.get("writes_per_s"),
        ack.get("p50_ms"),
        ack.get("p99_ms"),
        ack.get("max_ms"),
        figures.get("deliveries_per_s"),
        figures.get("events_per_response"),
        figures.get("server_cpu_cores"),
        figures.get("other_cpu_cores"),
    ]
    return [label, *("-" if c is None else f"{c:,.4g}" for c in cells)]


def render(results: dict[str, Any]) -> list[str]:
    """RESULTS.md's sections: writers beside subscribers, and the fan-out tick's effect."""
    lines: list[str] = []
    section = results.get("starvation")
    if section:
        lines += [
            "## Writers beside subscribers (starvation)",
            "",
            f"{section['rate']:g} UpdateStep calls/s from {AGENTS} agents against a fresh "
            f"Headway each: with no subscriber, with {section['idle_subscribers']:,} idle "
            "streams (every task, no longer read once synced), and with "
            f"{section['live_subscribers']:,} live streams reading everything; back to back.",
            "",
            "| subscribers | writes/s | ack p50 ms | ack p99 ms | ack max ms | deliveries/s "
            "| events/response | server CPU | other CPU |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for part, label in (
            ("none", "none"),
            ("idle", f"{section['idle_subscribers']:,} idle"),
            ("live", f"{section['live_subscribers']:,} live"),
        ):
            figures = section.get(part, {})
            if "error" in figures:
                lines.append(f"| {label} | failed: {figures['error'][:200]} |")
            else:
                lines.append("| " + " | ".join(_row(label, figures)) + " |")
        lines += [
            "",
            f"Ack p99 ratio to none: idle {section.get('idle_ack_p99_ratio')}, "
            f"live {section.get('live_ack_p99_ratio')}.",
            "",
        ]
    paced = results.get("paced", {})
    if paced:
        lines += [
            "## Fan-out tick",
            "",
            "Per paced scenario: how many events each SubscribeResponse carried and how many "
            "responses went out per second, Headway (paced by the fan-out tick) and the "
            "baseline (one write per wake).",
            "",
            "| scenario | Headway events/response | Headway responses/s | Headway deliveries/s "
            "| baseline events/response | baseline responses/s | baseline deliveries/s |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for scenario in paced.values():
            cells = []
            for server in ("headway", "baseline"):
                figures = scenario.get(server, {})
                for name in ("events_per_response", "responses_per_s", "deliveries_per_s"):
                    value = figures.get(name)
                    cells.append("-" if value is None else f"{value:,.4g}")
            lines.append(f"| {scenario['title']} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines
