"""The task and step state machines and the progress roll-up, as pure functions.

Each mutation in `domain` works on a private copy of the task and may leave it
half-changed when it raises (the engine discards the copy), so tests that look
at a task after a rejected mutation check only rejections that raise before any
change, and the property test copies the task before every step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st

from headway.server import domain
from headway.server.config import Limits
from headway.server.errors import HeadwayError, Kind
from headway.v1 import task_pb2, task_service_pb2

T0 = Timestamp(seconds=1_700_000_000)
T1 = Timestamp(seconds=1_700_000_100)
T2 = Timestamp(seconds=1_700_000_200)
LIMITS = Limits()
TASK_ID = "task-1"
LEASE = Duration(seconds=60)
CANCEL_DEADLINE = Duration(seconds=30)

TS = task_pb2  # short alias for the state constants in tables

# -- helpers ----------------------------------------------------------------------------


def make_task(
    *keys: str, weights: Sequence[float] = (), start: bool = False, **fields: object
) -> task_pb2.Task:
    """A task created the way CreateTask creates it."""
    specs = [
        task_service_pb2.StepSpec(key=key, weight=weights[i] if i < len(weights) else 0.0)
        for i, key in enumerate(keys)
    ]
    request = task_service_pb2.CreateTaskRequest(steps=specs, start=start, **fields)
    return domain.new_task(request, tenant="acme", task_id=TASK_ID, revision=1, now=T0, lease=LEASE)


def copy_of(task: task_pb2.Task) -> task_pb2.Task:
    copied = task_pb2.Task()
    copied.CopyFrom(task)
    return copied


def step_update(key: str = "a", **fields: object) -> task_service_pb2.UpdateStepRequest:
    return task_service_pb2.UpdateStepRequest(task_id=TASK_ID, step_key=key, **fields)


def fraction(value: float) -> task_pb2.Progress:
    return task_pb2.Progress(fraction=value)


def units(current: int, total: int) -> task_pb2.Progress:
    return task_pb2.Progress(units=task_pb2.Progress.Units(current=current, total=total))


INDETERMINATE = task_pb2.Progress(indeterminate=True)


def update(task: task_pb2.Task, key: str = "a", now: Timestamp = T1, **fields: object) -> None:
    domain.update_step(task, step_update(key, **fields), now)


def cancel(
    task: task_pb2.Task,
    *,
    force: bool = False,
    reason: str = "not needed",
    revision: int = 5,
    now: Timestamp = T1,
) -> bool:
    """A viewer's CancelTask, as the service hands it to the domain."""
    request = task_service_pb2.CancelTaskRequest(
        task_id=TASK_ID, reason=reason, requested_by="alice", force=force
    )
    return domain.request_cancel(task, request, revision, now, CANCEL_DEADLINE)


def expect_error(kind: Kind, reason: str, call: Callable[[], object]) -> HeadwayError:
    with pytest.raises(HeadwayError) as caught:
        call()
    assert caught.value.kind is kind, caught.value
    assert caught.value.reason == reason, caught.value
    return caught.value


def task_in(state: int) -> task_pb2.Task:
    """A task with steps a (RUNNING) and b (PENDING), brought to `state` by the domain."""
    task = make_task("a", "b")
    if state == TS.TASK_STATE_PENDING:
        return task
    domain.start_task(task, T0)
    update(task, "a", now=T0, state=TS.STEP_STATE_RUNNING)
    if state == TS.TASK_STATE_SUCCEEDED:
        domain.succeed_task(task, "done", T0)
    elif state == TS.TASK_STATE_FAILED:
        domain.fail_task(task, task_pb2.TaskError(code="BOOM", message="it broke"), T0)
    elif state == TS.TASK_STATE_CANCELLED:
        domain.confirm_cancel(task, "stop", 2, T0)
    assert task.state == state
    return task


def step_in(state: int) -> task_pb2.Task:
    """A RUNNING task whose step a is in `state` (b stays PENDING)."""
    task = make_task("a", "b", start=True)
    if state == TS.STEP_STATE_CANCELLED:
        # Only reachable when the task ends; set directly to test the step machine alone.
        task.steps[0].state = TS.STEP_STATE_CANCELLED
    elif state != TS.STEP_STATE_PENDING:
        if state != TS.STEP_STATE_SKIPPED:
            update(task, "a", now=T0, state=TS.STEP_STATE_RUNNING)
        if state != TS.STEP_STATE_RUNNING:
            update(task, "a", now=T0, state=state)
    assert task.steps[0].state == state
    assert task.state == TS.TASK_STATE_RUNNING
    return task


# -- task transitions -------------------------------------------------------------------

TASK_OPERATIONS: dict[str, Callable[[task_pb2.Task], object]] = {
    "start": lambda task: domain.start_task(task, T1),
    "succeed": lambda task: domain.succeed_task(task, None, T1),
    "fail": lambda task: domain.fail_task(task, task_pb2.TaskError(message="x"), T1),
    "confirm_cancel": lambda task: domain.confirm_cancel(task, "agent stops", 3, T1),
    "cancel_with_force": lambda task: cancel(task, force=True, revision=3),
}

ALLOWED_TASK_TRANSITIONS = [
    (TS.TASK_STATE_PENDING, "start", TS.TASK_STATE_RUNNING),
    (TS.TASK_STATE_PENDING, "succeed", TS.TASK_STATE_SUCCEEDED),
    (TS.TASK_STATE_PENDING, "fail", TS.TASK_STATE_FAILED),
    (TS.TASK_STATE_PENDING, "confirm_cancel", TS.TASK_STATE_CANCELLED),
    (TS.TASK_STATE_PENDING, "cancel_with_force", TS.TASK_STATE_CANCELLED),
    (TS.TASK_STATE_RUNNING, "succeed", TS.TASK_STATE_SUCCEEDED),
    (TS.TASK_STATE_RUNNING, "fail", TS.TASK_STATE_FAILED),
    (TS.TASK_STATE_RUNNING, "confirm_cancel", TS.TASK_STATE_CANCELLED),
    (TS.TASK_STATE_RUNNING, "cancel_with_force", TS.TASK_STATE_CANCELLED),
]

RESTING = [TS.TASK_STATE_SUCCEEDED, TS.TASK_STATE_FAILED, TS.TASK_STATE_CANCELLED]

REJECTED_TASK_TRANSITIONS = [
    (TS.TASK_STATE_RUNNING, "start", Kind.FAILED_PRECONDITION, "INVALID_TRANSITION"),
] + [
    (state, operation, Kind.FAILED_PRECONDITION, "TASK_AT_REST")
    for state in RESTING
    for operation in TASK_OPERATIONS
]


@pytest.mark.parametrize(("start", "operation", "end"), ALLOWED_TASK_TRANSITIONS)
def test_allowed_task_transition(start: int, operation: str, end: int) -> None:
    task = task_in(start)
    TASK_OPERATIONS[operation](task)
    assert task.state == end
    assert task.update_time == T1
    assert task.HasField("start_time")
    if domain.is_resting(end):
        assert task.finish_time == T1
        assert all(step.state not in domain.STEP_UNFINISHED for step in task.steps)
    else:
        assert task.start_time == T1
        assert not task.HasField("finish_time")


@pytest.mark.parametrize(("start", "operation", "kind", "reason"), REJECTED_TASK_TRANSITIONS)
def test_rejected_task_transition(start: int, operation: str, kind: Kind, reason: str) -> None:
    task = task_in(start)
    before = copy_of(task)
    error = expect_error(kind, reason, lambda: TASK_OPERATIONS[operation](task))
    assert error.metadata["task_id"] == TASK_ID
    assert error.metadata["state"] == domain.task_state_name(start)
    assert task == before, "a rejected transition changes nothing"


def test_every_task_transition_is_covered() -> None:
    covered = {(s, op) for s, op, _ in ALLOWED_TASK_TRANSITIONS} | {
        (s, op) for s, op, _, _ in REJECTED_TASK_TRANSITIONS
    }
    states = [TS.TASK_STATE_PENDING, TS.TASK_STATE_RUNNING, *RESTING]
    assert covered == {(s, op) for s in states for op in TASK_OPERATIONS}


RESTING_MUTATIONS: dict[str, Callable[[task_pb2.Task], object]] = {
    "add_steps": lambda task: domain.add_steps(
        task, [task_service_pb2.StepSpec(key="new")], T1, LIMITS
    ),
    "update_step": lambda task: update(task, "a", message="late"),
    "update_step_restart": lambda task: update(task, "a", restart=True),
    "update_task": lambda task: domain.update_task(
        task, task_service_pb2.UpdateTaskRequest(task_id=TASK_ID, message="late"), T1, LIMITS
    ),
    "add_artifacts": lambda task: domain.add_artifacts(
        task, [task_pb2.Artifact(name="report")], T1, LIMITS
    ),
    "request_cancel": lambda task: cancel(task),
    "ensure_mutable": domain.ensure_mutable,
}


@pytest.mark.parametrize("state", RESTING)
@pytest.mark.parametrize("mutation", sorted(RESTING_MUTATIONS))
def test_resting_states_are_final(state: int, mutation: str) -> None:
    task = task_in(state)
    before = copy_of(task)
    error = expect_error(
        Kind.FAILED_PRECONDITION, "TASK_AT_REST", lambda: RESTING_MUTATIONS[mutation](task)
    )
    assert error.metadata == {"task_id": TASK_ID, "state": domain.task_state_name(state)}
    assert task == before


def test_new_task_is_pending_or_running_when_started() -> None:
    pending = make_task("a", display_name="Build", kind="ci.build", labels={"env": "prod"})
    assert pending.state == TS.TASK_STATE_PENDING
    assert not pending.HasField("start_time")
    assert pending.create_time == pending.update_time == T0
    assert pending.create_revision == 1
    assert pending.lease_duration == LEASE
    assert pending.last_report_time == T0
    assert pending.tenant == "acme"
    assert dict(pending.labels) == {"env": "prod"}
    assert pending.steps[0].display_name == "a", "display name defaults to the key"
    assert pending.steps[0].weight == 1.0, "weight 0 means 1"

    running = make_task("a", start=True)
    assert running.state == TS.TASK_STATE_RUNNING
    assert running.start_time == T0


def test_succeed_keeps_message_when_none_and_replaces_it_otherwise() -> None:
    kept = make_task(start=True, message="working")
    domain.succeed_task(kept, None, T1)
    assert kept.message == "working"
    replaced = make_task(start=True, message="working")
    domain.succeed_task(replaced, "all done", T1)
    assert replaced.message == "all done"


def test_fail_records_the_error() -> None:
    task = make_task(start=True)
    error = task_pb2.TaskError(code="TIMEOUT", message="too slow", details={"after": "60s"})
    domain.fail_task(task, error, T1)
    assert task.state == TS.TASK_STATE_FAILED
    assert task.error == error


def test_finishing_a_pending_task_sets_its_start_time() -> None:
    task = make_task("a")
    domain.succeed_task(task, None, T2)
    assert task.start_time == T2
    assert task.finish_time == T2


# -- step transitions -------------------------------------------------------------------

STEP_STATES = [
    TS.STEP_STATE_PENDING,
    TS.STEP_STATE_RUNNING,
    TS.STEP_STATE_SUCCEEDED,
    TS.STEP_STATE_FAILED,
    TS.STEP_STATE_SKIPPED,
    TS.STEP_STATE_CANCELLED,
]
ALLOWED_STEP_TRANSITIONS = sorted(
    {
        (TS.STEP_STATE_PENDING, TS.STEP_STATE_RUNNING),
        (TS.STEP_STATE_PENDING, TS.STEP_STATE_SUCCEEDED),
        (TS.STEP_STATE_PENDING, TS.STEP_STATE_FAILED),
        (TS.STEP_STATE_PENDING, TS.STEP_STATE_SKIPPED),
        (TS.STEP_STATE_RUNNING, TS.STEP_STATE_RUNNING),
        (TS.STEP_STATE_RUNNING, TS.STEP_STATE_SUCCEEDED),
        (TS.STEP_STATE_RUNNING, TS.STEP_STATE_FAILED),
    }
)
REJECTED_STEP_TRANSITIONS = sorted(
    {(a, b) for a in STEP_STATES for b in STEP_STATES} - set(ALLOWED_STEP_TRANSITIONS)
)


def _step_id(pair: tuple[int, int]) -> str:
    return "->".join(domain.step_state_name(s) for s in pair)


@pytest.mark.parametrize(
    ("start", "target"),
    ALLOWED_STEP_TRANSITIONS,
    ids=[_step_id(pair) for pair in ALLOWED_STEP_TRANSITIONS],
)
def test_allowed_step_transition(start: int, target: int) -> None:
    task = step_in(start)
    original_start = task.steps[0].start_time
    error = task_pb2.TaskError(code="E", message="step broke")
    update(task, "a", now=T2, state=target, error=error)
    step = task.steps[0]
    assert step.state == target
    if target == TS.STEP_STATE_SKIPPED:
        assert not step.HasField("start_time"), "a skipped step never ran"
    elif start == TS.STEP_STATE_PENDING:
        assert step.start_time == T2
    else:
        assert step.start_time == original_start, "a running step keeps its start time"
    if target in domain.STEP_UNFINISHED:
        assert not step.HasField("finish_time")
    else:
        assert step.finish_time == T2
    assert step.HasField("error") == (target == TS.STEP_STATE_FAILED)
    if target == TS.STEP_STATE_FAILED:
        assert step.error == error
    assert task.steps[1].state == TS.STEP_STATE_PENDING, "other steps are untouched"
    assert task.update_time == T2


def test_skipping_a_pending_step_does_not_set_its_start_time() -> None:
    task = step_in(TS.STEP_STATE_PENDING)
    update(task, "a", state=TS.STEP_STATE_SKIPPED)
    assert not task.steps[0].HasField("start_time")
    assert task.steps[0].finish_time == T1


@pytest.mark.parametrize(
    ("start", "target"),
    REJECTED_STEP_TRANSITIONS,
    ids=[_step_id(pair) for pair in REJECTED_STEP_TRANSITIONS],
)
def test_rejected_step_transition(start: int, target: int) -> None:
    task = step_in(start)
    before = copy_of(task)
    error = expect_error(
        Kind.FAILED_PRECONDITION,
        "INVALID_STEP_TRANSITION",
        lambda: update(task, "a", state=target),
    )
    assert error.metadata == {
        "task_id": TASK_ID,
        "step_key": "a",
        "from": domain.step_state_name(start),
        "to": domain.step_state_name(target),
    }
    assert task == before


def test_step_transition_tables_cover_every_pair() -> None:
    assert len(ALLOWED_STEP_TRANSITIONS) + len(REJECTED_STEP_TRANSITIONS) == len(STEP_STATES) ** 2


@pytest.mark.parametrize("start", [TS.STEP_STATE_RUNNING, TS.STEP_STATE_FAILED])
@pytest.mark.parametrize("target", [TS.STEP_STATE_UNSPECIFIED, TS.STEP_STATE_RUNNING])
def test_restart_is_allowed_from_running_and_failed(start: int, target: int) -> None:
    task = step_in(start)
    update(task, "a", now=T2, restart=True, state=target)
    step = task.steps[0]
    assert step.state == TS.STEP_STATE_RUNNING
    assert step.restart_count == 1
    assert step.start_time == T2
    assert not step.HasField("finish_time")
    assert not step.HasField("error")


@pytest.mark.parametrize(
    "start",
    [
        TS.STEP_STATE_PENDING,
        TS.STEP_STATE_SUCCEEDED,
        TS.STEP_STATE_SKIPPED,
        TS.STEP_STATE_CANCELLED,
    ],
)
def test_restart_is_rejected_from_other_states(start: int) -> None:
    task = step_in(start)
    before = copy_of(task)
    error = expect_error(
        Kind.FAILED_PRECONDITION,
        "INVALID_STEP_TRANSITION",
        lambda: update(task, "a", restart=True),
    )
    assert error.metadata["state"] == domain.step_state_name(start)
    assert task == before


FINAL_STEP_STATES = [
    TS.STEP_STATE_SUCCEEDED,
    TS.STEP_STATE_FAILED,
    TS.STEP_STATE_SKIPPED,
    TS.STEP_STATE_CANCELLED,
]


@pytest.mark.parametrize("start", FINAL_STEP_STATES)
@pytest.mark.parametrize(
    "change",
    [{"message": "more"}, {"progress": task_pb2.Progress(fraction=0.9)}],
    ids=["message", "progress"],
)
def test_changing_a_final_step_without_a_state_is_step_finished(
    start: int, change: dict[str, object]
) -> None:
    task = step_in(start)
    error = expect_error(
        Kind.FAILED_PRECONDITION, "STEP_FINISHED", lambda: update(task, "a", **change)
    )
    assert error.metadata == {
        "task_id": TASK_ID,
        "step_key": "a",
        "state": domain.step_state_name(start),
    }


def test_a_step_cancelled_with_its_task_cannot_change() -> None:
    task = task_in(TS.TASK_STATE_CANCELLED)
    assert task.steps[0].state == TS.STEP_STATE_CANCELLED
    expect_error(
        Kind.FAILED_PRECONDITION,
        "TASK_AT_REST",
        lambda: update(task, "a", state=TS.STEP_STATE_RUNNING),
    )


def test_a_running_step_can_report_running_again_with_a_message() -> None:
    task = step_in(TS.STEP_STATE_RUNNING)
    started = task.steps[0].start_time
    update(task, "a", now=T2, state=TS.STEP_STATE_RUNNING, message="page 3")
    assert task.steps[0].state == TS.STEP_STATE_RUNNING
    assert task.steps[0].message == "page 3"
    assert task.steps[0].start_time == started


def test_unknown_step_is_not_found() -> None:
    task = make_task("a", start=True)
    error = expect_error(
        Kind.NOT_FOUND, "STEP_NOT_FOUND", lambda: update(task, "nope", message="x")
    )
    assert error.metadata == {"task_id": TASK_ID, "step_key": "nope"}


# -- closing steps when the task ends ---------------------------------------------------


def task_with_every_step_state() -> task_pb2.Task:
    """Steps p (PENDING), r (RUNNING), s (SUCCEEDED), f (FAILED), k (SKIPPED)."""
    task = make_task("p", "r", "s", "f", "k", start=True)
    update(task, "r", now=T0, state=TS.STEP_STATE_RUNNING)
    update(task, "s", now=T0, state=TS.STEP_STATE_SUCCEEDED)
    update(task, "f", now=T0, state=TS.STEP_STATE_FAILED)
    update(task, "k", now=T0, state=TS.STEP_STATE_SKIPPED)
    return task


CLOSING = [
    pytest.param(
        lambda task: domain.succeed_task(task, None, T2),
        [
            TS.STEP_STATE_SKIPPED,
            TS.STEP_STATE_SUCCEEDED,
            TS.STEP_STATE_SUCCEEDED,
            TS.STEP_STATE_FAILED,
            TS.STEP_STATE_SKIPPED,
        ],
        id="succeeded",
    ),
    pytest.param(
        lambda task: domain.fail_task(task, task_pb2.TaskError(message="x"), T2),
        [
            TS.STEP_STATE_CANCELLED,
            TS.STEP_STATE_CANCELLED,
            TS.STEP_STATE_SUCCEEDED,
            TS.STEP_STATE_FAILED,
            TS.STEP_STATE_SKIPPED,
        ],
        id="failed",
    ),
    pytest.param(
        lambda task: domain.confirm_cancel(task, "stop", 9, T2),
        [
            TS.STEP_STATE_CANCELLED,
            TS.STEP_STATE_CANCELLED,
            TS.STEP_STATE_SUCCEEDED,
            TS.STEP_STATE_FAILED,
            TS.STEP_STATE_SKIPPED,
        ],
        id="cancelled",
    ),
    pytest.param(
        lambda task: cancel(task, force=True, revision=9, now=T2),
        [
            TS.STEP_STATE_CANCELLED,
            TS.STEP_STATE_CANCELLED,
            TS.STEP_STATE_SUCCEEDED,
            TS.STEP_STATE_FAILED,
            TS.STEP_STATE_SKIPPED,
        ],
        id="force-cancelled",
    ),
]


@pytest.mark.parametrize(("finish", "expected"), CLOSING)
def test_unfinished_steps_are_closed_when_the_task_ends(
    finish: Callable[[task_pb2.Task], object], expected: list[int]
) -> None:
    task = task_with_every_step_state()
    finish(task)
    assert [step.state for step in task.steps] == expected
    assert task.steps[0].finish_time == T2
    assert task.steps[1].finish_time == T2
    # Steps that were already final keep their own finish time.
    assert [step.finish_time for step in task.steps[2:]] == [T0, T0, T0]
    assert not any(step.state in domain.STEP_UNFINISHED for step in task.steps)


# -- progress roll-up -------------------------------------------------------------------


def test_rollup_by_units_and_weight() -> None:
    task = make_task("a", "b", weights=[1.0, 3.0], start=True)
    update(task, "a", progress=units(3, 4))
    assert task.steps[0].fraction == 0.75
    assert task.steps[1].fraction == 0.0
    assert task.fraction == pytest.approx(0.75 / 4)


def test_rollup_by_fraction_and_weight() -> None:
    task = make_task("a", "b", "c", weights=[1.0, 3.0, 4.0], start=True)
    update(task, "a", progress=fraction(0.5))
    update(task, "b", progress=fraction(0.25))
    assert task.fraction == pytest.approx((0.5 * 1 + 0.25 * 3) / 8)


def test_units_beyond_total_are_capped_at_one() -> None:
    assert domain.progress_fraction(units(15, 10)) == 1.0


def test_indeterminate_progress_counts_as_zero() -> None:
    task = make_task("a", "b", start=True)
    update(task, "a", progress=INDETERMINATE)
    assert task.steps[0].state == TS.STEP_STATE_RUNNING
    assert task.steps[0].progress.indeterminate
    assert task.steps[0].fraction == 0.0
    assert task.fraction == 0.0
    assert domain.progress_fraction(INDETERMINATE) is None
    assert domain.progress_fraction(task_pb2.Progress()) is None


@pytest.mark.parametrize("done", [TS.STEP_STATE_SKIPPED, TS.STEP_STATE_SUCCEEDED])
def test_skipped_and_succeeded_steps_count_as_done(done: int) -> None:
    task = make_task("a", "b", weights=[1.0, 3.0], start=True)
    update(task, "b", state=done)
    assert task.steps[1].fraction == 1.0
    assert task.fraction == pytest.approx(0.75)


def test_succeeded_task_is_complete_even_with_a_failed_step() -> None:
    task = make_task("a", "b", start=True)
    update(task, "a", progress=fraction(0.2))
    update(task, "a", state=TS.STEP_STATE_FAILED)
    domain.succeed_task(task, None, T2)
    assert task.steps[0].state == TS.STEP_STATE_FAILED
    assert task.fraction == 1.0


def test_succeeded_task_without_steps_is_complete() -> None:
    task = make_task(start=True)
    domain.succeed_task(task, None, T1)
    assert task.fraction == 1.0


def test_failed_and_cancelled_steps_keep_the_fraction_they_reached() -> None:
    # Pins the code's rule (domain._step_fraction): the task's progress never jumps back
    # when a step stops. NB: task.proto's comment on Step.fraction says "0 otherwise".
    task = make_task("a", "b", start=True)
    update(task, "a", progress=fraction(0.6))
    update(task, "a", state=TS.STEP_STATE_FAILED)
    assert task.steps[0].fraction == pytest.approx(0.6)
    update(task, "b", progress=fraction(0.2))
    domain.fail_task(task, task_pb2.TaskError(message="x"), T2)
    assert task.steps[1].state == TS.STEP_STATE_CANCELLED
    assert task.steps[1].fraction == pytest.approx(0.2)
    assert task.fraction == pytest.approx(0.4)


@pytest.mark.parametrize(
    ("progress", "expected"),
    [
        (units(30, 120), 0.25),
        (fraction(0.4), 0.4),
        (INDETERMINATE, 0.0),
    ],
    ids=["units", "fraction", "indeterminate"],
)
def test_task_without_steps_uses_its_own_progress(
    progress: task_pb2.Progress, expected: float
) -> None:
    task = make_task()
    assert task.fraction == 0.0
    domain.update_task(
        task, task_service_pb2.UpdateTaskRequest(task_id=TASK_ID, progress=progress), T1, LIMITS
    )
    assert task.fraction == pytest.approx(expected)
    assert task.state == TS.TASK_STATE_RUNNING, "progress on a PENDING task starts it"
    assert task.start_time == T1


def test_task_progress_is_ignored_when_the_task_has_steps() -> None:
    task = make_task("a", "b", start=True)
    domain.update_task(
        task,
        task_service_pb2.UpdateTaskRequest(task_id=TASK_ID, progress=fraction(0.9)),
        T1,
        LIMITS,
    )
    assert task.progress.fraction == 0.9
    assert task.fraction == 0.0


def test_adding_steps_dilutes_the_fraction() -> None:
    task = make_task("a", start=True)
    update(task, "a", state=TS.STEP_STATE_SUCCEEDED)
    assert task.fraction == 1.0
    domain.add_steps(task, [task_service_pb2.StepSpec(key="b")], T1, LIMITS)
    assert task.fraction == 0.5


# -- progress regression and restart ----------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (fraction(0.5), fraction(0.4)),
        (units(5, 10), units(4, 10)),
        (units(5, 10), fraction(0.3)),
        (fraction(0.5), units(6, 20)),
    ],
    ids=["fraction", "units", "units-to-fraction", "fraction-to-units"],
)
def test_progress_may_not_move_backwards(
    first: task_pb2.Progress, second: task_pb2.Progress
) -> None:
    task = make_task("a", start=True)
    update(task, "a", progress=first)
    before = copy_of(task)
    error = expect_error(
        Kind.FAILED_PRECONDITION, "PROGRESS_REGRESSED", lambda: update(task, "a", progress=second)
    )
    assert error.metadata == {"task_id": TASK_ID, "step_key": "a"}
    assert task == before


def test_progress_may_stay_or_advance() -> None:
    task = make_task("a", start=True)
    update(task, "a", progress=fraction(0.5))
    update(task, "a", progress=fraction(0.5))
    update(task, "a", progress=units(7, 10))
    assert task.steps[0].fraction == pytest.approx(0.7)


def test_progress_may_move_backwards_with_restart() -> None:
    task = make_task("a", start=True)
    update(task, "a", progress=fraction(0.8))
    update(task, "a", now=T2, restart=True, progress=fraction(0.1))
    step = task.steps[0]
    assert step.progress == fraction(0.1)
    assert step.fraction == pytest.approx(0.1)
    assert step.restart_count == 1
    assert task.fraction == pytest.approx(0.1)


def test_restart_from_running_resets_progress() -> None:
    task = make_task("a", start=True)
    update(task, "a", progress=fraction(0.6), message="halfway")
    update(task, "a", now=T2, restart=True)
    step = task.steps[0]
    assert step.state == TS.STEP_STATE_RUNNING
    assert step.restart_count == 1
    assert not step.HasField("progress")
    assert step.fraction == 0.0
    assert task.fraction == 0.0
    assert step.start_time == T2


def test_restart_from_failed_runs_the_step_again_and_counts() -> None:
    task = make_task("a", start=True)
    update(task, "a", progress=fraction(0.6))
    update(task, "a", state=TS.STEP_STATE_FAILED, error=task_pb2.TaskError(message="oom"))
    assert task.fraction == pytest.approx(0.6)
    update(task, "a", now=T2, restart=True)
    step = task.steps[0]
    assert step.state == TS.STEP_STATE_RUNNING
    assert step.restart_count == 1
    assert not step.HasField("error")
    assert not step.HasField("finish_time")
    assert not step.HasField("progress")
    assert task.fraction == 0.0
    update(task, "a", state=TS.STEP_STATE_FAILED)
    update(task, "a", restart=True, progress=fraction(0.3))
    assert task.steps[0].restart_count == 2
    assert task.steps[0].fraction == pytest.approx(0.3)


def test_progress_on_a_pending_step_starts_the_step_and_the_task() -> None:
    task = make_task("a", "b")
    assert task.state == TS.TASK_STATE_PENDING
    update(task, "b", now=T2, progress=fraction(0.3))
    step = task.steps[1]
    assert step.state == TS.STEP_STATE_RUNNING
    assert step.start_time == T2
    assert task.state == TS.TASK_STATE_RUNNING
    assert task.start_time == T2
    assert task.fraction == pytest.approx(0.15)


def test_running_a_step_of_a_pending_task_starts_the_task() -> None:
    task = make_task("a")
    update(task, "a", now=T2, state=TS.STEP_STATE_RUNNING)
    assert task.state == TS.TASK_STATE_RUNNING
    assert task.start_time == T2


def test_message_alone_does_not_start_a_pending_step() -> None:
    task = make_task("a")
    update(task, "a", message="waiting for a worker")
    assert task.steps[0].state == TS.STEP_STATE_PENDING
    assert task.steps[0].message == "waiting for a worker"
    assert task.state == TS.TASK_STATE_PENDING


@pytest.mark.parametrize("report", [TS.STEP_STATE_SUCCEEDED, TS.STEP_STATE_FAILED])
def test_reporting_a_finished_step_of_a_pending_task_starts_the_task(report: int) -> None:
    task = make_task("a", "b")
    update(task, "a", now=T2, state=report)
    assert task.steps[0].start_time == T2
    assert task.state == TS.TASK_STATE_RUNNING
    assert task.start_time == T2


def test_indeterminate_after_a_fraction_does_not_move_progress_backwards() -> None:
    task = make_task("a", start=True)
    update(task, "a", progress=fraction(0.5))
    assert task.fraction == 0.5
    with pytest.raises(HeadwayError) as raised:
        update(task, "a", progress=INDETERMINATE)
    assert raised.value.reason == "PROGRESS_REGRESSED"
    assert task.steps[0].fraction == 0.5


# -- cancellation -----------------------------------------------------------------------


def test_cancel_request_is_recorded_and_the_task_goes_on() -> None:
    task = make_task("a", start=True)
    assert cancel(task) is True
    assert task.state == TS.TASK_STATE_RUNNING
    assert task.cancel_request == task_pb2.CancelRequest(
        reason="not needed",
        requested_by="alice",
        request_time=T1,
        revision=5,
        deadline_time=Timestamp(seconds=T1.seconds + CANCEL_DEADLINE.seconds),
    )
    assert task.update_time == T1


def test_second_cancel_request_changes_nothing() -> None:
    task = make_task("a", start=True)
    cancel(task)
    before = copy_of(task)
    assert cancel(task, reason="again", revision=6) is False
    assert task == before


def test_forced_cancel_ends_the_task_at_once() -> None:
    task = make_task("a", "b", start=True)
    update(task, "a", state=TS.STEP_STATE_RUNNING)
    assert cancel(task, force=True) is True
    assert task.state == TS.TASK_STATE_CANCELLED
    assert task.finish_time == T1
    assert task.cancel_request.reason == "not needed"
    assert [s.state for s in task.steps] == [TS.STEP_STATE_CANCELLED] * 2


def test_forced_cancel_after_a_request_keeps_the_first_request() -> None:
    task = make_task(start=True)
    cancel(task, reason="first", revision=5)
    assert cancel(task, force=True, reason="second", revision=6) is True
    assert task.state == TS.TASK_STATE_CANCELLED
    assert task.cancel_request.reason == "first"
    assert task.cancel_request.revision == 5


def test_confirm_cancel_without_a_request_records_one() -> None:
    task = make_task("a", start=True)
    domain.confirm_cancel(task, "budget exhausted", 7, T2)
    assert task.state == TS.TASK_STATE_CANCELLED
    assert task.cancel_request == task_pb2.CancelRequest(
        reason="budget exhausted", requested_by="agent", request_time=T2, revision=7
    )


def test_confirm_cancel_keeps_a_pending_request() -> None:
    task = make_task("a", start=True)
    cancel(task, reason="viewer asked", revision=5)
    domain.confirm_cancel(task, "agent reason", 7, T2)
    assert task.state == TS.TASK_STATE_CANCELLED
    assert task.cancel_request.reason == "viewer asked"
    assert task.cancel_request.requested_by == "alice"
    assert task.finish_time == T2


# -- steps, artifacts, task fields ------------------------------------------------------


def test_add_steps_appends_in_order() -> None:
    task = make_task("a", start=True)
    domain.add_steps(
        task,
        [
            task_service_pb2.StepSpec(key="b", display_name="Bee", weight=2.0),
            task_service_pb2.StepSpec(key="c"),
        ],
        T1,
        LIMITS,
    )
    assert [(s.key, s.index, s.display_name, s.weight) for s in task.steps] == [
        ("a", 0, "a", 1.0),
        ("b", 1, "Bee", 2.0),
        ("c", 2, "c", 1.0),
    ]
    assert all(s.state == TS.STEP_STATE_PENDING for s in task.steps)
    assert task.update_time == T1


def test_add_steps_with_an_existing_key_is_already_exists() -> None:
    task = make_task("a", "b", start=True)
    before = copy_of(task)
    error = expect_error(
        Kind.ALREADY_EXISTS,
        "STEP_ALREADY_EXISTS",
        lambda: domain.add_steps(
            task,
            [task_service_pb2.StepSpec(key="c"), task_service_pb2.StepSpec(key="b")],
            T1,
            LIMITS,
        ),
    )
    assert error.metadata == {"task_id": TASK_ID, "step_key": "b"}
    assert task == before


def test_add_steps_beyond_the_limit_is_too_many_steps() -> None:
    limits = Limits(max_steps=3)
    task = make_task("a", "b", start=True)
    before = copy_of(task)
    error = expect_error(
        Kind.RESOURCE_EXHAUSTED,
        "TOO_MANY_STEPS",
        lambda: domain.add_steps(
            task,
            [task_service_pb2.StepSpec(key="c"), task_service_pb2.StepSpec(key="d")],
            T1,
            limits,
        ),
    )
    assert error.metadata["limit"] == "3"
    assert task == before
    domain.add_steps(task, [task_service_pb2.StepSpec(key="c")], T1, limits)
    assert len(task.steps) == 3, "exactly the limit is allowed"


def test_add_artifacts_records_them_with_a_time() -> None:
    task = make_task(start=True)
    domain.add_artifacts(
        task, [task_pb2.Artifact(name="report", uri="s3://b/r.pdf", size_bytes=10)], T1, LIMITS
    )
    assert len(task.artifacts) == 1
    assert task.artifacts[0].uri == "s3://b/r.pdf"
    assert task.artifacts[0].create_time == T1
    assert task.update_time == T1


def test_add_artifacts_with_an_existing_name_is_already_exists() -> None:
    task = make_task(start=True)
    domain.add_artifacts(task, [task_pb2.Artifact(name="report")], T1, LIMITS)
    before = copy_of(task)
    error = expect_error(
        Kind.ALREADY_EXISTS,
        "ARTIFACT_ALREADY_EXISTS",
        lambda: domain.add_artifacts(
            task, [task_pb2.Artifact(name="log"), task_pb2.Artifact(name="report")], T2, LIMITS
        ),
    )
    assert error.metadata == {"task_id": TASK_ID, "name": "report"}
    assert task == before


def test_add_artifacts_beyond_the_limit_is_too_many_artifacts() -> None:
    limits = Limits(max_artifacts=2)
    task = make_task(start=True)
    domain.add_artifacts(task, [task_pb2.Artifact(name="one")], T1, limits)
    before = copy_of(task)
    error = expect_error(
        Kind.RESOURCE_EXHAUSTED,
        "TOO_MANY_ARTIFACTS",
        lambda: domain.add_artifacts(
            task, [task_pb2.Artifact(name="two"), task_pb2.Artifact(name="three")], T2, limits
        ),
    )
    assert error.metadata["limit"] == "2"
    assert task == before
    domain.add_artifacts(task, [task_pb2.Artifact(name="two")], T2, limits)
    assert [a.name for a in task.artifacts] == ["one", "two"]


def task_update(**fields: object) -> task_service_pb2.UpdateTaskRequest:
    return task_service_pb2.UpdateTaskRequest(task_id=TASK_ID, **fields)


def test_update_task_iteration_beyond_max_is_invalid_argument() -> None:
    """INVALID_ARGUMENT on `iteration`, as when the limit comes in the same request."""
    task = make_task(start=True, max_iterations=10)
    before = task_pb2.Task()
    before.CopyFrom(task)
    error = expect_error(
        Kind.INVALID_ARGUMENT,
        "FIELD_VIOLATION",
        lambda: domain.update_task(task, task_update(iteration=11), T1, LIMITS),
    )
    assert error.metadata == {"task_id": TASK_ID, "max_iterations": "10"}
    assert [v.field for v in error.violations] == ["iteration"]
    assert task == before
    domain.update_task(task, task_update(iteration=10), T1, LIMITS)
    assert task.iteration == 10, "reaching max_iterations is allowed"


def test_update_task_iteration_checks_the_new_max() -> None:
    task = make_task(start=True, max_iterations=10)
    domain.update_task(task, task_update(iteration=15, max_iterations=20), T1, LIMITS)
    assert (task.iteration, task.max_iterations) == (15, 20)
    error = expect_error(
        Kind.INVALID_ARGUMENT,
        "FIELD_VIOLATION",
        lambda: domain.update_task(task, task_update(iteration=6, max_iterations=5), T1, LIMITS),
    )
    assert [v.field for v in error.violations] == ["iteration"]


def test_update_task_iteration_is_unbounded_without_max() -> None:
    task = make_task(start=True)
    domain.update_task(task, task_update(iteration=1_000_000), T1, LIMITS)
    assert task.iteration == 1_000_000


def test_update_task_merges_metrics() -> None:
    task = make_task(start=True, metrics={"cost": 1.5, "tokens": 100.0})
    domain.update_task(task, task_update(metrics={"tokens": 250.0, "calls": 3.0}), T1, LIMITS)
    assert dict(task.metrics) == {"cost": 1.5, "tokens": 250.0, "calls": 3.0}
    assert task.update_time == T1


def test_update_task_beyond_the_metric_limit_is_too_many_metrics() -> None:
    limits = Limits(max_metrics=2)
    task = make_task(start=True, metrics={"cost": 1.0, "tokens": 2.0})
    domain.update_task(task, task_update(metrics={"cost": 5.0}), T1, limits)
    assert task.metrics["cost"] == 5.0, "overwriting an existing metric is not a new one"
    error = expect_error(
        Kind.RESOURCE_EXHAUSTED,
        "TOO_MANY_METRICS",
        lambda: domain.update_task(task, task_update(metrics={"calls": 1.0}), T1, limits),
    )
    assert error.metadata["limit"] == "2"


def criteria(*names: str, met: bool = False) -> list[task_pb2.Criterion]:
    return [task_pb2.Criterion(name=name, met=met) for name in names]


def test_update_task_upserts_criteria_by_name_in_first_seen_order() -> None:
    task = make_task(start=True)
    task.criteria.extend(criteria("a", "b"))
    update = [*criteria("c", "a", met=True), task_pb2.Criterion(name="d", detail="why")]
    domain.update_task(task, task_update(criteria=update), T1, LIMITS)
    assert [(c.name, c.met, c.detail) for c in task.criteria] == [
        ("a", True, ""),
        ("b", False, ""),
        ("c", True, ""),
        ("d", False, "why"),
    ]


def test_update_task_beyond_64_criteria_is_too_many_criteria() -> None:
    task = make_task(start=True)
    task.criteria.extend(criteria(*(f"c{i}" for i in range(63))))
    domain.update_task(task, task_update(criteria=criteria("c0", "new", met=True)), T1, LIMITS)
    assert len(task.criteria) == 64
    error = expect_error(
        Kind.RESOURCE_EXHAUSTED,
        "TOO_MANY_CRITERIA",
        lambda: domain.update_task(task, task_update(criteria=criteria("c1", "x")), T1, LIMITS),
    )
    assert error.metadata["limit"] == "64"
    assert not task.criteria[1].met, "nothing of a refused update is applied"


def test_update_task_message_does_not_start_a_pending_task() -> None:
    task = make_task()
    domain.update_task(task, task_update(message="queued"), T1, LIMITS)
    assert task.message == "queued"
    assert task.state == TS.TASK_STATE_PENDING


@pytest.mark.parametrize("state", RESTING)
def test_ensure_deletable_accepts_a_task_at_rest(state: int) -> None:
    domain.ensure_deletable(task_in(state))


@pytest.mark.parametrize("state", [TS.TASK_STATE_PENDING, TS.TASK_STATE_RUNNING])
def test_ensure_deletable_refuses_a_task_not_at_rest(state: int) -> None:
    task = task_in(state)
    error = expect_error(
        Kind.FAILED_PRECONDITION, "TASK_NOT_AT_REST", lambda: domain.ensure_deletable(task)
    )
    assert error.metadata == {"task_id": TASK_ID, "state": domain.task_state_name(state)}


# -- property: the fraction never moves backwards ---------------------------------------

STEP_KEYS = ["s0", "s1", "s2", "s3"]

progress_values = st.one_of(
    st.floats(min_value=0.0, max_value=1.0).map(fraction),
    st.integers(min_value=1, max_value=1000).flatmap(
        lambda total: st.integers(min_value=0, max_value=total).map(lambda c: units(c, total))
    ),
)
step_updates = st.builds(
    lambda key, state, progress, message: step_update(
        key,
        state=state,
        **({"progress": progress} if progress is not None else {}),
        **({"message": message} if message is not None else {}),
    ),
    key=st.sampled_from(STEP_KEYS),
    state=st.sampled_from(
        [
            TS.STEP_STATE_UNSPECIFIED,
            TS.STEP_STATE_RUNNING,
            TS.STEP_STATE_SUCCEEDED,
            TS.STEP_STATE_FAILED,
            TS.STEP_STATE_SKIPPED,
        ]
    ),
    progress=st.none() | progress_values,
    message=st.none() | st.just("working"),
)
weights = st.lists(
    st.sampled_from([0.0, 0.5, 1.0, 3.0, 1e6]) | st.floats(min_value=0.01, max_value=1e6),
    min_size=len(STEP_KEYS),
    max_size=len(STEP_KEYS),
)


@settings(max_examples=300, deadline=None)
@given(weights=weights, updates=st.lists(step_updates, max_size=40))
def test_fraction_stays_in_bounds_and_never_decreases_without_restart(
    weights: list[float], updates: list[task_service_pb2.UpdateStepRequest]
) -> None:
    task = make_task(*STEP_KEYS, weights=weights)
    for request in updates:
        working = copy_of(task)
        rejected: HeadwayError | None = None
        try:
            domain.update_step(working, request, T1)
        except HeadwayError as error:
            rejected = error
        if rejected is not None:
            # Valid requests are only refused by the state machine; the copy is discarded.
            assert rejected.kind is Kind.FAILED_PRECONDITION, rejected
            continue
        assert 0.0 <= working.fraction <= 1.0
        assert all(0.0 <= step.fraction <= 1.0 for step in working.steps)
        assert working.fraction >= task.fraction, (task.fraction, working.fraction, request)
        assert not math.isnan(working.fraction)
        task = working
    if all(step.state in domain.STEP_DONE for step in task.steps):
        assert task.fraction == pytest.approx(1.0)
