"""Request validation that needs no state: syntax, lengths, ranges, counts.

Every check records a field violation under the field's proto path and keeps
going, so a client learns of every mistake in one answer. Checks that need the
task as it stands (transitions, duplicates against existing steps) belong to
`domain`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import cast

from google.protobuf import duration_pb2, timestamp_pb2
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

from headway.server.config import Limits
from headway.server.errors import FieldViolation, invalid_argument
from headway.v1 import log_pb2, task_pb2, task_service_pb2

TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
STEP_KEY = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
LABEL_KEY = re.compile(r"[a-z][a-z0-9._/-]{0,62}")
KIND = re.compile(r"[A-Za-z0-9._:/-]{0,128}")

MAX_DISPLAY_NAME = 256
MAX_MESSAGE = 1024
MAX_LABEL_VALUE = 256
MAX_REQUEST_ID = 64
MAX_ERROR_CODE = 128
MAX_ERROR_MESSAGE = 4096
MAX_ERROR_DETAIL = 16384
MAX_LOG_MESSAGE = 8192
MAX_LOG_FIELDS = 32
MAX_LOG_FIELD_KEY = 128
MAX_LOG_FIELD_VALUE = 4096
MAX_ARTIFACT_NAME = 256
MAX_URI = 2048
MAX_REASON = 1024
MAX_REQUESTED_BY = 256
MAX_SEARCH_TEXT = 256
MAX_WEIGHT = 1e6
# Success criteria: a checklist a person reads at a glance, not a data store.
MAX_CRITERIA = 64
MAX_CRITERION_NAME = 256
MAX_CRITERION_DETAIL = 1024

# The times the server accepts: every Timestamp in a request must lie in
# [1678-01-01T00:00:00Z, 2262-01-01T00:00:00Z). Times are stored as int64
# nanoseconds since the epoch, which reach only from 1677-09-21 to 2262-04-11;
# whole years inside that are easy to document and to check. (Protobuf itself
# allows 0001-01-01 to 9999-12-31.)
MIN_TIMESTAMP_SECONDS = -9_214_560_000  # 1678-01-01T00:00:00Z
END_TIMESTAMP_SECONDS = 9_214_646_400  # 2262-01-01T00:00:00Z, excluded
TIMESTAMP_RANGE = "between 1678-01-01T00:00:00Z and 2262-01-01T00:00:00Z (excluded)"
# The longest Duration the server accepts: 10 Julian years. Far beyond any real
# lease, deadline or step, and small enough that "now + duration" stays within
# int64 nanoseconds for any time the server can run at. (Protobuf allows
# 10,000 years, which int64 nanoseconds cannot hold.)
MAX_DURATION_SECONDS = 315_576_000
NANOS_PER_SECOND = 1_000_000_000


class Violations:
    """Collects field violations; `raise_if_any` turns them into one INVALID_ARGUMENT."""

    def __init__(self) -> None:
        self.found: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.found.append(FieldViolation(field, description))

    def raise_if_any(self) -> None:
        if self.found:
            raise invalid_argument(self.found)

    def text(self, field: str, value: str, *, max_length: int, required: bool = False) -> None:
        if required and not value:
            self.add(field, "is required")
        elif len(value) > max_length:
            self.add(field, f"must be at most {max_length} characters (has {len(value)})")
        elif "\x00" in value:
            self.add(field, "must not contain NUL characters")

    def pattern(self, field: str, value: str, pattern: re.Pattern[str], rule: str) -> None:
        if not pattern.fullmatch(value):
            self.add(field, f"must be {rule} (got {value[:80]!r})")

    def task_id(self, field: str, value: str) -> None:
        if not value:
            self.add(field, "is required")
        else:
            self.pattern(field, value, TASK_ID, _TASK_ID_RULE)

    def request_id(self, value: str) -> None:
        self.text("request_id", value, max_length=MAX_REQUEST_ID)

    def revision(self, field: str, value: int) -> None:
        if value < 0:
            self.add(field, "must not be negative")

    def labels(self, field: str, labels: Mapping[str, str], limits: Limits) -> None:
        if len(labels) > limits.max_labels:
            self.add(field, f"must have at most {limits.max_labels} entries (has {len(labels)})")
        for key, value in labels.items():
            self.pattern(f"{field}[{key!r}]", key, LABEL_KEY, _LABEL_KEY_RULE)
            self.text(f"{field}[{key!r}]", value, max_length=MAX_LABEL_VALUE)

    def metrics(self, field: str, metrics: Mapping[str, float], limits: Limits) -> None:
        if len(metrics) > limits.max_metrics:
            self.add(field, f"must have at most {limits.max_metrics} entries (has {len(metrics)})")
        for key, value in metrics.items():
            self.pattern(f"{field}[{key!r}]", key, LABEL_KEY, _LABEL_KEY_RULE)
            if not math.isfinite(value):
                self.add(f"{field}[{key!r}]", "must be a finite number")

    def criteria(self, field: str, criteria: Sequence[task_pb2.Criterion]) -> None:
        """At most MAX_CRITERIA, each named (distinctly, since a name identifies it) and short."""
        if len(criteria) > MAX_CRITERIA:
            self.add(field, f"must have at most {MAX_CRITERIA} entries (has {len(criteria)})")
        seen: set[str] = set()
        for i, criterion in enumerate(criteria):
            path = f"{field}[{i}]"
            self.text(f"{path}.name", criterion.name, max_length=MAX_CRITERION_NAME, required=True)
            if criterion.name and criterion.name in seen:
                self.add(
                    f"{path}.name",
                    f"duplicates an earlier criterion's name {criterion.name[:80]!r}",
                )
            seen.add(criterion.name)
            self.text(f"{path}.detail", criterion.detail, max_length=MAX_CRITERION_DETAIL)

    def progress(self, field: str, progress: task_pb2.Progress) -> None:
        which = progress.WhichOneof("value")
        if which is None:
            self.add(field, "must set one of units, fraction or indeterminate")
        elif which == "units":
            units = progress.units
            if units.total <= 0:
                self.add(f"{field}.units.total", "must be positive")
            if units.current < 0:
                self.add(f"{field}.units.current", "must not be negative")
            elif units.total > 0 and units.current > units.total:
                self.add(f"{field}.units.current", f"must not exceed total ({units.total})")
            self.text(f"{field}.units.unit", units.unit, max_length=64)
        elif which == "fraction":
            if not 0.0 <= progress.fraction <= 1.0:  # also rejects NaN
                self.add(f"{field}.fraction", "must be between 0 and 1")
        elif not progress.indeterminate:
            self.add(f"{field}.indeterminate", "must be true when set")

    def error(self, field: str, error: task_pb2.TaskError, *, required: bool) -> None:
        self.text(f"{field}.code", error.code, max_length=MAX_ERROR_CODE)
        self.text(
            f"{field}.message", error.message, max_length=MAX_ERROR_MESSAGE, required=required
        )
        if len(error.details) > MAX_LOG_FIELDS:
            self.add(f"{field}.details", f"must have at most {MAX_LOG_FIELDS} entries")
        for key, value in error.details.items():
            self.text(f"{field}.details[{key!r}]", key, max_length=MAX_LOG_FIELD_KEY)
            self.text(f"{field}.details[{key!r}]", value, max_length=MAX_ERROR_DETAIL)

    def steps(self, field: str, specs: Sequence[task_service_pb2.StepSpec], limits: Limits) -> None:
        if len(specs) > limits.max_steps:
            self.add(field, f"must have at most {limits.max_steps} entries (has {len(specs)})")
            return
        seen: set[str] = set()
        for i, spec in enumerate(specs):
            path = f"{field}[{i}]"
            if not spec.key:
                self.add(f"{path}.key", "is required")
            else:
                self.pattern(f"{path}.key", spec.key, STEP_KEY, _STEP_KEY_RULE)
                if spec.key in seen:
                    self.add(f"{path}.key", f"duplicates an earlier step's key {spec.key!r}")
                seen.add(spec.key)
            self.text(f"{path}.display_name", spec.display_name, max_length=MAX_DISPLAY_NAME)
            self.weight(f"{path}.weight", spec.weight)

    def weight(self, field: str, value: float) -> None:
        """A weight in a roll-up (a step's in its task, a task's in its parent); 0 means 1."""
        if not (math.isfinite(value) and 0.0 <= value <= MAX_WEIGHT):
            self.add(field, f"must be between 0 (default 1) and {MAX_WEIGHT:g}")

    def timestamp(self, field: str, value: timestamp_pb2.Timestamp) -> None:
        """A time the server can store: a valid Timestamp within TIMESTAMP_RANGE."""
        if not 0 <= value.nanos < NANOS_PER_SECOND:
            self.add(field, f"nanos must be between 0 and 999999999 (got {value.nanos})")
        elif not MIN_TIMESTAMP_SECONDS <= value.seconds < END_TIMESTAMP_SECONDS:
            self.add(field, f"must be {TIMESTAMP_RANGE}")

    def duration(self, field: str, value: duration_pb2.Duration) -> None:
        """A valid, non-negative Duration of at most MAX_DURATION_SECONDS.

        Every Duration a request carries is a span the server waits or expects
        (a lease, a deadline, a step's length, a heartbeat interval), so a
        negative one is always a mistake.
        """
        seconds, nanos = value.seconds, value.nanos
        if not -NANOS_PER_SECOND < nanos < NANOS_PER_SECOND:
            self.add(field, f"nanos must be between -999999999 and 999999999 (got {nanos})")
        elif (seconds < 0 < nanos) or (nanos < 0 < seconds):
            self.add(field, "seconds and nanos must have the same sign")
        elif seconds < 0 or nanos < 0:
            self.add(field, "must not be negative")
        elif seconds > MAX_DURATION_SECONDS or (seconds == MAX_DURATION_SECONDS and nanos):
            self.add(field, f"must be at most {MAX_DURATION_SECONDS}s (10 years)")

    def times(self, message: Message, path: str = "") -> None:
        """Check every Timestamp and Duration set anywhere in `message`, by its field path.

        Driven by the message's descriptor, so a time field added to any request
        is covered without anyone remembering to check it.
        """
        for name, kind, shape in _time_fields(cast(Descriptor, message.DESCRIPTOR)):
            value = getattr(message, name)
            if shape == _MAP:
                for key in value:
                    self._time_value(f"{path}{name}[{key!r}]", kind, value[key])
            elif shape == _LIST:
                for i, item in enumerate(value):
                    self._time_value(f"{path}{name}[{i}]", kind, item)
            elif message.HasField(name):
                self._time_value(f"{path}{name}", kind, value)

    def _time_value(self, path: str, kind: str, value: Message) -> None:
        if kind == _TIMESTAMP:
            self.timestamp(path, value)  # type: ignore[arg-type]
        elif kind == _DURATION:
            self.duration(path, value)  # type: ignore[arg-type]
        else:
            self.times(value, f"{path}.")

    def page(self, page_size: int, limits: Limits) -> int:
        if page_size < 0:
            self.add("page_size", "must not be negative")
            return 0
        return min(page_size or limits.default_page_size, limits.max_page_size)


_TIMESTAMP = timestamp_pb2.Timestamp.DESCRIPTOR.full_name
_DURATION = duration_pb2.Duration.DESCRIPTOR.full_name
_NESTED = "nested"
_SINGLE, _LIST, _MAP = "single", "list", "map"
# Per message type: (field name, what it holds, single/list/map) for each field
# that is, or contains, a Timestamp or Duration.
TimeField = tuple[str, str, str]
_TIME_FIELDS: dict[str, tuple[TimeField, ...]] = {}

# The enums' known numbers, as sets: `EnumTypeWrapper.values()` builds a new list on every call.
_STEP_STATES = frozenset(task_pb2.StepState.values())
_TASK_STATES = frozenset(task_pb2.TaskState.values())
_LOG_LEVELS = frozenset(log_pb2.LogLevel.values())


def _time_fields(descriptor: Descriptor) -> tuple[TimeField, ...]:
    """The fields of a message type that are, or contain, a Timestamp or Duration.

    Computed once per type, so requests without times cost a dictionary lookup.
    A map's value (or a message field) is walked into when its type holds times.
    """
    cached = _TIME_FIELDS.get(descriptor.full_name)
    if cached is not None:
        return cached
    _TIME_FIELDS[descriptor.full_name] = ()  # a recursive type holds no times through itself
    found: list[TimeField] = []
    for field in descriptor.fields:
        target = field.message_type
        if target is None:
            continue
        shape = _LIST if field.is_repeated else _SINGLE
        if target.GetOptions().map_entry:
            shape = _MAP
            target = target.fields_by_name["value"].message_type
            if target is None:
                continue
        if target.full_name in (_TIMESTAMP, _DURATION):
            found.append((field.name, target.full_name, shape))
        elif _time_fields(target):
            found.append((field.name, _NESTED, shape))
    _TIME_FIELDS[descriptor.full_name] = result = tuple(found)
    return result


def check_times(request: Message) -> None:
    """INVALID_ARGUMENT unless every Timestamp and Duration in `request` is one the server accepts.

    Run for every request before its handler (see `service`), because a time
    out of range does not merely mislead: it overflows the int64 nanoseconds
    the server computes and stores with.
    """
    v = Violations()
    v.times(request)
    v.raise_if_any()


_TASK_ID_RULE = "1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit"
_STEP_KEY_RULE = (
    "1 to 63 lowercase letters, digits, '.', '_' or '-', starting with one of the first two"
)
_LABEL_KEY_RULE = "1 to 63 lowercase letters, digits, '.', '_', '/' or '-', starting with a letter"
_KIND_RULE = "at most 128 letters, digits, '.', '_', ':', '/' or '-'"


def check_create(request: task_service_pb2.CreateTaskRequest, limits: Limits) -> None:
    v = Violations()
    if request.task_id:
        v.task_id("task_id", request.task_id)
    v.text("display_name", request.display_name, max_length=MAX_DISPLAY_NAME)
    v.pattern("kind", request.kind, KIND, _KIND_RULE)
    v.labels("labels", request.labels, limits)
    if request.parent_id:
        v.task_id("parent_id", request.parent_id)
        if request.parent_id == request.task_id:
            v.add("parent_id", "must not be the task itself")
    v.weight("weight", request.weight)
    v.steps("steps", request.steps, limits)
    v.text("message", request.message, max_length=MAX_MESSAGE)
    if request.max_iterations < 0:
        v.add("max_iterations", "must not be negative")
    v.metrics("metrics", request.metrics, limits)
    v.criteria("criteria", request.criteria)
    v.request_id(request.request_id)
    v.raise_if_any()


def check_heartbeat(request: task_service_pb2.HeartbeatRequest) -> None:
    _check_target(request.task_id, 0, "")


def check_start(request: task_service_pb2.StartTaskRequest) -> None:
    _check_target(request.task_id, request.expected_revision, request.request_id)


def check_add_steps(request: task_service_pb2.AddStepsRequest, limits: Limits) -> None:
    v = _target(request.task_id, request.expected_revision, request.request_id)
    if not request.steps:
        v.add("steps", "must have at least one entry")
    v.steps("steps", request.steps, limits)
    v.raise_if_any()


def check_update_step(request: task_service_pb2.UpdateStepRequest) -> None:
    v = _target(request.task_id, request.expected_revision, request.request_id)
    if not request.step_key:
        v.add("step_key", "is required")
    else:
        v.pattern("step_key", request.step_key, STEP_KEY, _STEP_KEY_RULE)
    if request.state not in _STEP_STATES:
        v.add("state", f"unknown state {request.state}")
    elif request.state == task_pb2.STEP_STATE_CANCELLED:
        v.add("state", "CANCELLED is set by the server when the task ends; cancel the task")
    elif request.state == task_pb2.STEP_STATE_PENDING:
        v.add("state", "a step cannot go back to PENDING")
    if request.restart and request.state not in (
        task_pb2.STEP_STATE_UNSPECIFIED,
        task_pb2.STEP_STATE_RUNNING,
    ):
        v.add("restart", "restarting runs the step; state must be unset or RUNNING")
    if request.HasField("progress"):
        v.progress("progress", request.progress)
    if request.HasField("message"):
        v.text("message", request.message, max_length=MAX_MESSAGE)
    if request.HasField("error"):
        if request.state != task_pb2.STEP_STATE_FAILED:
            v.add("error", "is allowed only with state FAILED")
        v.error("error", request.error, required=False)
    changes = (
        request.state != task_pb2.STEP_STATE_UNSPECIFIED,
        request.HasField("progress"),
        request.HasField("message"),
        request.restart,
    )
    if not any(changes):
        v.add("state", "nothing to change: set state, progress, message or restart")
    v.raise_if_any()


def check_update_task(request: task_service_pb2.UpdateTaskRequest, limits: Limits) -> None:
    v = _target(request.task_id, request.expected_revision, request.request_id)
    if request.HasField("progress"):
        v.progress("progress", request.progress)
    if request.HasField("message"):
        v.text("message", request.message, max_length=MAX_MESSAGE)
    if request.HasField("iteration") and request.iteration < 0:
        v.add("iteration", "must not be negative")
    if request.HasField("max_iterations") and request.max_iterations < 0:
        v.add("max_iterations", "must not be negative")
    if (
        request.HasField("iteration")
        and request.HasField("max_iterations")
        and request.max_iterations
        and request.iteration > request.max_iterations
    ):
        v.add("iteration", f"must not exceed max_iterations ({request.max_iterations})")
    v.metrics("metrics", request.metrics, limits)
    v.criteria("criteria", request.criteria)
    changes = (
        request.HasField("progress"),
        request.HasField("message"),
        request.HasField("iteration"),
        request.HasField("max_iterations"),
        bool(request.metrics),
        bool(request.criteria),
    )
    if not any(changes):
        v.add(
            "progress", "nothing to change: set progress, message, iteration, metrics or criteria"
        )
    v.raise_if_any()


def check_append_logs(request: task_service_pb2.AppendLogsRequest, limits: Limits) -> None:
    v = _target(request.task_id, 0, request.request_id)
    if not request.entries:
        v.add("entries", "must have at least one entry")
    if len(request.entries) > limits.max_log_entries:
        v.add("entries", f"must have at most {limits.max_log_entries} entries")
    else:
        for i, entry in enumerate(request.entries):
            _check_log_entry(v, f"entries[{i}]", entry)
    v.raise_if_any()


def _check_log_entry(v: Violations, path: str, entry: log_pb2.LogEntry) -> None:
    if entry.level not in _LOG_LEVELS:
        v.add(f"{path}.level", f"unknown level {entry.level}")
    if entry.step_key:
        v.pattern(f"{path}.step_key", entry.step_key, STEP_KEY, _STEP_KEY_RULE)
    v.text(f"{path}.message", entry.message, max_length=MAX_LOG_MESSAGE, required=True)
    if len(entry.fields) > MAX_LOG_FIELDS:
        v.add(f"{path}.fields", f"must have at most {MAX_LOG_FIELDS} entries")
    for key, value in entry.fields.items():
        v.text(f"{path}.fields[{key!r}]", key, max_length=MAX_LOG_FIELD_KEY, required=True)
        v.text(f"{path}.fields[{key!r}]", value, max_length=MAX_LOG_FIELD_VALUE)


def check_add_artifacts(request: task_service_pb2.AddArtifactsRequest, limits: Limits) -> None:
    v = _target(request.task_id, request.expected_revision, request.request_id)
    if not request.artifacts:
        v.add("artifacts", "must have at least one entry")
    if len(request.artifacts) > limits.max_artifacts:
        v.add("artifacts", f"must have at most {limits.max_artifacts} entries")
    names: set[str] = set()
    for i, artifact in enumerate(request.artifacts):
        path = f"artifacts[{i}]"
        v.text(f"{path}.name", artifact.name, max_length=MAX_ARTIFACT_NAME, required=True)
        if artifact.name in names:
            v.add(f"{path}.name", f"duplicates an earlier artifact's name {artifact.name!r}")
        names.add(artifact.name)
        v.text(f"{path}.uri", artifact.uri, max_length=MAX_URI)
        v.text(f"{path}.media_type", artifact.media_type, max_length=MAX_DISPLAY_NAME)
        if artifact.size_bytes < 0:
            v.add(f"{path}.size_bytes", "must not be negative")
    v.raise_if_any()


def check_succeed(request: task_service_pb2.SucceedTaskRequest) -> None:
    v = _target(request.task_id, request.expected_revision, request.request_id)
    if request.HasField("message"):
        v.text("message", request.message, max_length=MAX_MESSAGE)
    v.raise_if_any()


def check_fail(request: task_service_pb2.FailTaskRequest) -> None:
    v = _target(request.task_id, request.expected_revision, request.request_id)
    v.error("error", request.error, required=True)
    v.raise_if_any()


def check_cancel(request: task_service_pb2.CancelTaskRequest) -> None:
    v = _target(request.task_id, request.expected_revision, request.request_id)
    v.text("reason", request.reason, max_length=MAX_REASON)
    v.text("requested_by", request.requested_by, max_length=MAX_REQUESTED_BY)
    v.raise_if_any()


def check_confirm_cancel(request: task_service_pb2.ConfirmCancelRequest) -> None:
    v = _target(request.task_id, request.expected_revision, request.request_id)
    v.text("reason", request.reason, max_length=MAX_REASON)
    v.raise_if_any()


def check_delete(request: task_service_pb2.DeleteTaskRequest) -> None:
    _check_target(request.task_id, request.expected_revision, request.request_id)


def check_get(request: task_service_pb2.GetTaskRequest) -> None:
    _check_target(request.task_id, 0, "")


def check_filter(
    v: Violations, field: str, task_filter: task_service_pb2.TaskFilter, limits: Limits
) -> None:
    for name, values in (("task_ids", task_filter.task_ids), ("kinds", task_filter.kinds)):
        if len(values) > limits.max_filter_values:
            v.add(f"{field}.{name}", f"must have at most {limits.max_filter_values} entries")
    for i, task_id in enumerate(task_filter.task_ids):
        v.task_id(f"{field}.task_ids[{i}]", task_id)
    for i, kind in enumerate(task_filter.kinds):
        v.pattern(f"{field}.kinds[{i}]", kind, KIND, _KIND_RULE)
    v.labels(f"{field}.labels", task_filter.labels, limits)
    for i, state in enumerate(task_filter.states):
        if state == task_pb2.TASK_STATE_UNSPECIFIED or state not in _TASK_STATES:
            v.add(f"{field}.states[{i}]", f"must be a known, specified state (got {state})")
    if task_filter.parent_id:
        v.task_id(f"{field}.parent_id", task_filter.parent_id)


def check_list_logs(request: task_service_pb2.ListLogsRequest, limits: Limits) -> int:
    v = _target(request.task_id, 0, "")
    if request.min_level not in _LOG_LEVELS:
        v.add("min_level", f"unknown level {request.min_level}")
    if request.step_key:
        v.pattern("step_key", request.step_key, STEP_KEY, _STEP_KEY_RULE)
    v.text("text", request.text, max_length=MAX_SEARCH_TEXT)
    if (
        request.HasField("start_time")
        and request.HasField("end_time")
        and request.end_time.ToNanoseconds() <= request.start_time.ToNanoseconds()
    ):
        v.add("end_time", "must be after start_time")
    size = v.page(request.page_size, limits)
    v.raise_if_any()
    return size


def _target(task_id: str, expected_revision: int, request_id: str) -> Violations:
    v = Violations()
    v.task_id("task_id", task_id)
    v.revision("expected_revision", expected_revision)
    v.request_id(request_id)
    return v


def _check_target(task_id: str, expected_revision: int, request_id: str) -> None:
    _target(task_id, expected_revision, request_id).raise_if_any()
