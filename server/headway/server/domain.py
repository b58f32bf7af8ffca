"""The task and step state machines and the progress roll-up.

Pure functions over `Task` messages: no I/O, no clock, no gRPC. Each mutation
takes the task as it stands (a private copy the caller may discard), checks
that the change is allowed, and changes the copy in place. A rule that is not
written here is not a rule: the proto comments describe exactly these.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from headway.server.config import Limits
from headway.server.errors import (
    FieldViolation,
    HeadwayError,
    Kind,
    invalid_argument,
    task_at_rest,
)
from headway.server.validation import MAX_CRITERIA
from headway.v1 import task_pb2, task_service_pb2

TaskState = task_pb2.TaskState
StepState = task_pb2.StepState

RESTING_STATES = frozenset(
    {task_pb2.TASK_STATE_SUCCEEDED, task_pb2.TASK_STATE_FAILED, task_pb2.TASK_STATE_CANCELLED}
)
STEP_UNFINISHED = frozenset({task_pb2.STEP_STATE_PENDING, task_pb2.STEP_STATE_RUNNING})
STEP_DONE = frozenset({task_pb2.STEP_STATE_SUCCEEDED, task_pb2.STEP_STATE_SKIPPED})

# Which step state may follow which, for an UpdateStep without `restart`.
# Staying RUNNING is allowed so that progress and messages can be reported.
_STEP_TRANSITIONS: dict[int, frozenset[int]] = {
    task_pb2.STEP_STATE_PENDING: frozenset(
        {
            task_pb2.STEP_STATE_RUNNING,
            task_pb2.STEP_STATE_SUCCEEDED,
            task_pb2.STEP_STATE_FAILED,
            task_pb2.STEP_STATE_SKIPPED,
        }
    ),
    task_pb2.STEP_STATE_RUNNING: frozenset(
        {task_pb2.STEP_STATE_RUNNING, task_pb2.STEP_STATE_SUCCEEDED, task_pb2.STEP_STATE_FAILED}
    ),
}
# The states from which `restart` may run a step again.
_RESTARTABLE = frozenset({task_pb2.STEP_STATE_RUNNING, task_pb2.STEP_STATE_FAILED})


def task_state_name(state: int) -> str:
    return task_pb2.TaskState.Name(state).removeprefix("TASK_STATE_")  # type: ignore[arg-type]


def step_state_name(state: int) -> str:
    return task_pb2.StepState.Name(state).removeprefix("STEP_STATE_")  # type: ignore[arg-type]


def is_resting(state: int) -> bool:
    return state in RESTING_STATES


def ensure_mutable(task: task_pb2.Task) -> None:
    """Resting states are final: every later mutation is refused."""
    if is_resting(task.state):
        raise task_at_rest(task.id, task_state_name(task.state))


def progress_fraction(progress: task_pb2.Progress) -> float | None:
    """The fraction a reported progress stands for; None when it says nothing measurable."""
    which = progress.WhichOneof("value")
    if which == "units":
        return min(1.0, progress.units.current / progress.units.total)
    if which == "fraction":
        return progress.fraction
    return None


def roll_up(task: task_pb2.Task) -> None:
    """Recompute every derived fraction: each step's, then the task's weighted mean."""
    for step in task.steps:
        step.fraction = _step_fraction(step)
    if task.state == task_pb2.TASK_STATE_SUCCEEDED:
        task.fraction = 1.0
    elif task.steps:
        task.fraction = weighted_mean([(step.weight, step.fraction) for step in task.steps])
    else:
        task.fraction = progress_fraction(task.progress) or 0.0


def weighted_mean(parts: Sequence[tuple[float, float]]) -> float:
    """The mean of the fractions by weight, from 0.0 to 1.0 (0.0 when there are none).

    The weights are first divided by the largest, so the heaviest counts 1: a
    weight may be as small as the smallest subnormal double, and multiplying
    two such tiny numbers would underflow (a lone child of weight 5e-324 at 70%
    would make its parent whole, one at 30% would leave it at 0). Scaled, a
    part's share is exact whatever the magnitude of the weights.
    """
    heaviest = max((weight for weight, _ in parts), default=0.0)
    if not heaviest > 0.0:
        return 0.0
    total = math.fsum(weight / heaviest for weight, _ in parts)
    done = math.fsum(weight / heaviest * fraction for weight, fraction in parts)
    return min(1.0, done / total)


def _step_fraction(step: task_pb2.Step) -> float:
    if step.state in STEP_DONE:
        return 1.0
    if step.state == task_pb2.STEP_STATE_PENDING:
        return 0.0
    # RUNNING counts what it reported; FAILED and CANCELLED keep what they had
    # reached, so the task's progress never jumps backwards when a step stops.
    return progress_fraction(step.progress) or 0.0


def new_task(
    request: task_service_pb2.CreateTaskRequest,
    *,
    tenant: str,
    task_id: str,
    revision: int,
    now: Timestamp,
    lease: Duration,
) -> task_pb2.Task:
    task = task_pb2.Task(
        id=task_id,
        tenant=tenant,
        display_name=request.display_name,
        kind=request.kind,
        labels=request.labels,
        parent_id=request.parent_id,
        weight=request.weight or 1.0,
        state=task_pb2.TASK_STATE_PENDING,
        message=request.message,
        max_iterations=request.max_iterations,
        metrics=request.metrics,
        create_time=now,
        update_time=now,
        create_revision=revision,
        lease_duration=lease,
        last_report_time=now,
    )
    task.criteria.extend(request.criteria)
    _append_steps(task, request.steps)
    if request.start:
        _start(task, now)
    roll_up(task)
    return task


def _append_steps(task: task_pb2.Task, specs: Sequence[task_service_pb2.StepSpec]) -> None:
    for spec in specs:
        task.steps.append(
            task_pb2.Step(
                key=spec.key,
                index=len(task.steps),
                display_name=spec.display_name or spec.key,
                state=task_pb2.STEP_STATE_PENDING,
                weight=spec.weight or 1.0,
                expected_duration=spec.expected_duration
                if spec.HasField("expected_duration")
                else None,
            )
        )


def _start(task: task_pb2.Task, now: Timestamp) -> None:
    task.state = task_pb2.TASK_STATE_RUNNING
    task.start_time.CopyFrom(now)


def start_task(task: task_pb2.Task, now: Timestamp) -> None:
    ensure_mutable(task)
    if task.state != task_pb2.TASK_STATE_PENDING:
        raise HeadwayError(
            Kind.FAILED_PRECONDITION,
            "INVALID_TRANSITION",
            f"task {task.id!r} is {task_state_name(task.state)}; only a PENDING task can start",
            {"task_id": task.id, "state": task_state_name(task.state)},
        )
    _start(task, now)
    task.update_time.CopyFrom(now)


def add_steps(
    task: task_pb2.Task,
    specs: Sequence[task_service_pb2.StepSpec],
    now: Timestamp,
    limits: Limits,
) -> None:
    ensure_mutable(task)
    existing = {step.key for step in task.steps}
    for spec in specs:
        if spec.key in existing:
            raise HeadwayError(
                Kind.ALREADY_EXISTS,
                "STEP_ALREADY_EXISTS",
                f"task {task.id!r} already has a step {spec.key!r}",
                {"task_id": task.id, "step_key": spec.key},
            )
    if len(task.steps) + len(specs) > limits.max_steps:
        raise HeadwayError(
            Kind.RESOURCE_EXHAUSTED,
            "TOO_MANY_STEPS",
            f"a task has at most {limits.max_steps} steps",
            {"task_id": task.id, "limit": str(limits.max_steps)},
        )
    _append_steps(task, specs)
    task.update_time.CopyFrom(now)
    roll_up(task)


def find_step(task: task_pb2.Task, key: str) -> task_pb2.Step:
    for step in task.steps:
        if step.key == key:
            return step
    raise HeadwayError(
        Kind.NOT_FOUND,
        "STEP_NOT_FOUND",
        f"task {task.id!r} has no step {key!r}",
        {"task_id": task.id, "step_key": key},
    )


def update_step(
    task: task_pb2.Task, request: task_service_pb2.UpdateStepRequest, now: Timestamp
) -> None:
    ensure_mutable(task)
    step = find_step(task, request.step_key)
    if request.restart:
        _restart_step(task, step, now)
    target = request.state
    starts_by_progress = (
        target == task_pb2.STEP_STATE_UNSPECIFIED
        and step.state == task_pb2.STEP_STATE_PENDING
        and request.HasField("progress")
    )
    if starts_by_progress:
        target = task_pb2.STEP_STATE_RUNNING
    if target == task_pb2.STEP_STATE_UNSPECIFIED and step.state not in STEP_UNFINISHED:
        raise HeadwayError(
            Kind.FAILED_PRECONDITION,
            "STEP_FINISHED",
            f"step {step.key!r} is {step_state_name(step.state)}; it can no longer change "
            "unless restarted",
            {"task_id": task.id, "step_key": step.key, "state": step_state_name(step.state)},
        )
    if request.HasField("progress"):
        _set_step_progress(task, step, request.progress, restarted=request.restart)
    if request.HasField("message"):
        step.message = request.message
    if target != task_pb2.STEP_STATE_UNSPECIFIED:
        _transition_step(task, step, target, now)
    if target == task_pb2.STEP_STATE_FAILED:
        step.error.CopyFrom(request.error)
    if step.state != task_pb2.STEP_STATE_PENDING and task.state == task_pb2.TASK_STATE_PENDING:
        # Any step report means the agent is at work: the task runs.
        _start(task, now)
    task.update_time.CopyFrom(now)
    roll_up(task)


def _restart_step(task: task_pb2.Task, step: task_pb2.Step, now: Timestamp) -> None:
    if step.state not in _RESTARTABLE:
        raise HeadwayError(
            Kind.FAILED_PRECONDITION,
            "INVALID_STEP_TRANSITION",
            f"step {step.key!r} is {step_state_name(step.state)}; only a RUNNING or FAILED "
            "step can restart",
            {"task_id": task.id, "step_key": step.key, "state": step_state_name(step.state)},
        )
    step.state = task_pb2.STEP_STATE_RUNNING
    step.restart_count += 1
    step.ClearField("progress")
    step.ClearField("error")
    step.ClearField("finish_time")
    step.start_time.CopyFrom(now)


def _set_step_progress(
    task: task_pb2.Task, step: task_pb2.Step, progress: task_pb2.Progress, *, restarted: bool
) -> None:
    if step.state not in STEP_UNFINISHED:
        raise HeadwayError(
            Kind.FAILED_PRECONDITION,
            "STEP_FINISHED",
            f"step {step.key!r} is {step_state_name(step.state)}; "
            "its progress can no longer change",
            {"task_id": task.id, "step_key": step.key, "state": step_state_name(step.state)},
        )
    before = progress_fraction(step.progress)
    after = progress_fraction(progress)
    # Turning indeterminate after a measurable value would drop the fraction to 0.
    regressed = before is not None and (after is None or after < before)
    if regressed and step.state == task_pb2.STEP_STATE_RUNNING and not restarted:
        raise HeadwayError(
            Kind.FAILED_PRECONDITION,
            "PROGRESS_REGRESSED",
            f"step {step.key!r} is at {before:.4g}; progress "
            f"{'indeterminate' if after is None else format(after, '.4g')} would move it "
            "backwards (set restart to start the step over)",
            {"task_id": task.id, "step_key": step.key},
        )
    step.progress.CopyFrom(progress)


def _transition_step(task: task_pb2.Task, step: task_pb2.Step, target: int, now: Timestamp) -> None:
    if target not in _STEP_TRANSITIONS.get(step.state, frozenset()):
        raise HeadwayError(
            Kind.FAILED_PRECONDITION,
            "INVALID_STEP_TRANSITION",
            f"step {step.key!r} cannot go from {step_state_name(step.state)} to "
            f"{step_state_name(target)}",
            {
                "task_id": task.id,
                "step_key": step.key,
                "from": step_state_name(step.state),
                "to": step_state_name(target),
            },
        )
    if target == step.state:
        return
    if step.state == task_pb2.STEP_STATE_PENDING and target != task_pb2.STEP_STATE_SKIPPED:
        step.start_time.CopyFrom(now)
    step.state = target  # type: ignore[assignment]
    if target not in STEP_UNFINISHED:
        step.finish_time.CopyFrom(now)


def update_task(
    task: task_pb2.Task,
    request: task_service_pb2.UpdateTaskRequest,
    now: Timestamp,
    limits: Limits,
) -> None:
    ensure_mutable(task)
    if request.HasField("max_iterations"):
        task.max_iterations = request.max_iterations
    if request.HasField("iteration"):
        if task.max_iterations and request.iteration > task.max_iterations:
            # The same answer as when the limit comes in the same request (see
            # validation.check_update_task): the argument is wrong, not the state.
            raise invalid_argument(
                [
                    FieldViolation(
                        "iteration", f"must not exceed max_iterations ({task.max_iterations})"
                    )
                ],
                metadata={"task_id": task.id, "max_iterations": str(task.max_iterations)},
            )
        task.iteration = request.iteration
    if request.HasField("message"):
        task.message = request.message
    if request.metrics:
        new_keys = set(request.metrics) - set(task.metrics)
        if len(task.metrics) + len(new_keys) > limits.max_metrics:
            raise HeadwayError(
                Kind.RESOURCE_EXHAUSTED,
                "TOO_MANY_METRICS",
                f"a task has at most {limits.max_metrics} metrics",
                {"task_id": task.id, "limit": str(limits.max_metrics)},
            )
        task.metrics.update(request.metrics)
    if request.criteria:
        set_criteria(task, request.criteria)
    if request.HasField("progress"):
        task.progress.CopyFrom(request.progress)
        if task.state == task_pb2.TASK_STATE_PENDING:
            _start(task, now)
    task.update_time.CopyFrom(now)
    roll_up(task)


def set_criteria(task: task_pb2.Task, criteria: Sequence[task_pb2.Criterion]) -> None:
    """Merge criteria into the task by name: known names are replaced in place, new ones appended.

    Replacing in place keeps the checklist in the order the agent first declared
    it, so a viewer's list does not reshuffle as criteria become met. The count
    is checked before anything changes, so a refused update leaves the task as it was.
    """
    index = {criterion.name: i for i, criterion in enumerate(task.criteria)}
    new_names = {criterion.name for criterion in criteria} - index.keys()
    if len(task.criteria) + len(new_names) > MAX_CRITERIA:
        raise HeadwayError(
            Kind.RESOURCE_EXHAUSTED,
            "TOO_MANY_CRITERIA",
            f"a task has at most {MAX_CRITERIA} criteria",
            {"task_id": task.id, "limit": str(MAX_CRITERIA)},
        )
    for criterion in criteria:
        if criterion.name in index:
            task.criteria[index[criterion.name]].CopyFrom(criterion)
        else:
            index[criterion.name] = len(task.criteria)
            task.criteria.append(criterion)


def add_artifacts(
    task: task_pb2.Task,
    artifacts: Sequence[task_pb2.Artifact],
    now: Timestamp,
    limits: Limits,
) -> None:
    ensure_mutable(task)
    existing = {artifact.name for artifact in task.artifacts}
    for artifact in artifacts:
        if artifact.name in existing:
            raise HeadwayError(
                Kind.ALREADY_EXISTS,
                "ARTIFACT_ALREADY_EXISTS",
                f"task {task.id!r} already has an artifact {artifact.name!r}",
                {"task_id": task.id, "name": artifact.name},
            )
    if len(task.artifacts) + len(artifacts) > limits.max_artifacts:
        raise HeadwayError(
            Kind.RESOURCE_EXHAUSTED,
            "TOO_MANY_ARTIFACTS",
            f"a task has at most {limits.max_artifacts} artifacts",
            {"task_id": task.id, "limit": str(limits.max_artifacts)},
        )
    for artifact in artifacts:
        added = task.artifacts.add()
        added.CopyFrom(artifact)
        added.create_time.CopyFrom(now)
    task.update_time.CopyFrom(now)


def succeed_task(task: task_pb2.Task, message: str | None, now: Timestamp) -> None:
    ensure_mutable(task)
    if message is not None:
        task.message = message
    _finish(task, task_pb2.TASK_STATE_SUCCEEDED, now)


def fail_task(task: task_pb2.Task, error: task_pb2.TaskError, now: Timestamp) -> None:
    ensure_mutable(task)
    task.error.CopyFrom(error)
    _finish(task, task_pb2.TASK_STATE_FAILED, now)


def request_cancel(
    task: task_pb2.Task,
    request: task_service_pb2.CancelTaskRequest,
    revision: int,
    now: Timestamp,
    deadline: Duration,
) -> bool:
    """Record a viewer's cancel request; False when one is already pending and nothing changes."""
    ensure_mutable(task)
    if task.HasField("cancel_request") and not request.force:
        return False
    if not task.HasField("cancel_request"):
        deadline_time = Timestamp()
        deadline_time.FromNanoseconds(now.ToNanoseconds() + deadline.ToNanoseconds())
        task.cancel_request.CopyFrom(
            task_pb2.CancelRequest(
                reason=request.reason,
                requested_by=request.requested_by,
                request_time=now,
                revision=revision,
                deadline_time=deadline_time,
            )
        )
    if request.force:
        _finish(task, task_pb2.TASK_STATE_CANCELLED, now)
    else:
        task.update_time.CopyFrom(now)
    return True


def confirm_cancel(task: task_pb2.Task, reason: str, revision: int, now: Timestamp) -> None:
    ensure_mutable(task)
    if not task.HasField("cancel_request"):
        task.cancel_request.CopyFrom(
            task_pb2.CancelRequest(
                reason=reason, requested_by="agent", request_time=now, revision=revision
            )
        )
    _finish(task, task_pb2.TASK_STATE_CANCELLED, now)


def force_cancel(task: task_pb2.Task, now: Timestamp) -> None:
    """The agent let its cancel deadline pass: the server ends the task itself."""
    ensure_mutable(task)
    task.cancel_request.forced = True
    waited = task.cancel_request.deadline_time.ToNanoseconds() - (
        task.cancel_request.request_time.ToNanoseconds()
    )
    task.message = f"cancelled by the server: the agent did not confirm within {waited / 1e9:g}s"
    _finish(task, task_pb2.TASK_STATE_CANCELLED, now)


def lease_expiry_ns(task: task_pb2.Task, last_report_ns: int) -> int:
    return last_report_ns + task.lease_duration.ToNanoseconds()


def mark_stalled(task: task_pb2.Task, last_report_ns: int, now: Timestamp) -> None:
    """The agent went silent past its lease: flag it, keep the task RUNNING."""
    task.stalled = True
    task.last_report_time.FromNanoseconds(last_report_ns)
    task.update_time.CopyFrom(now)


def record_report(task: task_pb2.Task, now: Timestamp) -> None:
    """The agent spoke: it is alive, whatever it said."""
    task.stalled = False
    task.last_report_time.CopyFrom(now)


def fail_lost(task: task_pb2.Task, last_report_ns: int, now: Timestamp) -> None:
    """Stalled for longer than the server waits: the agent is presumed lost."""
    silent = (now.ToNanoseconds() - last_report_ns) / 1e9
    error = task_pb2.TaskError(
        code="AGENT_LOST",
        message=f"the agent stopped reporting {silent:.0f}s ago and is presumed lost",
    )
    task.last_report_time.FromNanoseconds(last_report_ns)
    fail_task(task, error, now)


# How a task's unfinished steps are closed when it comes to rest: a success
# vouches for the running steps and makes the untouched ones unnecessary; a
# failure or a cancellation stops both.
_CLOSE_STEPS: dict[int, dict[int, int]] = {
    task_pb2.TASK_STATE_SUCCEEDED: {
        task_pb2.STEP_STATE_RUNNING: task_pb2.STEP_STATE_SUCCEEDED,
        task_pb2.STEP_STATE_PENDING: task_pb2.STEP_STATE_SKIPPED,
    },
    task_pb2.TASK_STATE_FAILED: {
        task_pb2.STEP_STATE_RUNNING: task_pb2.STEP_STATE_CANCELLED,
        task_pb2.STEP_STATE_PENDING: task_pb2.STEP_STATE_CANCELLED,
    },
    task_pb2.TASK_STATE_CANCELLED: {
        task_pb2.STEP_STATE_RUNNING: task_pb2.STEP_STATE_CANCELLED,
        task_pb2.STEP_STATE_PENDING: task_pb2.STEP_STATE_CANCELLED,
    },
}


def _finish(task: task_pb2.Task, state: int, now: Timestamp) -> None:
    """Bring a task to rest and close its unfinished steps, so nothing is left RUNNING."""
    task.state = state  # type: ignore[assignment]
    task.stalled = False  # only a RUNNING task can be stalled
    task.finish_time.CopyFrom(now)
    task.update_time.CopyFrom(now)
    if not task.HasField("start_time"):
        task.start_time.CopyFrom(now)
    closing = _CLOSE_STEPS[state]
    for step in task.steps:
        if step.state in closing:
            step.state = closing[step.state]  # type: ignore[assignment]
            step.finish_time.CopyFrom(now)
    roll_up(task)


def ensure_deletable(task: task_pb2.Task) -> None:
    if not is_resting(task.state):
        raise HeadwayError(
            Kind.FAILED_PRECONDITION,
            "TASK_NOT_AT_REST",
            f"task {task.id!r} is {task_state_name(task.state)}; only a task at rest can be "
            "deleted",
            {"task_id": task.id, "state": task_state_name(task.state)},
        )
