"""One load run: a fresh server, subscribers, then writers, measured over one window.

Order matters: the server starts on an empty database; every subscriber
stream is open and past its `synced` marker before any writer is even
started; writers create their tasks, then all children start on one shared
schedule (warm-up, measured window). Server and children CPU are read with
psutil at the window's edges, server RSS every 100 ms from start to stop.
After the window each subscriber waits until it has every write acknowledged
in the window (or the drain timeout passes); what is still missing is lost.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.children import Child, Window
from bench.servers import (
    RssSampler,
    ServerProcess,
    ServerSpec,
    cpu_seconds,
    established_connections,
    machine_busy_seconds,
    main_thread_cpu_seconds,
)
from bench.sse import SsePlan, sse_subscriber_process
from bench.stats import merge, mib, split, summary_ms
from bench.subscribers import SubscriberPlan, SubscriberReport, subscriber_process
from bench.writers import WriterPlan, WriterReport, writer_process


@dataclass(frozen=True)
class LoadSpec:
    """The load: N subscribers over processes and connections, W agents, a rate or none."""

    subscribers: int
    agents: int
    rate: float | None  # total updates/s; None: as fast as acknowledgements allow
    warmup: float
    duration: float
    drain_timeout: float
    subscriber_procs: int = 1
    connections_per_proc: int = 1
    writer_procs: int = 1
    # With authentication: each writer process's token (cycled), the subscribers' token.
    writer_tokens: tuple[str, ...] = ()
    subscriber_token: str | None = None
    # Each writer process's own rate (None: as fast as acks allow), instead of a share of `rate`.
    writer_rates: tuple[float | None, ...] | None = None
    # How subscribers watch: "grpc" (Subscribe) or "sse" (the HTTP gateway's GET /v1/events).
    transport: str = "grpc"
    # Streams that watch every task but stop reading once synced (stalled readers):
    # nothing is measured on them but what they cost the writers.
    idle_subscribers: int = 0
    idle_procs: int = 1


def _sleep_until(deadline_ns: int) -> None:
    delay = (deadline_ns - time.monotonic_ns()) / 1e9
    if delay > 0:
        time.sleep(delay)


def _start_subscribers(load: LoadSpec, server: ServerProcess, started: list[Child]) -> list[Child]:
    """Subscriber processes, all streams past `synced`; each is in `started` once it exists."""
    children = []
    procs = min(load.subscriber_procs, load.subscribers)
    for i, streams in enumerate(split(load.subscribers, procs) if load.subscribers else []):
        if load.transport == "sse":
            sse = SsePlan(server.http_url, streams, token=load.subscriber_token)
            children.append(Child(f"subscribers-{i}", sse_subscriber_process, sse))
            started.append(children[-1])
            continue
        plan = SubscriberPlan(
            server.target,
            streams,
            min(load.connections_per_proc, streams),
            token=load.subscriber_token,
        )
        children.append(Child(f"subscribers-{i}", subscriber_process, plan))
        started.append(children[-1])
    for child in children:
        child.expect("ready", 120)
    return children


def _start_idle(load: LoadSpec, server: ServerProcess, started: list[Child]) -> list[Child]:
    """The idle streams' processes (one connection each), all streams past `synced`."""
    children = []
    procs = min(load.idle_procs, load.idle_subscribers)
    for i, streams in enumerate(split(load.idle_subscribers, procs) if procs else []):
        plan = SubscriberPlan(server.target, streams, 1, token=load.subscriber_token, read=False)
        children.append(Child(f"idle-subscribers-{i}", subscriber_process, plan))
        started.append(children[-1])
    for child in children:
        child.expect("ready", 120)
    return children


def _start_writers(load: LoadSpec, target: str, started: list[Child]) -> list[Child]:
    """Writer processes with their agents' tasks created; each is in `started` once it exists."""
    children = []
    for i, agents in enumerate(split(load.agents, load.writer_procs)):
        rate = None if load.rate is None else load.rate * agents / load.agents
        if load.writer_rates is not None:
            rate = load.writer_rates[i]
        token = load.writer_tokens[i % len(load.writer_tokens)] if load.writer_tokens else None
        plan = WriterPlan(target, i, agents, rate, token)
        children.append(Child(f"writers-{i}", writer_process, plan))
        started.append(children[-1])
    for child in children:
        child.expect("ready", 60)
    return children


@dataclass(frozen=True)
class _CpuSample:
    """CPU seconds so far: per process, the server's event-loop thread, the whole machine."""

    processes: dict[str, float]
    server_loop: float
    machine: float

    @staticmethod
    def take(pids: dict[str, int]) -> _CpuSample:
        return _CpuSample(
            {name: cpu_seconds(pid) for name, pid in pids.items()},
            main_thread_cpu_seconds(pids["server"]),
            machine_busy_seconds(),
        )

    def cores_until(self, end: _CpuSample, seconds: float) -> dict[str, float]:
        cores = {
            name: (end.processes[name] - before) / seconds
            for name, before in self.processes.items()
        }
        # Whatever else ran on the machine: other jobs, not the benchmark's processes.
        cores["other"] = max(0.0, (end.machine - self.machine) / seconds - sum(cores.values()))
        cores["server_loop"] = (end.server_loop - self.server_loop) / seconds
        return cores


def run_load(server_spec: ServerSpec, load: LoadSpec, workdir: Path) -> dict[str, Any]:
    """Run one load against a fresh server; the figures as a JSON-ready dict."""
    shutil.rmtree(workdir, ignore_errors=True)
    server = ServerProcess(server_spec, workdir, workdir / "headway.db").start()
    sampler = RssSampler(server.pid).start()
    children: list[Child] = []
    failed = True
    try:
        subscribers = _start_subscribers(load, server, children)
        idle = _start_idle(load, server, children)
        writers = _start_writers(load, server.target, children)

        window = Window.after(0.3, load.warmup, load.duration)
        for child in children:
            child.send(("go", window))
        pids = {"server": server.pid} | {child.name: child.pid for child in children}
        _sleep_until(window.t0_ns)
        start = _CpuSample.take(pids)
        _sleep_until((window.t0_ns + window.t1_ns) // 2)
        connections = established_connections(server.pid)
        _sleep_until(window.t1_ns)
        cores = start.cores_until(_CpuSample.take(pids), window.seconds)

        writer_reports: list[WriterReport] = [
            child.expect("report", 60 + load.drain_timeout) for child in writers
        ]
        expected = sum(report.acked_in_window for report in writer_reports)
        for child in subscribers:
            child.send(("drain", expected, load.drain_timeout))
        sub_reports: list[SubscriberReport] = [
            child.expect("report", 60 + load.drain_timeout) for child in subscribers
        ]
        for child in idle:
            child.send(("drain", 0, 0.0))
        idle_reports: list[SubscriberReport] = [child.expect("report", 60) for child in idle]
        failed = False
    finally:
        for child in children:
            child.stop(1 if failed else 10)
        peak_rss = sampler.stop()
        server.stop()
    figures = _figures(
        server, load, window.seconds, writer_reports, sub_reports, cores, peak_rss, connections
    )
    if load.idle_subscribers:
        figures["idle_subscribers"] = load.idle_subscribers
        figures["idle_stream_errors"] = dict(
            sum((Counter(r.errors) for r in idle_reports), Counter())
        )
    return figures


def _figures(
    server: ServerProcess,
    load: LoadSpec,
    seconds: float,
    writer_reports: list[WriterReport],
    sub_reports: list[SubscriberReport],
    cpu: dict[str, float],
    peak_rss: int,
    connections: int,
) -> dict[str, Any]:
    acked = sum(report.acked_in_window for report in writer_reports)
    writes_per_s = acked / seconds
    delivered = sum(r.received_in_window for r in sub_reports)
    responses = sum(r.responses_in_window for r in sub_reports)
    server_cpu = cpu["server"]
    writer_errors: dict[str, int] = {}
    for w in writer_reports:
        for code, count in w.errors.items():
            writer_errors[code] = writer_errors.get(code, 0) + count
    stream_errors: dict[str, int] = {}
    for s in sub_reports:
        for code, count in s.errors.items():
            stream_errors[code] = stream_errors.get(code, 0) + count
    latency = summary_ms(merge(r.latencies for r in sub_reports))
    ack = summary_ms(merge(w.ack_latencies for w in writer_reports))
    return {
        "server": server.spec.kind,
        "server_command": " ".join(server.command[1:]),
        "subscribers": load.subscribers,
        "transport": load.transport,
        "agents": load.agents,
        "target_rate": load.rate,
        "seconds": round(seconds, 3),
        "acked_writes": acked,
        "writes_per_s": round(writes_per_s, 1),
        "deliveries_per_s": round(delivered / seconds, 1),
        "expected_deliveries": acked * load.subscribers,
        "received_deliveries": sum(r.window_events for r in sub_reports),
        "lost_deliveries": sum(r.missing for r in sub_reports),
        "streams_short": sum(r.short_streams for r in sub_reports),
        "extra_deliveries": sum(r.extra for r in sub_reports),
        "events_per_response": round(delivered / responses, 2) if responses else None,
        "responses_per_s": round(responses / seconds, 1),
        "latency": latency,
        "ack_latency": ack,
        "writer_max_lag_ms": round(max((w.max_lag_ms for w in writer_reports), default=0), 2),
        "writer_errors": writer_errors,
        "stream_errors": stream_errors,
        "server_cpu_cores": round(server_cpu, 3),
        "server_cpu_us_per_write": round(server_cpu * 1e6 / writes_per_s, 1)
        if writes_per_s
        else None,
        "server_cpu_us_per_delivery": round(server_cpu * 1e6 * seconds / delivered, 2)
        if delivered
        else None,
        "server_loop_cpu_cores": round(cpu["server_loop"], 3),
        "server_peak_rss_mib": mib(peak_rss),
        "writer_cpu_cores": round(sum(v for k, v in cpu.items() if k.startswith("writers")), 3),
        "subscriber_cpu_cores": round(
            sum(v for k, v in cpu.items() if k.startswith("subscribers")), 3
        ),
        "other_cpu_cores": round(cpu["other"], 3),
        "subscriber_procs": len(sub_reports),
        "subscriber_connections": sum(r.connections for r in sub_reports),
        "writer_procs": len(writer_reports),
        "server_connections": connections,
        "per_writer": [
            {
                "writes_per_s": round(w.acked_in_window / seconds, 1),
                "ack_latency": summary_ms(merge([w.ack_latencies])),
                "errors": w.errors,
            }
            for w in writer_reports
        ],
    }
