"""Fan-out of committed changes to live subscribers.

The engine publishes each batch of committed events once; the hub appends the
events (encoded once, at commit, and shared by every queue) to the queue of
every subscriber whose filter matches, and hands the subscriber to the fan-out
tick (pacing.py), which wakes it at once when the loop is quiet and in paced
rounds when it is not, so that one write per subscriber carries every change
queued for it and the writers' calls are never queued behind the fan-out.
Publishing never waits on a subscriber: a queue that reaches its capacity ends
that subscription (RESOURCE_EXHAUSTED) and frees its memory, so one slow reader
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


class Subscriber:
    """One live subscription's queue and the signals its sender waits on."""

    __slots__ = (
        "_capacity",
        "conflation",
        "ended",
        "events",
        "filter",
        "heartbeat_due",
        "include_logs",
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
    ) -> None:
        self.tenant = tenant
        self.transport = transport
        self.filter = task_filter
        self.include_logs = include_logs
        self.stop_at_rest = stop_at_rest
        self.events: list[EventRecord] = []
        self.wakeup = asyncio.Event()
        self.ended: HeadwayError | None = None
        self.rest_reached = False
        self.heartbeat_due = False
        self._capacity = capacity
        # Set when the subscriber chose to conflate rather than be ended when behind.
        self.conflation = conflation

    @property
    def pending(self) -> bool:
        """Whether anything waits for the sender: queued events or a conflated batch."""
        return bool(self.events) or (self.conflation is not None and self.conflation.folding)

    def accepts(self, event: EventRecord) -> bool:
        if event.is_log and not self.include_logs:
            return False
        return self.filter.selects_all or self.filter.matches(event.facts)

    def offer(self, events: Sequence[EventRecord], changes: Sequence[EventRecord]) -> bool:
        """Queue the matching ones of one tenant's published `events` (`changes`: without logs).

        False when nothing was queued: none matched, or the queue overflowed and
        the subscription ended.
        """
        if self.ended is not None:
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
                if not self.conflation.absorb(self.events, event, self._capacity):
                    self.events.append(event)
        elif len(self.events) + len(matching) > self._capacity:
            self.end(
                HeadwayError(
                    Kind.RESOURCE_EXHAUSTED,
                    "SUBSCRIBER_TOO_SLOW",
                    f"the subscriber fell {self._capacity} events behind; resume from the last "
                    "revision it processed",
                    {"capacity": str(self._capacity)},
                )
            )
            return False
        else:
            self.events.extend(matching)
        if self.stop_at_rest and not self.rest_reached:
            self.rest_reached = any(e.at_rest and not e.is_log for e in matching)
        return True

    def take(self) -> list[EventRecord]:
        events, self.events = self.events, []
        if self.conflation is not None:
            events = self.conflation.settle(events)
        return events

    def discard_through(self, revision: int) -> None:
        """Drop queued events a fresh snapshot at `revision` already covers."""
        self.events = [event for event in self.events if event.revision > revision]
        if self.conflation is not None:
            self.conflation.discard_through(revision)
        if self.stop_at_rest:
            self.rest_reached = any(e.at_rest and not e.is_log for e in self.events)

    def end(self, error: HeadwayError) -> None:
        """End the subscription with `error`; its sender aborts the stream with that status."""
        if self.ended is None:
            self.ended = error
            self.events = []
            self.wakeup.set()


class FanoutObserver:
    """What the fan-out reports as it goes (the metrics replace it); does nothing."""

    def evicted(self, count: int) -> None:
        """`count` subscribers fell too far behind and were ended (SUBSCRIBER_TOO_SLOW)."""

    def live_batch(self, batch: Sequence[object]) -> None:
        """A feed hands a batch of live events (EventRecord) or a heartbeat to its transport."""


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
        self._by_tenant: dict[str, dict[Subscriber, None]] = {}
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
        subscriber = Subscriber(
            tenant,
            task_filter,
            include_logs=include_logs,
            stop_at_rest=stop_at_rest,
            capacity=self._capacity,
            transport=transport,
            conflation=Conflation(self.head(tenant)) if conflate else None,
        )
        self._by_tenant.setdefault(tenant, {})[subscriber] = None
        self._count += 1
        return subscriber

    def subscribers(self) -> Iterator[Subscriber]:
        """Every live subscriber (the metrics count them at scrape time)."""
        for members in self._by_tenant.values():
            yield from members

    def unregister(self, subscriber: Subscriber) -> None:
        members = self._by_tenant.get(subscriber.tenant)
        if members is None or subscriber not in members:
            return
        del members[subscriber]
        self.tick.discard(subscriber)
        self._count -= 1
        if not members:
            del self._by_tenant[subscriber.tenant]

    def publish(self, events: Iterable[EventRecord]) -> None:
        """Queue committed events, in revision order, for every subscriber they concern.

        Each subscriber is offered a tenant's events at once (one queue append
        per subscriber, not per event) and is woken by the tick, never here.
        """
        by_tenant: dict[str, list[EventRecord]] = {}
        for event in events:
            by_tenant.setdefault(event.facts.tenant, []).append(event)
        due: list[Subscriber] = []
        evicted: list[Subscriber] = []
        for tenant, published in by_tenant.items():
            self._heads[tenant] = published[-1].revision
            members = self._by_tenant.get(tenant)
            if not members:
                continue
            changes = [e for e in published if not e.is_log]
            for subscriber in members:
                if subscriber.offer(published, changes):
                    due.append(subscriber)
                elif subscriber.ended is not None:
                    evicted.append(subscriber)
        for subscriber in evicted:
            self.unregister(subscriber)
        if evicted:
            self.observer.evicted(len(evicted))
        self.tick.add(due)

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
        for members in list(self._by_tenant.values()):
            for subscriber in list(members):
                subscriber.end(error)
                self.unregister(subscriber)
