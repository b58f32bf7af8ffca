"""A clock the tests move by hand, so leases and ETAs need no real waiting."""

from __future__ import annotations

import time


class FakeClock:
    """Nanoseconds since the epoch, advanced only by `advance`."""

    def __init__(self, start_ns: int | None = None) -> None:
        self.now_ns = start_ns if start_ns is not None else time.time_ns()

    def __call__(self) -> int:
        return self.now_ns

    def advance(self, seconds: float) -> None:
        self.now_ns += int(seconds * 1e9)
