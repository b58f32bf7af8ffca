"""The gapless handoff from stored state to live changes, for any transport.

A feed joins the hub *before* it reads anything, so live changes queue up
while it catches up; everything up to the hub's revision at that moment (the
feed's `head`) comes from memory (a snapshot) or from history, everything after
it from the queue. That is what makes a stream gapless and duplicate-free.

History and compaction race, and the feed settles it the way etcd does: the
check of `start_revision` against the compaction fence and the pin that keeps
the janitor below the reader happen in one step of the event loop, and every
history read re-checks the fence in the same database read as its rows
(`HistoryCompactedError`). A range that lost rows is never delivered as if whole:
the subscriber gets a `Resync` and a fresh snapshot, or OUT_OF_RANGE, as its
request chose.

A transport (the gRPC stream, an HTTP event stream) iterates `batches()` (or,
per write of a busy stream cheaper, `catch_up()` and then `poll()`/`wait()`)
and writes each batch, split to its own message size; it only decides when a
heartbeat is due (`request_heartbeat`). Each item has a `revision` and `data`, the encoded
`headway.v1.Event`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from types import TracebackType

from headway.server.domain import is_resting
from headway.server.engine import Engine
from headway.server.errors import HeadwayError, Kind
from headway.server.filtering import CompiledFilter
from headway.server.hub import Hub, Subscriber
from headway.server.records import task_event
from headway.server.store.base import EventRecord, HistoryCompactedError
from headway.v1 import event_pb2

HISTORY_PAGE = 2000


@dataclass(frozen=True, slots=True)
class Notice:
    """An event made for one subscriber: a snapshot entry, SYNCED, a resync, a heartbeat."""

    revision: int
    data: bytes


Emitted = EventRecord | Notice


@dataclass(frozen=True, slots=True)
class FeedRequest:
    """What a subscriber asked for, already validated."""

    task_filter: CompiledFilter
    start_revision: int | None
    fail_on_compacted: bool
    include_logs: bool
    end_at_rest: bool
    # Collapse the backlog (SLOW_CONSUMER_POLICY_CONFLATE) rather than end a subscriber behind.
    conflate: bool = False


class ChangeFeed:
    """One subscription's events, from its snapshot or resume point onwards.

    Use it as a context manager: entering joins the hub (and may raise
    RESOURCE_EXHAUSTED or UNAVAILABLE), leaving releases the queue and any pin.
    """

    def __init__(
        self,
        engine: Engine,
        hub: Hub,
        tenant: str,
        request: FeedRequest,
        *,
        max_batch_bytes: int,
        transport: str = "grpc",
    ) -> None:
        self._engine = engine
        self._transport = transport
        self._hub = hub
        self._tenant = tenant
        self._request = request
        self._max_batch_bytes = max_batch_bytes
        self._subscriber: Subscriber | None = None
        self._pin: int | None = None
        self._caught_up: AsyncIterator[tuple[list[Emitted], bool]] | None = None
        self._done = False
        self._handed_out = False  # a live batch went out since the feed last told the hub
        self.head = 0
        # Set once every change up to `head` (or the snapshot) has been yielded.
        self.live = asyncio.Event()

    def __enter__(self) -> ChangeFeed:
        request = self._request
        self._subscriber = self._hub.register(
            self._tenant,
            request.task_filter,
            include_logs=request.include_logs,
            stop_at_rest=request.end_at_rest,
            transport=self._transport,
            conflate=request.conflate,
        )
        self.head = self._hub.head(self._tenant)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._unpin()
        if self._subscriber is not None:
            self._hub.unregister(self._subscriber)
            self._subscriber = None

    @property
    def subscriber(self) -> Subscriber:
        if self._subscriber is None:
            raise RuntimeError("the feed is not open")
        return self._subscriber

    def end(self, error: HeadwayError) -> None:
        """End the feed with `error` (its transport sends it as the stream's last word)."""
        self.subscriber.end(error)

    def request_heartbeat(self) -> None:
        """Ask for a heartbeat; it goes out next if no change does first."""
        subscriber = self.subscriber
        subscriber.heartbeat_due = True
        subscriber.wakeup.set()

    def begin(self) -> None:
        """Decide where the feed starts: a snapshot, history, or (compacted) a resync.

        Raises OUT_OF_RANGE (`REVISION_IN_FUTURE`, or `REVISION_COMPACTED` when
        the request fails on compaction) now, so a transport can refuse the
        request before it starts its response. `batches()` calls it if needed.
        """
        if self._caught_up is not None:
            return
        start = self._request.start_revision
        if start is None:
            self._caught_up = self._snapshot(self.head)
        elif start > self.head:
            raise HeadwayError(
                Kind.OUT_OF_RANGE,
                "REVISION_IN_FUTURE",
                f"start_revision {start} is newer than the tenant's revision {self.head}",
                {"revision": str(self.head)},
            )
        elif start < self._engine.compacted(self._tenant):
            oldest = self._engine.compacted(self._tenant)
            if self._request.fail_on_compacted:
                raise _compacted(oldest)
            self._caught_up = self._resync(oldest)
        else:
            # No await between the fence check above and this pin.
            self._pin = self._engine.pin(self._tenant, start)
            self._caught_up = self._history(start)

    async def batches(self) -> AsyncIterator[Sequence[Emitted]]:
        """Every batch of events, in revision order; ends when a watched task rests.

        `catch_up()`, then `poll()` and `wait()` until `done`, as one iterator.
        """
        async for batch in self.catch_up():
            yield batch
        while not self.done:
            live = self.poll()
            if live is None:
                await self.wait()
            else:
                yield live

    async def catch_up(self) -> AsyncIterator[Sequence[Emitted]]:
        """The batches up to `head` (a snapshot, history, a resync); then `live` is set."""
        self.begin()
        assert self._caught_up is not None
        at_rest = False
        async for batch, rested in self._caught_up:
            if batch:
                yield batch
            self._raise_if_ended()
            at_rest = at_rest or rested
        self._unpin()
        # Everything up to `head` is out: from here on only live changes (and heartbeats).
        self.live.set()
        self._done = at_rest
        self._handed_out = True

    @property
    def done(self) -> bool:
        """Whether the feed has nothing more to send (a watched task came to rest)."""
        return self._done

    def poll(self) -> Sequence[Emitted] | None:
        """The live batch the tick woke this feed for (or a heartbeat); None: `wait()` first.

        Called after every write (and between waits) by a transport's own loop,
        with no generator or coroutine in between: it runs once per write of
        every stream. Waits for a wake even when changes are already queued:
        the tick decides when a subscriber writes, so that a busy loop makes
        fuller writes rather than more of them. Raises the error the feed ended with.
        """
        subscriber = self.subscriber
        self._raise_if_ended()
        if self._handed_out:
            # Whatever this feed was woken for is written: the tick's round may end.
            self._handed_out = False
            self._hub.returned(subscriber)
        if not subscriber.wakeup.is_set():
            return None
        subscriber.wakeup.clear()
        # Shared with other subscribers (and the transports' encodings of it): read only.
        batch: Sequence[Emitted] = subscriber.take()
        if not batch:
            if not subscriber.heartbeat_due:
                self._hub.returned(subscriber)
                return None
            # The tenant's own revision: a heartbeat says nothing of other tenants.
            head = self._hub.head(self._tenant)
            beat = event_pb2.Event(revision=head, heartbeat=event_pb2.Heartbeat())
            batch = [Notice(head, beat.SerializeToString())]
        subscriber.heartbeat_due = False
        self._hub.observer.live_batch(batch)  # delivery lag, for the metrics
        self._handed_out = True
        self._done = subscriber.rest_reached
        return batch

    def wait(self) -> asyncio.Future[None]:
        """Done when the feed is woken (by the tick, a heartbeat, or its end)."""
        return self.subscriber.wakeup.waiter()

    async def _snapshot(self, head: int) -> AsyncIterator[tuple[list[Emitted], bool]]:
        """Every matching task as it stands at `head`, then SYNCED; bounded batches."""
        tasks = sorted(
            (
                t
                for t in self._engine.tasks_of(self._tenant)
                if self._request.task_filter.matches_task(t)
            ),
            key=lambda task: task.revision,
        )
        # Tasks in memory are replaced, never changed in place, so these stay as
        # they were at `head` while the batches are written.
        rested = self._request.end_at_rest and any(is_resting(t.state) for t in tasks)
        batch: list[Emitted] = []
        size = 0
        for task in tasks:
            item = Notice(
                task.revision, task_event(task.revision, "snapshot", task.SerializeToString())
            )
            if batch and size + len(item.data) > self._max_batch_bytes:
                yield batch, False
                batch, size = [], 0
            batch.append(item)
            size += len(item.data)
        synced = event_pb2.Event(revision=head, synced=event_pb2.Synced())
        batch.append(Notice(head, synced.SerializeToString()))
        yield batch, rested

    async def _resync(self, oldest: int) -> AsyncIterator[tuple[list[Emitted], bool]]:
        """History the subscriber needs is gone: a Resync notice and a fresh snapshot, or fail."""
        if self._request.fail_on_compacted:
            raise _compacted(oldest)
        # The snapshot is taken now, at the hub's current revision; queued live
        # changes it already contains are dropped, later ones follow it.
        head = self._hub.head(self._tenant)
        self.subscriber.discard_through(head)
        notice = event_pb2.Event(
            revision=head,
            resync=event_pb2.Resync(
                reason=event_pb2.RESYNC_REASON_REVISION_COMPACTED, oldest_revision=oldest
            ),
        )
        yield [Notice(head, notice.SerializeToString())], False
        async for item in self._snapshot(head):
            yield item

    async def _history(self, start: int) -> AsyncIterator[tuple[list[Emitted], bool]]:
        """Stored changes in (start, head], page by page, then nothing: live follows."""
        after = start
        while after < self.head:
            try:
                records = await self._engine.read_events(
                    self._tenant, after, self.head, HISTORY_PAGE
                )
            except HistoryCompactedError as compacted:
                self._unpin()
                oldest = max(compacted.oldest, self._engine.compacted(self._tenant))
                async for item in self._resync(oldest):
                    yield item
                return
            if not records:
                return
            batch, rested = self._select(records)
            yield batch, rested
            if rested:
                return
            after = records[-1].revision
            if self._pin is not None:
                self._engine.move_pin(self._pin, after)

    def _select(self, records: list[EventRecord]) -> tuple[list[Emitted], bool]:
        """The records this subscriber wants, up to the one that brings its task to rest."""
        subscriber = self.subscriber
        selected: list[Emitted] = []
        for record in records:
            if subscriber.accepts(record):
                selected.append(record)
                if self._request.end_at_rest and record.at_rest and not record.is_log:
                    return selected, True
        return selected, False

    def _raise_if_ended(self) -> None:
        ended = self.subscriber.ended
        if ended is not None:
            raise ended

    def _unpin(self) -> None:
        if self._pin is not None:
            self._engine.unpin(self._pin)
            self._pin = None


def _compacted(oldest: int) -> HeadwayError:
    return HeadwayError(
        Kind.OUT_OF_RANGE,
        "REVISION_COMPACTED",
        f"history before revision {oldest} has been compacted; "
        "subscribe without start_revision to start from a snapshot",
        {"oldest_revision": str(oldest)},
    )
