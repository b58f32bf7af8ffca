"""High-frequency progress is coalesced: a few calls reach the server, the latest value wins."""

from __future__ import annotations

import asyncio
import time

import pytest

from headway.client import LiveView, Tracker, task_filter
from headway.client.coalesce import Coalescer, PendingUpdate
from headway.client.tracker import progress_message
from tests.client.conftest import CallCounter, InterceptedHarness


async def test_a_tight_loop_sends_a_few_updates_and_the_last_value_at_step_end(
    counted: InterceptedHarness, counter: CallCounter
) -> None:
    rate = 5
    async with (
        Tracker(counted.target, progress_rate=rate) as tracker,
        tracker.task("tight", steps=["loop"]) as task,
        task.step("loop") as step,
    ):
        started = time.monotonic()
        for n in range(1, 5001):
            await step.progress(n, 5000, unit="items")
        looped = time.monotonic() - started
        # The first value goes out at once, then at most one per interval.
        progress_calls = counter.calls["UpdateStep"] - 1  # minus the step's start
        assert progress_calls <= 2 + looped * rate
    stored = await counted.client().get_task("tight")
    assert stored.steps[0].progress.units.current == 5000  # the step's end sent the last
    assert counter.calls["UpdateStep"] <= 4 + looped * rate


async def test_the_latest_value_goes_out_when_the_interval_ends(
    counted: InterceptedHarness, counter: CallCounter
) -> None:
    client = counted.client()
    async with (
        Tracker(counted.target, progress_rate=4) as tracker,
        tracker.task("idle", steps=["wait"]) as task,
        task.step("wait") as step,
    ):
        await step.progress(1, 10)
        await step.progress(2, 10)
        await step.message("waiting for the model")
        # The agent is busy elsewhere (it reports nothing more); the timer sends.
        async with LiveView(client, task_filter(task_ids=["idle"])) as view:
            await view.wait_until(lambda v: v.tasks["idle"].steps[0].message != "", timeout=5)
        stored = await client.get_task("idle")
        assert stored.steps[0].progress.units.current == 2
        assert stored.steps[0].message == "waiting for the model"
        assert counter.calls["UpdateStep"] == 3  # start, first value, timed flush


async def test_task_level_progress_is_coalesced_too(
    counted: InterceptedHarness, counter: CallCounter
) -> None:
    async with Tracker(counted.target, progress_rate=2) as tracker, tracker.task("flat") as task:
        for n in range(1000):
            await task.progress(fraction=n / 1000)
        await task.progress(fraction=1.0)
    assert counter.calls["UpdateTask"] <= 3
    stored = await counted.client().get_task("flat")
    assert stored.progress.fraction == 1.0


async def test_without_a_rate_every_update_is_sent(
    counted: InterceptedHarness, counter: CallCounter
) -> None:
    async with (
        Tracker(counted.target, progress_rate=None) as tracker,
        tracker.task(steps=["each"]) as task,
        task.step("each") as step,
    ):
        for n in range(10):
            await step.progress(n, 10)
    assert counter.calls["UpdateStep"] == 12  # start, ten values, succeeded


async def test_coalescer_sends_in_order_and_merges_progress_with_message() -> None:
    sent: list[PendingUpdate] = []
    now = 0.0

    async def send(update: PendingUpdate) -> None:
        sent.append(update)

    coalescer = Coalescer(send, 1.0, clock=lambda: now)
    await coalescer.submit(PendingUpdate(progress=progress_message(1, 10)))
    await coalescer.submit(PendingUpdate(progress=progress_message(2, 10)))
    await coalescer.submit(PendingUpdate(message="two"))
    await coalescer.submit(PendingUpdate(progress=progress_message(3, 10)))
    assert len(sent) == 1
    await coalescer.flush()
    assert len(sent) == 2
    latest = sent[1]
    assert latest.progress is not None
    assert latest.progress.units.current == 3
    assert latest.message == "two"
    now = 5.0
    await coalescer.submit(PendingUpdate(progress=progress_message(4, 10)))
    assert len(sent) == 3  # the interval had passed: sent at once
    await coalescer.flush()
    assert len(sent) == 3  # nothing pending, nothing sent


async def test_coalescer_reports_a_failed_timed_send_on_the_next_call() -> None:
    failed = asyncio.Event()

    async def send(update: PendingUpdate) -> None:
        if update.message == "boom":
            failed.set()
            raise RuntimeError("lost")

    coalescer = Coalescer(send, 0.01)
    await coalescer.submit(PendingUpdate(message="first"))
    await coalescer.submit(PendingUpdate(message="boom"))  # sent later, by the timer
    await asyncio.wait_for(failed.wait(), 5)
    await asyncio.sleep(0)  # let the timer record its error
    with pytest.raises(RuntimeError, match="lost"):
        await coalescer.submit(PendingUpdate(message="after"))
