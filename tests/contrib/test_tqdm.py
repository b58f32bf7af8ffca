"""headway.contrib.tqdm against a real server: the bar draws as tqdm's and reports as a task."""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import AsyncIterator

import pytest

from headway.client import (
    HeadwayClient,
    SyncTracker,
    TaskCancelled,
    TaskEvent,
    Tracker,
    subscribe,
    task_filter,
)
from headway.contrib import Reporter
from headway.contrib.tqdm import tqdm, trange
from headway.contrib.tqdm.asyncio import tqdm as async_tqdm
from headway.v1 import task_pb2
from tests.contrib.conftest import at_rest, wait_for_task
from tests.harness import ServerHarness


async def test_a_bar_outside_any_task_is_a_task_whose_progress_moves(
    client: HeadwayClient, reporter: Reporter, task_id: str
) -> None:
    out = io.StringIO()
    seen: list[tuple[int, int]] = []

    async def watch() -> None:
        async for event in subscribe(client, task_filter(task_ids=[task_id]), end_at_rest=True):
            if isinstance(event, TaskEvent) and event.task.raw.progress.HasField("units"):
                units = event.task.raw.progress.units
                seen.append((units.current, units.total))

    watcher = asyncio.create_task(watch())

    def job() -> int:
        total = 0
        bar = tqdm(
            range(40),
            desc="resize images",
            kind="images",
            labels={"team": "data"},
            task_id=task_id,
            file=out,
            mininterval=0,
            reporter=reporter,
        )
        for n in bar:
            total += n
            time.sleep(0.02)
        return total

    assert await asyncio.to_thread(job) == sum(range(40))
    task = await wait_for_task(client, task_id, at_rest)
    await asyncio.wait_for(watcher, 30)

    assert task.state == task_pb2.TASK_STATE_SUCCEEDED
    assert task.display_name == "resize images"
    assert task.kind == "images"
    assert dict(task.labels) == {"team": "data"}
    assert (task.progress.units.current, task.progress.units.total) == (40, 40)
    assert task.progress.units.unit == "it"
    # Progress moved while the loop ran, not only at its end.
    assert any(0 < current < 40 for current, _ in seen), seen
    # The bar was drawn locally, as tqdm draws it.
    assert "resize images: 100%" in out.getvalue()
    assert "40/40" in out.getvalue()


async def test_nested_bars_are_steps_and_the_postfix_is_their_message(
    client: HeadwayClient, reporter: Reporter, task_id: str
) -> None:
    def job() -> None:
        for epoch in trange(
            3, desc="train", task_id=task_id, file=io.StringIO(), reporter=reporter
        ):
            with tqdm(range(10), desc="batches", file=io.StringIO(), leave=False) as bar:
                for batch in bar:
                    bar.set_postfix(loss=f"{1 / (epoch + batch + 1):.3f}")

    await asyncio.to_thread(job)
    task = await wait_for_task(client, task_id, at_rest)
    assert task.state == task_pb2.TASK_STATE_SUCCEEDED
    assert [step.key for step in task.steps] == ["batches", "batches-2", "batches-3"]
    assert all(step.state == task_pb2.STEP_STATE_SUCCEEDED for step in task.steps)
    assert all(step.display_name == "batches" for step in task.steps)
    assert [s.progress.units.current for s in task.steps] == [10, 10, 10]
    assert task.steps[2].message == "loss=0.083"  # the last postfix of the last epoch


async def test_a_bar_inside_a_tracker_task_is_a_step_of_it(
    client: HeadwayClient, harness: ServerHarness, reporter: Reporter, task_id: str
) -> None:
    def job() -> None:
        with SyncTracker(harness.target) as tracker, tracker.task(task_id, kind="etl"):
            for _ in tqdm(
                range(25), desc="Load rows", unit="rows", file=io.StringIO(), reporter=reporter
            ):
                time.sleep(0.001)

    await asyncio.to_thread(job)
    task = await client.get_task(task_id)  # the block waited for the bar's reports
    assert task.state == task_pb2.TASK_STATE_SUCCEEDED
    (step,) = task.steps
    assert (step.key, step.display_name) == ("load-rows", "Load rows")
    assert step.state == task_pb2.STEP_STATE_SUCCEEDED
    assert (step.progress.units.current, step.progress.units.unit) == (25, "rows")


async def test_a_bar_inside_an_async_tracker_task_is_a_step_of_it(
    client: HeadwayClient, harness: ServerHarness, reporter: Reporter, task_id: str
) -> None:
    async with Tracker(harness.target) as tracker, tracker.task(task_id) as task:
        async with task.step("fetch"):
            pass
        async for _ in async_tqdm(_pages(12), total=12, desc="pages", file=io.StringIO()):
            await asyncio.sleep(0)
    stored = await client.get_task(task_id)
    assert stored.state == task_pb2.TASK_STATE_SUCCEEDED
    assert [step.key for step in stored.steps] == ["fetch", "pages"]
    assert stored.steps[1].progress.units.current == 12


async def _pages(count: int) -> AsyncIterator[int]:
    for page in range(count):
        await asyncio.sleep(0.001)
        yield page


async def test_an_exception_leaving_the_bar_fails_its_task(
    client: HeadwayClient, reporter: Reporter, task_id: str
) -> None:
    def job() -> None:
        with tqdm(
            total=10, desc="parse", task_id=task_id, file=io.StringIO(), reporter=reporter
        ) as bar:
            for row in range(10):
                if row == 6:
                    raise ValueError("row 7: expected 5 columns, found 4")
                bar.update()

    with pytest.raises(ValueError, match="row 7"):
        await asyncio.to_thread(job)
    task = await wait_for_task(client, task_id, at_rest)
    assert task.state == task_pb2.TASK_STATE_FAILED
    assert task.error.code == "ValueError"
    assert task.error.message == "row 7: expected 5 columns, found 4"
    assert "Traceback" in task.error.details["traceback"]
    assert task.progress.units.current == 6


async def test_a_cancel_from_a_viewer_stops_the_loop(
    client: HeadwayClient, reporter: Reporter, task_id: str
) -> None:
    done: list[int] = []

    def job() -> None:
        for n in tqdm(range(100_000), task_id=task_id, file=io.StringIO(), reporter=reporter):
            done.append(n)
            time.sleep(0.005)

    running = asyncio.create_task(asyncio.to_thread(job))
    await wait_for_task(client, task_id, lambda t: t.state == task_pb2.TASK_STATE_RUNNING)
    await client.cancel_task(task_id, reason="not needed", requested_by="alice")

    with pytest.raises(TaskCancelled) as stopped:
        await asyncio.wait_for(running, 30)
    assert stopped.value.requested_by == "alice"
    assert len(done) < 100_000
    task = await wait_for_task(client, task_id, at_rest)
    assert task.state == task_pb2.TASK_STATE_CANCELLED
    assert not task.cancel_request.forced  # confirmed by the job, not forced by the server


async def test_with_the_server_down_the_loop_completes_and_warns_once_then_resumes(
    client: HeadwayClient,
    harness: ServerHarness,
    reporter: Reporter,
    task_id: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    await harness.stop()

    def job() -> int:
        count = 0
        for _ in tqdm(
            range(30), desc="offline", task_id=task_id, file=io.StringIO(), reporter=reporter
        ):
            count += 1
            time.sleep(0.05)  # 1.5 s: three times the reporter's patience
        return count

    started = time.monotonic()
    assert await asyncio.to_thread(job) == 30
    assert time.monotonic() - started < 10  # the loop never waited for the server

    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "cannot reach the Headway server" in warnings[0].getMessage()

    await harness.start()  # the server is back, on the same port and database
    task = await wait_for_task(client, task_id, at_rest)
    assert task.state == task_pb2.TASK_STATE_SUCCEEDED
    assert task.progress.units.current == 30
    assert any("resumed" in r.getMessage() for r in caplog.records)
