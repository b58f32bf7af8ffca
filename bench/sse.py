"""A load-generator process holding many browser-like SSE streams (`GET /v1/events`).

Each stream is what a browser's EventSource opens: its own HTTP/1.1 connection
and one `text/event-stream` response, where every event is `id:`, `event:` and
one `data:` line (the Event as JSON) and a blank line. Like `subscribers`, it
keeps the receiving side cheap: the send time the writer embedded in the step
message (`@T` and 19 digits, see `wire`) appears verbatim in the JSON, so each
chunk read is scanned for it with the same regex, once, as raw bytes; the
JSON itself is parsed only until the stream's `synced` event. The report is a
`SubscriberReport`, so the figures are computed exactly as for gRPC streams.
"""

from __future__ import annotations

import array
import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass
from multiprocessing.connection import Connection

import aiohttp

from bench.children import FAR_FUTURE_NS, Window, receive, run_child
from bench.subscribers import SubscriberReport
from bench.wire import MARKER

EVENTS_PATH = "/v1/events"


@dataclass(frozen=True)
class SsePlan:
    base_url: str  # http://host:port
    streams: int
    ready_timeout: float = 60.0
    token: str | None = None


class _Stream:
    __slots__ = ("count", "error", "synced")

    def __init__(self) -> None:
        self.count = 0
        self.synced = False
        self.error: str | None = None


class _Tally:
    def __init__(self) -> None:
        self.t0 = FAR_FUTURE_NS
        self.t1 = FAR_FUTURE_NS
        self.received = 0
        self.responses = 0
        self.latencies = array.array("q")
        self.synced = 0
        self.all_synced = asyncio.Event()


def _has_synced(events: bytes) -> bool:
    """Whether complete events hold the `synced` marker: by its event name or its JSON."""
    for block in events.split(b"\n\n"):
        for line in block.split(b"\n"):
            if line.startswith(b"event:") and line[6:].strip() == b"synced":
                return True
            if line.startswith(b"data:"):
                try:
                    event = json.loads(line[5:])
                except ValueError:
                    continue
                if isinstance(event, dict) and "synced" in event:
                    return True
    return False


async def _watch(
    session: aiohttp.ClientSession,
    plan: SsePlan,
    stream: _Stream,
    tally: _Tally,
) -> None:
    headers = {"Accept": "text/event-stream"}
    if plan.token:
        headers["Authorization"] = f"Bearer {plan.token}"
    latencies = tally.latencies
    pending = b""
    try:
        async with session.get(plan.base_url + EVENTS_PATH, headers=headers) as response:
            if response.status != 200:
                stream.error = f"HTTP_{response.status}"
                return
            async for chunk in response.content.iter_any():
                now = time.monotonic_ns()
                pending += chunk
                end = pending.rfind(b"\n\n")
                if end < 0:
                    continue
                complete, pending = pending[: end + 2], pending[end + 2 :]
                if not stream.synced and _has_synced(complete):
                    stream.synced = True
                    tally.synced += 1
                    if tally.synced == plan.streams:
                        tally.all_synced.set()
                stamps = MARKER.findall(complete)
                if not stamps:
                    continue
                t0, t1 = tally.t0, tally.t1
                if t0 <= now < t1:
                    tally.received += len(stamps)
                    tally.responses += 1
                counted = 0
                for stamp in stamps:
                    sent = int(stamp)
                    if t0 <= sent < t1:
                        latencies.append(now - sent)
                        counted += 1
                stream.count += counted
        if stream.error is None:
            stream.error = "ENDED"
    except aiohttp.ClientError as error:
        stream.error = type(error).__name__
    except asyncio.CancelledError:
        if stream.error is None:
            stream.error = "CANCELLED_BY_BENCH"
        raise


async def _drain(streams: list[_Stream], expected: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(s.count >= expected or s.error is not None for s in streams):
            return
        await asyncio.sleep(0.02)


async def _main(conn: Connection, plan: SsePlan) -> None:
    began = time.monotonic()
    # One connection per stream, as N browsers would have; no pool limit, no timeout.
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, force_close=True),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
    )
    tally = _Tally()
    streams = [_Stream() for _ in range(plan.streams)]
    watchers = [asyncio.create_task(_watch(session, plan, s, tally)) for s in streams]
    try:
        try:
            async with asyncio.timeout(plan.ready_timeout):
                await tally.all_synced.wait()
        except TimeoutError:
            failed = Counter(s.error for s in streams if s.error)
            raise RuntimeError(
                f"only {tally.synced} of {plan.streams} SSE streams synced; errors: {dict(failed)}"
            ) from None
        report = SubscriberReport(plan.streams, plan.streams, time.monotonic() - began)
        conn.send(("ready", report.connect_seconds))

        message = await receive(conn)
        if message[0] == "go":
            window: Window = message[1]
            tally.t0, tally.t1 = window.t0_ns, window.t1_ns
            message = await receive(conn)
        _, expected, timeout = message  # ("drain", expected events per stream, seconds)
        await _drain(streams, expected, timeout)
    finally:
        for watcher in watchers:
            watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        await session.close()
    report.window_events = sum(s.count for s in streams)
    report.received_in_window = tally.received
    report.responses_in_window = tally.responses
    report.short_streams = sum(1 for s in streams if s.count < expected)
    report.missing = sum(max(0, expected - s.count) for s in streams)
    report.extra = sum(max(0, s.count - expected) for s in streams)
    report.errors = dict(
        Counter(s.error for s in streams if s.error and s.error != "CANCELLED_BY_BENCH")
    )
    report.latencies = tally.latencies.tobytes()
    conn.send(("report", report))


def sse_subscriber_process(conn: Connection, plan: SsePlan) -> None:
    """Child entry point: open the SSE streams, report ready, measure the window, report."""
    run_child(conn, lambda: _main(conn, plan))
