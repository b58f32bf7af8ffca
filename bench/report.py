"""RESULTS.md from the results dict: targets, a table per scenario, machine, commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench import conflation, starvation

Getter = Callable[[dict[str, Any]], Any]


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:,.{digits}f}" if abs(value) >= 1 or value == 0 else f"{value:.3g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items()) or "none"
    return str(value)


def _get(*path: str) -> Getter:
    def get(figures: dict[str, Any]) -> Any:
        node: Any = figures
        for part in path:
            if not isinstance(node, dict):
                return None
            node = node.get(part)
        return node

    return get


LOAD_ROWS: list[tuple[str, Getter]] = [
    ("acknowledged writes/s", _get("writes_per_s")),
    ("deliveries/s (all subscribers)", _get("deliveries_per_s")),
    ("latency p50 (ms)", _get("latency", "p50_ms")),
    ("latency p90 (ms)", _get("latency", "p90_ms")),
    ("latency p99 (ms)", _get("latency", "p99_ms")),
    ("latency max (ms)", _get("latency", "max_ms")),
    ("latency samples (write, subscriber)", _get("latency", "samples")),
    ("lost deliveries (expected - received)", _get("lost_deliveries")),
    ("events per response", _get("events_per_response")),
    ("ack latency p50 / p99 (ms)", lambda f: _pair(f, "ack_latency", "p50_ms", "p99_ms")),
    ("server CPU (cores)", _get("server_cpu_cores")),
    ("server CPU per write (µs)", _get("server_cpu_us_per_write")),
    ("server CPU per delivery (µs)", _get("server_cpu_us_per_delivery")),
    ("server CPU in the event-loop thread (cores)", _get("server_loop_cpu_cores")),
    ("server peak RSS (MiB)", _get("server_peak_rss_mib")),
    ("load generator CPU: writers (cores)", _get("writer_cpu_cores")),
    ("load generator CPU: subscribers (cores)", _get("subscriber_cpu_cores")),
    ("other processes' CPU in the window (cores)", _get("other_cpu_cores")),
    ("connections at the server (subscriber conns)", lambda f: _conns(f)),
    ("writer max lag behind schedule (ms)", _get("writer_max_lag_ms")),
    ("failed writes / ended streams", lambda f: _errors(f)),
]


def _pair(figures: dict[str, Any], key: str, a: str, b: str) -> str | None:
    node = figures.get(key)
    if not isinstance(node, dict) or a not in node:
        return None
    return f"{_fmt(node[a], 2)} / {_fmt(node[b], 2)}"


def _conns(figures: dict[str, Any]) -> str | None:
    if "server_connections" not in figures:
        return None
    return (
        f"{figures['server_connections']} ({figures['subscriber_connections']} in "
        f"{figures['subscriber_procs']} procs)"
    )


def _errors(figures: dict[str, Any]) -> str | None:
    if "writer_errors" not in figures:
        return None
    return f"{_fmt(figures['writer_errors'])} / {_fmt(figures['stream_errors'])}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def _load_table(columns: list[tuple[str, dict[str, Any]]], extra: list[list[str]]) -> list[str]:
    rows = []
    for label, getter in LOAD_ROWS:
        rows.append([label] + [_fmt(getter(f)) if "error" not in f else "" for _, f in columns])
    errors = [f"{name}: {f['error']}" for name, f in columns if "error" in f]
    lines = _table(["figure"] + [name for name, _ in columns], rows + extra)
    return lines + [f"**Failed:** {e}" for e in errors] + ([""] if errors else [])


OTHER_COLUMNS = (("etcd", "etcd"), ("redis", "Redis"), ("baseline", "baseline"))


def _other(results: dict[str, Any], system: str, figures: dict[str, Any]) -> str:
    """A target's figure for a system beside Headway: the value, whether it meets it, a note."""
    server = results.get("peers", {}).get("servers", {}).get(system, {})
    if server.get("installed") is False:
        return "not installed"
    if figures["measured"] is None:
        return "-"
    words = [{True: "met", False: "not met"}[figures["met"]]]
    if figures.get("note"):
        words.insert(0, figures["note"])
    return f"{_fmt(figures['measured'], 2)} ({'; '.join(words)})"


def _targets(results: dict[str, Any]) -> list[str]:
    rows = []
    for t in results.get("targets", []):
        mark = {True: "met", False: "NOT MET", None: "-"}[t["met"]]
        others = t.get("others", {})
        rows.append(
            [t["target"], t["limit"], _fmt(t["measured"], 2), f"**{mark}**", t["verdict"]]
            + [_other(results, system, others.get(system, {})) for system, _ in OTHER_COLUMNS]
        )
    header = ["target", "limit", "Headway", "status", "by how much"]
    lines = _table(header + [title for _, title in OTHER_COLUMNS], rows)
    lines += [
        "The status is Headway's; etcd, Redis and the baseline are measured in the same run "
        "(etcd and Redis in the peers section below).",
        "",
    ]
    if "peers_skipped" in results:
        lines += [f"etcd and Redis: {results['peers_skipped']}.", ""]
    return lines


def _paced(results: dict[str, Any]) -> list[str]:
    paced = results.get("paced", {})
    agents = {s.get("headway", {}).get("agents") for s in paced.values()} - {None}
    lines = ["## Paced scenarios", ""]
    lines.append(
        f"A fixed total rate of UpdateStep calls ({', '.join(map(str, agents))} agents, one task "
        "each, one call in flight per agent), N subscribers watching every task; Headway and "
        "the baseline with the same load generator, back to back. Ratios are Headway / baseline."
    )
    lines.append("")
    for scenario in paced.values():
        lines += [f"### {scenario['title']}", ""]
        extra = [
            ["**deliveries ratio (Headway / baseline)**", _fmt(scenario["deliveries_ratio"], 2)],
            ["**p99 ratio (Headway / baseline)**", _fmt(scenario["p99_ratio"], 2)],
        ]
        extra = [[*row, ""] for row in extra]
        lines += _load_table(
            [("Headway", scenario["headway"]), ("baseline", scenario["baseline"])], extra
        )
    return lines


def _sse(results: dict[str, Any]) -> list[str]:
    sse = results.get("sse", {})
    lines = ["## SSE fan-out (browser-like clients of the HTTP gateway)", ""]
    if "sse_skipped" in results:
        return [*lines, f"Not measured: {results['sse_skipped']}.", ""]
    if not sse:
        return []
    lines.append(
        "N browser-like clients, each its own HTTP/1.1 connection reading `GET /v1/events` "
        "(`text/event-stream`, one Event as JSON per `data:` line), beside the same N "
        "Subscribe streams over gRPC, at the same paced rate, against the same Headway "
        "(HTTP gateway on), back to back. Ratios are SSE / gRPC."
    )
    lines.append("")
    for scenario in sse.values():
        lines += [f"### {scenario['title']}", ""]
        extra = [
            ["**deliveries ratio (SSE / gRPC)**", _fmt(scenario["deliveries_ratio"], 2)],
            ["**p99 ratio (SSE / gRPC)**", _fmt(scenario["p99_ratio"], 2)],
        ]
        extra = [[*row, ""] for row in extra]
        lines += _load_table([("SSE", scenario["sse"]), ("gRPC", scenario["grpc"])], extra)
    return lines


def _max_writes(results: dict[str, Any]) -> list[str]:
    lines = ["## Max durable writes/s (N=1, every agent sends again on its ack)", ""]
    for agents, runs in results.get("max_writes", {}).items():
        lines += [f"### {agents} agents", ""]
        columns = [
            ("Headway, synchronous=FULL", runs["headway_full"]),
            ("Headway, synchronous=NORMAL", runs["headway_normal"]),
            ("baseline (stores nothing)", runs["baseline"]),
        ]
        lines += _load_table(columns, [])
    return lines


def _auth(results: dict[str, Any]) -> list[str]:
    auth = results.get("auth")
    if not auth:
        return []
    lines = ["## Authentication (8 agents, as fast as acks allow, N=0)", ""]
    lines.append(
        "Every call carries a bearer token checked against a token file (on) or no token at "
        "all (off); the same server otherwise, back to back."
    )
    lines.append("")
    extra = [
        ["**server CPU per write, on / off**", _fmt(auth.get("cpu_per_write_ratio"), 2), ""],
        ["**writes/s, on / off**", _fmt(auth.get("writes_ratio"), 2), ""],
    ]
    return lines + _load_table(
        [("authentication off", auth.get("off", {})), ("on", auth.get("on", {}))], extra
    )


def _tenants(results: dict[str, Any]) -> list[str]:
    tenants = results.get("tenants")
    if not tenants:
        return []
    alone = (tenants.get("alone", {}).get("per_writer") or [{}])[0]
    beside = tenants.get("beside_noisy", {}).get("per_writer") or [{}, {}]
    rows = []
    for label, figures in (
        ("quiet tenant alone", alone),
        ("quiet tenant beside the noisy one", beside[0]),
        ("noisy tenant (held to its quota)", beside[-1]),
    ):
        ack = figures.get("ack_latency", {})
        rows.append(
            [
                label,
                _fmt(figures.get("writes_per_s")),
                _fmt(ack.get("p50_ms")),
                _fmt(ack.get("p99_ms")),
                ", ".join(f"{k} {v}" for k, v in (figures.get("errors") or {}).items()) or "-",
            ]
        )
    lines = [
        "## Noisy neighbours (per-tenant mutation quota)",
        "",
        f"A quiet tenant writes {_fmt(tenants.get('quiet_rate'))} updates/s; beside it a noisy "
        f"tenant writes as fast as it can, held to {tenants.get('noisy_quota')} mutations/s.",
        "",
    ]
    lines += _table(["writer", "writes/s", "ack p50 ms", "ack p99 ms", "refused"], rows)
    lines += [
        f"Quiet tenant beside / alone: writes/s {_fmt(tenants.get('quiet_writes_ratio'), 2)}, "
        f"ack p99 {_fmt(tenants.get('quiet_p99_ratio'), 2)}.",
        "",
    ]
    return lines


def _idle(results: dict[str, Any]) -> list[str]:
    idle = results.get("idle_memory")
    if not idle:
        return []
    rows = []
    for label, key in (
        ("idle subscribers (connections)", None),
        ("RSS before (MiB)", "rss_before_mib"),
        ("RSS with the subscribers (MiB)", "rss_after_mib"),
        ("**KiB per idle subscriber**", "kib_per_subscriber"),
    ):
        row = [label]
        for server in ("headway", "baseline"):
            f = idle.get(server, {})
            if "error" in f:
                row.append(f"failed: {f['error']}")
            elif key is None:
                row.append(f"{f['subscribers']} ({f['connections']})")
            else:
                row.append(_fmt(f.get(key)))
        rows.append(row)
    return ["## Memory per idle subscriber", "", *_table(["figure", "Headway", "baseline"], rows)]


def _history(results: dict[str, Any]) -> list[str]:
    h = results.get("history")
    if not h:
        return []
    empty, loaded = h.get("empty", {}), h.get("loaded", {})
    rows = [
        ["history", f"{h['tasks']:,} tasks, {h['events']:,} events, {h['database_mib']} MiB"],
        ["history build (one-time, cached)", f"{h['build_seconds']} s (0: cached)"],
        ["start time, empty database (s)", _fmt(empty.get("start_seconds"), 3)],
        ["RSS after start, empty database (MiB)", _fmt(empty.get("rss_mib"))],
        ["**start time with the history (s)**", _fmt(loaded.get("start_seconds"), 3)],
        ["**RSS after start with the history (MiB)**", _fmt(loaded.get("rss_after_start_mib"))],
        ["**catch-up from revision 0 (events/s)**", _fmt(loaded.get("catch_up_events_per_s"))],
        ["catch-up: events, seconds", f"{_fmt(loaded.get('catch_up_events'))}, "
         f"{_fmt(loaded.get('catch_up_seconds'), 2)}"],
        ["catch-up: MiB/s on the wire", _fmt(loaded.get("catch_up_mib_per_s"))],
        ["catch-up: first response after (ms)", _fmt(loaded.get("catch_up_first_response_ms"))],
        ["catch-up: server CPU (s)", _fmt(loaded.get("catch_up_server_cpu_seconds"), 2)],
        ["catch-up: server peak RSS (MiB)", _fmt(loaded.get("catch_up_peak_rss_mib"))],
    ]  # fmt: skip
    lines = ["## Start-up and catch-up (Headway)", "", *_table(["figure", "value"], rows)]
    for part, f in (("empty", empty), ("loaded", loaded)):
        if "error" in f:
            lines += [f"**Failed ({part}):** {f['error']}", ""]
    return lines


def _machine(results: dict[str, Any]) -> list[str]:
    m = results["machine"]
    rows = [
        ["date (UTC)", m["date_utc"]],
        ["CPU", f"{m['cpu_model']}: {m['logical_cpus']} logical CPUs, "
                f"{m['physical_cores']} physical cores"],
        ["memory", f"{m['memory_mib']:,.0f} MiB"],
        ["OS", m["os"]],
        ["Python", m["python"]],
        ["grpcio / protobuf / uvloop / psutil",
         f"{m['grpcio']} / {m['protobuf']} / {m['uvloop']} / {m['psutil']}"],
        ["run time", f"{results['elapsed_seconds']} s (of which "
                     f"{results['quiet_wait_seconds']:.0f} s waiting for other jobs to calm down)"],
    ]  # fmt: skip
    return ["## Machine", "", *_table(["", ""], rows)]


def _commands(results: dict[str, Any]) -> list[str]:
    commands = {results["command"]}
    for scenario in results.get("paced", {}).values():
        for server in ("headway", "baseline"):
            if "server_command" in scenario.get(server, {}):
                commands.add("python " + scenario[server]["server_command"])
    for scenario in results.get("sse", {}).values():
        for transport in ("grpc", "sse"):
            if "server_command" in scenario.get(transport, {}):
                commands.add("python " + scenario[transport]["server_command"])
    for runs in results.get("max_writes", {}).values():
        for figures in runs.values():
            if "server_command" in figures:
                commands.add("python " + figures["server_command"])
    if "history" in results:
        commands.add(results["history"]["build_command"])
    profile = results["profile"]
    make = "make bench" if profile == "full" else "make bench-quick"
    lines = ["## Commands", "", f"`{make}` runs:", "", "```sh"]
    lines += sorted(commands, key=lambda c: (not c.startswith("python -m bench.run"), c))
    lines += [
        "```",
        "",
        "The idle-memory runs start the same servers without load; start-up and catch-up run "
        "the Headway command on a private copy of the cached history database.",
        "",
    ]
    return lines


METHOD = """## Method

- **Processes.** Each server runs alone in its own process on 127.0.0.1 and a free port,
  on a fresh database. The load generator is separate processes (multiprocessing, spawn,
  uvloop): one for the writers, one or two for the subscribers, which share a few HTTP/2
  connections per process. The orchestrator only starts, schedules and samples.
- **Writes.** Each agent owns one task with one step and sends UpdateStep (state, units
  progress, a ~120-character message, a request_id; 193 bytes on the wire) with at most one
  call in flight. Paced runs spread a fixed total rate over 64 agents; max-writes runs send
  again on each ack.
- **Subscribers** call Subscribe with no filter and are all past `synced` before the first
  write. The send time (`time.monotonic_ns()`, one clock for all processes) is in the step
  message; each response is scanned for it as raw bytes, and the receive time is read once
  per response.
- **Window.** After the warm-up, a measured window (10 s in the full profile). Acknowledged
  writes/s counts writes sent in the window and acknowledged; latency covers every
  (write sent in the window, subscriber) pair, p50/p90/p99 nearest-rank and the max, exact
  over all samples; deliveries/s counts every event received in the window; lost = acknowledged
  writes x N - deliveries received after a drain of up to 20 s.
- **CPU and memory.** psutil `cpu_times()` deltas over the window for the server and each
  generator process; the machine's total busy time minus ours is reported as other
  processes' CPU (other jobs share this machine; before each run the suite waits, within a
  budget, until it is nearly idle). Server RSS is sampled every 100 ms from start to stop.
- **Baseline.** `bench/baseline_server.py`: the same proto and grpc.aio runtime, UpdateStep
  encodes one event and appends the frame to every subscriber's queue, each subscriber's
  sender writes its whole queue as one response per wakeup (like Headway's hub); nothing is
  validated or stored. It is the practical limit of this stack.
"""


def _peers(results: dict[str, Any]) -> list[str]:
    # Imported here: the peers' renderer builds on this module's tables.
    from bench.peers.report import peers_lines

    return peers_lines(results)


def render(results: dict[str, Any]) -> str:
    profile = results["profile"]
    make = "make bench" if profile == "full" else "make bench-quick"
    lines = [
        "# Headway benchmark results",
        "",
        f"Profile `{profile}` (`{make}`), {results['machine']['date_utc']}, "
        f"{results['elapsed_seconds']} s. Generated by `bench/run.py`; do not edit by hand.",
        "",
        "## Targets",
        "",
        *_targets(results),
        *_paced(results),
        *_sse(results),
        *starvation.render(results),
        *_max_writes(results),
        *_peers(results),
        *_auth(results),
        *_tenants(results),
        *_idle(results),
        *_history(results),
        *conflation.render(results),
    ]
    if results.get("missing") or results.get("anomalies"):
        lines += ["## Missing figures and anomalies", ""]
        lines += [f"- missing: {p}" for p in results.get("missing", [])]
        lines += [f"- anomaly: {p}" for p in results.get("anomalies", [])]
        lines.append("")
    lines += [*_machine(results), METHOD, *_commands(results)]
    return "\n".join(lines).rstrip() + "\n"
