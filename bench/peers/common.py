"""What the peers share: the server process, the load generator's loops, one load run.

The writer and subscriber loops keep the Headway generator's semantics
(`bench.writers`, `bench.subscribers`): agent i of W sends at start + (i + kW)/R
with at most one call in flight; every subscriber is ready (its watch or
subscription confirmed) before the first write; what is sent in the window is
measured, then subscribers drain until they have every acknowledged write.
Only the calls differ, which each peer supplies as a `WriterClient` and a
`SubscriberSession`.
"""

from __future__ import annotations

import array
import asyncio
import os
import re
import shlex
import shutil
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

from bench.children import Child, Window, receive
from bench.load import LoadSpec, _CpuSample, _figures, _sleep_until
from bench.servers import RssSampler, ServerProcess, ServerSpec, established_connections
from bench.stats import split
from bench.subscribers import (
    StreamCount,
    SubscriberPlan,
    SubscriberReport,
    Tally,
    follow_window,
)
from bench.writers import WriterPlan, WriterReport, write_on_schedule

# Pads each written value to about the size of the step message Headway's agents send.
_FILLER = "processed a chunk of input; stage 2 of 3, writing partial results to the cache"


def value(seq: int, send_ns: int) -> bytes:
    """A written value: the filler, the agent's sequence number and the send-time marker."""
    return f"{_FILLER} #{seq} @T{send_ns:019d}".encode()


def error_name(error: BaseException) -> str:
    """A failed call's name for the reports: the gRPC status code, else the exception's class."""
    code = getattr(error, "code", None)
    if callable(code):
        status = code()
        name = getattr(status, "name", None)
        if isinstance(name, str):
            return name
    return type(error).__name__


def free_ports(count: int) -> list[int]:
    """`count` distinct free TCP ports on 127.0.0.1 (held open together while chosen)."""
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


@dataclass(frozen=True)
class Peer:
    """A server Headway is compared with, and how the load generator talks to it."""

    name: str  # "etcd", "redis": the key in results.json
    title: str
    binary: str
    package: str  # the Debian package that installs `binary`
    durable: bool  # is an acknowledged write on disk?
    ports: int  # free ports the command needs; the first is the clients'
    ready: re.Pattern[str]  # the log line that says it serves clients
    command: Callable[[str, Path, list[int]], list[str]]  # (binary path, workdir, ports)
    writer: Callable[[Connection, WriterPlan], None]  # child entry points
    subscriber: Callable[[Connection, SubscriberPlan], None]

    def path(self) -> str | None:
        return shutil.which(self.binary)

    def not_installed(self) -> str:
        return f"not installed (apt-get install {self.package})"

    def version(self) -> str:
        path = self.path()
        if path is None:
            return self.not_installed()
        done = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
        return (done.stdout or done.stderr).strip().splitlines()[0]


class PeerProcess(ServerProcess):
    """A peer's server on free loopback ports and a data directory of its own in `workdir`."""

    def __init__(self, peer: Peer, workdir: Path) -> None:
        path = peer.path()
        if path is None:
            raise RuntimeError(f"{peer.binary}: {peer.not_installed()}")
        super().__init__(ServerSpec(peer.name), workdir, workdir / "data")
        self.peer = peer
        self.ports = free_ports(peer.ports)
        self.port = self.ports[0]
        # The peer's own command line, not a Headway one: the spec only names the kind.
        self.command = peer.command(path, workdir, self.ports)
        self.log_path = workdir / f"{peer.name}.log"

    def start(self, timeout: float = 60.0) -> PeerProcess:
        """Start and wait for the peer's ready line; a failure raises with the log's tail."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ)
            )
        deadline = began + timeout
        while time.monotonic() < deadline:
            if self.peer.ready.search(self.log_path.read_text(errors="replace")):
                self.start_seconds = time.monotonic() - began
                return self
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.peer.name} exited early with status {self.process.returncode}:\n"
                    f"{self.log_text()}"
                )
            time.sleep(0.02)
        self.stop()
        raise TimeoutError(f"{self.peer.name} did not start in {timeout:.0f} s:\n{self.log_text()}")


class WriterClient(Protocol):
    """One writer process's connection to a peer."""

    async def ready(self) -> None:
        """Return once the peer answers a request."""

    async def send(self, agent: int, seq: int, send_ns: int) -> None:
        """Write agent `agent`'s update `seq`; return once the peer acknowledged it."""

    async def close(self) -> None: ...


class SubscriberSession(Protocol):
    """One subscriber process's connections to a peer."""

    connections: int

    async def watch(self, index: int, stream: StreamCount, tally: Tally, streams: int) -> None:
        """Open subscriber `index`, mark it synced once confirmed, count what arrives."""

    async def close(self) -> None: ...


def _sender(client: WriterClient, agent: int) -> Callable[[int], Awaitable[None]]:
    """Agent `agent`'s writes through `client`, numbered from 1."""
    seq = 0

    async def send(sent_ns: int) -> None:
        nonlocal seq
        seq += 1
        await client.send(agent, seq, sent_ns)

    return send


async def writer_main(conn: Connection, plan: WriterPlan, client: WriterClient) -> None:
    """A writer child: wait for the peer, report ready, write on schedule, report."""
    await client.ready()
    conn.send(("ready", plan.agents))
    _, window = await receive(conn)
    report = WriterReport(plan.agents)
    latencies: array.array[int] = array.array("q")
    errors: Counter[str] = Counter()
    start = window.start_ns / 1e9
    period = None if plan.rate is None else plan.agents / plan.rate
    await asyncio.gather(
        *(
            write_on_schedule(
                _sender(client, i),
                error_name,
                window,
                report,
                latencies,
                errors,
                start + (0 if plan.rate is None else i / plan.rate),
                period,
            )
            for i in range(plan.agents)
        )
    )
    await client.close()
    report.errors = dict(errors)
    report.ack_latencies = latencies.tobytes()
    conn.send(("report", report))


async def _guarded(
    session: SubscriberSession, index: int, stream: StreamCount, tally: Tally, streams: int
) -> None:
    try:
        await session.watch(index, stream, tally, streams)
    except asyncio.CancelledError:
        if stream.error is None:
            stream.error = "CANCELLED_BY_BENCH"
        raise
    except Exception as error:
        stream.error = error_name(error)


async def subscriber_main(
    conn: Connection, plan: SubscriberPlan, session: SubscriberSession
) -> None:
    """A subscriber child: `bench.subscribers._main` with the peer's subscriptions."""
    began = time.monotonic()
    tally = Tally()
    streams = [StreamCount() for _ in range(plan.streams)]
    watchers = [
        asyncio.create_task(_guarded(session, index, stream, tally, plan.streams))
        for index, stream in enumerate(streams)
    ]
    try:
        async with asyncio.timeout(plan.ready_timeout):
            await tally.all_synced.wait()
    except TimeoutError:
        failed = Counter(s.error for s in streams if s.error)
        raise RuntimeError(
            f"only {tally.synced} of {plan.streams} subscribers ready; errors: {dict(failed)}"
        ) from None
    report = SubscriberReport(plan.streams, session.connections, time.monotonic() - began)
    conn.send(("ready", report.connect_seconds))

    expected = await follow_window(conn, tally, streams)

    for watcher in watchers:
        watcher.cancel()
    await asyncio.gather(*watchers, return_exceptions=True)
    await session.close()
    tally.fill(report, streams, expected)
    conn.send(("report", report))


def run_peer_load(peer: Peer, load: LoadSpec, workdir: Path) -> dict[str, Any]:
    """`bench.load.run_load` against a fresh peer server; the same figures, the same order."""
    shutil.rmtree(workdir, ignore_errors=True)
    server = PeerProcess(peer, workdir).start()
    sampler = RssSampler(server.pid).start()
    children: list[Child] = []
    failed = True
    try:
        subscribers = []
        procs = min(load.subscriber_procs, load.subscribers)
        for i, streams in enumerate(split(load.subscribers, procs) if load.subscribers else []):
            plan = SubscriberPlan(
                server.target, streams, min(load.connections_per_proc, streams), 120.0
            )
            subscribers.append(Child(f"subscribers-{i}", peer.subscriber, plan))
            children.append(subscribers[-1])
        for child in subscribers:
            child.expect("ready", 150)
        writers = []
        for i, agents in enumerate(split(load.agents, load.writer_procs)):
            rate = None if load.rate is None else load.rate * agents / load.agents
            writers.append(
                Child(f"writers-{i}", peer.writer, WriterPlan(server.target, i, agents, rate))
            )
            children.append(writers[-1])
        for child in writers:
            child.expect("ready", 60)

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
        failed = False
    finally:
        for child in children:
            child.stop(1 if failed else 10)
        peak_rss = sampler.stop()
        server.stop()
        shutil.rmtree(workdir / "data", ignore_errors=True)
    figures = _figures(
        server, load, window.seconds, writer_reports, sub_reports, cores, peak_rss, connections
    )
    figures["server_command"] = shlex.join(server.command)
    return figures
