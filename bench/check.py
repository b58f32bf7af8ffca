"""Is every figure there, and sane? Never a speed threshold.

`missing` lists figures that were not produced (a run failed, a section did
not run to the end): `make bench` and `make bench-quick` both fail on those.
`anomalies` lists figures that are there but cannot be right, or that break
the stream contract (a lost or duplicated delivery, an error on a call, a
percentile above the next one, a zero where work was done): `make bench-quick`
fails on those too, while the full run reports them in RESULTS.md, because
under a load the server cannot sustain, losing slow subscribers is the
documented behaviour rather than a fault of the benchmark.
"""

from __future__ import annotations

import math
from typing import Any

from bench import conflation, starvation
from bench.scenarios import Profile


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _positive(where: str, figures: dict[str, Any], *names: str) -> list[str]:
    return [
        f"{where}: {name} is {figures.get(name)!r}, expected a positive number"
        for name in names
        if not (_number(figures.get(name)) and figures[name] > 0)
    ]


def _load_anomalies(where: str, r: dict[str, Any], rate: float | None) -> list[str]:
    found = _positive(
        where,
        r,
        "acked_writes",
        "writes_per_s",
        "server_cpu_cores",
        "server_peak_rss_mib",
        "writer_cpu_cores",
        "server_connections",
    )
    if r["subscribers"]:
        found += _positive(where, r, "deliveries_per_s", "subscriber_cpu_cores")
        latency = r.get("latency", {})
        values = [latency.get(k) for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms")]
        if not all(_number(v) and v > 0 for v in values):
            found.append(f"{where}: latency percentiles missing or not positive: {latency}")
        elif values != sorted(values):
            found.append(f"{where}: latency percentiles out of order: {latency}")
        if r["received_deliveries"] != r["expected_deliveries"]:
            found.append(
                f"{where}: received {r['received_deliveries']} deliveries, expected "
                f"{r['expected_deliveries']} (lost {r['lost_deliveries']}, "
                f"extra {r['extra_deliveries']})"
            )
    if rate is not None and r["writes_per_s"] > rate * 1.1:
        found.append(f"{where}: {r['writes_per_s']} writes/s exceeds the paced {rate}/s")
    if r.get("writer_errors"):
        found.append(f"{where}: writes failed: {r['writer_errors']}")
    if r.get("stream_errors"):
        found.append(f"{where}: streams ended with errors: {r['stream_errors']}")
    return found


def _runs(results: dict[str, Any]) -> list[tuple[str, dict[str, Any], float | None]]:
    runs = []
    for key, scenario in results.get("paced", {}).items():
        for server in ("headway", "baseline"):
            runs.append((f"paced {key} {server}", scenario.get(server, {}), scenario["rate"]))
    for key, scenario in results.get("sse", {}).items():
        for transport in ("grpc", "sse"):
            runs.append((f"sse {key} {transport}", scenario.get(transport, {}), scenario["rate"]))
    for agents, by_server in results.get("max_writes", {}).items():
        for label, figures in by_server.items():
            runs.append((f"max writes {agents} agents {label}", figures, None))
    for state in ("off", "on"):
        if "auth" in results:
            runs.append((f"auth {state}", results["auth"].get(state, {}), None))
    for part in ("alone", "beside_noisy"):
        if "tenants" in results:
            runs.append((f"tenants {part}", results["tenants"].get(part, {}), None))
    peers = results.get("peers", {})
    for key, scenario in peers.get("paced", {}).items():
        for peer in peers.get("servers", {}):
            if peer in scenario:
                runs.append((f"peers paced {key} {peer}", scenario[peer], scenario["rate"]))
    for agents, by_peer in peers.get("max_writes", {}).items():
        for peer, figures in by_peer.items():
            runs.append((f"peers max writes {agents} agents {peer}", figures, None))
    for server, figures in results.get("idle_memory", {}).items():
        runs.append((f"idle memory {server}", figures, None))
    runs += starvation.runs(results)
    history = results.get("history", {})
    for part in ("empty", "loaded"):
        if history:
            runs.append((f"history {part}", history.get(part, {}), None))
    return runs


def missing(results: dict[str, Any], profile: Profile, sections: list[str]) -> list[str]:
    found = []
    expected = {
        "paced": ("paced", len(profile.paced)),
        "max": ("max_writes", len(profile.max_agents)),
        "auth": ("auth", None),
        "tenants": ("tenants", None),
        "idle": ("idle_memory", 2),
        "history": ("history", None),
        "sse": ("sse", len(profile.sse)),
        "conflation": ("conflation", None),
        "peers": ("peers", None),
        "starvation": ("starvation", None),
    }
    for section in sections:
        key, count = expected[section]
        if f"{section}_skipped" in results:
            continue
        if key not in results:
            found.append(f"section {section} produced nothing")
        elif count is not None and len(results[key]) != count:
            found.append(f"section {section}: {len(results[key])} of {count} entries")
    for where, figures, _ in _runs(results):
        if not figures:
            found.append(f"{where}: no figures")
        elif "error" in figures:
            found.append(f"{where}: {figures['error']}")
    return found


def anomalies(results: dict[str, Any]) -> list[str]:
    found = []
    for where, r, rate in _runs(results):
        if not r or "error" in r:
            continue
        if where.startswith(("paced", "max writes", "auth", "sse", "peers", "starvation")):
            found += _load_anomalies(where, r, rate)
        elif where.startswith("tenants"):
            # The noisy tenant's refused writes are the point; the quiet one's must all land.
            quiet = (r.get("per_writer") or [{}])[0]
            found += _positive(f"{where} quiet tenant", quiet, "writes_per_s")
            if quiet.get("errors"):
                found.append(f"{where}: the quiet tenant's writes failed: {quiet['errors']}")
        elif where.startswith("idle"):
            found += _positive(where, r, "rss_before_mib", "rss_after_mib", "kib_per_subscriber")
        elif where == "history empty":
            found += _positive(where, r, "start_seconds", "rss_mib")
        else:
            found += _positive(
                where, r, "start_seconds", "rss_after_start_mib", "catch_up_events_per_s"
            )
            events = results["history"]["events"]
            if r["catch_up_events"] != events or r["last_revision"] != events:
                found.append(
                    f"{where}: caught up {r['catch_up_events']} events to revision "
                    f"{r['last_revision']}, expected {events}"
                )
    found += conflation.problems(results)
    for section in ("paced", "sse"):
        for key, scenario in results.get(section, {}).items():
            for name in ("deliveries_ratio", "p99_ratio"):
                if not (_number(scenario.get(name)) and scenario[name] > 0):
                    found.append(f"{section} {key}: {name} is {scenario.get(name)!r}")
    return found
