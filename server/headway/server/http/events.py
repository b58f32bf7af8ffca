"""`GET /v1/events`: a change feed as Server-Sent Events.

The feed is the one behind gRPC's Subscribe (`feed.ChangeFeed`): a snapshot or
the history after the resume point, then live changes, gapless and without
duplicates. Each event is

    id: <the tenant's revision: the resume point>
    event: snapshot | created | updated | deleted | logs | synced | heartbeat | resync
    data: <the headway.v1.Event as canonical JSON, on one line>

Snapshot and resync events carry no `id:` (a browser keeps the previous one):
only once `synced` arrives is the snapshot whole, so a reconnection in the
middle of it starts it again instead of skipping the rest. A reconnecting
EventSource sends `Last-Event-ID`, and the stream resumes after it, from the
store, across server restarts. When the feed ends in error (the reader fell
too far behind, the server shuts down, the history it needs was compacted and
it asked to fail) the last event is `event: error` with the google.rpc.Status.
With `slowConsumer=conflate` a reader that falls behind is kept and receives a
conflated batch instead (each event's data then carries `conflation`), as over
gRPC: the policy lives in the feed, not here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from functools import lru_cache

from aiohttp import web
from google.protobuf import json_format
from multidict import MultiDict, MultiMapping

from headway.server.auth.context import current_principal, current_recheck
from headway.server.errors import HeadwayError, Kind
from headway.server.feed import ChangeFeed, Emitted
from headway.server.http.codec import FILTER_PARAMS, Param
from headway.server.http.errors import dumps, status_json
from headway.server.http.gateway import Gateway
from headway.server.hub import SharedBatch
from headway.server.stream import CredentialWatch, Heartbeats
from headway.v1 import event_pb2

logger = logging.getLogger(__name__)

EVENT_QUERY: dict[str, Param] = {
    **FILTER_PARAMS,
    "includeLogs": Param(("includeLogs",), boolean=True),
    "endAtRest": Param(("endAtRest",), boolean=True),
    "heartbeat": Param(("heartbeatInterval",)),
    "onCompacted": Param(("onCompacted",), prefix="COMPACTED_POLICY_"),
    "slowConsumer": Param(("slowConsumer",), prefix="SLOW_CONSUMER_POLICY_"),
    "lastEventId": Param(("startRevision",)),
}
DEFAULT_HEARTBEAT = "15s"
RETRY_MS = 2000
# How long a reader that stopped reading gets to take the final `event: error`.
FAREWELL_SECONDS = 30.0
# How often a blocked write checks whether its feed has been ended.
EVICTION_CHECK_SECONDS = 0.2
# A write that leaves fewer bytes than this waiting in the socket buffer stays below
# the transport's high-water mark (64 KiB), so it returns without waiting for the
# reader and needs no watch for the end of the feed.
WRITE_BUFFER_LOW = 32 * 1024

EVENT_NAMES = {
    "snapshot": "snapshot",
    "created": "created",
    "updated": "updated",
    "deleted": "deleted",
    "logs_appended": "logs",
    "synced": "synced",
    "heartbeat": "heartbeat",
    "resync": "resync",
}
# A snapshot is a resume point only once it is whole (see the module's documentation).
NO_ID = frozenset({"snapshot", "resync"})


def encode(items: Sequence[Emitted]) -> bytes:
    """A batch as Server-Sent Events, written at once; once per shared batch (see hub)."""
    if isinstance(items, SharedBatch):
        encoded = items.memo.get("sse")
        if not isinstance(encoded, bytes):
            encoded = items.memo["sse"] = _encode(items)
        return encoded
    return _encode(items)


def _encode(items: Sequence[Emitted]) -> bytes:
    return b"".join(_event_block(item.revision, item.data) for item in items) + b"\n"


@lru_cache(maxsize=8192)
def _event_block(revision: int, data: bytes) -> bytes:
    """One change as an SSE block, encoded once for every stream that carries it.

    Every subscriber of a change holds the same `data` object, whose hash Python
    computes once, so after the first stream each one pays a dictionary lookup
    instead of a protobuf-to-JSON conversion.
    """
    event = event_pb2.Event.FromString(data)
    kind = event.WhichOneof("kind") or "unknown"
    lines = [f"id: {revision}"] if kind not in NO_ID else []
    lines.append(f"event: {EVENT_NAMES.get(kind, kind)}")
    lines.append(f"data: {dumps(json_format.MessageToDict(event))}")
    return ("\n".join(lines) + "\n\n").encode()


def encode_error(error: HeadwayError) -> bytes:
    return f"event: error\ndata: {dumps(status_json(error))}\n\n".encode()


class EventStream:
    """Serves `GET /v1/events` for `gateway`."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    async def handle(self, request: web.Request) -> web.StreamResponse:
        query: MultiMapping[str] = request.query
        last_event_id = request.headers.get("Last-Event-ID", "").strip()
        defaults: dict[str, object] = {"heartbeatInterval": DEFAULT_HEARTBEAT}
        if last_event_id:
            # The browser's resume point wins over the parameter of its first connection.
            defaults["startRevision"] = last_event_id
            query = MultiDict((k, v) for k, v in query.items() if k != "lastEventId")
        admitted = self._gateway.subscription(request, query, EVENT_QUERY, defaults)
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        ended: HeadwayError | None = None
        with self._gateway.service.streams.hold(admitted.tenant):
            feed = self._gateway.feed(admitted)
            with feed:
                # Refusals that need the store (a revision in the future, a compacted
                # one with onCompacted=fail) are answered before the stream starts.
                feed.begin()
                await response.prepare(request)
                try:
                    await response.write(f"retry: {RETRY_MS}\n\n".encode())
                    ended = await self._pump(feed, request, response, admitted.heartbeat)
                except (ConnectionError, asyncio.CancelledError):
                    return response
        # Out of the feed and the quota: a reader that stopped reading holds nothing else.
        if ended is not None:
            await self._farewell(request, response, ended)
            return response
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response

    async def _pump(
        self,
        feed: ChangeFeed,
        request: web.Request,
        response: web.StreamResponse,
        interval: float,
    ) -> HeadwayError | None:
        heartbeats = Heartbeats(feed, interval)
        watch = CredentialWatch(feed, current_recheck(), current_principal())
        try:
            async for batch in feed.batches():
                await self._write(feed, request, response, encode(batch))
                heartbeats.wrote()
        except HeadwayError as error:
            return error
        except ConnectionError:
            raise  # the reader went away: nothing to report, nothing to log
        except Exception:
            logger.exception("event stream failed unexpectedly")
            return HeadwayError(Kind.INTERNAL, "INTERNAL", "internal error; the server logged it")
        finally:
            heartbeats.cancel()
            watch.cancel()
        return None

    async def _write(
        self,
        feed: ChangeFeed,
        request: web.Request,
        response: web.StreamResponse,
        data: bytes,
    ) -> None:
        """Write one batch; while the reader does not take it, watch for the feed's end.

        A reader that stops reading blocks this write, and its queue fills until
        the hub ends the feed (SUBSCRIBER_TOO_SLOW): the write is then abandoned
        (its bytes are already buffered) so the stream can end.
        """
        transport = request.transport
        waiting = transport.get_write_buffer_size() + len(data) if transport else WRITE_BUFFER_LOW
        if waiting < WRITE_BUFFER_LOW:
            # The reader keeps up: this write stays below the transport's high-water
            # mark, so it cannot pause, and there is nothing to watch.
            await response.write(data)
            return
        write = asyncio.ensure_future(response.write(data))
        while True:
            done, _ = await asyncio.wait({write}, timeout=EVICTION_CHECK_SECONDS)
            if done:
                write.result()
                return
            ended = feed.subscriber.ended
            if ended is not None:
                write.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await write
                raise ended

    async def _farewell(
        self, request: web.Request, response: web.StreamResponse, error: HeadwayError
    ) -> None:
        """The final `event: error`, then the end; a reader that never takes it is cut off."""
        try:
            async with asyncio.timeout(FAREWELL_SECONDS):
                await response.write(encode_error(error))
                await response.write_eof()
        except (TimeoutError, ConnectionError):
            if request.transport is not None:
                request.transport.abort()
