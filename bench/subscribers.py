"""A load-generator process holding many Subscribe streams, and what it measures.

Streams share a few channels (each channel its own HTTP/2 connection), because
a Python client pays ~60 µs per received message and a connection per stream
would only add cost on the client's side of the same two cores. Responses are
taken as raw bytes; send times are found with one regex scan (see `wire`), and
the receive time is read once per response. Per (write, subscriber) pair whose
write was sent inside the window, the latency goes into one array; everything
received inside the window, whenever sent, counts as a delivery.
"""

from __future__ import annotations

import array
import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

import grpc

from bench.children import FAR_FUTURE_NS, Window, receive, run_child
from bench.identity import bearer
from bench.wire import MARKER, SUBSCRIBE
from headway.v1 import task_service_pb2

# Streams opened at once: a server refuses (CANCELLED) some of a burst of a thousand new
# streams on one connection, so they open in waves, each after the last has synced.
OPEN_WAVE = 250


@dataclass(frozen=True)
class SubscriberPlan:
    target: str
    streams: int
    connections: int
    ready_timeout: float = 60.0
    token: str | None = None
    # False: stop reading once synced, as a stalled reader does (the stream stays open).
    read: bool = True


@dataclass
class SubscriberReport:
    """What one subscriber process saw; latencies are nanoseconds, as array('q') bytes."""

    streams: int
    connections: int
    connect_seconds: float
    window_events: int = 0  # events of writes sent in the window (latency samples)
    received_in_window: int = 0  # events received in the window, whenever sent
    responses_in_window: int = 0
    short_streams: int = 0  # streams that got fewer window events than expected
    missing: int = 0  # expected minus received, summed over streams, never negative
    extra: int = 0  # received beyond expected, summed over streams
    errors: dict[str, int] = field(default_factory=dict)
    latencies: bytes = b""


class StreamCount:
    """What one stream received inside the window, and how it ended."""

    __slots__ = ("count", "error", "settled", "synced")

    def __init__(self) -> None:
        self.count = 0
        self.synced = False
        self.error: str | None = None
        self.settled = asyncio.Event()  # synced, or ended before it


class Tally:
    """Counters shared by the streams of one process (one event loop, no locks).

    The transport-neutral part of a subscriber process: the gRPC and the SSE
    load generators only differ in how they open streams and split what they
    receive; counting and reporting are this class's.
    """

    def __init__(self) -> None:
        self.t0 = FAR_FUTURE_NS
        self.t1 = FAR_FUTURE_NS
        self.received = 0
        self.responses = 0
        self.latencies = array.array("q")
        self.synced = 0
        self.all_synced = asyncio.Event()

    def mark_synced(self, stream: StreamCount, streams: int) -> None:
        """`stream` reached `synced`; all are ready once `streams` of them have."""
        if not stream.synced:
            stream.synced = True
            stream.settled.set()
            self.synced += 1
            if self.synced == streams:
                self.all_synced.set()

    def count(self, stream: StreamCount, data: bytes, now: int) -> None:
        """Count the writes whose send times (MARKER stamps) arrived in `data` at `now`."""
        stamps = MARKER.findall(data)
        if not stamps:
            return
        t0, t1 = self.t0, self.t1
        if t0 <= now < t1:
            self.received += len(stamps)
            self.responses += 1
        counted = 0
        latencies = self.latencies
        for stamp in stamps:
            sent = int(stamp)
            if t0 <= sent < t1:
                latencies.append(now - sent)
                counted += 1
        stream.count += counted

    def fill(self, report: SubscriberReport, streams: list[StreamCount], expected: int) -> None:
        """Put the figures of the finished window into `report`."""
        report.window_events = sum(s.count for s in streams)
        report.received_in_window = self.received
        report.responses_in_window = self.responses
        report.short_streams = sum(1 for s in streams if s.count < expected)
        report.missing = sum(max(0, expected - s.count) for s in streams)
        report.extra = sum(max(0, s.count - expected) for s in streams)
        report.errors = dict(
            Counter(s.error for s in streams if s.error and s.error != "CANCELLED_BY_BENCH")
        )
        report.latencies = self.latencies.tobytes()


def _has_synced(data: bytes) -> bool:
    response = task_service_pb2.SubscribeResponse.FromString(data)
    return any(event.HasField("synced") for event in response.events)


async def _watch(
    call: grpc.aio.UnaryStreamCall[bytes, bytes],
    stream: StreamCount,
    tally: Tally,
    streams: int,
    *,
    read: bool = True,
) -> None:
    try:
        async for data in call:
            now = time.monotonic_ns()
            if not stream.synced and _has_synced(data):
                tally.mark_synced(stream, streams)
                if not read:
                    await asyncio.Future()  # open, never read again, until cancelled
            tally.count(stream, data, now)
    except grpc.aio.AioRpcError as error:
        stream.error = error.code().name
        stream.settled.set()
    except asyncio.CancelledError:
        if stream.error is None:
            stream.error = "CANCELLED_BY_BENCH"
        raise


async def follow_window(conn: Connection, tally: Tally, streams: list[StreamCount]) -> int:
    """After "ready": count within the window the parent sends ("go"), then wait until
    every stream has the events it is told to expect ("drain"); returns that number.

    One protocol for every subscriber child (gRPC, SSE, the peers), so that their
    counts mean the same.
    """
    message = await receive(conn)
    if message[0] == "go":
        window: Window = message[1]
        tally.t0, tally.t1 = window.t0_ns, window.t1_ns
        message = await receive(conn)
    _, expected, timeout = message  # ("drain", expected events per stream, seconds)
    await drain(streams, expected, timeout)
    return int(expected)


async def drain(streams: list[StreamCount], expected: int, timeout: float) -> None:
    """Wait until every stream got `expected` window events or ended, or for `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(s.count >= expected or s.error is not None for s in streams):
            return
        await asyncio.sleep(0.02)


async def _main(conn: Connection, plan: SubscriberPlan) -> None:
    began = time.monotonic()
    channels = [
        grpc.aio.insecure_channel(
            plan.target,
            # A local subchannel pool gives every channel its own TCP connection.
            options=[("grpc.use_local_subchannel_pool", 1)],
        )
        for _ in range(plan.connections)
    ]
    request = task_service_pb2.SubscribeRequest().SerializeToString()
    tally = Tally()
    streams = [StreamCount() for _ in range(plan.streams)]
    calls = []
    watchers = []
    try:
        async with asyncio.timeout(plan.ready_timeout):
            for index, stream in enumerate(streams):
                if index and index % OPEN_WAVE == 0:
                    wave = streams[index - OPEN_WAVE : index]
                    await asyncio.gather(*(s.settled.wait() for s in wave))
                channel = channels[index % len(channels)]
                subscribe = channel.unary_stream(SUBSCRIBE)  # raw bytes in and out
                call: grpc.aio.UnaryStreamCall[bytes, bytes] = subscribe(
                    request, metadata=bearer(plan.token)
                )
                calls.append(call)
                watchers.append(
                    asyncio.create_task(_watch(call, stream, tally, plan.streams, read=plan.read))
                )
            await tally.all_synced.wait()
    except TimeoutError:
        failed = Counter(s.error for s in streams if s.error)
        raise RuntimeError(
            f"only {tally.synced} of {plan.streams} streams synced; errors: {dict(failed)}"
        ) from None
    report = SubscriberReport(plan.streams, plan.connections, time.monotonic() - began)
    conn.send(("ready", report.connect_seconds))

    expected = await follow_window(conn, tally, streams)

    for call in calls:
        call.cancel()
    for watcher in watchers:
        watcher.cancel()  # a stream that stopped reading waits on nothing the call ends
    await asyncio.gather(*watchers, return_exceptions=True)
    for channel in channels:
        await channel.close(None)
    tally.fill(report, streams, expected)
    conn.send(("report", report))


def subscriber_process(conn: Connection, plan: SubscriberPlan) -> None:
    """Child entry point: open the streams, report ready, measure the window, report."""
    run_child(conn, lambda: _main(conn, plan))
