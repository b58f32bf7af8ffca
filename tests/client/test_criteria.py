"""Success criteria through the agent API and the read models, against a real server."""

from __future__ import annotations

import asyncio

import pytest

from headway.client import (
    Criterion,
    InvalidArgumentError,
    SyncTracker,
    Task,
    TaskCancelled,
    TaskState,
    Tracker,
)
from headway.v1 import task_pb2
from tests.harness import ServerHarness


def listed(task: Task) -> list[tuple[str, bool, str]]:
    return [(c.name, c.met, c.detail) for c in task.criteria]


async def test_an_agent_declares_its_criteria_and_sets_them_as_it_goes(
    harness: ServerHarness,
) -> None:
    async with (
        Tracker(harness.target) as tracker,
        tracker.task(
            "loop-1",
            kind="agent",
            criteria=["tests pass", "lint clean", task_pb2.Criterion(name="docs", detail="later")],
        ) as task,
    ):
        assert (task.task.criteria_met, task.task.criteria_total) == (0, 3)
        await task.set_criterion("tests pass", False, detail="41/42")
        await task.set_criterion("lint clean")  # met by default
        assert (task.task.criteria_met, task.task.criteria_total) == (1, 3)
        await task.set_criteria(
            {"tests pass": True, "benchmarks": False}, details={"benchmarks": "x" * 5000}
        )
        mid = task.task

    assert listed(mid)[:3] == [
        ("tests pass", True, ""),  # replaced whole: the old detail is gone
        ("lint clean", True, ""),
        ("docs", False, "later"),
    ]
    # A detail past the contract's 1024 characters is shortened, not refused.
    benchmarks = mid.criterion("benchmarks")
    assert benchmarks is not None
    assert not benchmarks.met
    assert len(benchmarks.detail) == 1024
    assert benchmarks.detail.endswith("…")
    assert (mid.criteria_met, mid.criteria_total) == (2, 4)
    assert mid.criterion("nope") is None

    stored = Task.from_proto(await harness.client().get_task("loop-1"))
    assert stored.state is TaskState.SUCCEEDED
    assert listed(stored) == listed(mid)
    assert all(isinstance(c, Criterion) for c in stored.criteria)


async def test_a_bad_criterion_raises_the_servers_field_violation(harness: ServerHarness) -> None:
    async with Tracker(harness.target) as tracker, tracker.task("loop-2", criteria=["a"]) as task:
        with pytest.raises(InvalidArgumentError) as info:
            await task.set_criterion("")
        assert list(info.value.field_violations) == ["criteria[0].name"]
        assert listed(task.task) == [("a", False, "")]


async def test_setting_a_criterion_learns_of_a_cancel_request(harness: ServerHarness) -> None:
    viewer = harness.client()
    async with Tracker(harness.target) as tracker, tracker.task("loop-3", criteria=["a"]) as task:
        await viewer.cancel_task("loop-3", reason="enough")
        with pytest.raises(TaskCancelled):
            await task.set_criterion("a")
    stored = Task.from_proto(await viewer.get_task("loop-3"))
    assert stored.state is TaskState.CANCELLED
    assert listed(stored) == [("a", True, "")]  # the report itself was applied


async def test_the_sync_tracker_sets_criteria_too(harness: ServerHarness) -> None:
    def agent() -> None:
        with (
            SyncTracker(harness.target) as tracker,
            tracker.task("loop-4", criteria=["a", "b"]) as task,
        ):
            task.set_criterion("b", detail="ok")
            task.set_criteria({"a": True})

    await asyncio.to_thread(agent)
    stored = Task.from_proto(await harness.client().get_task("loop-4"))
    assert listed(stored) == [("a", True, ""), ("b", True, "ok")]
    assert stored.state is TaskState.SUCCEEDED
