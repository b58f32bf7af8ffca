"""The write path's economies: tasks at rest kept as bytes, estimates refreshed at a bounded pace.

A task at rest costs its encoding in memory, not a parsed message; a fast
agent's reports do not recompute the estimates more often than the bound.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from headway.server import domain
from headway.server.engine import ETA_REFRESH_INTERVAL_NS, Change, ChangeKind, MutationContext
from headway.server.eta import Estimator
from headway.server.held import Held
from headway.v1 import task_pb2
from tests.memory_store import MemoryStore
from tests.unit.test_engine import Rig, create, make_settings, named, progress

NANOS = 1_000_000_000


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    rig = Rig(MemoryStore(), make_settings(tmp_path))
    await rig.engine.start()
    yield rig
    await rig.engine.stop()


def succeed(task: task_pb2.Task | None, ctx: MutationContext) -> Change:
    assert task is not None
    domain.succeed_task(task, None, ctx.now)
    return Change(ChangeKind.UPDATED, task)


def held(rig: Rig, task_id: str) -> Held:
    (found,) = [h for h in rig.engine.all_tasks() if h.task().id == task_id]
    return found


async def test_a_task_at_rest_is_kept_as_its_bytes_and_reads_back_whole(rig: Rig) -> None:
    await rig.mutate("t1", named("t1", create()))
    await rig.mutate("t2", named("t2", create()))
    await rig.mutate("t1", progress(40))
    done = await rig.mutate("t1", succeed)
    resting, running = held(rig, "t1"), held(rig, "t2")
    assert resting.parsed is None, "a task at rest keeps no parsed message"
    assert running.parsed is not None, "a task that may change keeps its message"
    assert rig.engine.get("acme", "t1") == done.task
    assert resting.data == done.task.SerializeToString()
    restarted = Rig(rig.store, make_settings(Path("/nonexistent")))
    await restarted.engine.start()
    assert restarted.engine.get("acme", "t1") == done.task, "the same after a restart"
    assert held(restarted, "t1").parsed is None
    await restarted.engine.stop()


async def test_a_mutation_never_changes_the_task_readers_hold(rig: Rig) -> None:
    await rig.mutate("t1", named("t1", create()))
    before = rig.engine.get("acme", "t1")
    kept = before.SerializeToString()
    await rig.mutate("t1", progress(50, "half"))
    assert before.SerializeToString() == kept
    assert rig.engine.get("acme", "t1").steps[0].message == "half"


def running(fraction_units: int) -> task_pb2.Task:
    task = task_pb2.Task(id="t", tenant="acme", kind="k", state=task_pb2.TASK_STATE_RUNNING)
    step = task.steps.add(key="s", weight=1.0, state=task_pb2.STEP_STATE_RUNNING)
    step.progress.units.current = fraction_units
    step.progress.units.total = 100
    step.fraction = fraction_units / 100
    step.start_time.FromNanoseconds(1 * NANOS)
    task.start_time.FromNanoseconds(1 * NANOS)
    task.fraction = step.fraction
    return task


def refreshed(estimator: Estimator, task: task_pb2.Task, now_ns: int) -> Timestamp:
    estimator.refresh(task, now_ns)
    return task.eta.compute_time


def test_fraction_only_reports_within_the_interval_keep_their_estimates() -> None:
    interval = ETA_REFRESH_INTERVAL_NS
    estimator = Estimator(60.0, min_interval_ns=interval)
    task = running(10)
    estimator.refresh(task, 10 * NANOS)
    task.steps[0].fraction = task.fraction = 0.2
    estimator.refresh(task, 20 * NANOS)  # a rate: an estimate from here on
    first = task.eta.compute_time.ToNanoseconds()
    assert first == 20 * NANOS
    task.steps[0].fraction = task.fraction = 0.3
    estimator.refresh(task, 20 * NANOS + interval - 1)
    assert task.eta.compute_time.ToNanoseconds() == first, "within the interval: kept"
    task.steps[0].fraction = task.fraction = 0.4
    estimator.refresh(task, 20 * NANOS + interval)
    assert task.eta.compute_time.ToNanoseconds() == 20 * NANOS + interval, "the bound holds"


def test_a_change_of_state_refreshes_the_estimates_at_once() -> None:
    estimator = Estimator(60.0, min_interval_ns=ETA_REFRESH_INTERVAL_NS)
    task = running(10)
    estimator.refresh(task, 10 * NANOS)
    task.steps.add(key="s2", weight=1.0, state=task_pb2.STEP_STATE_PENDING)
    estimator.refresh(task, 10 * NANOS + 1)  # a step added: refreshed, not skipped
    task.steps[0].state = task_pb2.STEP_STATE_SUCCEEDED
    task.steps[0].fraction = 1.0
    estimator.refresh(task, 10 * NANOS + 2)
    assert not task.steps[0].HasField("eta"), "a finished step's estimate went at once"


def test_without_an_interval_every_report_refreshes() -> None:
    estimator = Estimator(60.0)
    task = running(10)
    estimator.refresh(task, 10 * NANOS)
    task.steps[0].fraction = task.fraction = 0.2
    estimator.refresh(task, 20 * NANOS)
    task.steps[0].fraction = task.fraction = 0.3
    estimator.refresh(task, 20 * NANOS + 1)
    assert task.eta.compute_time.ToNanoseconds() == 20 * NANOS + 1


async def test_an_agent_report_within_the_interval_keeps_the_estimate_on_the_task(
    rig: Rig,
) -> None:
    await rig.mutate("t1", named("t1", create()))
    await rig.mutate("t1", progress(10))
    rig.clock.advance(10)
    moved = await rig.mutate("t1", progress(20))
    assert moved.task.HasField("eta")
    again = await rig.mutate("t1", progress(30))  # the same instant: within the interval
    assert again.task.eta == moved.task.eta
    rig.clock.advance(1)
    later = await rig.mutate("t1", progress(40))
    assert later.task.eta.compute_time != moved.task.eta.compute_time
