"""Coalescing of high-frequency progress: at most one update per interval, the latest wins.

An agent's inner loop may report progress thousands of times a second; each report
would be a round trip, a durable commit and an event for every watcher. A person
cannot read faster than a few updates a second, so the reports in between are
merged: the first is sent at once (a watcher sees the step move immediately),
later ones within the interval only replace the pending value, and a timer sends
that value when the interval ends, so the last value is never stuck unsent
while the loop is busy elsewhere. `flush()` sends what is pending at once; the
step's end calls it, so the final value is always recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from headway.v1 import task_pb2


@dataclass
class PendingUpdate:
    """What is waiting to be sent: the latest progress and status line reported."""

    progress: task_pb2.Progress | None = None
    message: str | None = None

    def merge(self, newer: PendingUpdate) -> None:
        if newer.progress is not None:
            self.progress = newer.progress
        if newer.message is not None:
            self.message = newer.message

    def __bool__(self) -> bool:
        return self.progress is not None or self.message is not None


Send = Callable[[PendingUpdate], Awaitable[None]]


class Coalescer:
    """Rate-limits the updates of one step (or one task) to one per `interval` seconds.

    Sends are serialised (one in flight at a time), so updates reach the server in
    the order they were made. An error from a send made by the timer is raised by
    the next `submit()` or `flush()`, since nobody awaits the timer itself.
    """

    def __init__(
        self,
        send: Send,
        interval: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send = send
        self._interval = interval
        self._clock = clock
        self._pending = PendingUpdate()
        self._next_send_at = float("-inf")
        self._lock = asyncio.Lock()
        self._timer: asyncio.Task[None] | None = None
        self._timer_error: BaseException | None = None
        self.sent = 0

    async def submit(self, update: PendingUpdate) -> None:
        """Record an update; send it now if the interval allows, else when it ends."""
        self._raise_timer_error()
        self._pending.merge(update)
        if self._clock() >= self._next_send_at and not self._lock.locked():
            await self._send_pending()
        elif self._timer is None:
            self._timer = asyncio.create_task(self._send_when_due(), name="headway-coalescer")

    async def flush(self) -> None:
        """Send what is pending now, whatever the interval says."""
        await self._cancel_timer()
        self._raise_timer_error()
        await self._send_pending()  # waits for a send the timer has under way, if any
        self._raise_timer_error()

    async def discard(self) -> None:
        """Drop what is pending and stop the timer (the step ended some other way)."""
        await self._cancel_timer()
        self._pending = PendingUpdate()

    async def _send_pending(self) -> None:
        async with self._lock:
            if not self._pending:
                return
            update, self._pending = self._pending, PendingUpdate()
            self._next_send_at = self._clock() + self._interval
            await self._send(update)
            self.sent += 1

    async def _send_when_due(self) -> None:
        try:
            await asyncio.sleep(max(self._next_send_at - self._clock(), 0.0))
            self._timer = None
            await self._send_pending()
        except asyncio.CancelledError:
            raise
        except BaseException as error:
            self._timer_error = error

    async def _cancel_timer(self) -> None:
        # `_timer` is cleared once the timer starts sending, so this only ever cancels a
        # sleeping timer: a send under way is never cut off (its value would be lost).
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer

    def _raise_timer_error(self) -> None:
        error, self._timer_error = self._timer_error, None
        if error is not None:
            raise error


__all__ = ["Coalescer", "PendingUpdate"]
