"""The peers section of RESULTS.md: Headway, etcd, Redis and the baseline side by side."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.report import _fmt, _load_table, _table
from bench.targets import run_figures

SYSTEMS = (
    ("headway", "Headway"),
    ("etcd", "etcd"),
    ("redis", "Redis pub/sub"),
    ("baseline", "baseline"),
)
WHAT = {
    "etcd": "Put of the agent's key (raft commit, fsync); one gRPC Watch stream per subscriber",
    "redis": "PUBLISH (nothing stored); one SUBSCRIBE connection per subscriber",
}

Figure = Callable[[dict[str, Any], str], Any]


def _at(section: str, key: str, *path: str) -> Figure:
    def get(results: dict[str, Any], system: str) -> Any:
        node: Any = run_figures(results, section, key, system)
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        return node

    return get


def _peak_rss_at_1000(results: dict[str, Any], system: str) -> Any:
    peaks = [
        _at("paced", key, "server_peak_rss_mib")(results, system)
        for key in ("n1000_20", "n1000_200")
    ]
    found = [p for p in peaks if isinstance(p, int | float)]
    return max(found) if found else None


SUMMARY: list[tuple[str, Figure]] = [
    ("N=1, 200 updates/s: p50 (ms)", _at("paced", "n1_200", "latency", "p50_ms")),
    ("N=1, 200 updates/s: p99 (ms)", _at("paced", "n1_200", "latency", "p99_ms")),
    ("N=100, 200 updates/s: p99 (ms)", _at("paced", "n100_200", "latency", "p99_ms")),
    ("N=1000, 20 updates/s: acknowledged writes/s", _at("paced", "n1000_20", "writes_per_s")),
    ("N=1000, 20 updates/s: p99 (ms)", _at("paced", "n1000_20", "latency", "p99_ms")),
    ("N=1000, 200 updates/s: acknowledged writes/s", _at("paced", "n1000_200", "writes_per_s")),
    ("N=1000, 200 updates/s: deliveries/s", _at("paced", "n1000_200", "deliveries_per_s")),
    ("N=1000, 200 updates/s: p99 (ms)", _at("paced", "n1000_200", "latency", "p99_ms")),
    ("max acknowledged writes/s, 8 writers, N=1", _at("max_writes", "8", "writes_per_s")),
    ("server CPU per write, N=1, 200 updates/s (µs)",
     _at("paced", "n1_200", "server_cpu_us_per_write")),
    ("server peak RSS at N=1000 (MiB)", _peak_rss_at_1000),
]  # fmt: skip


def _ratio(a: Any, b: Any) -> str:
    if not isinstance(a, int | float) or not isinstance(b, int | float) or not b:
        return "-"
    return f"{a / b:.2f}x"


def _servers(peers: dict[str, Any]) -> list[str]:
    rows = []
    for name, server in peers.get("servers", {}).items():
        if not server.get("installed"):
            rows.append([name, f"**{server['note']}**", "", ""])
            continue
        durable = "yes" if server["durable"] else "no"
        rows.append([name, server["version"], WHAT.get(name, ""), durable])
    return _table(["peer", "server", "a write / a subscriber", "durable writes"], rows)


def _summary(results: dict[str, Any]) -> list[str]:
    servers = results.get("peers", {}).get("servers", {})
    missing = {name for name, server in servers.items() if not server.get("installed")}
    rows = []
    for label, figure in SUMMARY:
        values = {system: figure(results, system) for system, _ in SYSTEMS}
        rows.append(
            [label]
            + [
                "not installed" if system in missing else _fmt(values[system])
                for system, _ in SYSTEMS
            ]
            + [
                _ratio(values["headway"], values["etcd"]),
                _ratio(values["headway"], values["redis"]),
            ]
        )
    header = ["figure"] + [title for _, title in SYSTEMS] + ["Headway / etcd", "Headway / Redis"]
    return _table(header, rows)


def peers_lines(results: dict[str, Any]) -> list[str]:
    title = ["## Peers: etcd and Redis pub/sub", ""]
    if "peers_skipped" in results:
        return [*title, f"Not measured: {results['peers_skipped']}.", ""]
    peers = results.get("peers")
    if not peers:
        return []
    lines = [
        *title,
        "The same paced scenarios and max writes, with the same load generator's schedule and "
        "counting (64 agents, one call in flight each, every subscriber ready before the first "
        "write, the send time in every written value), against a private etcd and a private "
        "redis-server that the bench starts on a temporary directory and free ports. Each peer "
        f"runs once per scenario, with a {_fmt(peers['warmup_seconds'])} s warm-up and a "
        f"{_fmt(peers['window_seconds'])} s window ({_fmt(peers['max_window_seconds'])} s for "
        "max writes); Headway and the baseline are their runs of the sections above, in the "
        "same `make bench`. Install the peers with `apt-get install etcd-server redis-server`.",
        "",
        *_servers(peers),
        "### Side by side",
        "",
        *_summary(results),
        "Redis acknowledges a PUBLISH once the message is in every subscriber's output buffer "
        "and stores nothing, and the baseline stores nothing either: their write figures are "
        "not durable writes.",
        "",
    ]
    names = [name for name, server in peers["servers"].items() if server.get("installed")]
    titles = dict(SYSTEMS)
    for scenario in peers.get("paced", {}).values():
        lines += [f"### {scenario['title']} (peers)", ""]
        lines += _load_table([(titles[n], scenario.get(n, {})) for n in names], [])
    for agents, runs in peers.get("max_writes", {}).items():
        lines += [f"### Max writes, {agents} agents, N=1 (peers)", ""]
        lines += _load_table([(titles[n], runs.get(n, {})) for n in names], [])
    # One command line per peer: the runs differ only in their directory and ports.
    commands: dict[str, str] = {}
    for group in ("paced", "max_writes"):
        for runs in peers.get(group, {}).values():
            for name in names:
                command = runs.get(name, {}).get("server_command")
                if command:
                    commands.setdefault(name, command)
    if commands:
        lines += ["Peer servers, as started (a fresh directory and free ports per run):", ""]
        lines += ["```sh", *commands.values(), "```", ""]
    return lines
