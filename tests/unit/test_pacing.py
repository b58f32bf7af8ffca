"""The fan-out tick: who is woken when, counted on a real event loop with a fake clock."""

from __future__ import annotations

import asyncio
import time

import pytest

from headway.server.pacing import MIN_CHUNK, FanoutTick


class Sub:
    """Stands for a subscriber: the tick only ever sets its `wakeup`."""

    def __init__(self) -> None:
        self.wakeup = asyncio.Event()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def turn(iterations: int = 3) -> None:
    """Let the loop run what is ready (the tick's own callbacks), a few iterations."""
    for _ in range(iterations):
        await asyncio.sleep(0)


def woken(subs: list[Sub]) -> int:
    return sum(s.wakeup.is_set() for s in subs)


async def test_few_subscribers_on_a_quiet_loop_are_woken_at_once() -> None:
    tick = FanoutTick(max_period=0.25, chunk=4)
    subs = [Sub() for _ in range(3)]
    tick.add(subs)
    assert woken(subs) == 3, "no round, no wait: one subscriber's latency pays nothing"
    assert tick.rounds == 0


async def test_a_round_wakes_one_chunk_and_the_next_only_when_its_writes_are_done() -> None:
    clock = Clock()
    tick = FanoutTick(max_period=0.25, chunk=4, chunk_cap=60.0, clock=clock)
    subs = [Sub() for _ in range(10)]
    tick.add(subs)
    assert woken(subs) == 0, "publishing wakes no one itself: the writer's answer goes first"
    await turn()
    assert woken(subs) == 4
    await turn()
    assert woken(subs) == 4, "the next chunk waits for this one's writes"
    for sub in subs[:3]:
        tick.returned(sub)
    assert woken(subs) == 4
    tick.returned(subs[3])
    assert woken(subs) == 8
    for sub in subs[4:8]:
        tick.returned(sub)
    assert woken(subs) == 10
    clock.now += 0.05
    for sub in subs[8:]:
        tick.returned(sub)
    assert tick.rounds == 1
    assert tick.period == pytest.approx(0.05), "the next period is the round's length (gain 1)"


async def test_a_subscriber_that_never_finishes_does_not_hold_the_round() -> None:
    tick = FanoutTick(max_period=0.25, chunk=2, chunk_cap=0.05)
    stuck, *others = [Sub() for _ in range(4)]
    tick.add([stuck, *others])
    await turn()
    tick.returned(others[0])
    assert woken(others) == 1, "the first chunk waits for its stalled member..."
    await asyncio.sleep(0.2)
    assert woken(others) == 3, "...but only until the cap"
    for sub in others:
        tick.returned(sub)
        sub.wakeup.clear()
    stuck.wakeup.clear()
    # The next round wakes the stalled one again, but does not wait for it again.
    tick.add([stuck, *others])
    await asyncio.wait_for(stuck.wakeup.wait(), 1.0)
    assert woken(others) == 1
    tick.returned(others[0])
    assert woken(others) == 3, "only the chunk's live writer was waited for"


async def test_each_subscriber_is_woken_once_per_round_and_waits_for_the_period() -> None:
    clock = Clock()
    tick = FanoutTick(max_period=10.0, gain=2.0, chunk=2, chunk_cap=60.0, clock=clock)
    subs = [Sub() for _ in range(4)]
    tick.add(subs)
    await turn()
    clock.now += 0.02
    for sub in subs:
        tick.returned(sub)
    assert tick.rounds == 1
    assert tick.period == pytest.approx(0.04), "gain 2: twice the round's length"
    for sub in subs:
        sub.wakeup.clear()
    # Three publishes within the period: one more round, later, for all of them.
    for _ in range(3):
        tick.add(subs)
    await turn()
    assert woken(subs) == 0, "not before the period has passed"
    assert tick.rounds == 1
    await asyncio.sleep(0.1)  # the loop's own clock runs the timer
    assert tick.rounds == 2
    assert woken(subs) == 2
    assert tick.woken == 6


async def test_a_subscriber_gone_before_its_chunk_is_skipped() -> None:
    tick = FanoutTick(max_period=0.25, chunk=2, chunk_cap=60.0)
    subs = [Sub() for _ in range(4)]
    tick.add(subs)
    await turn()
    tick.discard(subs[2])
    tick.returned(subs[0])
    tick.returned(subs[1])
    assert not subs[2].wakeup.is_set()
    assert subs[3].wakeup.is_set()
    tick.returned(subs[3])
    assert tick.rounds == 1
    await turn()
    assert not subs[2].wakeup.is_set()


def hold_the_loop(seconds: float) -> None:
    began = time.perf_counter()
    while time.perf_counter() - began < seconds:
        pass


async def test_a_chunk_is_what_its_senders_run_in_about_a_millisecond() -> None:
    tick = FanoutTick(max_period=0.25, chunk=32, chunk_cap=60.0, hold=0.001)
    subs = [Sub() for _ in range(48)]

    async def sender(sub: Sub) -> None:
        await sub.wakeup.wait()
        hold_the_loop(0.0005)  # a sender that takes half a millisecond of the loop

    senders = [asyncio.create_task(sender(sub)) for sub in subs]
    await turn()
    tick.add(subs)
    await turn(5)
    assert woken(subs) == 32, "the first chunk: as many as allowed"
    assert tick.chunk == MIN_CHUNK, "32 senders held the loop 16 ms: the next chunks are small"
    for sub in subs[:32]:
        tick.returned(sub)
    assert woken(subs) == 32 + MIN_CHUNK
    await asyncio.gather(*senders[: 32 + MIN_CHUNK])
    for sub in subs[32 : 32 + MIN_CHUNK]:
        tick.returned(sub)
    assert woken(subs) == 32 + 2 * MIN_CHUNK
    for task in senders:
        task.cancel()
    await asyncio.gather(*senders, return_exceptions=True)
