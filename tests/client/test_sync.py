"""The sync facade: the agent API for threads, with the same features.

The agent runs in a worker thread (as a non-asyncio program would) while the
server runs on the test's event loop.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from headway.client import StepState, SyncTracker, TaskCancelled, TaskState
from tests.harness import ServerHarness


async def test_a_sync_agent_reports_a_task_to_success(harness: ServerHarness) -> None:
    def agent() -> None:
        with SyncTracker(harness.target, progress_rate=10) as tracker:
            with tracker.task("sync-ok", kind="etl", steps=["extract", "load"]) as task:
                with task.step("extract") as step:
                    for n in range(1, 501):
                        step.progress(n, 500, unit="rows")
                    step.log("extracted", rows=500)
                with task.step("load"):
                    task.metrics(rows=500)
                    task.add_metrics(rows=1)
                    task.iteration(1, max_iterations=1)
                    task.artifact("rows.parquet", "file:///tmp/rows.parquet")
                    task.message("loading")
            assert task.state is TaskState.SUCCEEDED

    await asyncio.to_thread(agent)
    stored = await harness.client().get_task("sync-ok")
    assert stored.state == TaskState.SUCCEEDED
    assert stored.steps[0].progress.units.current == 500
    assert stored.metrics["rows"] == 501
    assert stored.artifacts[0].name == "rows.parquet"
    assert stored.message == "loading"


async def test_an_exception_in_a_thread_fails_the_task(harness: ServerHarness) -> None:
    def agent() -> None:
        with (
            SyncTracker(harness.target) as tracker,
            tracker.task("sync-fail") as task,
            task.step("divide"),
        ):
            print(1 / 0)

    with pytest.raises(ZeroDivisionError):
        await asyncio.to_thread(agent)
    stored = await harness.client().get_task("sync-fail")
    assert stored.state == TaskState.FAILED
    assert stored.error.code == "ZeroDivisionError"
    assert stored.steps[0].state == StepState.FAILED
    assert "1 / 0" in stored.error.details["traceback"]


async def test_a_cancel_reaches_a_thread_and_is_confirmed(harness: ServerHarness) -> None:
    working = threading.Event()
    outcome: dict[str, object] = {}

    def agent() -> None:
        with SyncTracker(harness.target, progress_rate=50) as tracker:
            with (
                tracker.task("sync-cancel", steps=["spin"]) as task,
                task.step("spin") as step,
            ):
                try:
                    for n in range(1_000_000):
                        step.progress(n, 1_000_000)
                        working.set()
                except TaskCancelled as cancelled:
                    outcome["cancelled_by"] = cancelled.requested_by
                    raise
            outcome["flag"] = task.cancel_requested
            outcome["waited"] = task.wait_cancelled(timeout=1)

    thread = asyncio.create_task(asyncio.to_thread(agent))
    await asyncio.to_thread(working.wait, 5)
    await harness.client().cancel_task("sync-cancel", requested_by="carol")
    await asyncio.wait_for(thread, 10)
    assert outcome["cancelled_by"] == "carol"
    assert outcome["flag"] is True
    assert outcome["waited"] is not None
    stored = await harness.client().get_task("sync-cancel")
    assert stored.state == TaskState.CANCELLED


async def test_threads_can_share_one_sync_tracker(harness: ServerHarness) -> None:
    def agents() -> list[TaskState | None]:
        with SyncTracker(harness.target) as tracker:

            def one(n: int) -> TaskState | None:
                with (
                    tracker.task(f"shared-{n}", steps=["work"]) as task,
                    task.step("work") as step,
                ):
                    step.progress(fraction=0.5)
                return task.state

            threads: list[threading.Thread] = []
            states: list[TaskState | None] = [None] * 4

            def run(n: int) -> None:
                states[n] = one(n)

            for n in range(4):
                threads.append(threading.Thread(target=run, args=(n,)))
                threads[-1].start()
            for thread in threads:
                thread.join()
            return states

    assert await asyncio.to_thread(agents) == [TaskState.SUCCEEDED] * 4
