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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from aiohttp import web
from google.protobuf import json_format
from multidict import MultiDict, MultiMapping

from headway.server.errors import HeadwayError, Kind
from headway.server.feed import ChangeFeed, Emitted
from headway.server.http.codec import FILTER_PARAMS, Param
from headway.server.http.errors import dumps, status_json
from headway.server.http.gateway import Gateway
from headway.server.stream import Heartbeats
from headway.v1 import event_pb2

logger = logging.getLogger(__name__)

EVENT_QUERY: dict[str, Param] = {
    **FILTER_PARAMS,
    "includeLogs": Param(("includeLogs",), boolean=True),
    "endAtRest": Param(("endAtRest",), boolean=True),
    "heartbeat": Param(("heartbeatInterval",)),
    "onCompacted": Param(("onCompacted",), prefix="COMPACTED_POLICY_"),
    "lastEventId": Param(("startRevision",)),
}
DEFAULT_HEARTBEAT = "15s"
RETRY_MS = 2000
# How long a reader that stopped reading gets to take the final `event: error`.
FAREWELL_SECONDS = 30.0
# How often a blocked write checks whether its feed has been ended.
EVICTION_CHECK_SECONDS = 0.2

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
    """A batch as Server-Sent Events, written at once."""
    lines: list[str] = []
    for item in items:
        event = event_pb2.Event.FromString(item.data)
        kind = event.WhichOneof("kind") or "unknown"
        if kind not in NO_ID:
            lines.append(f"id: {item.revision}")
        lines.append(f"event: {EVENT_NAMES.get(kind, kind)}")
        lines.append(f"data: {dumps(json_format.MessageToDict(event))}")
        lines.append("")
    lines.append("")
    return "\n".join(lines).encode()


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
                    ended = await self._pump(feed, response, admitted.heartbeat)
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
        self, feed: ChangeFeed, response: web.StreamResponse, interval: float
    ) -> HeadwayError | None:
        heartbeats = Heartbeats(feed, interval)
        try:
            async for batch in feed.batches():
                await self._write(feed, response, encode(batch))
                heartbeats.wrote()
        except HeadwayError as error:
            return error
        except Exception:
            logger.exception("event stream failed unexpectedly")
            return HeadwayError(Kind.INTERNAL, "INTERNAL", "internal error; the server logged it")
        finally:
            heartbeats.cancel()
        return None

    async def _write(self, feed: ChangeFeed, response: web.StreamResponse, data: bytes) -> None:
        """Write one batch; while the reader does not take it, watch for the feed's end.

        A reader that stops reading blocks this write, and its queue fills until
        the hub ends the feed (SUBSCRIBER_TOO_SLOW): the write is then abandoned
        (its bytes are already buffered) so the stream can end.
        """
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
