"""`GET /v1/changes?after=REV&wait=25s`: the change feed as a long poll, where streams cannot go.

The same feed as Subscribe and `/v1/events` (`feed.ChangeFeed`): every matching
change after `after`, or, without `after` or when the history after it was
compacted, a snapshot (after a `resync` event in the latter case) ending with
`synced`. When there is nothing yet the request waits up to `wait` (at most
60 s) for the first change. The answer is `{"events": [...], "revision": N}`;
the next poll passes `after=N`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable

from aiohttp import web
from multidict import MultiDict

from headway.server.errors import FieldViolation, invalid_argument
from headway.server.feed import ChangeFeed, Emitted
from headway.server.http.codec import FILTER_PARAMS, Param, to_json
from headway.server.http.errors import json_response
from headway.server.http.gateway import Gateway
from headway.server.store.base import EventRecord
from headway.v1 import event_pb2

CHANGES_QUERY: dict[str, Param] = {
    **FILTER_PARAMS,
    "includeLogs": Param(("includeLogs",), boolean=True),
    "after": Param(("startRevision",)),
}
DEFAULT_WAIT = 25.0
MAX_WAIT = 60.0


def parse_wait(text: str | None) -> float:
    """`wait` in seconds: `25s`, `2.5s` or `25` (seconds), clamped to [0, 60]."""
    if text is None:
        return DEFAULT_WAIT
    try:
        seconds = float(text.removesuffix("s"))
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise invalid_argument([FieldViolation("wait", "must be a duration such as 25s")])
    return min(seconds, MAX_WAIT)


class LongPoll:
    """Serves `GET /v1/changes` for `gateway`."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    async def handle(self, request: web.Request) -> web.Response:
        query = MultiDict((k, v) for k, v in request.query.items() if k != "wait")
        wait = parse_wait(request.query.get("wait"))
        admitted = self._gateway.subscription(request, query, CHANGES_QUERY, {})
        limit = self._gateway.settings.limits.max_response_bytes
        with self._gateway.service.streams.hold(admitted.tenant):
            feed = self._gateway.feed(admitted)
            with feed:
                feed.begin()
                items = await collect(feed, wait, limit)
        revision = (
            max([feed.head, *(item.revision for item in items)])
            if feed.live.is_set()
            else (items[-1].revision if items else feed.head)
        )
        events = [to_json(event_pb2.Event.FromString(item.data)) for item in items]
        return json_response({"events": events, "revision": revision})


async def collect(feed: ChangeFeed, wait: float, limit: int) -> list[Emitted]:
    """The feed's catch-up whole, then live changes: returns once it has some, or after `wait`.

    A catch-up of history longer than `limit` bytes returns early, after a
    change (a resume point), never in the middle of a snapshot.
    """
    items: list[Emitted] = []
    size = 0
    arrived = asyncio.Event()

    async def gather() -> None:
        nonlocal size
        async for batch in feed.batches():
            items.extend(batch)
            size += sum(len(item.data) for item in batch)
            arrived.set()
            if size > limit and isinstance(items[-1], EventRecord):
                return

    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    gathering = asyncio.create_task(gather())
    try:
        while not gathering.done():
            if feed.live.is_set() and (items or loop.time() >= deadline):
                break
            arrived.clear()
            waiters: list[Awaitable[object]] = [gathering, arrived.wait()]
            if not feed.live.is_set():
                waiters.append(feed.live.wait())
            pending = [asyncio.ensure_future(w) for w in waiters]
            timeout = max(deadline - loop.time(), 0) if feed.live.is_set() else None
            try:
                await asyncio.wait(pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for future in pending[1:]:
                    future.cancel()
        if gathering.done():
            gathering.result()  # a feed that ended in error (compacted, shut down) raises here
    finally:
        if not gathering.done():
            gathering.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await gathering
    return list(items)
