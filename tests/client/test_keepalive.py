"""The heartbeat loop on a clock of its own: when it beats, what postpones it, how it ends."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from headway.client.keepalive import KeepAlive


class FakeTime:
    """A monotonic clock that only sleeping moves; `at` runs a hook when it reaches a time."""

    def __init__(self) -> None:
        self.now = 0.0
        self.hooks: list[tuple[float, Callable[[], None]]] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        target = self.now + seconds
        for when, hook in sorted(self.hooks, key=lambda item: item[0]):
            if self.now < when <= target:
                self.now = when
                self.hooks.remove((when, hook))
                hook()
                await asyncio.sleep(0)
                return  # woken early, as a real loop would look again after a report
        self.now = target
        await asyncio.sleep(0)


async def run_until_ended(keep: KeepAlive) -> None:
    for _ in range(1000):
        if not keep.running:
            return
        await asyncio.sleep(0)
    raise AssertionError("the loop never ended")


async def test_it_beats_after_each_quiet_interval_until_told_to_stop() -> None:
    clock = FakeTime()
    beats: list[float] = []

    async def beat() -> bool:
        beats.append(clock.now)
        return len(beats) < 3  # the third answer says the task ended

    keep = KeepAlive(beat, 10.0, clock=clock, sleep=clock.sleep)
    keep.start()
    await run_until_ended(keep)
    assert beats == [10.0, 20.0, 30.0]
    assert keep.beats == 2


async def test_a_report_postpones_the_next_heartbeat() -> None:
    clock = FakeTime()
    beats: list[float] = []

    async def beat() -> bool:
        beats.append(clock.now)
        return False

    keep = KeepAlive(beat, 10.0, clock=clock, sleep=clock.sleep)
    clock.hooks.append((6.0, keep.touch))  # a report answered at t=6
    keep.start()
    await run_until_ended(keep)
    assert beats == [16.0]


async def test_a_failed_heartbeat_is_logged_and_tried_again_an_interval_later(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeTime()
    beats: list[float] = []

    async def beat() -> bool:
        beats.append(clock.now)
        if len(beats) == 1:
            raise RuntimeError("network down")
        return False

    keep = KeepAlive(beat, 10.0, name="job-1", clock=clock, sleep=clock.sleep)
    keep.start()
    await run_until_ended(keep)
    assert beats == [10.0, 20.0]
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        "heartbeat of job-1 failed (network down); trying again in 10.0s"
    )
    assert record.exc_info is not None  # not a server error: a bug, shown with its traceback


async def test_stop_ends_a_waiting_loop_and_is_idempotent() -> None:
    never = asyncio.Event()

    async def beat() -> bool:
        await never.wait()
        return True

    keep = KeepAlive(beat, 0.001)
    keep.start()
    await asyncio.sleep(0.01)  # now inside a beat that never answers
    assert keep.running
    await keep.stop()
    assert not keep.running
    await keep.stop()
    with pytest.raises(ValueError, match="positive"):
        KeepAlive(beat, 0)
