"""The figures that are not a load run: idle memory, start-up, catch-up.

- Memory per idle subscriber: the server's RSS with N idle streams open (all
  past `synced`) minus its RSS before, over N. Each figure is the median of a
  few samples taken after the process settles, so a transient allocation does
  not count.
- Start-up: seconds from spawning the server until it logs that it serves,
  and its RSS then, on an empty database and on the large history.
- Catch-up: a subscriber resuming from revision 0 over the whole history, in
  events/s, with the server's CPU over the replay.
"""

from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from bench.catchup import CatchUpPlan, CatchUpReport, catchup_process
from bench.children import Child
from bench.servers import RssSampler, ServerProcess, ServerSpec, cpu_seconds, rss_bytes
from bench.stats import mib, split
from bench.subscribers import SubscriberPlan, subscriber_process


def settled_rss(pid: int, samples: int = 5, interval: float = 0.1) -> int:
    """The median of a few RSS samples, after a short pause."""
    time.sleep(0.5)
    values = []
    for _ in range(samples):
        values.append(rss_bytes(pid))
        time.sleep(interval)
    return int(statistics.median(values))


def idle_memory(
    spec: ServerSpec, subscribers: int, procs: int, connections: int, workdir: Path
) -> dict[str, Any]:
    """RSS per idle subscriber: (RSS with N idle streams - RSS before) / N."""
    shutil.rmtree(workdir, ignore_errors=True)
    children: list[Child] = []
    with ServerProcess(spec, workdir, workdir / "headway.db").start() as server:
        before = settled_rss(server.pid)
        try:
            for i, streams in enumerate(split(subscribers, procs)):
                plan = SubscriberPlan(server.target, streams, min(connections, streams))
                children.append(Child(f"idle-subscribers-{i}", subscriber_process, plan))
            for child in children:
                child.expect("ready", 120)
            after = settled_rss(server.pid)
            for child in children:
                child.send(("drain", 0, 0.0))
            for child in children:
                child.expect("report", 60)
        finally:
            for child in children:
                child.stop()
    return {
        "server": spec.kind,
        "subscribers": subscribers,
        "connections": sum(min(connections, n) for n in split(subscribers, procs)),
        "rss_before_mib": mib(before),
        "rss_after_mib": mib(after),
        "kib_per_subscriber": round((after - before) / subscribers / 1024, 1),
    }


def start_time(spec: ServerSpec, database: Path, workdir: Path) -> dict[str, Any]:
    """Seconds until the server serves, on a given database, and its RSS then."""
    with ServerProcess(spec, workdir, database).start() as server:
        rss = rss_bytes(server.pid)
        return {"start_seconds": round(server.start_seconds, 3), "rss_mib": mib(rss)}


def start_and_catch_up(
    spec: ServerSpec, database: Path, head: int, workdir: Path
) -> dict[str, Any]:
    """Start on the history (timed), then replay it all to a subscriber from revision 0."""
    with ServerProcess(spec, workdir, database).start() as server:
        started = server.start_seconds
        rss_started = rss_bytes(server.pid)
        sampler = RssSampler(server.pid).start()
        child = Child("catch-up", catchup_process, CatchUpPlan(server.target, 0, head))
        try:
            child.expect("ready", 60)
            cpu_before = cpu_seconds(server.pid)
            child.send(("go", None))
            report: CatchUpReport = child.expect("report", 600)
            cpu = cpu_seconds(server.pid) - cpu_before
        finally:
            child.stop()
            peak = sampler.stop()
    return {
        "history_events": head,
        "start_seconds": round(started, 3),
        "rss_after_start_mib": mib(rss_started),
        "catch_up_events": report.events,
        "catch_up_seconds": round(report.seconds, 3),
        "catch_up_events_per_s": round(report.events / report.seconds, 1),
        "catch_up_mib_per_s": round(report.bytes / report.seconds / (1 << 20), 1),
        "catch_up_first_response_ms": round(report.first_response_seconds * 1e3, 1),
        "catch_up_server_cpu_seconds": round(cpu, 3),
        "catch_up_peak_rss_mib": mib(peak),
        "last_revision": report.last_revision,
    }
