"""A subscription that resumes by itself: no gap, no duplicate, across restarts and evictions.

A naive retry of a stream replays what was already received. Instead, this
iterator remembers the revision of the last event it delivered and, when the
stream breaks for a passing reason (the server restarted: UNAVAILABLE; this
reader fell behind: RESOURCE_EXHAUSTED / SUBSCRIBER_TOO_SLOW), subscribes again
with `start_revision` set to it. The server then sends exactly the matching
changes after it, so the consumer sees every change once, in order.

Two situations cannot be resumed and start over with a snapshot instead, announced
by a `Resync` event so the consumer can drop what it built: history that the
server compacted (the server says so itself), and a stream that broke in the
middle of its snapshot (the client says so).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import grpc

from headway.client import events
from headway.client.client import HeadwayClient
from headway.client.errors import HeadwayError, OutOfRangeError
from headway.client.retry import RetryPolicy
from headway.v1 import task_service_pb2

logger = logging.getLogger(__name__)

RECONNECT_POLICY = RetryPolicy(
    initial_backoff=0.1,
    max_backoff=5.0,
    deadline=None,
    codes=frozenset(
        {
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            # What gRPC answers a call that reached a server as it began to shut down.
            grpc.StatusCode.CANCELLED,
        }
    ),
)
"""Reconnect for as long as it takes; a watcher outlives server restarts.

Resuming is always safe for a stream (it restarts after the last revision), so
every code that may mean "the server went away" is worth another try.
"""

# RESOURCE_EXHAUSTED is retried only for these reasons: the others are limits that
# waiting does not lift.
_RETRYABLE_EXHAUSTION = frozenset({"SUBSCRIBER_TOO_SLOW", "TOO_MANY_SUBSCRIBERS"})


class Subscription:
    """An async iterator of typed events that reconnects and resumes by itself.

    Iterate it once: `async for event in subscribe(client, ...)`. The iteration ends
    only when the server ends the stream on purpose (`end_at_rest`), or raises the
    first error that reconnecting cannot cure (a bad filter, for example), or the
    last one once `retry.deadline` seconds passed without receiving anything.

    Attributes:
        revision: The revision to resume from: that of the last change, `synced` or
            `heartbeat` delivered; None before the first snapshot completed.
        reconnects: How many times the stream was resumed.
    """

    def __init__(
        self,
        client: HeadwayClient,
        filter: task_service_pb2.TaskFilter | None = None,
        *,
        start_revision: int | None = None,
        include_logs: bool = False,
        end_at_rest: bool = False,
        heartbeat_interval: timedelta | None = None,
        on_compacted: task_service_pb2.CompactedPolicy.ValueType = (
            task_service_pb2.COMPACTED_POLICY_RESYNC
        ),
        slow_consumer: task_service_pb2.SlowConsumerPolicy.ValueType = (
            task_service_pb2.SLOW_CONSUMER_POLICY_END
        ),
        retry: RetryPolicy = RECONNECT_POLICY,
    ) -> None:
        self._client = client
        self._slow_consumer = slow_consumer
        self._filter = filter
        self._include_logs = include_logs
        self._end_at_rest = end_at_rest
        self._heartbeat_interval = heartbeat_interval
        self._on_compacted = on_compacted
        self._retry = retry
        self.revision = start_revision
        self.reconnects = 0
        # True from the start of a snapshot to its `synced` marker. A break in
        # between cannot be resumed (snapshot events are not in change order):
        # the next connection starts a new snapshot.
        self._in_snapshot = False
        # True once a snapshot event of the current, unfinished snapshot was delivered.
        self._partial_snapshot = False
        # Why the next connection starts over, when the consumer must be told.
        self._resync_reason: events.ResyncReason | None = None

    def __aiter__(self) -> AsyncIterator[events.Event]:
        return self._events()

    async def _events(self) -> AsyncIterator[events.Event]:
        backoff = self._retry.backoff()
        failing_since: float | None = None
        while True:
            resync = self._prepare_connection()
            if resync is not None:
                yield resync
            stream = self._client.subscribe(
                self._filter,
                start_revision=self.revision,
                include_logs=self._include_logs,
                end_at_rest=self._end_at_rest,
                heartbeat_interval=self._heartbeat_interval,
                on_compacted=self._on_compacted,
                slow_consumer=self._slow_consumer,
            )
            try:
                # aclosing: a consumer that stops iterating ends the call at once.
                async with contextlib.aclosing(stream):
                    async for raw in stream:
                        backoff.reset()
                        failing_since = None
                        event = self._accept(events.from_proto(raw))
                        if event is not None:
                            yield event
                return  # the server ended the stream on purpose (end_at_rest)
            except HeadwayError as error:
                if not self._should_reconnect(error):
                    raise
                self._after_break(error)
                now = time.monotonic()
                failing_since = failing_since or now
                delay = backoff.next_delay()
                deadline = self._retry.deadline
                if deadline is not None and now + delay - failing_since >= deadline:
                    raise
                self.reconnects += 1
                logger.info("stream interrupted (%s); resuming in %.2fs", error, delay)
                reconnecting = events.Reconnecting(error, backoff.attempts, delay, self.revision)
            # Yielded outside the except block, so the consumer's code never runs inside it.
            yield reconnecting
            await asyncio.sleep(delay)

    def _should_reconnect(self, error: HeadwayError) -> bool:
        if isinstance(error, OutOfRangeError):
            # Only when resuming a stream this iterator delivered: the server's store is
            # behind what it already sent (restored from an older backup, say).
            return error.reason == "REVISION_IN_FUTURE" and self.reconnects > 0
        if not self._retry.should_retry(error):
            return False
        if error.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return error.reason in _RETRYABLE_EXHAUSTION
        return True

    def _after_break(self, error: HeadwayError) -> None:
        """Decide where the next connection starts after a break."""
        if isinstance(error, OutOfRangeError):
            logger.warning("server is behind revision %s; starting over", self.revision)
            self.revision = None
            self._resync_reason = events.ResyncReason.REVISION_IN_FUTURE
        elif self._in_snapshot and self._partial_snapshot:
            self._resync_reason = events.ResyncReason.SNAPSHOT_INTERRUPTED

    def _prepare_connection(self) -> events.Resync | None:
        """Enter the snapshot phase when starting over; a Resync if the consumer must rebuild."""
        if self.revision is None:
            self._in_snapshot = True
            self._partial_snapshot = False
        reason, self._resync_reason = self._resync_reason, None
        return None if reason is None else events.Resync(0, reason, 0, None)

    def _accept(self, event: events.Event | None) -> events.Event | None:
        """Track the resume revision; drop a change that was already delivered."""
        match event:
            case None:  # a kind added to the contract later: skip it
                return None
            case events.Resync():
                # The server starts over; until its `synced`, a break means starting over too.
                self.revision = None
                self._in_snapshot = True
                self._partial_snapshot = False
            case events.Snapshot():
                self._partial_snapshot = True
            case events.Synced(revision=revision):
                self._in_snapshot = False
                self.revision = revision
            case events.Heartbeat(revision=revision):
                if not self._in_snapshot:
                    self.revision = max(self.revision or 0, revision)
            case events.Created() | events.Updated() | events.Deleted() | events.LogsAppended():
                if self.revision is not None and event.revision <= self.revision:
                    return None  # delivered before the reconnect
                if not self._in_snapshot:
                    self.revision = event.revision
        return event


def subscribe(
    client: HeadwayClient,
    filter: task_service_pb2.TaskFilter | None = None,
    *,
    start_revision: int | None = None,
    include_logs: bool = False,
    end_at_rest: bool = False,
    heartbeat_interval: timedelta | None = None,
    on_compacted: task_service_pb2.CompactedPolicy.ValueType = (
        task_service_pb2.COMPACTED_POLICY_RESYNC
    ),
    slow_consumer: task_service_pb2.SlowConsumerPolicy.ValueType = (
        task_service_pb2.SLOW_CONSUMER_POLICY_END
    ),
    retry: RetryPolicy = RECONNECT_POLICY,
) -> Subscription:
    """Subscribe to the tasks matching `filter`, resuming by itself whenever the stream breaks.

    Args:
        client: The client whose channel carries the stream.
        filter: Which tasks; every task when None (see `task_filter`).
        start_revision: Resume after this revision (a durable cursor kept by the
            caller); without it the stream starts with a snapshot and `Synced`.
        include_logs: Also deliver `LogsAppended` events.
        end_at_rest: End once the one task named by the filter comes to rest.
        heartbeat_interval: Ask for `Heartbeat` events this often; each one moves the
            resume revision forward, so a narrow filter resumes cheaply.
        on_compacted: What the server does when the resume revision was compacted:
            RESYNC (a `Resync`, a snapshot and `Synced`) or FAIL (OutOfRangeError).
        slow_consumer: What the server does when this reader falls too far behind:
            END (the default: the stream breaks and resumes by itself, and every
            change is delivered) or CONFLATE (the stream goes on, and the changes
            it fell behind on arrive collapsed to each task's latest, marked by
            `TaskEvent.conflation`; log lines in between are not delivered).
        retry: How to wait between reconnects and how long to keep trying.

    Returns:
        A Subscription; iterate it with `async for`.
    """
    return Subscription(
        client,
        filter,
        start_revision=start_revision,
        include_logs=include_logs,
        end_at_rest=end_at_rest,
        heartbeat_interval=heartbeat_interval,
        on_compacted=on_compacted,
        slow_consumer=slow_consumer,
        retry=retry,
    )


__all__ = ["RECONNECT_POLICY", "Subscription", "subscribe"]
