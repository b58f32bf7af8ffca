"""The fan-out tick: when subscribers with queued changes are woken to write them.

Every stream write and every unary call of the server share one event loop
(and, underneath, one gRPC completion queue). A write costs about the same
whatever it carries, so waking every subscriber on every commit makes the
fan-out's cost the commit rate times the number of subscribers, until the
writers' own calls wait behind it, and with them every later change. The tick
bounds that cost instead:

- A subscriber is woken at most once per round, with everything queued for it
  since the last one: a busier loop makes fuller writes, not more of them.
- A round wakes its subscribers a chunk at a time and wakes the next chunk only
  once the last one's writes are done. The writes in flight at any moment are
  at most a chunk's, so a writer's call, at every step, waits behind a chunk
  at most, never behind the whole fan-out of the previous commit. A chunk is
  as many senders as take about `hold` (1 ms) of the loop together, measured
  as the tick goes: what a sender costs depends on the machine, its load and
  the size of the batches, and a call needs several steps of the loop.
- The period between the starts of two rounds is the last round's length (the
  loop's measured lag for one write per subscriber) times `gain`, up to
  `max_period`. With few subscribers there is no round at all: they are woken
  at once, so a single subscriber's latency pays nothing for the pacing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Protocol

# Subscribers a round wakes at a time at most (whose writes are in flight together).
WAKE_CHUNK = 32
# ... and at least, however long their senders take.
MIN_CHUNK = 4
# The loop time a chunk's senders may take together: what a call waits behind, per step.
HOLD = 0.001
# The longest a chunk's writes hold the next chunk (a stalled reader's never complete).
CHUNK_CAP = 0.02
# A round shorter than this leaves the period at zero: nothing worth pacing.
IDLE_ROUND = 0.0005


class Flag(Protocol):
    def set(self) -> None: ...


class Wakeable(Protocol):
    """What the tick wakes: a subscriber's sender waits on its `wakeup`."""

    @property
    def wakeup(self) -> Flag: ...


class FanoutTick:
    """Wakes due subscribers in paced rounds; see the module's docstring."""

    def __init__(
        self,
        *,
        max_period: float,
        gain: float = 1.0,
        chunk: int = WAKE_CHUNK,
        chunk_cap: float = CHUNK_CAP,
        hold: float = HOLD,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._max_period = max_period
        self._gain = gain
        self._chunk = chunk
        self._hold = hold
        self._size = chunk  # the chunk's size now, within [MIN_CHUNK, chunk]
        self._per_wake = 0.0  # loop seconds a woken sender takes, a moving average
        self._chunk_cap = chunk_cap
        self._clock = clock
        self._due: dict[Wakeable, None] = {}  # ordered, each once
        self._period = 0.0
        self._round_began = float("-inf")
        self._in_round = False
        self._scheduled: asyncio.TimerHandle | asyncio.Handle | None = None
        self._cap: asyncio.TimerHandle | None = None
        # Woken by a round and not yet back for more, with the round that woke them.
        self._writing: dict[Wakeable, int] = {}
        self._round: list[Wakeable] = []  # this round's subscribers
        self._left: set[Wakeable] = set()  # of them, those gone since it began
        self._next = 0  # the first of them not yet woken
        self._chunk_id = 0
        self._outstanding = 0  # of the current chunk's, not yet back
        self.rounds = 0  # rounds begun, for the metrics and the tests
        self.woken = 0  # wakes handed out, in rounds or at once

    @property
    def period(self) -> float:
        """The current time between the starts of two rounds, in seconds."""
        return self._period

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def add(self, subscribers: Iterable[Wakeable]) -> None:
        """Wake `subscribers` in the next round; at once when nothing is to be paced."""
        self._due.update(dict.fromkeys(subscribers))
        if not self._due or self._in_round or self._scheduled is not None:
            return
        wait = self._round_began + self._period - self._now()
        if wait <= 0 and len(self._due) <= self._size:
            # The common quiet case: one chunk, no backlog. No round to measure.
            due, self._due = self._due, {}
            for subscriber in due:
                subscriber.wakeup.set()
            self.woken += len(due)
            self._measure(len(due))
            return
        loop = asyncio.get_running_loop()
        if wait <= 0:
            self._scheduled = loop.call_soon(self._begin_round)
        else:
            self._scheduled = loop.call_later(wait, self._begin_round)

    def returned(self, subscriber: Wakeable) -> None:
        """`subscriber` wrote what it was woken for and waits for more."""
        woken_in = self._writing.pop(subscriber, None)
        if woken_in is not None and woken_in == self._chunk_id:
            self._outstanding -= 1
            if self._outstanding == 0:
                self._next_chunk()

    def discard(self, subscriber: Wakeable) -> None:
        """Forget a subscriber that left (its queue is gone)."""
        self._due.pop(subscriber, None)
        if self._in_round:
            self._left.add(subscriber)
        self.returned(subscriber)

    def _begin_round(self) -> None:
        self._scheduled = None
        self._in_round = True
        self.rounds += 1
        self._round_began = self._now()
        self._round, self._due = list(self._due), {}
        self._left.clear()
        self._next = 0
        self._next_chunk()

    def _next_chunk(self) -> None:
        """Wake the round's next chunk once the last one's writes are done (or overdue)."""
        if self._cap is not None:
            self._cap.cancel()
            self._cap = None
        if not self._in_round:
            return
        if self._next >= len(self._round):
            self._end_round()
            return
        self._chunk_id += 1
        self._outstanding = 0
        chunk = self._round[self._next : self._next + self._size]
        self._next += len(chunk)
        woke = 0
        for subscriber in chunk:
            if subscriber in self._left:
                continue
            subscriber.wakeup.set()
            woke += 1
            # One still writing since an earlier chunk is not waited for again.
            if subscriber not in self._writing:
                self._writing[subscriber] = self._chunk_id
                self._outstanding += 1
        self.woken += len(chunk)
        self._measure(woke)
        loop = asyncio.get_running_loop()
        if self._outstanding == 0:
            loop.call_soon(self._next_chunk)
        else:
            # A subscriber whose write does not complete (its reader stopped) must not
            # hold the round: after `chunk_cap` the next chunk goes without it.
            self._cap = loop.call_later(self._chunk_cap, self._next_chunk)

    @property
    def chunk(self) -> int:
        """How many subscribers a round wakes at a time now."""
        return self._size

    def _measure(self, woke: int) -> None:
        """Time the senders just woken: their steps run before a callback scheduled now."""
        if woke:
            asyncio.get_running_loop().call_soon(self._held, time.perf_counter(), woke)

    def _held(self, began: float, woke: int) -> None:
        per_wake = (time.perf_counter() - began) / woke
        self._per_wake = 0.7 * self._per_wake + 0.3 * per_wake if self._per_wake else per_wake
        fits = int(self._hold / self._per_wake) if self._per_wake > 0 else self._chunk
        self._size = min(self._chunk, max(MIN_CHUNK, fits))

    def _end_round(self) -> None:
        """All of the round's writes are done (or the cap passed): set the next period."""
        took = self._now() - self._round_began
        self._round = []
        self._left.clear()
        self._period = 0.0 if took < IDLE_ROUND else min(self._max_period, took * self._gain)
        self._in_round = False
        self.add(())
