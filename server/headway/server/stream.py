"""The gRPC face of a change feed: one Subscribe call from its request to its end.

All of the catch-up and live handoff lives in `feed`; this module validates
the request, schedules heartbeats and writes batches as SubscribeResponse
messages of bounded size. The request check and the heartbeat timer are shared
with the HTTP event stream (headway.server.http.events).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence

import grpc

from headway.server.auth.context import current_principal, current_recheck
from headway.server.auth.principal import Principal
from headway.server.config import Settings
from headway.server.durations import clamp_duration
from headway.server.engine import Engine
from headway.server.errors import HeadwayError, Kind
from headway.server.feed import ChangeFeed, Emitted, FeedRequest
from headway.server.hub import Hub, SharedBatch
from headway.server.quotas import StreamQuota
from headway.server.records import frame_prefix
from headway.server.validation import Violations, check_filter
from headway.server.visibility import Visibility
from headway.v1 import task_service_pb2

# How soon a stream notices that its credentials were revoked or expired.
CREDENTIAL_CHECK_SECONDS = 5.0


def _spread(interval: float) -> float:
    """A first delay within (interval / 2, interval].

    Streams open in bursts (every subscriber reconnecting after a restart):
    timers armed with the same delay would keep firing together, hundreds in
    one turn of the loop that the writers' calls wait behind; a random phase
    spreads them over the interval for good.
    """
    return interval * (1.0 - random.random() / 2)


class _Writer:
    """Joins events into SubscribeResponse messages of bounded size and writes them.

    A batch taken from a shared log is joined once for every stream that
    writes it (its `memo`): the subscribers of a round mostly take the same range.
    """

    def __init__(self, context: grpc.aio.ServicerContext[object, bytes], max_bytes: int) -> None:
        self._context = context
        self._max_bytes = max_bytes
        self._key = ("grpc", max_bytes)

    async def write(self, events: Sequence[Emitted]) -> None:
        if isinstance(events, SharedBatch):
            messages = events.memo.get(self._key)
            if not isinstance(messages, list):
                messages = events.memo[self._key] = self._messages(events)
        else:
            messages = self._messages(events)
        for message in messages:
            await self._context.write(message)

    def _messages(self, events: Sequence[Emitted]) -> list[bytes]:
        messages: list[bytes] = []
        parts: list[bytes] = []
        size = 0
        for event in events:
            if parts and size + len(event.data) > self._max_bytes:
                messages.append(b"".join(parts))
                parts, size = [], 0
            parts.append(frame_prefix(len(event.data)))
            parts.append(event.data)
            size += len(event.data)
        if parts:
            messages.append(b"".join(parts))
        return messages


def check_subscribe(
    request: task_service_pb2.SubscribeRequest, settings: Settings, visibility: Visibility
) -> FeedRequest:
    """A Subscribe request checked (INVALID_ARGUMENT) and narrowed to what the caller may see.

    Shared by every transport that streams changes (gRPC here, Server-Sent
    Events and long polls over HTTP), so they accept and refuse the same requests.
    """
    v = Violations()
    check_filter(v, "filter", request.filter, settings.limits)
    if request.HasField("start_revision") and request.start_revision < 0:
        v.add("start_revision", "must not be negative")
    if request.end_at_rest and len(request.filter.task_ids) != 1:
        v.add("end_at_rest", "requires filter.task_ids to name exactly one task")
    if request.on_compacted not in task_service_pb2.CompactedPolicy.values():
        v.add("on_compacted", f"unknown policy {request.on_compacted}")
    if request.slow_consumer not in task_service_pb2.SlowConsumerPolicy.values():
        v.add("slow_consumer", f"unknown policy {request.slow_consumer}")
    v.raise_if_any()
    return FeedRequest(
        # Only the tasks the caller may see: a snapshot and every change alike.
        task_filter=visibility.filter(request.filter),
        start_revision=request.start_revision if request.HasField("start_revision") else None,
        fail_on_compacted=request.on_compacted == task_service_pb2.COMPACTED_POLICY_FAIL,
        include_logs=request.include_logs,
        end_at_rest=request.end_at_rest,
        conflate=request.slow_consumer == task_service_pb2.SLOW_CONSUMER_POLICY_CONFLATE,
    )


def heartbeat_interval(request: task_service_pb2.SubscribeRequest, settings: Settings) -> float:
    """The requested interval in seconds within the server's bounds; unset or zero: the default."""
    return clamp_duration(
        request.heartbeat_interval,
        default=settings.heartbeat_default,
        low=settings.heartbeat_min,
        high=settings.heartbeat_max,
    ).total_seconds()


class Heartbeats:
    """Asks `feed` for a heartbeat whenever nothing was written for `interval` seconds.

    One timer per stream, re-armed only when it fires: a busy stream pays
    nothing per write for its heartbeats. Call `wrote()` after each write and
    `cancel()` when the stream ends.
    """

    def __init__(self, feed: ChangeFeed, interval: float) -> None:
        self._feed = feed
        self._interval = interval
        self._loop = asyncio.get_running_loop()
        self._last_write = self._loop.time()
        # Early is harmless: a beat that finds a recent write re-arms for the rest.
        self._timer = self._loop.call_later(_spread(interval), self._beat)

    def _beat(self) -> None:
        idle = self._loop.time() - self._last_write
        if idle >= self._interval * 0.999:
            self._feed.request_heartbeat()
            self._timer = self._loop.call_later(self._interval, self._beat)
        else:
            self._timer = self._loop.call_later(self._interval - idle, self._beat)

    def wrote(self) -> None:
        self._last_write = self._loop.time()

    def cancel(self) -> None:
        self._timer.cancel()


class CredentialWatch:
    """Ends a feed once the credentials that opened it no longer name the same principal.

    A stream outlives the moment it was authenticated: a token removed from the
    token file, an expired read token or JWT, or a changed role must end it too,
    not only the next call. Every `interval` seconds the credentials are
    authenticated again; a refusal (or another principal) ends the feed with
    UNAUTHENTICATED, which the transport sends as the stream's last word.
    """

    def __init__(
        self, feed: ChangeFeed, recheck: Callable[[], Principal], principal: Principal
    ) -> None:
        self._feed = feed
        self._recheck = recheck
        self._principal = principal
        self._loop = asyncio.get_running_loop()
        self._timer = self._loop.call_later(_spread(CREDENTIAL_CHECK_SECONDS), self._check)

    def _check(self) -> None:
        try:
            again = self._recheck()
        except HeadwayError as error:
            self._feed.end(error)
            return
        if again != self._principal:
            self._feed.end(
                HeadwayError(
                    Kind.UNAUTHENTICATED,
                    "PRINCIPAL_CHANGED",
                    "the credentials of this stream now name another principal or role; "
                    "subscribe again",
                )
            )
            return
        self._timer = self._loop.call_later(CREDENTIAL_CHECK_SECONDS, self._check)

    def cancel(self) -> None:
        self._timer.cancel()


class Subscription:
    """Serves one Subscribe call."""

    def __init__(
        self,
        engine: Engine,
        hub: Hub,
        settings: Settings,
        tenant: str,
        request: task_service_pb2.SubscribeRequest,
        *,
        visibility: Visibility | None = None,
        streams: StreamQuota | None = None,
    ) -> None:
        self._engine = engine
        self._hub = hub
        self._settings = settings
        self._tenant = tenant
        self._visibility = visibility or Visibility(tenant)
        self._streams = streams or StreamQuota(0)
        self._feed_request = check_subscribe(request, settings, self._visibility)
        self._heartbeat = heartbeat_interval(request, settings)

    async def serve(self, context: grpc.aio.ServicerContext[object, bytes]) -> None:
        # The tenant's stream quota is held for as long as the stream lasts, however it ends.
        with self._streams.hold(self._tenant):
            await self._serve(context)

    async def _serve(self, context: grpc.aio.ServicerContext[object, bytes]) -> None:
        await context.send_initial_metadata(())
        writer = _Writer(context, self._settings.limits.max_response_bytes)
        feed = ChangeFeed(
            self._engine,
            self._hub,
            self._tenant,
            self._feed_request,
            max_batch_bytes=self._settings.limits.max_response_bytes,
        )
        with feed:
            heartbeats = Heartbeats(feed, self._heartbeat)
            watch = CredentialWatch(feed, current_recheck(), current_principal())
            try:
                async for batch in feed.catch_up():
                    await writer.write(batch)
                    heartbeats.wrote()
                # Live: the feed's own loop, awaited here directly (see ChangeFeed.poll).
                while not feed.done:
                    live = feed.poll()
                    if live is None:
                        await feed.wait()
                        continue
                    await writer.write(live)
                    heartbeats.wrote()
            finally:
                heartbeats.cancel()
                watch.cancel()
