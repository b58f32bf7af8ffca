"""Friendly read models of the wire messages: Python enums, datetimes and None for "unset".

Generated messages are awkward to read: enums are bare integers, unset timestamps are
the epoch, an absent error is an empty message. These frozen dataclasses say what the
server meant instead (an unset value is `None`), and each keeps its message in `raw`
so nothing is ever lost in translation, including fields added to the contract later.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from headway.v1 import log_pb2, task_pb2, task_service_pb2


class TaskState(enum.IntEnum):
    """The lifecycle state of a task; values match `headway.v1.TaskState`."""

    PENDING = task_pb2.TASK_STATE_PENDING
    RUNNING = task_pb2.TASK_STATE_RUNNING
    SUCCEEDED = task_pb2.TASK_STATE_SUCCEEDED
    FAILED = task_pb2.TASK_STATE_FAILED
    CANCELLED = task_pb2.TASK_STATE_CANCELLED

    @property
    def at_rest(self) -> bool:
        """Resting states are final: the task will never change again."""
        return self in _RESTING


_RESTING = frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED})


class StepState(enum.IntEnum):
    """The lifecycle state of a step; values match `headway.v1.StepState`."""

    PENDING = task_pb2.STEP_STATE_PENDING
    RUNNING = task_pb2.STEP_STATE_RUNNING
    SUCCEEDED = task_pb2.STEP_STATE_SUCCEEDED
    FAILED = task_pb2.STEP_STATE_FAILED
    SKIPPED = task_pb2.STEP_STATE_SKIPPED
    CANCELLED = task_pb2.STEP_STATE_CANCELLED

    @property
    def finished(self) -> bool:
        """True once the step stopped (FAILED may still be restarted by its agent)."""
        return self not in (StepState.PENDING, StepState.RUNNING)


class EstimateBasis(enum.IntEnum):
    """What an ETA rests on; values match `headway.v1.EstimateBasis` (UNSPECIFIED is None)."""

    RATE = task_pb2.ESTIMATE_BASIS_RATE
    HISTORY = task_pb2.ESTIMATE_BASIS_HISTORY
    AGENT = task_pb2.ESTIMATE_BASIS_AGENT
    COMBINED = task_pb2.ESTIMATE_BASIS_COMBINED


class LogLevel(enum.IntEnum):
    """The severity of a log line; values match `headway.v1.LogLevel`."""

    DEBUG = log_pb2.LOG_LEVEL_DEBUG
    INFO = log_pb2.LOG_LEVEL_INFO
    WARNING = log_pb2.LOG_LEVEL_WARNING
    ERROR = log_pb2.LOG_LEVEL_ERROR


Enum = TypeVar("Enum", bound=enum.IntEnum)


def enum_or_none(cls: type[Enum], value: int) -> Enum | None:
    """The enum member for `value`; None for the zero value and for values added later.

    The contract asks clients to tolerate enum values they do not know yet; the raw
    number stays readable on the model's `raw` message.
    """
    try:
        return cls(value) if value else None
    except ValueError:
        return None


def time_or_none(message: Message, field: str) -> datetime | None:
    """A timestamp field as an aware UTC datetime, or None when the server left it unset."""
    if not message.HasField(field):
        return None
    stamp: Timestamp = getattr(message, field)
    return stamp.ToDatetime(tzinfo=UTC)


def duration_or_none(message: Message, field: str) -> timedelta | None:
    """A duration field as a timedelta, or None when unset."""
    if not message.HasField(field):
        return None
    duration: Duration = getattr(message, field)
    return duration.ToTimedelta()


@dataclass(frozen=True, slots=True)
class Progress:
    """Progress as reported: units (`current` of `total`), a `fraction`, or indeterminate."""

    current: int | None
    total: int | None
    unit: str
    fraction: float | None
    indeterminate: bool
    raw: task_pb2.Progress = field(repr=False)

    @classmethod
    def from_proto(cls, raw: task_pb2.Progress) -> Progress | None:
        """None when no progress was reported (none of the oneof members is set)."""
        which = raw.WhichOneof("value")
        if which is None:
            return None
        units = raw.units if which == "units" else None
        fraction: float | None = None
        if units is not None:
            fraction = units.current / units.total if units.total else 0.0
        elif which == "fraction":
            fraction = raw.fraction
        return cls(
            current=units.current if units is not None else None,
            total=units.total if units is not None else None,
            unit=units.unit if units is not None else "",
            fraction=fraction,
            indeterminate=which == "indeterminate",
            raw=raw,
        )

    def describe(self) -> str:
        """A short human rendering: "40/120 files", "45%" or "…" for indeterminate."""
        if self.current is not None and self.total is not None:
            unit = f" {self.unit}" if self.unit else ""
            return f"{self.current}/{self.total}{unit}"
        if self.fraction is not None:
            return f"{self.fraction:.0%}"
        return "…"


@dataclass(frozen=True, slots=True)
class TaskError:
    """What went wrong on a failed task or step."""

    code: str
    message: str
    details: dict[str, str]
    raw: task_pb2.TaskError = field(repr=False)
    retryable: bool = False

    @classmethod
    def from_proto(cls, raw: task_pb2.TaskError) -> TaskError:
        """The read model of a wire message (kept as `raw`)."""
        return cls(
            code=raw.code,
            message=raw.message,
            details=dict(raw.details),
            raw=raw,
            retryable=raw.retryable,
        )

    def describe(self) -> str:
        """`CODE: message`, and whether the agent said a retry may succeed."""
        text = f"{self.code}: {self.message}" if self.code else self.message
        return f"{text} (retryable)" if self.retryable else text


@dataclass(frozen=True, slots=True)
class CancelRequest:
    """A viewer's request to cancel a task: who asked, why and when."""

    reason: str
    requested_by: str
    request_time: datetime | None
    revision: int
    deadline_time: datetime | None
    """When the server cancels the task by itself if the agent has not confirmed by then."""
    forced: bool
    """The server cancelled the task because the agent did not confirm in time."""
    raw: task_pb2.CancelRequest = field(repr=False)

    @classmethod
    def from_proto(cls, raw: task_pb2.CancelRequest) -> CancelRequest:
        """The read model of a wire message (kept as `raw`)."""
        return cls(
            reason=raw.reason,
            requested_by=raw.requested_by,
            request_time=time_or_none(raw, "request_time"),
            revision=raw.revision,
            deadline_time=time_or_none(raw, "deadline_time"),
            forced=raw.forced,
            raw=raw,
        )


@dataclass(frozen=True, slots=True)
class Estimate:
    """The server's estimate of when a task or step will finish.

    `finish_time` is absolute, so the estimate stays meaningful between changes:
    `time_left()` counts down from it. `remaining` is the time left as the server
    saw it when it computed the estimate (`compute_time`), at the task's last change.
    """

    basis: EstimateBasis | None
    """What the estimate rests on; None for a basis added to the contract later."""
    finish_time: datetime | None
    remaining: timedelta | None
    confidence: float
    """How much evidence stands behind it, from 0 (a guess) to 1."""
    earliest_finish_time: datetime | None
    """A plausible earliest finish, when the evidence has a spread; else None."""
    latest_finish_time: datetime | None
    rate: float
    """The smoothed rate of progress, as a fraction of the work per second; 0 when unknown."""
    compute_time: datetime | None
    raw: task_pb2.Estimate = field(repr=False)

    @classmethod
    def from_proto(cls, raw: task_pb2.Estimate) -> Estimate | None:
        """None when the server has no estimate (basis UNSPECIFIED): it never makes one up."""
        if raw.basis == task_pb2.ESTIMATE_BASIS_UNSPECIFIED:
            return None
        return cls(
            basis=enum_or_none(EstimateBasis, raw.basis),
            finish_time=time_or_none(raw, "finish_time"),
            remaining=duration_or_none(raw, "remaining"),
            confidence=raw.confidence,
            earliest_finish_time=time_or_none(raw, "earliest_finish_time"),
            latest_finish_time=time_or_none(raw, "latest_finish_time"),
            rate=raw.rate,
            compute_time=time_or_none(raw, "compute_time"),
            raw=raw,
        )

    def time_left(self, now: datetime | None = None) -> timedelta | None:
        """The time from `now` (default: now) to the estimated finish; never negative.

        An estimate is recomputed only when its task changes, so a finish time that
        has passed means the work is late: zero is left, not a negative amount.
        """
        if self.finish_time is not None:
            left = self.finish_time - (now or datetime.now(UTC))
        elif self.remaining is not None and self.compute_time is not None:
            left = self.remaining - ((now or datetime.now(UTC)) - self.compute_time)
        else:
            return self.remaining
        return max(left, timedelta(0))


def estimate_or_none(message: Message, field: str) -> Estimate | None:
    """An Estimate field as a read model; None when unset or when there is no estimate."""
    if not message.HasField(field):
        return None
    return Estimate.from_proto(getattr(message, field))


@dataclass(frozen=True, slots=True)
class LeaseRenewal:
    """The answer to a Heartbeat: the lease is renewed, and a cancel request if one is pending."""

    lease_expire_time: datetime | None
    """When the renewed lease runs out, unless the agent reports again before."""
    cancel_request: CancelRequest | None
    revision: int
    """The task's revision (it changes only when the heartbeat cleared `stalled`)."""
    raw: task_service_pb2.HeartbeatResponse = field(repr=False)

    @classmethod
    def from_proto(cls, raw: task_service_pb2.HeartbeatResponse) -> LeaseRenewal:
        """The read model of a wire message (kept as `raw`)."""
        return cls(
            lease_expire_time=time_or_none(raw, "lease_expire_time"),
            cancel_request=(
                CancelRequest.from_proto(raw.cancel_request)
                if raw.HasField("cancel_request")
                else None
            ),
            revision=raw.revision,
            raw=raw,
        )


@dataclass(frozen=True, slots=True)
class Artifact:
    """A result the task produced."""

    name: str
    uri: str
    media_type: str
    size_bytes: int
    create_time: datetime | None
    raw: task_pb2.Artifact = field(repr=False)

    @classmethod
    def from_proto(cls, raw: task_pb2.Artifact) -> Artifact:
        """The read model of a wire message (kept as `raw`)."""
        return cls(
            name=raw.name,
            uri=raw.uri,
            media_type=raw.media_type,
            size_bytes=raw.size_bytes,
            create_time=time_or_none(raw, "create_time"),
            raw=raw,
        )


@dataclass(frozen=True, slots=True)
class Criterion:
    """A success criterion of a task: a named condition, and whether the agent found it met."""

    name: str
    met: bool
    detail: str
    """Why it is or is not met, such as "41 of 42 tests pass"; empty when the agent said nothing."""
    raw: task_pb2.Criterion = field(repr=False)

    @classmethod
    def from_proto(cls, raw: task_pb2.Criterion) -> Criterion:
        """The read model of a wire message (kept as `raw`)."""
        return cls(name=raw.name, met=raw.met, detail=raw.detail, raw=raw)


@dataclass(frozen=True, slots=True)
class ChildCounts:
    """How many children a task has, by state; the task's progress may follow theirs."""

    total: int
    pending: int
    running: int
    succeeded: int
    failed: int
    cancelled: int

    @classmethod
    def from_proto(cls, raw: task_pb2.ChildCounts) -> ChildCounts:
        return cls(
            total=raw.total,
            pending=raw.pending,
            running=raw.running,
            succeeded=raw.succeeded,
            failed=raw.failed,
            cancelled=raw.cancelled,
        )

    @property
    def done(self) -> int:
        """Children at rest, whatever the outcome."""
        return self.succeeded + self.failed + self.cancelled


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a task."""

    key: str
    index: int
    display_name: str
    state: StepState | None
    weight: float
    progress: Progress | None
    fraction: float
    message: str
    expected_duration: timedelta | None
    start_time: datetime | None
    finish_time: datetime | None
    error: TaskError | None
    restart_count: int
    eta: Estimate | None
    """When the step should finish, while it is running or pending; None when unknown."""
    raw: task_pb2.Step = field(repr=False)

    @classmethod
    def from_proto(cls, raw: task_pb2.Step) -> Step:
        """The read model of a wire message (kept as `raw`)."""
        return cls(
            key=raw.key,
            index=raw.index,
            display_name=raw.display_name or raw.key,
            state=enum_or_none(StepState, raw.state),
            weight=raw.weight,
            progress=Progress.from_proto(raw.progress),
            fraction=raw.fraction,
            message=raw.message,
            expected_duration=duration_or_none(raw, "expected_duration"),
            start_time=time_or_none(raw, "start_time"),
            finish_time=time_or_none(raw, "finish_time"),
            error=TaskError.from_proto(raw.error) if raw.HasField("error") else None,
            restart_count=raw.restart_count,
            eta=estimate_or_none(raw, "eta"),
            raw=raw,
        )


@dataclass(frozen=True, slots=True)
class Task:
    """A task as the server last reported it."""

    id: str
    tenant: str
    display_name: str
    kind: str
    labels: dict[str, str]
    parent_id: str
    state: TaskState | None
    steps: tuple[Step, ...]
    progress: Progress | None
    fraction: float
    message: str
    iteration: int
    max_iterations: int
    metrics: dict[str, float]
    artifacts: tuple[Artifact, ...]
    error: TaskError | None
    cancel_request: CancelRequest | None
    create_time: datetime | None
    start_time: datetime | None
    update_time: datetime | None
    finish_time: datetime | None
    revision: int
    create_revision: int
    eta: Estimate | None
    """When the task should finish, while it is not at rest; None when nothing is known."""
    lease_duration: timedelta | None
    """How long the agent may stay silent before the task is marked stalled."""
    stalled: bool
    """The task is RUNNING but its agent has not reported within its lease."""
    last_report_time: datetime | None
    """When the agent last reported, as of the task's last change."""
    criteria: tuple[Criterion, ...]
    """The success criteria, in the order the agent first declared them."""
    raw: task_pb2.Task = field(repr=False)
    weight: float = 1.0
    """The task's weight in its parent's progress."""
    children: ChildCounts | None = None
    """The task's children by state; None when it has none."""

    @classmethod
    def from_proto(cls, raw: task_pb2.Task) -> Task:
        """The read model of a wire message (kept as `raw`)."""
        return cls(
            id=raw.id,
            tenant=raw.tenant,
            display_name=raw.display_name or raw.id,
            kind=raw.kind,
            labels=dict(raw.labels),
            parent_id=raw.parent_id,
            state=enum_or_none(TaskState, raw.state),
            steps=tuple(Step.from_proto(step) for step in raw.steps),
            progress=Progress.from_proto(raw.progress),
            fraction=raw.fraction,
            message=raw.message,
            iteration=raw.iteration,
            max_iterations=raw.max_iterations,
            metrics=dict(raw.metrics),
            artifacts=tuple(Artifact.from_proto(artifact) for artifact in raw.artifacts),
            error=TaskError.from_proto(raw.error) if raw.HasField("error") else None,
            cancel_request=(
                CancelRequest.from_proto(raw.cancel_request)
                if raw.HasField("cancel_request")
                else None
            ),
            create_time=time_or_none(raw, "create_time"),
            start_time=time_or_none(raw, "start_time"),
            update_time=time_or_none(raw, "update_time"),
            finish_time=time_or_none(raw, "finish_time"),
            revision=raw.revision,
            create_revision=raw.create_revision,
            eta=estimate_or_none(raw, "eta"),
            lease_duration=duration_or_none(raw, "lease_duration"),
            stalled=raw.stalled,
            last_report_time=time_or_none(raw, "last_report_time"),
            criteria=tuple(Criterion.from_proto(criterion) for criterion in raw.criteria),
            raw=raw,
            weight=raw.weight or 1.0,
            children=ChildCounts.from_proto(raw.children) if raw.HasField("children") else None,
        )

    @property
    def at_rest(self) -> bool:
        """True once the task SUCCEEDED, FAILED or was CANCELLED: it will not change again."""
        return self.state is not None and self.state.at_rest

    @property
    def cancel_pending(self) -> bool:
        """A viewer asked to cancel and the task has not come to rest yet."""
        return self.cancel_request is not None and not self.at_rest

    def step(self, key: str) -> Step | None:
        """The step with this key, or None."""
        return next((step for step in self.steps if step.key == key), None)

    def criterion(self, name: str) -> Criterion | None:
        """The success criterion with this name, or None."""
        return next((criterion for criterion in self.criteria if criterion.name == name), None)

    @property
    def criteria_met(self) -> int:
        """How many success criteria are met (the 3 of "criteria 3/5")."""
        return sum(1 for criterion in self.criteria if criterion.met)

    @property
    def criteria_total(self) -> int:
        """How many success criteria the task has (the 5 of "criteria 3/5")."""
        return len(self.criteria)

    @property
    def current_step(self) -> Step | None:
        """The first running step, else the first pending one, else None."""
        for wanted in (StepState.RUNNING, StepState.PENDING):
            for step in self.steps:
                if step.state is wanted:
                    return step
        return None

    def elapsed(self, now: datetime | None = None) -> timedelta | None:
        """How long the task has run: until it finished, or until `now` (default: now)."""
        if self.start_time is None:
            return None
        end = self.finish_time or now or datetime.now(UTC)
        return max(end - self.start_time, timedelta(0))

    def silence(self, now: datetime | None = None) -> timedelta | None:
        """How long the agent has not reported, as of `now` (default: now); None if unknown."""
        if self.last_report_time is None:
            return None
        return max((now or datetime.now(UTC)) - self.last_report_time, timedelta(0))


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One log line of a task."""

    task_id: str
    level: LogLevel | None
    step_key: str
    message: str
    fields: dict[str, str]
    time: datetime | None
    revision: int
    index: int
    raw: log_pb2.LogEntry = field(repr=False)

    @classmethod
    def from_proto(cls, raw: log_pb2.LogEntry, *, task_id: str = "") -> LogEntry:
        """`task_id` fills in for entries that arrive without it (inside LogsAppended)."""
        return cls(
            task_id=raw.task_id or task_id,
            level=enum_or_none(LogLevel, raw.level),
            step_key=raw.step_key,
            message=raw.message,
            fields=dict(raw.fields),
            time=time_or_none(raw, "time"),
            revision=raw.revision,
            index=raw.index,
            raw=raw,
        )


__all__ = [
    "Artifact",
    "CancelRequest",
    "Criterion",
    "Estimate",
    "EstimateBasis",
    "LeaseRenewal",
    "LogEntry",
    "LogLevel",
    "Progress",
    "Step",
    "StepState",
    "Task",
    "TaskError",
    "TaskState",
]
