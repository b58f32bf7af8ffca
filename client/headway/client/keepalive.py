"""Keeping a task's lease while its agent is silent: a heartbeat after each quiet spell.

The server marks a RUNNING task `stalled` when its agent has not reported for the
task's lease, so that a crashed agent does not leave a task looking alive for ever.
An agent that is alive but busy — a long model call, a big query, a computation in
a thread — reports nothing for a while, and must not be mistaken for a dead one. So
while a task is open, this loop sends a heartbeat whenever nothing else reached the
server for a third of the lease: two more tries fit in the lease before it lapses.
Every answered report pushes the next heartbeat back, so a chatty agent sends none.

A heartbeat proves that the process is alive, not that its work advances: an agent
stuck in a deadlock keeps its task alive too. Progress and ETAs tell that story.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from headway.client.errors import HeadwayError

logger = logging.getLogger(__name__)

Beat = Callable[[], Awaitable[bool]]
"""Sends one heartbeat; returns False when the task no longer needs one (it ended)."""


class KeepAlive:
    """Calls `beat` whenever `touch()` was not called for `interval` seconds.

    A failed beat is logged and tried again an interval later: a heartbeat is a
    courtesy to the watchers, and the agent's work must never fail because of it.

    Args:
        beat: Sends one heartbeat (retrying transient failures as reports do).
        interval: Seconds of silence before a heartbeat is due.
        name: What the heartbeats keep alive, for log lines (such as the task id).
        clock: Monotonic seconds (replaced in tests).
        sleep: Waits (replaced in tests).
    """

    def __init__(
        self,
        beat: Beat,
        interval: float,
        *,
        name: str = "",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if interval <= 0:
            raise ValueError("the heartbeat interval must be positive")
        self.interval = interval
        self.name = name
        self.beats = 0
        self._beat = beat
        self._clock = clock
        self._sleep = sleep
        self._last = clock()
        self._runner: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._runner is not None and not self._runner.done()

    def touch(self) -> None:
        """Note that the server just heard from the agent: the next heartbeat can wait."""
        self._last = self._clock()

    def start(self) -> None:
        """Start the loop on the running event loop (once)."""
        if self._runner is None:
            self.touch()
            self._runner = asyncio.create_task(self._run(), name=f"headway-heartbeat {self.name}")

    async def stop(self) -> None:
        """Stop the loop; a heartbeat in flight is abandoned (it changes nothing)."""
        runner, self._runner = self._runner, None
        if runner is not None and runner is not asyncio.current_task():
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner

    async def _run(self) -> None:
        while True:
            due = self._last + self.interval - self._clock()
            if due > 0:
                await self._sleep(due)
                continue  # a report may have come in meanwhile: look again
            try:
                alive = await self._beat()
            except Exception as error:
                # The server's or the network's errors say enough; anything else is a bug,
                # whose traceback is worth the noise.
                logger.warning(
                    "heartbeat of %s failed (%s); trying again in %.1fs",
                    self.name,
                    error,
                    self.interval,
                    exc_info=not isinstance(error, HeadwayError),
                )
                self.touch()
                continue
            if not alive:
                return
            self.beats += 1
            self.touch()


__all__ = ["Beat", "KeepAlive"]
