"""Saying that reports cannot get through, without drowning the job's own output.

The integrations keep the job running when the server is down or refuses them,
so the person running it must learn it from the log: once, at the first failure,
then at most every few minutes while it lasts, and once more when reports get
through again. A job in a tight loop would otherwise log a warning per update.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

logger = logging.getLogger("headway.contrib")

DEFAULT_WARN_EVERY = 300.0
"""Seconds between two warnings about the same server, while reports keep failing."""


class Outage:
    """Tracks whether reports reach one server, and warns about it at a bounded rate.

    Shared by every task reported to that server, from any thread.
    """

    def __init__(
        self,
        target: str,
        every: float = DEFAULT_WARN_EVERY,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target = target
        self.every = every
        self.warnings = 0
        self._clock = clock
        self._lock = threading.Lock()
        self._last_warning: float | None = None
        self._down = False

    @property
    def down(self) -> bool:
        """True from a failed report until one gets through."""
        return self._down

    def unreachable(self, detail: str) -> None:
        """Reports do not get through (they are kept, and sent once the server is back)."""
        self._down = True
        self._warn(
            "cannot reach the Headway server at %s (%s); the work goes on, and its progress "
            "is sent when the server is back",
            self.target,
            detail,
        )

    def refused(self, what: str, error: BaseException) -> None:
        """The server refused a report for good: it is dropped, and the work goes on."""
        self._warn(
            "the Headway server at %s refused %s (%s); the work goes on without it",
            self.target,
            what,
            error,
        )

    def dropped(self, count: int, what: str) -> None:
        """Reports were dropped to keep memory bounded while the server was away."""
        self._warn("dropped %d %s waiting for the Headway server at %s", count, what, self.target)

    def recovered(self) -> None:
        """A report got through: say so if the server had been away."""
        with self._lock:
            was_down, self._down = self._down, False
        if was_down:
            logger.info("reporting to the Headway server at %s resumed", self.target)

    def _warn(self, message: str, *args: object) -> None:
        now = self._clock()
        with self._lock:
            due = self._last_warning is None or now - self._last_warning >= self.every
            if due:
                self._last_warning = now
                self.warnings += 1
        (logger.warning if due else logger.debug)(message, *args)


__all__ = ["DEFAULT_WARN_EVERY", "Outage"]
