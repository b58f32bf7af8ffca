"""Fan-out of committed changes to live subscribers.

The engine publishes each batch of committed events once; the hub appends the
event (encoded once, at commit, and shared by every queue) to the queue of
every subscriber whose filter matches, and wakes it: at once when there are
few subscribers; after a short linger that grows with their number when there
are many, so that one write per subscriber carries the events of several
commits. Publishing never waits
on a subscriber: a queue that reaches its capacity ends that subscription
(RESOURCE_EXHAUSTED) and frees its memory, so one slow reader cannot slow the
writers or the other readers. A subscriber that asked to conflate is kept
instead: its backlog collapses to each task's latest change (`conflation`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Mapping, Sequence

from headway.server.conflation import Conflation
from headway.server.errors import HeadwayError, Kind
from headway.server.filtering import CompiledFilter
from headway.server.store.base import EventRecord

# Subscribers woken per event-loop iteration when a lingered flush wakes many.
WAKE_CHUNK = 64


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

    def offer(self, event: EventRecord) -> bool:
        """Queue one matching event; False when the queue overflowed and the subscription ended."""
        if self.ended is not None:
            return False
        conflation = self.conflation
        if conflation is not None and conflation.absorb(self.events, event, self._capacity):
            pass  # folded into the pending conflated batch
        elif len(self.events) >= self._capacity:
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
            self.events.append(event)
        if self.stop_at_rest and event.at_rest and not event.is_log:
            self.rest_reached = True
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
        linger_per_subscriber: float = 0.0,
        linger_max: float = 0.0,
    ) -> None:
        self._heads: dict[str, int] = {}
        self._capacity = capacity
        self._linger_per_subscriber = linger_per_subscriber
        self._linger_max = linger_max
        self._to_wake: set[Subscriber] = set()
        self._flush: asyncio.TimerHandle | None = None
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
        self._count -= 1
        if not members:
            del self._by_tenant[subscriber.tenant]

    def publish(self, events: Iterable[EventRecord]) -> None:
        """Queue committed events, in revision order, for every subscriber they concern."""
        woken: set[Subscriber] = set()
        evicted: dict[Subscriber, None] = {}  # ordered, each once
        for event in events:
            self._heads[event.facts.tenant] = event.revision
            members = self._by_tenant.get(event.facts.tenant)
            if not members:
                continue
            for subscriber in members:
                if not subscriber.accepts(event):
                    continue
                if subscriber.offer(event):
                    woken.add(subscriber)
                else:
                    evicted[subscriber] = None
        for subscriber in evicted:
            self.unregister(subscriber)
        if evicted:
            self.observer.evicted(len(evicted))
        if not woken:
            return
        linger = min(self._linger_max, self._count * self._linger_per_subscriber)
        if linger < 0.0005:
            for subscriber in woken:
                subscriber.wakeup.set()
            return
        # Many subscribers: wait a moment so the events of several commits go out
        # in one write per subscriber; each write costs the same whatever its size.
        self._to_wake |= woken
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(linger, self._wake_all)

    def _wake_all(self) -> None:
        self._flush = None
        to_wake, self._to_wake = list(self._to_wake), set()
        self._wake_some(to_wake)

    def _wake_some(self, to_wake: list[Subscriber]) -> None:
        # A few at a time, one loop iteration each: between chunks the loop polls
        # the network, so new calls (the writers') are not starved by the fan-out.
        for subscriber in to_wake[:WAKE_CHUNK]:
            subscriber.wakeup.set()
        if len(to_wake) > WAKE_CHUNK:
            asyncio.get_running_loop().call_soon(self._wake_some, to_wake[WAKE_CHUNK:])

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
