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

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass
from multiprocessing.connection import Connection

import aiohttp

from bench.children import run_child
from bench.subscribers import StreamCount, SubscriberReport, Tally, follow_window

EVENTS_PATH = "/v1/events"


@dataclass(frozen=True)
class SsePlan:
    base_url: str  # http://host:port
    streams: int
    ready_timeout: float = 60.0
    token: str | None = None


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
    stream: StreamCount,
    tally: Tally,
) -> None:
    headers = {"Accept": "text/event-stream"}
    if plan.token:
        headers["Authorization"] = f"Bearer {plan.token}"
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
                    tally.mark_synced(stream, plan.streams)
                tally.count(stream, complete, now)
        if stream.error is None:
            stream.error = "ENDED"
    except aiohttp.ClientError as error:
        stream.error = type(error).__name__
    except asyncio.CancelledError:
        if stream.error is None:
            stream.error = "CANCELLED_BY_BENCH"
        raise


async def _main(conn: Connection, plan: SsePlan) -> None:
    began = time.monotonic()
    # One connection per stream, as N browsers would have; no pool limit, no timeout.
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, force_close=True),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
    )
    tally = Tally()
    streams = [StreamCount() for _ in range(plan.streams)]
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

        expected = await follow_window(conn, tally, streams)
    finally:
        for watcher in watchers:
            watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        await session.close()
    tally.fill(report, streams, expected)
    conn.send(("report", report))


def sse_subscriber_process(conn: Connection, plan: SsePlan) -> None:
    """Child entry point: open the SSE streams, report ready, measure the window, report."""
    run_child(conn, lambda: _main(conn, plan))
