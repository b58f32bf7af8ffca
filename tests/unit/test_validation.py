"""Static request validation: every bad field is named by its exact proto path."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from headway.server import validation
from headway.server.config import Limits
from headway.server.errors import HeadwayError, Kind
from headway.v1 import log_pb2, task_pb2, task_service_pb2

LIMITS = Limits()
NAN = float("nan")
INF = float("inf")

Mutator = Callable[[Any], None]


def violations(call: Callable[[], object]) -> list[str]:
    """The field paths an INVALID_ARGUMENT names, in order."""
    with pytest.raises(HeadwayError) as caught:
        call()
    error = caught.value
    assert error.kind is Kind.INVALID_ARGUMENT
    assert error.reason == "FIELD_VIOLATION"
    assert error.violations, "an INVALID_ARGUMENT names at least one field"
    assert all(v.description for v in error.violations)
    return [v.field for v in error.violations]


def check_invalid(
    make: Callable[[], Any],
    mutate: Mutator,
    check: Callable[[Any], object],
    field: str,
) -> None:
    request = make()
    check(request)  # the base request is valid
    mutate(request)
    assert violations(lambda: check(request)) == [field]


def setter(name: str, value: object) -> Mutator:
    return lambda request: setattr(request, name, value)


def updater(name: str, value: dict[str, Any]) -> Mutator:
    return lambda request: getattr(request, name).update(value)


def many_labels(n: int) -> dict[str, str]:
    return {f"k{i}": "v" for i in range(n)}


def many_metrics(n: int) -> dict[str, float]:
    return {f"m{i}": 1.0 for i in range(n)}


# -- CreateTask -------------------------------------------------------------------------


def valid_create() -> task_service_pb2.CreateTaskRequest:
    return task_service_pb2.CreateTaskRequest(
        task_id="build-42",
        display_name="Build #42",
        kind="ci.build",
        labels={"env": "prod", "team/x": "a"},
        parent_id="pipeline-7",
        steps=[
            task_service_pb2.StepSpec(key="fetch", weight=1.0),
            task_service_pb2.StepSpec(
                key="compile",
                display_name="Compile",
                weight=3.0,
                expected_duration=Duration(seconds=5),
            ),
        ],
        message="queued",
        max_iterations=10,
        metrics={"cost": 0.5},
        request_id="6f1c3b1e-1f00-4a53-9a0f-1d2e3f4a5b6c",
    )


def add_step(key: str, **fields: Any) -> Mutator:
    return lambda request: request.steps.add(key=key, **fields)


def set_step(index: int, **fields: Any) -> Mutator:
    def mutate(request: Any) -> None:
        step = request.steps[index]
        for name, value in fields.items():
            if name == "expected_duration":
                step.expected_duration.CopyFrom(value)
            else:
                setattr(step, name, value)

    return mutate


CREATE_INVALID = [
    ("task_id", setter("task_id", "-starts-with-dash")),
    ("task_id", setter("task_id", "has space")),
    ("task_id", setter("task_id", "x" * 129)),
    ("display_name", setter("display_name", "x" * 257)),
    ("display_name", setter("display_name", "nul\x00byte")),
    ("kind", setter("kind", "no spaces allowed")),
    ("kind", setter("kind", "k" * 129)),
    ("labels['Bad']", updater("labels", {"Bad": "v"})),
    ("labels['1st']", updater("labels", {"1st": "v"})),
    ("labels['env']", updater("labels", {"env": "x" * 257})),
    ("labels", lambda r: (r.labels.clear(), r.labels.update(many_labels(33)))),
    ("parent_id", setter("parent_id", "bad parent")),
    ("parent_id", setter("parent_id", "build-42")),
    ("steps[1].key", set_step(1, key="")),
    ("steps[1].key", set_step(1, key="Compile")),
    ("steps[1].key", set_step(1, key="k" * 64)),
    ("steps[1].key", set_step(1, key="fetch")),
    ("steps[0].display_name", set_step(0, display_name="x" * 257)),
    ("steps[0].weight", set_step(0, weight=-1.0)),
    ("steps[0].weight", set_step(0, weight=NAN)),
    ("steps[0].weight", set_step(0, weight=INF)),
    ("steps[0].weight", set_step(0, weight=1e6 + 1)),
    ("message", setter("message", "x" * 1025)),
    ("max_iterations", setter("max_iterations", -1)),
    ("metrics['Cost']", updater("metrics", {"Cost": 1.0})),
    ("metrics['cost']", updater("metrics", {"cost": NAN})),
    ("metrics['cost']", updater("metrics", {"cost": INF})),
    ("metrics", lambda r: (r.metrics.clear(), r.metrics.update(many_metrics(65)))),
    ("request_id", setter("request_id", "r" * 65)),
]


def test_create_valid_passes() -> None:
    validation.check_create(valid_create(), LIMITS)
    validation.check_create(task_service_pb2.CreateTaskRequest(), LIMITS)


def test_create_accepts_boundaries() -> None:
    request = task_service_pb2.CreateTaskRequest(
        task_id="A" + "b" * 127,
        display_name="x" * 256,
        kind="k" * 128,
        labels={"a" + "b" * 62: "v" * 256, "x.y_z/w-1": ""},
        steps=[
            task_service_pb2.StepSpec(key="0" + "a" * 62, weight=0.0),
            task_service_pb2.StepSpec(key="b", weight=1e6),
        ],
        message="m" * 1024,
        metrics={"m": -3.5},
        request_id="r" * 64,
    )
    validation.check_create(request, LIMITS)


@pytest.mark.parametrize(("field", "mutate"), CREATE_INVALID)
def test_create_invalid_field(field: str, mutate: Mutator) -> None:
    check_invalid(valid_create, mutate, lambda r: validation.check_create(r, LIMITS), field)


def test_create_with_too_many_steps_names_the_list_once() -> None:
    request = valid_create()
    request.steps.add(key="link")
    assert violations(lambda: validation.check_create(request, Limits(max_steps=2))) == ["steps"]


def test_create_reports_every_violation_at_once() -> None:
    request = valid_create()
    request.task_id = "bad id"
    request.labels["Bad"] = "v"
    request.steps[1].key = ""
    request.steps[0].weight = -2
    request.max_iterations = -1
    request.request_id = "r" * 65
    with pytest.raises(HeadwayError) as caught:
        validation.check_create(request, LIMITS)
    fields = [v.field for v in caught.value.violations]
    assert fields == [
        "task_id",
        "labels['Bad']",
        "steps[0].weight",
        "steps[1].key",
        "max_iterations",
        "request_id",
    ]
    # The message summarises the first five and counts the rest.
    assert "and 1 more" in caught.value.message
    assert caught.value.message.startswith("invalid request: task_id:")


# -- target-only requests ---------------------------------------------------------------

TARGET_CHECKS: list[tuple[str, Callable[[], Any], Callable[[Any], object]]] = [
    ("start", task_service_pb2.StartTaskRequest, validation.check_start),
    ("succeed", task_service_pb2.SucceedTaskRequest, validation.check_succeed),
    ("cancel", task_service_pb2.CancelTaskRequest, validation.check_cancel),
    ("confirm", task_service_pb2.ConfirmCancelRequest, validation.check_confirm_cancel),
    ("delete", task_service_pb2.DeleteTaskRequest, validation.check_delete),
]


@pytest.mark.parametrize(
    ("name", "make", "check"), TARGET_CHECKS, ids=[c[0] for c in TARGET_CHECKS]
)
def test_target_fields(name: str, make: Callable[[], Any], check: Callable[[Any], object]) -> None:
    check(make(task_id="t-1", expected_revision=12, request_id="r" * 64))
    assert violations(lambda: check(make())) == ["task_id"]
    assert violations(lambda: check(make(task_id="bad id"))) == ["task_id"]
    assert violations(lambda: check(make(task_id="t", expected_revision=-1))) == [
        "expected_revision"
    ]
    assert violations(lambda: check(make(task_id="t", request_id="r" * 65))) == ["request_id"]
    assert violations(
        lambda: check(make(task_id="", expected_revision=-1, request_id="r" * 65))
    ) == ["task_id", "expected_revision", "request_id"]


def test_get() -> None:
    validation.check_get(task_service_pb2.GetTaskRequest(task_id="t.1_x-2"))
    assert violations(lambda: validation.check_get(task_service_pb2.GetTaskRequest())) == [
        "task_id"
    ]
    bad = task_service_pb2.GetTaskRequest(task_id="_hidden")
    assert violations(lambda: validation.check_get(bad)) == ["task_id"]


def test_succeed_message() -> None:
    ok = task_service_pb2.SucceedTaskRequest(task_id="t", message="x" * 1024)
    validation.check_succeed(ok)
    bad = task_service_pb2.SucceedTaskRequest(task_id="t", message="x" * 1025)
    assert violations(lambda: validation.check_succeed(bad)) == ["message"]


@pytest.mark.parametrize(
    ("error", "fields"),
    [
        (task_pb2.TaskError(), ["error.message"]),
        (task_pb2.TaskError(code="C" * 129, message="m"), ["error.code"]),
        (task_pb2.TaskError(message="m" * 4097), ["error.message"]),
        (
            task_pb2.TaskError(message="m", details={"trace": "t" * 16385}),
            ["error.details['trace']"],
        ),
        (
            task_pb2.TaskError(message="m", details={"k" * 129: "v"}),
            [f"error.details[{'k' * 129!r}]"],
        ),
        (
            task_pb2.TaskError(message="m", details={f"d{i}": "v" for i in range(33)}),
            ["error.details"],
        ),
    ],
    ids=["no-message", "code", "message", "detail-value", "detail-key", "too-many-details"],
)
def test_fail_error(error: task_pb2.TaskError, fields: list[str]) -> None:
    validation.check_fail(
        task_service_pb2.FailTaskRequest(task_id="t", error=task_pb2.TaskError(message="boom"))
    )
    request = task_service_pb2.FailTaskRequest(task_id="t", error=error)
    assert violations(lambda: validation.check_fail(request)) == fields


def test_cancel_texts() -> None:
    ok = task_service_pb2.CancelTaskRequest(
        task_id="t", reason="r" * 1024, requested_by="u" * 256, force=True
    )
    validation.check_cancel(ok)
    bad = task_service_pb2.CancelTaskRequest(task_id="t", reason="r" * 1025, requested_by="u" * 257)
    assert violations(lambda: validation.check_cancel(bad)) == ["reason", "requested_by"]


def test_confirm_cancel_reason() -> None:
    validation.check_confirm_cancel(task_service_pb2.ConfirmCancelRequest(task_id="t", reason="r"))
    bad = task_service_pb2.ConfirmCancelRequest(task_id="t", reason="r" * 1025)
    assert violations(lambda: validation.check_confirm_cancel(bad)) == ["reason"]


# -- AddSteps ---------------------------------------------------------------------------


def test_add_steps() -> None:
    ok = task_service_pb2.AddStepsRequest(
        task_id="t", steps=[task_service_pb2.StepSpec(key="a"), task_service_pb2.StepSpec(key="b")]
    )
    validation.check_add_steps(ok, LIMITS)
    empty = task_service_pb2.AddStepsRequest(task_id="t")
    assert violations(lambda: validation.check_add_steps(empty, LIMITS)) == ["steps"]
    bad = task_service_pb2.AddStepsRequest(
        task_id="",
        steps=[
            task_service_pb2.StepSpec(key="a"),
            task_service_pb2.StepSpec(key="a", weight=-1),
            task_service_pb2.StepSpec(key="B"),
        ],
    )
    assert violations(lambda: validation.check_add_steps(bad, LIMITS)) == [
        "task_id",
        "steps[1].key",
        "steps[1].weight",
        "steps[2].key",
    ]
    too_many = task_service_pb2.AddStepsRequest(
        task_id="t", steps=[task_service_pb2.StepSpec(key=f"s{i}") for i in range(3)]
    )
    assert violations(lambda: validation.check_add_steps(too_many, Limits(max_steps=2))) == [
        "steps"
    ]


# -- UpdateStep -------------------------------------------------------------------------


def valid_update_step(**fields: Any) -> task_service_pb2.UpdateStepRequest:
    return task_service_pb2.UpdateStepRequest(task_id="t", step_key="fetch", **fields)


@pytest.mark.parametrize(
    "fields",
    [
        {"state": task_pb2.STEP_STATE_RUNNING},
        {"state": task_pb2.STEP_STATE_SUCCEEDED},
        {"state": task_pb2.STEP_STATE_SKIPPED},
        {"state": task_pb2.STEP_STATE_FAILED, "error": task_pb2.TaskError(code="X")},
        {"progress": task_pb2.Progress(fraction=0.0)},
        {"progress": task_pb2.Progress(fraction=1.0)},
        {"progress": task_pb2.Progress(units=task_pb2.Progress.Units(current=0, total=1))},
        {"progress": task_pb2.Progress(units=task_pb2.Progress.Units(current=9, total=9))},
        {"progress": task_pb2.Progress(indeterminate=True)},
        {"message": ""},
        {"restart": True},
        {"restart": True, "state": task_pb2.STEP_STATE_RUNNING},
    ],
    ids=lambda fields: "+".join(fields),
)
def test_update_step_valid(fields: dict[str, Any]) -> None:
    validation.check_update_step(valid_update_step(**fields))


def units(current: int, total: int, unit: str = "") -> task_pb2.Progress:
    return task_pb2.Progress(units=task_pb2.Progress.Units(current=current, total=total, unit=unit))


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"step_key": "", "message": "m"}, ["step_key"]),
        ({"step_key": "Fetch", "message": "m"}, ["step_key"]),
        ({"state": 99}, ["state"]),
        ({"state": task_pb2.STEP_STATE_CANCELLED}, ["state"]),
        ({"state": task_pb2.STEP_STATE_PENDING}, ["state"]),
        ({"restart": True, "state": task_pb2.STEP_STATE_SUCCEEDED}, ["restart"]),
        ({"progress": task_pb2.Progress()}, ["progress"]),
        ({"progress": units(1, 0)}, ["progress.units.total"]),
        ({"progress": units(-1, 5)}, ["progress.units.current"]),
        ({"progress": units(6, 5)}, ["progress.units.current"]),
        ({"progress": units(0, -1)}, ["progress.units.total"]),
        ({"progress": units(1, 5, "u" * 65)}, ["progress.units.unit"]),
        ({"progress": task_pb2.Progress(fraction=1.5)}, ["progress.fraction"]),
        ({"progress": task_pb2.Progress(fraction=-0.1)}, ["progress.fraction"]),
        ({"progress": task_pb2.Progress(fraction=NAN)}, ["progress.fraction"]),
        ({"progress": task_pb2.Progress(indeterminate=False)}, ["progress.indeterminate"]),
        ({"message": "x" * 1025}, ["message"]),
        (
            {"state": task_pb2.STEP_STATE_RUNNING, "error": task_pb2.TaskError(code="X")},
            ["error"],
        ),
        (
            {"state": task_pb2.STEP_STATE_FAILED, "error": task_pb2.TaskError(code="X" * 129)},
            ["error.code"],
        ),
        ({}, ["state"]),
    ],
    ids=[
        "no-key",
        "bad-key",
        "unknown-state",
        "cancelled",
        "pending",
        "restart-to-succeeded",
        "empty-progress",
        "zero-total",
        "negative-current",
        "current-over-total",
        "negative-total",
        "long-unit",
        "fraction-over-one",
        "negative-fraction",
        "nan-fraction",
        "indeterminate-false",
        "long-message",
        "error-without-failed",
        "long-error-code",
        "nothing-to-change",
    ],
)
def test_update_step_invalid(fields: dict[str, Any], expected: list[str]) -> None:
    request = valid_update_step()
    for name, value in fields.items():
        if isinstance(value, task_pb2.Progress | task_pb2.TaskError):
            getattr(request, name).CopyFrom(value)
        else:
            setattr(request, name, value)
    assert violations(lambda: validation.check_update_step(request)) == expected


def test_update_step_error_alone_is_misplaced_and_changes_nothing() -> None:
    request = valid_update_step(error=task_pb2.TaskError(code="X"))
    assert violations(lambda: validation.check_update_step(request)) == ["error", "state"]


def test_update_step_reports_every_violation() -> None:
    request = task_service_pb2.UpdateStepRequest(
        task_id="bad id",
        step_key="Nope",
        state=task_pb2.STEP_STATE_SKIPPED,
        restart=True,
        progress=units(7, 3),
        message="x\x00",
        expected_revision=-4,
    )
    assert violations(lambda: validation.check_update_step(request)) == [
        "task_id",
        "expected_revision",
        "step_key",
        "restart",
        "progress.units.current",
        "message",
    ]


# -- UpdateTask -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"progress": task_pb2.Progress(fraction=0.3)},
        {"message": "m"},
        {"iteration": 0},
        {"max_iterations": 0},
        {"iteration": 5, "max_iterations": 5},
        {"iteration": 50, "max_iterations": 0},
        {"metrics": {"cost": 1.0}},
    ],
    ids=lambda fields: "+".join(fields),
)
def test_update_task_valid(fields: dict[str, Any]) -> None:
    request = task_service_pb2.UpdateTaskRequest(task_id="t", **fields)
    validation.check_update_task(request, LIMITS)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"progress": task_pb2.Progress(fraction=2.0)}, ["progress.fraction"]),
        ({"progress": task_pb2.Progress()}, ["progress"]),
        ({"message": "x" * 1025}, ["message"]),
        ({"iteration": -1}, ["iteration"]),
        ({"max_iterations": -1}, ["max_iterations"]),
        ({"iteration": 6, "max_iterations": 5}, ["iteration"]),
        ({"metrics": {"Cost": 1.0}}, ["metrics['Cost']"]),
        ({"metrics": {"cost": -INF}}, ["metrics['cost']"]),
        ({"metrics": many_metrics(65)}, ["metrics"]),
        ({}, ["progress"]),
    ],
    ids=[
        "fraction",
        "empty-progress",
        "message",
        "iteration",
        "max-iterations",
        "iteration-over-max",
        "metric-key",
        "metric-value",
        "too-many-metrics",
        "nothing-to-change",
    ],
)
def test_update_task_invalid(fields: dict[str, Any], expected: list[str]) -> None:
    request = task_service_pb2.UpdateTaskRequest(task_id="t", **fields)
    assert violations(lambda: validation.check_update_task(request, LIMITS)) == expected


# -- AppendLogs -------------------------------------------------------------------------


def valid_logs() -> task_service_pb2.AppendLogsRequest:
    return task_service_pb2.AppendLogsRequest(
        task_id="t",
        entries=[
            log_pb2.LogEntry(message="starting"),
            log_pb2.LogEntry(
                level=log_pb2.LOG_LEVEL_WARNING,
                step_key="fetch",
                message="retrying",
                fields={"attempt": "2"},
                time=Timestamp(seconds=1),
            ),
        ],
        request_id="r-1",
    )


def set_entry(index: int, **fields: Any) -> Mutator:
    def mutate(request: Any) -> None:
        entry = request.entries[index]
        for name, value in fields.items():
            if name == "fields":
                entry.fields.update(value)
            else:
                setattr(entry, name, value)

    return mutate


LOG_INVALID = [
    ("entries[0].message", set_entry(0, message="")),
    ("entries[1].message", set_entry(1, message="m" * 8193)),
    ("entries[1].message", set_entry(1, message="a\x00b")),
    ("entries[0].level", set_entry(0, level=42)),
    ("entries[1].step_key", set_entry(1, step_key="Fetch")),
    ("entries[0].fields", set_entry(0, fields={f"f{i}": "v" for i in range(33)})),
    ("entries[0].fields['']", set_entry(0, fields={"": "v"})),
    (f"entries[0].fields[{'k' * 129!r}]", set_entry(0, fields={"k" * 129: "v"})),
    ("entries[1].fields['attempt']", set_entry(1, fields={"attempt": "v" * 4097})),
    ("task_id", setter("task_id", "")),
    ("request_id", setter("request_id", "r" * 65)),
]


def test_append_logs_valid_passes() -> None:
    validation.check_append_logs(valid_logs(), LIMITS)


@pytest.mark.parametrize(("field", "mutate"), LOG_INVALID)
def test_append_logs_invalid_field(field: str, mutate: Mutator) -> None:
    check_invalid(valid_logs, mutate, lambda r: validation.check_append_logs(r, LIMITS), field)


def test_append_logs_counts_entries() -> None:
    empty = task_service_pb2.AppendLogsRequest(task_id="t")
    assert violations(lambda: validation.check_append_logs(empty, LIMITS)) == ["entries"]
    three = task_service_pb2.AppendLogsRequest(
        task_id="t", entries=[log_pb2.LogEntry(message="x")] * 3
    )
    validation.check_append_logs(three, Limits(max_log_entries=3))
    assert violations(lambda: validation.check_append_logs(three, Limits(max_log_entries=2))) == [
        "entries"
    ]


def test_append_logs_reports_every_bad_entry() -> None:
    request = valid_logs()
    request.entries[0].message = ""
    request.entries[1].step_key = "-x"
    request.entries[1].level = 7
    assert violations(lambda: validation.check_append_logs(request, LIMITS)) == [
        "entries[0].message",
        "entries[1].level",
        "entries[1].step_key",
    ]


# -- AddArtifacts -----------------------------------------------------------------------


def valid_artifacts() -> task_service_pb2.AddArtifactsRequest:
    return task_service_pb2.AddArtifactsRequest(
        task_id="t",
        artifacts=[
            task_pb2.Artifact(name="report", uri="s3://b/r.pdf", media_type="application/pdf"),
            task_pb2.Artifact(name="model", size_bytes=0),
        ],
    )


def set_artifact(index: int, **fields: Any) -> Mutator:
    return lambda request: [setattr(request.artifacts[index], k, v) for k, v in fields.items()]


ARTIFACT_INVALID = [
    ("artifacts[0].name", set_artifact(0, name="")),
    ("artifacts[0].name", set_artifact(0, name="n" * 257)),
    ("artifacts[1].name", set_artifact(1, name="report")),
    ("artifacts[0].uri", set_artifact(0, uri="u" * 2049)),
    ("artifacts[1].media_type", set_artifact(1, media_type="m" * 257)),
    ("artifacts[1].size_bytes", set_artifact(1, size_bytes=-1)),
    ("expected_revision", setter("expected_revision", -1)),
]


def test_add_artifacts_valid_passes() -> None:
    validation.check_add_artifacts(valid_artifacts(), LIMITS)


@pytest.mark.parametrize(("field", "mutate"), ARTIFACT_INVALID)
def test_add_artifacts_invalid_field(field: str, mutate: Mutator) -> None:
    check_invalid(
        valid_artifacts, mutate, lambda r: validation.check_add_artifacts(r, LIMITS), field
    )


def test_add_artifacts_counts() -> None:
    empty = task_service_pb2.AddArtifactsRequest(task_id="t")
    assert violations(lambda: validation.check_add_artifacts(empty, LIMITS)) == ["artifacts"]
    assert violations(
        lambda: validation.check_add_artifacts(valid_artifacts(), Limits(max_artifacts=1))
    ) == ["artifacts"]


# -- filters and ListLogs ---------------------------------------------------------------


def filter_violations(
    task_filter: task_service_pb2.TaskFilter, limits: Limits = LIMITS
) -> list[str]:
    v = validation.Violations()
    validation.check_filter(v, "filter", task_filter, limits)
    return [found.field for found in v.found]


def test_filter_valid() -> None:
    task_filter = task_service_pb2.TaskFilter(
        task_ids=["a", "b-2"],
        kinds=["ci.build", ""],
        labels={"env": "prod"},
        states=[task_pb2.TASK_STATE_RUNNING, task_pb2.TASK_STATE_CANCELLED],
        parent_id="p",
    )
    assert filter_violations(task_filter) == []
    assert filter_violations(task_service_pb2.TaskFilter()) == []


@pytest.mark.parametrize(
    ("task_filter", "expected"),
    [
        (task_service_pb2.TaskFilter(task_ids=["ok", "bad id"]), ["filter.task_ids[1]"]),
        (task_service_pb2.TaskFilter(task_ids=[""]), ["filter.task_ids[0]"]),
        (task_service_pb2.TaskFilter(kinds=["has space"]), ["filter.kinds[0]"]),
        (task_service_pb2.TaskFilter(labels={"Bad": "x"}), ["filter.labels['Bad']"]),
        (task_service_pb2.TaskFilter(labels=many_labels(33)), ["filter.labels"]),
        (
            task_service_pb2.TaskFilter(states=[task_pb2.TASK_STATE_UNSPECIFIED]),
            ["filter.states[0]"],
        ),
        (
            task_service_pb2.TaskFilter(states=[task_pb2.TASK_STATE_RUNNING, 17]),
            ["filter.states[1]"],
        ),
        (task_service_pb2.TaskFilter(parent_id="bad parent"), ["filter.parent_id"]),
    ],
    ids=[
        "task-id",
        "empty-task-id",
        "kind",
        "label-key",
        "too-many-labels",
        "unspecified-state",
        "unknown-state",
        "parent",
    ],
)
def test_filter_invalid(task_filter: task_service_pb2.TaskFilter, expected: list[str]) -> None:
    assert filter_violations(task_filter) == expected


def test_filter_value_counts() -> None:
    limits = Limits(max_filter_values=2)
    ids = task_service_pb2.TaskFilter(task_ids=["a", "b", "c"])
    kinds = task_service_pb2.TaskFilter(kinds=["a", "b", "c"])
    assert filter_violations(ids, limits) == ["filter.task_ids"]
    assert filter_violations(kinds, limits) == ["filter.kinds"]
    assert filter_violations(task_service_pb2.TaskFilter(task_ids=["a", "b"]), limits) == []


def test_filter_kinds_are_capped_at_max_filter_values() -> None:
    kinds = [f"kind{i}" for i in range(1001)]
    assert filter_violations(task_service_pb2.TaskFilter(kinds=kinds)) == ["filter.kinds"]
    assert filter_violations(task_service_pb2.TaskFilter(kinds=kinds[:1000])) == []


def test_violations_raise_as_one_invalid_argument() -> None:
    v = validation.Violations()
    v.raise_if_any()  # nothing found: no error
    validation.check_filter(v, "filter", task_service_pb2.TaskFilter(kinds=["?"]), LIMITS)
    v.add("page_size", "must not be negative")
    assert violations(v.raise_if_any) == ["filter.kinds[0]", "page_size"]


def logs_request(**fields: Any) -> task_service_pb2.ListLogsRequest:
    return task_service_pb2.ListLogsRequest(**{"task_id": "t", **fields})


@pytest.mark.parametrize(("page_size", "expected"), [(0, 100), (1, 1), (1000, 1000), (5000, 1000)])
def test_list_logs_page_size(page_size: int, expected: int) -> None:
    request = logs_request(
        page_size=page_size,
        min_level=log_pb2.LOG_LEVEL_ERROR,
        step_key="fetch",
        text="t" * 256,
        start_time=Timestamp(seconds=10),
        end_time=Timestamp(seconds=11),
    )
    assert validation.check_list_logs(request, LIMITS) == expected


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"task_id": ""}, ["task_id"]),
        ({"min_level": 9}, ["min_level"]),
        ({"step_key": "Fetch"}, ["step_key"]),
        ({"text": "t" * 257}, ["text"]),
        (
            {"start_time": Timestamp(seconds=10), "end_time": Timestamp(seconds=10)},
            ["end_time"],
        ),
        (
            {"start_time": Timestamp(seconds=10), "end_time": Timestamp(seconds=9)},
            ["end_time"],
        ),
        ({"page_size": -1}, ["page_size"]),
        ({"min_level": -1, "page_size": -5}, ["min_level", "page_size"]),
    ],
    ids=["task", "level", "step", "text", "same-time", "end-first", "page", "two"],
)
def test_list_logs_invalid(fields: dict[str, Any], expected: list[str]) -> None:
    request = logs_request(**fields)
    assert violations(lambda: validation.check_list_logs(request, LIMITS)) == expected


# -- times: every Timestamp and Duration of every request ------------------------------

RANGE_START = -9_214_560_000  # 1678-01-01T00:00:00Z
RANGE_END = 9_214_646_400  # 2262-01-01T00:00:00Z, excluded

BAD_TIMESTAMPS = [
    Timestamp(seconds=253_402_300_799),  # 9999-12-31
    Timestamp(seconds=-62_135_596_800),  # 0001-01-01
    Timestamp(seconds=RANGE_END),
    Timestamp(seconds=RANGE_START - 1),
    Timestamp(seconds=10, nanos=-1),
    Timestamp(seconds=10, nanos=1_000_000_000),
    Timestamp(seconds=2**62),
]
GOOD_TIMESTAMPS = [
    Timestamp(),
    Timestamp(seconds=RANGE_START),
    Timestamp(seconds=RANGE_END - 1, nanos=999_999_999),
    Timestamp(seconds=1_700_000_000, nanos=5),
]
BAD_DURATIONS = [
    Duration(seconds=-1),
    Duration(nanos=-5),
    Duration(seconds=1, nanos=-1),
    Duration(seconds=-1, nanos=1),
    Duration(nanos=1_000_000_000),
    Duration(seconds=315_576_000, nanos=1),
    Duration(seconds=315_576_000_001),
    Duration(seconds=10**12),
    Duration(seconds=-(2**62)),
]
GOOD_DURATIONS = [Duration(), Duration(nanos=1), Duration(seconds=315_576_000), Duration(seconds=5)]


def time_violations(request: Any) -> list[str]:
    return violations(lambda: validation.check_times(request))


@pytest.mark.parametrize("value", BAD_TIMESTAMPS)
def test_timestamps_out_of_range_are_named(value: Timestamp) -> None:
    requests_and_fields: list[tuple[Any, str]] = [
        (task_service_pb2.ListLogsRequest(start_time=value), "start_time"),
        (task_service_pb2.ListLogsRequest(end_time=value), "end_time"),
        (
            task_service_pb2.AppendLogsRequest(
                entries=[log_pb2.LogEntry(), log_pb2.LogEntry(time=value)]
            ),
            "entries[1].time",
        ),
        (
            task_service_pb2.AddArtifactsRequest(artifacts=[task_pb2.Artifact(create_time=value)]),
            "artifacts[0].create_time",
        ),
    ]
    for request, field in requests_and_fields:
        assert time_violations(request) == [field]


@pytest.mark.parametrize("value", BAD_DURATIONS)
def test_durations_out_of_range_are_named(value: Duration) -> None:
    spec = task_service_pb2.StepSpec(key="a", expected_duration=value)
    requests_and_fields: list[tuple[Any, str]] = [
        (task_service_pb2.CreateTaskRequest(lease_duration=value), "lease_duration"),
        (
            task_service_pb2.CreateTaskRequest(steps=[task_service_pb2.StepSpec(), spec]),
            "steps[1].expected_duration",
        ),
        (task_service_pb2.AddStepsRequest(steps=[spec]), "steps[0].expected_duration"),
        (task_service_pb2.CancelTaskRequest(deadline=value), "deadline"),
        (task_service_pb2.SubscribeRequest(heartbeat_interval=value), "heartbeat_interval"),
    ]
    for request, field in requests_and_fields:
        assert time_violations(request) == [field]


def test_times_in_range_pass() -> None:
    for when in GOOD_TIMESTAMPS:
        validation.check_times(task_service_pb2.ListLogsRequest(start_time=when, end_time=when))
        validation.check_times(
            task_service_pb2.AppendLogsRequest(entries=[log_pb2.LogEntry(time=when)])
        )
    for span in GOOD_DURATIONS:
        validation.check_times(
            task_service_pb2.CreateTaskRequest(
                lease_duration=span, steps=[task_service_pb2.StepSpec(expected_duration=span)]
            )
        )
        validation.check_times(task_service_pb2.CancelTaskRequest(deadline=span))
        validation.check_times(task_service_pb2.SubscribeRequest(heartbeat_interval=span))


def test_every_bad_time_is_named_at_once() -> None:
    request = task_service_pb2.CreateTaskRequest(
        lease_duration=Duration(seconds=-1),
        steps=[
            task_service_pb2.StepSpec(key="a", expected_duration=Duration(nanos=-1)),
            task_service_pb2.StepSpec(key="b"),
            task_service_pb2.StepSpec(key="c", expected_duration=Duration(seconds=10**12)),
        ],
    )
    assert time_violations(request) == [
        "steps[0].expected_duration",
        "steps[2].expected_duration",
        "lease_duration",
    ]


def test_every_request_type_is_walked() -> None:
    """Each request of the service passes check_times when it holds no times."""
    service = task_service_pb2.DESCRIPTOR.services_by_name["TaskService"]
    for method in service.methods:
        request_type = getattr(task_service_pb2, method.input_type.name)
        validation.check_times(request_type())
