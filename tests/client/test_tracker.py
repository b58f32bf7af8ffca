"""The agent API end to end against a real server: success, failure, cancellation."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from headway.client import (
    HeadwayClient,
    LogLevel,
    StepState,
    TaskCancelled,
    TaskState,
    Tracker,
)
from tests.harness import ServerHarness


async def test_a_task_with_steps_succeeds_with_everything_it_reported(
    harness: ServerHarness,
) -> None:
    async with (
        Tracker(harness.target) as tracker,
        tracker.task("report-1", kind="report", steps=["fetch", "write"], max_iterations=3) as task,
    ):
        assert task.state is TaskState.RUNNING
        async with task.step("fetch") as step:
            assert step.state is StepState.RUNNING
            for n in range(1, 121):
                await step.progress(n, 120, unit="files")
            await step.message("fetched every file")
            await step.log("fetched 120 files", source="s3", attempt=1)
        await task.iteration(1)
        # A step nobody declared: discovered along the way, added when it starts.
        async with task.step("review", display_name="Review", weight=2):
            await task.log("looks fine", level=LogLevel.WARNING)
        async with task.step("write") as write:
            await write.progress()  # indeterminate: under way, size unknown
            await write.progress(fraction=0.5)
            await task.metrics(tokens=1000, cost_usd=0.02)
            await task.add_metrics(tokens=520, cost_usd=0.01)
            await task.artifact("report.pdf", "s3://reports/1.pdf", media_type="application/pdf")

    done = task.task
    assert done.state is TaskState.SUCCEEDED
    assert done.fraction == 1.0
    assert [(s.key, s.state) for s in done.steps] == [
        ("fetch", StepState.SUCCEEDED),
        ("write", StepState.SUCCEEDED),
        ("review", StepState.SUCCEEDED),
    ]
    fetch = done.steps[0]
    assert fetch.progress is not None
    assert (fetch.progress.current, fetch.progress.total, fetch.progress.unit) == (
        120,
        120,
        "files",
    )
    assert fetch.message == "fetched every file"
    assert done.steps[2].display_name == "Review"
    assert done.steps[2].weight == 2
    assert done.iteration == 1
    assert done.max_iterations == 3
    assert done.metrics == pytest.approx({"tokens": 1520, "cost_usd": 0.03})
    assert [a.name for a in done.artifacts] == ["report.pdf"]
    assert done.finish_time is not None
    assert done.error is None
    assert done.cancel_request is None

    client = harness.client()
    stored = await client.get_task("report-1")
    assert stored == done.raw
    logs = (await client.list_logs("report-1")).entries
    assert [(e.step_key, e.message, dict(e.fields)) for e in logs] == [
        ("fetch", "fetched 120 files", {"source": "s3", "attempt": "1"}),
        ("", "looks fine", {}),
    ]


async def test_an_exception_fails_the_step_and_the_task_with_its_traceback(
    harness: ServerHarness,
) -> None:
    def parse(row: str) -> int:
        return int(row)

    async def agent() -> None:
        async with (
            Tracker(harness.target) as tracker,
            tracker.task("import-1", steps=["parse", "load"]) as task,
            task.step("parse") as step,
        ):
            await step.progress(3, 10, unit="rows")
            parse("not a number")

    with pytest.raises(ValueError, match="invalid literal"):
        await agent()

    failed = await harness.client().get_task("import-1")
    assert failed.state == TaskState.FAILED
    assert failed.error.code == "ValueError"
    assert "invalid literal" in failed.error.message
    assert failed.error.details["exception"] == "builtins.ValueError"
    assert "in parse" in failed.error.details["traceback"]
    step = failed.steps[0]
    assert step.state == StepState.FAILED
    assert step.error.code == "ValueError"
    assert step.progress.units.current == 3  # where it was when it failed
    assert failed.steps[1].state == StepState.CANCELLED


async def test_a_step_failed_on_purpose_lets_the_task_go_on(harness: ServerHarness) -> None:
    async with Tracker(harness.target) as tracker, tracker.task(steps=["try"]) as task:
        async with task.step("try") as step:
            await step.fail("the mirror was down", code="MIRROR_DOWN")
        failed = task.task.steps[0]
        assert failed.error is not None
        assert (failed.error.code, failed.error.message) == ("MIRROR_DOWN", "the mirror was down")
        assert task.task.steps[0].state is StepState.FAILED
        async with task.step("try"):  # entering a failed step runs it again
            pass
    assert task.state is TaskState.SUCCEEDED
    assert task.task.steps[0].restart_count == 1


async def test_a_cancel_reaches_the_agent_at_its_next_report_and_is_confirmed(
    harness: ServerHarness,
) -> None:
    viewer = harness.client()
    started = asyncio.Event()
    reports_after_cancel = 0
    cancel_seen: list[TaskCancelled] = []

    async def agent(tracker: Tracker) -> None:
        nonlocal reports_after_cancel
        async with (
            tracker.task("crawl-1", steps=["crawl"]) as task,
            task.step("crawl") as step,
        ):
            for page in range(100_000):
                try:
                    await step.progress(page, 100_000, unit="pages")
                except TaskCancelled as cancelled:
                    cancel_seen.append(cancelled)
                    raise
                started.set()
                if task.cancel_requested:
                    reports_after_cancel += 1
                await asyncio.sleep(0.002)

    async with Tracker(harness.target, progress_rate=20) as tracker:
        running = asyncio.create_task(agent(tracker))
        await started.wait()
        await viewer.cancel_task("crawl-1", reason="not needed", requested_by="alice")
        await asyncio.wait_for(running, 10)  # the block swallowed TaskCancelled

    (cancelled,) = cancel_seen
    assert cancelled.task_id == "crawl-1"
    assert (cancelled.requested_by, cancelled.reason) == ("alice", "not needed")
    assert reports_after_cancel == 0  # the very report that learnt of it raised
    task = await viewer.get_task("crawl-1")
    assert task.state == TaskState.CANCELLED
    assert task.cancel_request.requested_by == "alice"
    assert task.steps[0].state == StepState.CANCELLED


async def test_an_agent_can_poll_the_flag_and_await_the_cancel(harness: ServerHarness) -> None:
    viewer = harness.client()
    async with Tracker(harness.target) as tracker, tracker.task("poll-1") as task:
        waiter = asyncio.create_task(task.wait_cancelled())
        await task.log("working")
        assert not task.cancel_requested
        await viewer.cancel_task("poll-1", reason="enough", requested_by="bob")
        await task.log("still working")  # logs never raise: the agent may log its clean-up
        assert task.cancel_requested
        request = await asyncio.wait_for(waiter, 5)
        assert request.requested_by == "bob"
        with pytest.raises(TaskCancelled):
            task.raise_if_cancelled()
        # Leaving the block normally while a cancel is pending confirms it.
    assert task.state is TaskState.CANCELLED


async def test_a_forced_cancel_stops_the_agent_too(harness: ServerHarness) -> None:
    viewer = harness.client()
    async with (
        Tracker(harness.target, progress_rate=None) as tracker,
        tracker.task("forced-1", steps=["work"]) as task,
        task.step("work") as step,
    ):
        await step.progress(1, 10)
        await viewer.cancel_task("forced-1", requested_by="ops", force=True)
        with pytest.raises(TaskCancelled) as raised:
            await step.progress(2, 10)
        assert raised.value.requested_by == "ops"
        raise raised.value
    stored = await viewer.get_task("forced-1")
    assert stored.state == TaskState.CANCELLED
    assert task.cancel_requested


async def test_an_interrupted_agent_marks_its_task_cancelled(harness: ServerHarness) -> None:
    started = asyncio.Event()

    async def agent(tracker: Tracker) -> None:
        async with tracker.task("interrupted-1", steps=["work"]) as task, task.step("work"):
            started.set()
            await asyncio.sleep(60)

    async with Tracker(harness.target) as tracker:
        running = asyncio.create_task(agent(tracker))
        await started.wait()
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
    stored = await harness.client().get_task("interrupted-1")
    assert stored.state == TaskState.CANCELLED
    assert stored.cancel_request.reason == "the agent stopped: CancelledError"


async def test_a_tracker_can_share_a_clients_channel(harness: ServerHarness) -> None:
    async with HeadwayClient(harness.target) as client:
        tracker = Tracker(client)
        async with tracker.task(kind="shared") as task:
            await task.progress(fraction=0.5)
            await task.message("half way")
        assert task.task.message == "half way"
        await tracker.close()  # leaves the caller's channel open
        assert (await client.get_task(task.id)).state == TaskState.SUCCEEDED


async def test_expected_duration_and_step_specs_reach_the_server(harness: ServerHarness) -> None:
    async with (
        Tracker(harness.target) as tracker,
        tracker.task() as task,
        task.step("train", expected_duration=timedelta(minutes=5)) as step,
    ):
        assert step.step is not None
        assert step.step.expected_duration == timedelta(minutes=5)
    assert task.state is TaskState.SUCCEEDED


async def test_failures_of_registered_exception_types_are_recorded_as_retryable(
    harness: ServerHarness,
) -> None:
    async def agent(task_id: str, error: Exception) -> None:
        async with (
            Tracker(harness.target, retryable=(TimeoutError, ConnectionError)) as tracker,
            tracker.task(task_id, steps=["fetch"]) as task,
            task.step("fetch"),
        ):
            raise error

    with pytest.raises(TimeoutError):
        await agent("timed-out", TimeoutError("the mirror did not answer"))
    with pytest.raises(KeyError):
        await agent("broken", KeyError("us"))
    client = harness.client()
    timed_out, broken = await client.get_task("timed-out"), await client.get_task("broken")
    assert (timed_out.error.retryable, timed_out.steps[0].error.retryable) == (True, True)
    assert (broken.error.retryable, broken.steps[0].error.retryable) == (False, False)

    async with Tracker(harness.target) as tracker, tracker.task("said-so", steps=["s"]) as task:
        async with task.step("s") as step:
            await step.fail("quota exceeded upstream", retryable=True)
        await task.fail(TimeoutError("gave up"), retryable=False)  # the agent's word wins
    said = await client.get_task("said-so")
    assert said.steps[0].error.retryable is True
    assert said.error.retryable is False
