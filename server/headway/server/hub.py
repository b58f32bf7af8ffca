"""Fan-out of committed changes to live subscribers.

The engine publishes each batch of committed events once (encoded once, at
commit). A subscriber that takes every change of its tenant (no filter, no
conflation: the common dashboard) reads them from a log the tenant's
subscribers share, at its own cursor: publishing appends to that log once,
wakes only the subscribers parked at its end, and costs nothing for one
still writing its last batch (or never finishing it, its reader gone); that
one takes everything up to the end in one batch when it is back. A subscriber
with a filter or that asked to conflate gets its own queue instead, offered
each publish. Either way the fan-out tick (pacing.py) decides when a due
subscriber is woken, so that one write per subscriber carries every change
queued for it and the writers' calls are never queued behind the fan-out.

Publishing never waits on a subscriber: one that falls `capacity` events
behind is ended (RESOURCE_EXHAUSTED) and its backlog freed, so one slow reader
cannot slow the writers or the other readers. A subscriber that asked to
conflate is kept instead: its backlog collapses to each task's latest change
(`conflation`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Mapping, Sequence

from headway.server.conflation import Conflation
from headway.server.errors import HeadwayError, Kind
from headway.server.filtering import CompiledFilter
from headway.server.pacing import FanoutTick
from headway.server.store.base import EventRecord

# The longest a fan-out tick waits by default (the bound on what pacing adds to latency).
DEFAULT_TICK_MAX = 0.25


class Wakeup:
    """A subscriber's wake-up flag, which its sender awaits as one bare future.

    An `asyncio.Event` costs a coroutine and a future per wait, on top of the
    feed's own layers: thousands of subscribers waiting at once make every
    young-generation garbage collection walk all of them, a pause the writers'
    calls wait out. One sender waits at a time.
    """

    __slots__ = ("_flag", "_waiter")

    def __init__(self) -> None:
        self._flag = False
        self._waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        if self._flag:
            return
        self._flag = True
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def is_set(self) -> bool:
        return self._flag

    def clear(self) -> None:
        self._flag = False

    def waiter(self) -> asyncio.Future[None]:
        """A future done once the flag is set (already done if it is)."""
        future = asyncio.get_running_loop().create_future()
        if self._flag:
            future.set_result(None)
        else:
            self._waiter = future
        return future

    async def wait(self) -> None:
        await self.waiter()


class SharedBatch(list[EventRecord]):
    """A range of a shared log as one subscriber took it.

    Every subscriber that takes the same range gets the same `memo`, where a
    transport keeps its encoding of the range, so that it encodes the range
    once per round rather than once per subscriber.
    """

    __slots__ = ("memo",)

    def __init__(self, events: Iterable[EventRecord], memo: dict[object, object]) -> None:
        super().__init__(events)
        self.memo = memo


class SharedLog:
    """A tenant's published events as its unfiltered subscribers of one kind read them.

    `members` is ordered by cursor, the furthest behind first (a subscriber
    moves to the back when it takes), so the ones to end for falling behind
    are found at the front and the events nobody needs any more are the ones
    before the front's cursor.
    """

    __slots__ = ("base", "departed", "events", "members", "memos", "parked")

    def __init__(self) -> None:
        self.events: list[EventRecord] = []
        self.base = 0  # the position of events[0] in everything ever published here
        self.members: dict[Subscriber, None] = {}
        # Back for more and nothing left to take: the next publish wakes them.
        self.parked: dict[Subscriber, None] = {}
        self.memos: dict[tuple[int, int], SharedBatch] = {}
        # Ended by something else than falling behind; the hub lets them go at its next publish.
        self.departed: list[Subscriber] = []

    @property
    def end(self) -> int:
        return self.base + len(self.events)

    def append(self, events: Sequence[EventRecord]) -> list[Subscriber]:
        """Add published events; the parked subscribers, who now have something to take."""
        if not self.members:
            self.base += len(self.events) + len(events)
            self.events = []
            return []
        self._trim()
        self.events.extend(events)
        self.memos = {}
        woken = list(self.parked)
        self.parked = {}
        return woken

    def behind(self, capacity: int) -> list[Subscriber]:
        """The members more than `capacity` events behind the end, furthest first."""
        end = self.end
        late: list[Subscriber] = []
        for subscriber in self.members:
            if end - subscriber.cursor <= capacity:
                break
            late.append(subscriber)
        return late

    def take(self, subscriber: Subscriber) -> SharedBatch:
        """Everything from `subscriber`'s cursor on; the same batch for every taker of a range."""
        start, end = subscriber.cursor, self.end
        batch = self.memos.get((start, end))
        if batch is None:
            batch = self.memos[start, end] = SharedBatch(self.events[start - self.base :], {})
        subscriber.cursor = end
        del self.members[subscriber]
        self.members[subscriber] = None
        return batch

    def leave(self, subscriber: Subscriber) -> None:
        self.members.pop(subscriber, None)
        self.parked.pop(subscriber, None)

    def _trim(self) -> None:
        """Free the events every member has taken, once they are half of what is kept."""
        oldest = next(iter(self.members)).cursor
        done = oldest - self.base
        if done and done * 2 >= len(self.events):
            del self.events[:done]
            self.base = oldest


class Subscriber:
    """One live subscription's queue (its own, or a cursor in a shared log) and its signals."""

    __slots__ = (
        "_capacity",
        "_events",
        "conflation",
        "cursor",
        "ended",
        "filter",
        "heartbeat_due",
        "include_logs",
        "log",
        "rest_reached",
        "stop_at_rest",
        "tenant",
        "transport",
        "wakeup",
    )

    def __init__(
        self,
        tenant: str,
        task_filter: CompiledFilter,
        *,
        include_logs: bool,
        stop_at_rest: bool,
        capacity: int,
        transport: str = "grpc",
        conflation: Conflation | None = None,
        log: SharedLog | None = None,
    ) -> None:
        self.tenant = tenant
        self.transport = transport
        self.filter = task_filter
        self.include_logs = include_logs
        self.stop_at_rest = stop_at_rest
        self._events: list[EventRecord] = []
        self.wakeup = Wakeup()
        self.ended: HeadwayError | None = None
        self.rest_reached = False
        self.heartbeat_due = False
        self._capacity = capacity
        # Set when the subscriber chose to conflate rather than be ended when behind.
        self.conflation = conflation
        # Set when it reads every change from its tenant's shared log, from `cursor` on.
        self.log = log
        self.cursor = log.end if log is not None else 0
        if log is not None:
            log.members[self] = None
            log.parked[self] = None

    @property
    def events(self) -> list[EventRecord]:
        """What waits to be taken (a copy of the shared log's range for a cursor)."""
        if self.log is not None and self.ended is None:
            return self.log.events[self.cursor - self.log.base :]
        return self._events

    @property
    def backlog(self) -> int:
        """How many events wait to be taken."""
        if self.log is not None:
            return 0 if self.ended is not None else self.log.end - self.cursor
        return len(self._events)

    @property
    def pending(self) -> bool:
        """Whether anything waits for the sender: queued events or a conflated batch."""
        if self.log is not None:
            return self.ended is None and self.cursor < self.log.end
        return bool(self._events) or (self.conflation is not None and self.conflation.folding)

    def accepts(self, event: EventRecord) -> bool:
        if event.is_log and not self.include_logs:
            return False
        return self.filter.selects_all or self.filter.matches(event.facts)

    def offer(self, events: Sequence[EventRecord], changes: Sequence[EventRecord]) -> bool:
        """Queue the matching ones of one tenant's published `events` (`changes`: without logs).

        False when nothing was queued: none matched, or the queue overflowed and
        the subscription ended. (A subscriber of a shared log is never offered
        anything: the log is.)
        """
        if self.ended is not None or self.log is not None:
            return False
        if self.filter.selects_all:
            matching = events if self.include_logs else changes
        else:
            matching = [e for e in events if self.accepts(e)]
        if not matching:
            return False
        if self.conflation is not None:
            # Kept, never ended: each change queues while there is room, and from the
            # overflow on folds into the pending conflated batch.
            for event in matching:
                if not self.conflation.absorb(self._events, event, self._capacity):
                    self._events.append(event)
        elif len(self._events) + len(matching) > self._capacity:
            self.end(too_slow(self._capacity))
            return False
        else:
            self._events.extend(matching)
        if self.stop_at_rest and not self.rest_reached:
            self.rest_reached = any(e.at_rest and not e.is_log for e in matching)
        return True

    def take(self) -> list[EventRecord]:
        if self.log is not None:
            return self.log.take(self)
        events, self._events = self._events, []
        if self.conflation is not None:
            events = self.conflation.settle(events)
        return events

    def discard_through(self, revision: int) -> None:
        """Drop queued events a fresh snapshot at `revision` already covers."""
        if self.log is not None:
            log = self.log
            while self.cursor < log.end and log.events[self.cursor - log.base].revision <= revision:
                self.cursor += 1
            return
        self._events = [event for event in self._events if event.revision > revision]
        if self.conflation is not None:
            self.conflation.discard_through(revision)
        if self.stop_at_rest:
            self.rest_reached = any(e.at_rest and not e.is_log for e in self._events)

    def end(self, error: HeadwayError) -> None:
        """End the subscription with `error`; its sender aborts the stream with that status."""
        if self.ended is None:
            self.ended = error
            self._events = []
            if self.log is not None and self in self.log.members:
                self.log.leave(self)
                self.log.departed.append(self)
            self.wakeup.set()


def too_slow(capacity: int) -> HeadwayError:
    return HeadwayError(
        Kind.RESOURCE_EXHAUSTED,
        "SUBSCRIBER_TOO_SLOW",
        f"the subscriber fell {capacity} events behind; resume from the last revision it processed",
        {"capacity": str(capacity)},
    )


class FanoutObserver:
    """What the fan-out reports as it goes (the metrics replace it); does nothing."""

    def evicted(self, count: int) -> None:
        """`count` subscribers fell too far behind and were ended (SUBSCRIBER_TOO_SLOW)."""

    def live_batch(self, batch: Sequence[object]) -> None:
        """A feed hands a batch of live events (EventRecord) or a heartbeat to its transport."""


class _Tenant:
    """One tenant's subscribers: those with a queue each, and its two shared logs."""

    __slots__ = ("changes", "everything", "members", "queued")

    def __init__(self) -> None:
        self.members: dict[Subscriber, None] = {}
        self.queued: dict[Subscriber, None] = {}  # with a queue of their own
        self.everything = SharedLog()  # with the log lines
        self.changes = SharedLog()  # without


class Hub:
    """Every live subscriber, by tenant, and each tenant's revision of its last published change."""

    def __init__(
        self,
        *,
        capacity: int,
        max_subscribers: int,
        tick: FanoutTick | None = None,
    ) -> None:
        self._heads: dict[str, int] = {}
        self._capacity = capacity
        self.tick = tick or FanoutTick(max_period=DEFAULT_TICK_MAX)
        self._max_subscribers = max_subscribers
        self._by_tenant: dict[str, _Tenant] = {}
        self._count = 0
        self._closed: HeadwayError | None = None
        self.observer = FanoutObserver()

    @property
    def subscriber_count(self) -> int:
        return self._count

    def register(
        self,
        tenant: str,
        task_filter: CompiledFilter,
        *,
        include_logs: bool,
        stop_at_rest: bool,
        transport: str = "grpc",
        conflate: bool = False,
    ) -> Subscriber:
        """Start queueing live changes for a new subscriber (from the next publish on).

        `transport` ("grpc", "http") only labels the subscriber in the metrics.
        `conflate`: collapse the backlog instead of ending the subscriber when
        its queue is full; its first conflated range starts after `head(tenant)`.
        """
        if self._closed is not None:
            raise self._closed
        if self._count >= self._max_subscribers:
            raise HeadwayError(
                Kind.RESOURCE_EXHAUSTED,
                "TOO_MANY_SUBSCRIBERS",
                f"the server serves at most {self._max_subscribers} subscriptions",
                {"limit": str(self._max_subscribers)},
            )
        group = self._by_tenant.get(tenant)
        if group is None:
            group = self._by_tenant[tenant] = _Tenant()
        shared = task_filter.selects_all and not conflate and not stop_at_rest
        subscriber = Subscriber(
            tenant,
            task_filter,
            include_logs=include_logs,
            stop_at_rest=stop_at_rest,
            capacity=self._capacity,
            transport=transport,
            conflation=Conflation(self.head(tenant)) if conflate else None,
            log=(group.everything if include_logs else group.changes) if shared else None,
        )
        group.members[subscriber] = None
        if not shared:
            group.queued[subscriber] = None
        self._count += 1
        return subscriber

    def subscribers(self) -> Iterator[Subscriber]:
        """Every live subscriber (the metrics count them at scrape time)."""
        for group in self._by_tenant.values():
            yield from group.members

    def unregister(self, subscriber: Subscriber) -> None:
        group = self._by_tenant.get(subscriber.tenant)
        if group is None or subscriber not in group.members:
            return
        del group.members[subscriber]
        group.queued.pop(subscriber, None)
        if subscriber.log is not None:
            subscriber.log.leave(subscriber)
        self.tick.discard(subscriber)
        self._count -= 1
        if not group.members:
            del self._by_tenant[subscriber.tenant]

    def returned(self, subscriber: Subscriber) -> None:
        """`subscriber`'s sender wrote what it took and waits for more.

        One reading a shared log is due again at once if the log moved on
        meanwhile, else parked until the next publish wakes it.
        """
        self.tick.returned(subscriber)
        log = subscriber.log
        if log is None or subscriber.ended is not None or subscriber not in log.members:
            return
        if subscriber.cursor < log.end:
            self.tick.add((subscriber,))
        else:
            log.parked[subscriber] = None

    def publish(self, events: Iterable[EventRecord]) -> None:
        """Queue committed events, in revision order, for every subscriber they concern.

        A shared log takes a tenant's events at once; a subscriber with its own
        queue is offered them at once (one append per subscriber, not per
        event). Every one of them is woken by the tick, never here.
        """
        by_tenant: dict[str, list[EventRecord]] = {}
        for event in events:
            by_tenant.setdefault(event.facts.tenant, []).append(event)
        due: list[Subscriber] = []
        evicted: list[Subscriber] = []
        gone: list[Subscriber] = []  # ended otherwise, meanwhile
        for tenant, published in by_tenant.items():
            self._heads[tenant] = published[-1].revision
            group = self._by_tenant.get(tenant)
            if group is None:
                continue
            changes = [e for e in published if not e.is_log]
            for log, appended in ((group.everything, published), (group.changes, changes)):
                gone.extend(log.departed)
                log.departed = []
                if appended:
                    due.extend(log.append(appended))
                    for late in log.behind(self._capacity):
                        log.leave(late)
                        late.end(too_slow(self._capacity))
                        evicted.append(late)
            for subscriber in group.queued:
                if subscriber.offer(published, changes):
                    due.append(subscriber)
                elif subscriber.ended is not None:
                    evicted.append(subscriber)
        for subscriber in (*evicted, *gone):
            self.unregister(subscriber)
        if evicted:
            self.observer.evicted(len(evicted))
        self.tick.add(s for s in due if s.ended is None)

    def head(self, tenant: str) -> int:
        """The tenant's revision as far as subscribers know: its last published change."""
        return self._heads.get(tenant, 0)

    def advance(self, heads: Mapping[str, int]) -> None:
        """Record the store's revisions when they moved without a publish (at start-up)."""
        for tenant, revision in heads.items():
            self._heads[tenant] = max(self.head(tenant), revision)

    def close(self, error: HeadwayError) -> None:
        """End every subscription with `error` (UNAVAILABLE at shutdown) and refuse new ones."""
        self._closed = error
        for group in list(self._by_tenant.values()):
            for subscriber in list(group.members):
                subscriber.end(error)
                self.unregister(subscriber)
