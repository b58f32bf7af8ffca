"""Every documented error: its status code, its ErrorInfo reason, and that it changed nothing.

A rejected mutation "changes nothing and emits nothing": every test compares the
tasks it touched (GetTask), the whole listing, their logs and the store revision
(ListTasksResponse.revision) before and after the failed call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from headway.client import (
    AbortedError,
    AlreadyExistsError,
    FailedPreconditionError,
    HeadwayClient,
    HeadwayError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    task_filter,
)
from headway.client.errors import from_rpc_error
from headway.server.config import Limits, Settings
from headway.v1 import log_pb2, task_pb2, task_service_pb2
from tests.harness import ServerHarness

Call = Callable[[], Awaitable[object]]
Mutation = Callable[[HeadwayClient, str, int], Awaitable[object]]


def fraction(value: float) -> task_pb2.Progress:
    return task_pb2.Progress(fraction=value)


async def observe(client: HeadwayClient, task_ids: tuple[str, ...]) -> tuple[Any, ...]:
    """Everything a failed call must leave as it was."""
    listing = await client.list_tasks(page_size=1000)
    tasks = [await client.get_task(task_id) for task_id in task_ids]
    logs = [list((await client.list_logs(t, page_size=1000)).entries) for t in task_ids]
    return listing.revision, list(listing.tasks), tasks, logs


async def rejected(
    client: HeadwayClient,
    call: Call,
    error_type: type[HeadwayError],
    reason: str,
    *task_ids: str,
) -> HeadwayError:
    """Run `call`, expect exactly `error_type` with `reason`, and check that nothing changed."""
    before = await observe(client, task_ids)
    with pytest.raises(error_type) as info:
        await call()
    error = info.value
    assert type(error) is error_type
    assert error.code == error_type.code
    assert error.reason == reason, str(error)
    assert await observe(client, task_ids) == before
    return error


# The mutations of an existing task, each given a task id and an expected revision
# (0: unconditional). AppendLogs has no expected revision.
MUTATIONS: dict[str, Mutation] = {
    "StartTask": lambda c, t, r: c.start_task(t, expected_revision=r),
    "AddSteps": lambda c, t, r: c.add_steps(t, ["extra"], expected_revision=r),
    "UpdateStep": lambda c, t, r: c.update_step(
        t, "a", progress=fraction(0.9), expected_revision=r
    ),
    "UpdateTask": lambda c, t, r: c.update_task(t, message="x", expected_revision=r),
    "AppendLogs": lambda c, t, r: c.append_logs(t, ["x"]),
    "AddArtifacts": lambda c, t, r: c.add_artifacts(
        t, [task_pb2.Artifact(name="new", uri="s3://n")], expected_revision=r
    ),
    "SucceedTask": lambda c, t, r: c.succeed_task(t, expected_revision=r),
    "FailTask": lambda c, t, r: c.fail_task(t, message="boom", expected_revision=r),
    "CancelTask": lambda c, t, r: c.cancel_task(t, reason="stop", expected_revision=r),
    "CancelTask(force)": lambda c, t, r: c.cancel_task(t, force=True, expected_revision=r),
    "ConfirmCancel": lambda c, t, r: c.confirm_cancel(t, expected_revision=r),
}
CONDITIONAL = [name for name in MUTATIONS if name != "AppendLogs"]


# -- NOT_FOUND ------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*MUTATIONS, "DeleteTask", "GetTask", "ListLogs"], ids=lambda n: n)
async def test_task_not_found(client: HeadwayClient, name: str) -> None:
    await client.create_task("other", steps=["a"])
    calls: dict[str, Call] = {
        "DeleteTask": lambda: client.delete_task("missing"),
        "GetTask": lambda: client.get_task("missing"),
        "ListLogs": lambda: client.list_logs("missing"),
    }
    call = calls.get(name) or (lambda: MUTATIONS[name](client, "missing", 0))
    error = await rejected(client, call, NotFoundError, "TASK_NOT_FOUND", "other")
    assert error.metadata["task_id"] == "missing"


async def test_update_step_of_unknown_step(client: HeadwayClient) -> None:
    await client.create_task("t", steps=["a"])
    error = await rejected(
        client,
        lambda: client.update_step("t", "nope", progress=fraction(0.5)),
        NotFoundError,
        "STEP_NOT_FOUND",
        "t",
    )
    assert error.metadata == {"task_id": "t", "step_key": "nope"}


async def test_append_logs_about_unknown_step_appends_none(client: HeadwayClient) -> None:
    await client.create_task("t", steps=["a"])
    entries = [
        log_pb2.LogEntry(message="fine", step_key="a"),
        log_pb2.LogEntry(message="about nothing", step_key="nope"),
    ]
    await rejected(
        client, lambda: client.append_logs("t", entries), NotFoundError, "STEP_NOT_FOUND", "t"
    )


async def test_create_with_missing_parent(client: HeadwayClient) -> None:
    await client.create_task("t")
    error = await rejected(
        client,
        lambda: client.create_task("child", parent_id="ghost"),
        NotFoundError,
        "PARENT_NOT_FOUND",
        "t",
    )
    assert error.metadata["parent_id"] == "ghost"
    with pytest.raises(NotFoundError):
        await client.get_task("child")


async def test_create_with_deleted_parent(client: HeadwayClient) -> None:
    await client.create_task("parent")
    await client.succeed_task("parent")
    await client.delete_task("parent")
    await rejected(
        client,
        lambda: client.create_task("child", parent_id="parent"),
        NotFoundError,
        "PARENT_NOT_FOUND",
    )


# -- ALREADY_EXISTS -------------------------------------------------------------------


async def test_create_existing_task(client: HeadwayClient) -> None:
    await client.create_task("t", display_name="first", steps=["a"])
    error = await rejected(
        client,
        lambda: client.create_task("t", display_name="second"),
        AlreadyExistsError,
        "TASK_ALREADY_EXISTS",
        "t",
    )
    assert error.metadata["task_id"] == "t"


async def test_add_existing_step_adds_none(client: HeadwayClient) -> None:
    await client.create_task("t", steps=["a"])
    error = await rejected(
        client,
        lambda: client.add_steps("t", ["new", "a"]),
        AlreadyExistsError,
        "STEP_ALREADY_EXISTS",
        "t",
    )
    assert error.metadata == {"task_id": "t", "step_key": "a"}


async def test_add_existing_artifact_adds_none(client: HeadwayClient) -> None:
    await client.create_task("t")
    await client.add_artifacts("t", [task_pb2.Artifact(name="report", uri="s3://r")])
    error = await rejected(
        client,
        lambda: client.add_artifacts(
            "t",
            [task_pb2.Artifact(name="model", uri="s3://m"), task_pb2.Artifact(name="report")],
        ),
        AlreadyExistsError,
        "ARTIFACT_ALREADY_EXISTS",
        "t",
    )
    assert error.metadata == {"task_id": "t", "name": "report"}


# -- FAILED_PRECONDITION --------------------------------------------------------------


async def bring_to_rest(client: HeadwayClient, state: int) -> None:
    if state == task_pb2.TASK_STATE_SUCCEEDED:
        await client.succeed_task("t")
    elif state == task_pb2.TASK_STATE_FAILED:
        await client.fail_task("t", message="broke")
    else:
        await client.cancel_task("t", force=True)


@pytest.mark.parametrize("name", MUTATIONS, ids=lambda n: n)
@pytest.mark.parametrize(
    "state",
    [task_pb2.TASK_STATE_SUCCEEDED, task_pb2.TASK_STATE_FAILED, task_pb2.TASK_STATE_CANCELLED],
    ids=["succeeded", "failed", "cancelled"],
)
async def test_mutation_of_task_at_rest(client: HeadwayClient, name: str, state: int) -> None:
    await client.create_task("t", steps=["a"], start=True)
    await client.update_step("t", "a", progress=fraction(0.5))
    await bring_to_rest(client, state)
    assert (await client.get_task("t")).state == state

    error = await rejected(
        client,
        lambda: MUTATIONS[name](client, "t", 0),
        FailedPreconditionError,
        "TASK_AT_REST",
        "t",
    )
    assert error.metadata == {"task_id": "t", "state": task_pb2.TaskState.Name(state)[11:]}


async def test_start_running_task(client: HeadwayClient) -> None:
    await client.create_task("t", start=True)
    error = await rejected(
        client,
        lambda: client.start_task("t"),
        FailedPreconditionError,
        "INVALID_TRANSITION",
        "t",
    )
    assert error.metadata["state"] == "RUNNING"


async def test_running_step_cannot_be_skipped(client: HeadwayClient) -> None:
    await client.create_task("t", steps=["a"])
    await client.update_step("t", "a", progress=fraction(0.2))
    error = await rejected(
        client,
        lambda: client.update_step("t", "a", state=task_pb2.STEP_STATE_SKIPPED),
        FailedPreconditionError,
        "INVALID_STEP_TRANSITION",
        "t",
    )
    assert (error.metadata["from"], error.metadata["to"]) == ("RUNNING", "SKIPPED")


async def test_pending_step_cannot_restart(client: HeadwayClient) -> None:
    await client.create_task("t", steps=["a"])
    await rejected(
        client,
        lambda: client.update_step("t", "a", restart=True),
        FailedPreconditionError,
        "INVALID_STEP_TRANSITION",
        "t",
    )


@pytest.mark.parametrize(
    ("final", "change"),
    [
        (task_pb2.STEP_STATE_SUCCEEDED, {"progress": task_pb2.Progress(fraction=0.5)}),
        (task_pb2.STEP_STATE_SUCCEEDED, {"message": "more"}),
        (task_pb2.STEP_STATE_SKIPPED, {"message": "more"}),
        (task_pb2.STEP_STATE_FAILED, {"message": "more"}),
        (task_pb2.STEP_STATE_FAILED, {"progress": task_pb2.Progress(fraction=0.5)}),
    ],
    ids=[
        "succeeded-progress",
        "succeeded-message",
        "skipped-message",
        "failed-message",
        "failed-progress",
    ],
)
async def test_finished_step_cannot_change(
    client: HeadwayClient, final: int, change: dict[str, Any]
) -> None:
    await client.create_task("t", steps=["a", "b"])
    await client.update_step("t", "a", state=final)  # type: ignore[arg-type]
    error = await rejected(
        client,
        lambda: client.update_step("t", "a", **change),
        FailedPreconditionError,
        "STEP_FINISHED",
        "t",
    )
    assert error.metadata["step_key"] == "a"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (fraction(0.5), fraction(0.3)),
        (
            task_pb2.Progress(units=task_pb2.Progress.Units(current=3, total=4)),
            task_pb2.Progress(units=task_pb2.Progress.Units(current=1, total=4)),
        ),
        (fraction(0.5), task_pb2.Progress(units=task_pb2.Progress.Units(current=1, total=4))),
    ],
    ids=["fraction", "units", "mixed"],
)
async def test_progress_may_not_regress(
    client: HeadwayClient, first: task_pb2.Progress, second: task_pb2.Progress
) -> None:
    await client.create_task("t", steps=["a"])
    await client.update_step("t", "a", progress=first)
    await rejected(
        client,
        lambda: client.update_step("t", "a", progress=second),
        FailedPreconditionError,
        "PROGRESS_REGRESSED",
        "t",
    )


@pytest.mark.parametrize("start", [False, True], ids=["pending", "running"])
async def test_delete_task_not_at_rest(client: HeadwayClient, start: bool) -> None:
    await client.create_task("t", start=start)
    error = await rejected(
        client,
        lambda: client.delete_task("t"),
        FailedPreconditionError,
        "TASK_NOT_AT_REST",
        "t",
    )
    assert error.metadata["state"] == ("RUNNING" if start else "PENDING")


# -- ABORTED --------------------------------------------------------------------------


@pytest.mark.parametrize("name", CONDITIONAL, ids=lambda n: n)
async def test_revision_mismatch(client: HeadwayClient, name: str) -> None:
    await client.create_task("t", steps=["a"])
    current = await client.update_task("t", message="moved on")
    assert current.revision == 2
    error = await rejected(
        client, lambda: MUTATIONS[name](client, "t", 1), AbortedError, "REVISION_MISMATCH", "t"
    )
    assert error.metadata == {"task_id": "t", "revision": "2"}


async def test_delete_with_revision_mismatch(client: HeadwayClient) -> None:
    await client.create_task("t")
    done = await client.succeed_task("t")
    error = await rejected(
        client,
        lambda: client.delete_task("t", expected_revision=done.revision - 1),
        AbortedError,
        "REVISION_MISMATCH",
        "t",
    )
    assert error.metadata["revision"] == str(done.revision)


# -- an iteration above the task's max_iterations -------------------------------------


async def test_iteration_above_max_iterations(client: HeadwayClient) -> None:
    """INVALID_ARGUMENT on `iteration`, the same as when the limit comes in the request."""
    await client.create_task("t", max_iterations=5)
    await client.update_task("t", iteration=5)
    error = await rejected(
        client,
        lambda: client.update_task("t", iteration=6, message="too far"),
        InvalidArgumentError,
        "FIELD_VIOLATION",
        "t",
    )
    assert set(error.field_violations) == {"iteration"}
    assert error.metadata["max_iterations"] == "5"


# -- RESOURCE_EXHAUSTED ---------------------------------------------------------------


@pytest.fixture
async def limited(make_settings: Callable[..., Settings]) -> AsyncIterator[HeadwayClient]:
    harness = ServerHarness(
        make_settings(limits=Limits(max_steps=3, max_metrics=2, max_artifacts=2))
    )
    await harness.start()
    try:
        yield harness.client()
    finally:
        await harness.close()


async def test_too_many_steps(limited: HeadwayClient) -> None:
    client = limited
    await client.create_task("t", steps=["a", "b"])
    error = await rejected(
        client,
        lambda: client.add_steps("t", ["c", "d"]),
        ResourceExhaustedError,
        "TOO_MANY_STEPS",
        "t",
    )
    assert error.metadata == {"task_id": "t", "limit": "3"}
    # Up to the limit is fine; one beyond it is not.
    assert len((await client.add_steps("t", ["c"])).steps) == 3
    await rejected(
        client, lambda: client.add_steps("t", ["d"]), ResourceExhaustedError, "TOO_MANY_STEPS", "t"
    )


async def test_too_many_metrics(limited: HeadwayClient) -> None:
    client = limited
    await client.create_task("t", metrics={"a": 1.0})
    await client.update_task("t", metrics={"a": 2.0, "b": 1.0})
    error = await rejected(
        client,
        lambda: client.update_task("t", metrics={"a": 3.0, "c": 1.0}),
        ResourceExhaustedError,
        "TOO_MANY_METRICS",
        "t",
    )
    assert error.metadata["limit"] == "2"


async def test_too_many_artifacts(limited: HeadwayClient) -> None:
    client = limited
    await client.create_task("t")
    await client.add_artifacts("t", [task_pb2.Artifact(name="one")])
    error = await rejected(
        client,
        lambda: client.add_artifacts(
            "t", [task_pb2.Artifact(name="two"), task_pb2.Artifact(name="three")]
        ),
        ResourceExhaustedError,
        "TOO_MANY_ARTIFACTS",
        "t",
    )
    assert error.metadata["limit"] == "2"


async def test_too_many_steps_in_one_request_is_a_field_violation(
    limited: HeadwayClient,
) -> None:
    client = limited
    await client.create_task("t")
    error = await rejected(
        client,
        lambda: client.create_task("big", steps=["a", "b", "c", "d"]),
        InvalidArgumentError,
        "FIELD_VIOLATION",
        "t",
    )
    assert set(error.field_violations) == {"steps"}


# -- INVALID_ARGUMENT -----------------------------------------------------------------


def _time(seconds: int) -> Timestamp:
    return Timestamp(seconds=seconds)


# (what is wrong, the call, the field path the violation names)
VIOLATIONS: list[tuple[str, Callable[[HeadwayClient], Awaitable[object]], str]] = [
    ("create bad id", lambda c: c.create_task("-bad"), "task_id"),
    ("create id too long", lambda c: c.create_task("x" * 129), "task_id"),
    ("create bad kind", lambda c: c.create_task("n", kind="bad kind"), "kind"),
    ("create bad label key", lambda c: c.create_task("n", labels={"Team": "x"}), "labels['Team']"),
    (
        "create long label value",
        lambda c: c.create_task("n", labels={"k": "v" * 257}),
        "labels['k']",
    ),
    ("create duplicate step", lambda c: c.create_task("n", steps=["a", "a"]), "steps[1].key"),
    ("create bad step key", lambda c: c.create_task("n", steps=["ok", "Bad"]), "steps[1].key"),
    (
        "create negative weight",
        lambda c: c.create_task("n", steps=[task_service_pb2.StepSpec(key="a", weight=-1)]),
        "steps[0].weight",
    ),
    (
        "create negative max_iterations",
        lambda c: c.create_task("n", max_iterations=-1),
        "max_iterations",
    ),
    (
        "create nan metric",
        lambda c: c.create_task("n", metrics={"cost": float("nan")}),
        "metrics['cost']",
    ),
    ("create own parent", lambda c: c.create_task("n", parent_id="n"), "parent_id"),
    (
        "create long display name",
        lambda c: c.create_task("n", display_name="d" * 257),
        "display_name",
    ),
    ("create long request_id", lambda c: c.create_task("n", request_id="r" * 65), "request_id"),
    ("start empty id", lambda c: c.start_task(""), "task_id"),
    (
        "start negative expected_revision",
        lambda c: c.start_task("t", expected_revision=-1),
        "expected_revision",
    ),
    ("add no steps", lambda c: c.add_steps("t", []), "steps"),
    ("add bad step key", lambda c: c.add_steps("t", ["UPPER"]), "steps[0].key"),
    (
        "step fraction above one",
        lambda c: c.update_step("t", "a", progress=fraction(1.5)),
        "progress.fraction",
    ),
    (
        "step units above total",
        lambda c: c.update_step(
            "t", "a", progress=task_pb2.Progress(units=task_pb2.Progress.Units(current=5, total=4))
        ),
        "progress.units.current",
    ),
    (
        "step units zero total",
        lambda c: c.update_step(
            "t", "a", progress=task_pb2.Progress(units=task_pb2.Progress.Units(current=0, total=0))
        ),
        "progress.units.total",
    ),
    (
        "step empty progress",
        lambda c: c.update_step("t", "a", progress=task_pb2.Progress()),
        "progress",
    ),
    (
        "step set CANCELLED",
        lambda c: c.update_step("t", "a", state=task_pb2.STEP_STATE_CANCELLED),
        "state",
    ),
    (
        "step back to PENDING",
        lambda c: c.update_step("t", "a", state=task_pb2.STEP_STATE_PENDING),
        "state",
    ),
    ("step nothing to change", lambda c: c.update_step("t", "a"), "state"),
    (
        "step error without FAILED",
        lambda c: c.update_step("t", "a", message="m", error=task_pb2.TaskError(message="e")),
        "error",
    ),
    (
        "step restart to SUCCEEDED",
        lambda c: c.update_step("t", "a", restart=True, state=task_pb2.STEP_STATE_SUCCEEDED),
        "restart",
    ),
    ("step bad key", lambda c: c.update_step("t", "A", message="m"), "step_key"),
    ("task nothing to change", lambda c: c.update_task("t"), "progress"),
    ("task negative iteration", lambda c: c.update_task("t", iteration=-1), "iteration"),
    (
        "task iteration above max",
        lambda c: c.update_task("t", iteration=4, max_iterations=3),
        "iteration",
    ),
    (
        "task infinite metric",
        lambda c: c.update_task("t", metrics={"x": float("inf")}),
        "metrics['x']",
    ),
    ("task long message", lambda c: c.update_task("t", message="m" * 1025), "message"),
    ("logs none", lambda c: c.append_logs("t", []), "entries"),
    ("logs empty message", lambda c: c.append_logs("t", ["ok", ""]), "entries[1].message"),
    (
        "logs bad level",
        lambda c: c.append_logs("t", [log_pb2.LogEntry(message="m", level=42)]),  # type: ignore[arg-type]
        "entries[0].level",
    ),
    ("artifacts none", lambda c: c.add_artifacts("t", []), "artifacts"),
    (
        "artifacts duplicate name",
        lambda c: c.add_artifacts("t", [task_pb2.Artifact(name="x"), task_pb2.Artifact(name="x")]),
        "artifacts[1].name",
    ),
    (
        "artifact negative size",
        lambda c: c.add_artifacts("t", [task_pb2.Artifact(name="x", size_bytes=-1)]),
        "artifacts[0].size_bytes",
    ),
    ("succeed long message", lambda c: c.succeed_task("t", message="m" * 1025), "message"),
    ("fail without message", lambda c: c.fail_task("t", message="", code="X"), "error.message"),
    ("fail long code", lambda c: c.fail_task("t", message="m", code="C" * 129), "error.code"),
    ("cancel long reason", lambda c: c.cancel_task("t", reason="r" * 1025), "reason"),
    (
        "cancel long requested_by",
        lambda c: c.cancel_task("t", requested_by="b" * 257),
        "requested_by",
    ),
    ("confirm long reason", lambda c: c.confirm_cancel("t", reason="r" * 1025), "reason"),
    ("delete bad id", lambda c: c.delete_task("bad id"), "task_id"),
    ("get empty id", lambda c: c.get_task(""), "task_id"),
    ("get bad id", lambda c: c.get_task("bad/id"), "task_id"),
    (
        "list unspecified state",
        lambda c: c.list_tasks(task_filter(states=[task_pb2.TASK_STATE_UNSPECIFIED])),
        "filter.states[0]",
    ),
    (
        "list bad task id",
        lambda c: c.list_tasks(task_filter(task_ids=["ok", "no good"])),
        "filter.task_ids[1]",
    ),
    ("list bad kind", lambda c: c.list_tasks(task_filter(kinds=["a b"])), "filter.kinds[0]"),
    (
        "list too many kinds",
        lambda c: c.list_tasks(task_filter(kinds=[f"k{i}" for i in range(1001)])),
        "filter.kinds",
    ),
    (
        "list too many ids",
        lambda c: c.list_tasks(task_filter(task_ids=[f"t{i}" for i in range(1001)])),
        "filter.task_ids",
    ),
    (
        "create too many labels",
        lambda c: c.create_task("n", labels={f"k{i}": "v" for i in range(33)}),
        "labels",
    ),
    (
        "create too many metrics",
        lambda c: c.create_task("n", metrics={f"m{i}": 1.0 for i in range(65)}),
        "metrics",
    ),
    (
        "create negative expected duration",
        lambda c: c.create_task(
            "n",
            steps=[task_service_pb2.StepSpec(key="a", expected_duration=Duration(seconds=-1))],
        ),
        "steps[0].expected_duration",
    ),
    ("create long kind", lambda c: c.create_task("n", kind="k" * 129), "kind"),
    ("logs too many", lambda c: c.append_logs("t", ["x"] * 1001), "entries"),
    ("logs long message", lambda c: c.append_logs("t", ["x" * 8193]), "entries[0].message"),
    (
        "logs bad step key",
        lambda c: c.append_logs("t", [log_pb2.LogEntry(message="m", step_key="Bad")]),
        "entries[0].step_key",
    ),
    (
        "artifact without name",
        lambda c: c.add_artifacts("t", [task_pb2.Artifact(uri="s3://x")]),
        "artifacts[0].name",
    ),
    (
        "artifact long uri",
        lambda c: c.add_artifacts("t", [task_pb2.Artifact(name="x", uri="u" * 2049)]),
        "artifacts[0].uri",
    ),
    (
        "list bad label",
        lambda c: c.list_tasks(task_filter(labels={"Bad": "x"})),
        "filter.labels['Bad']",
    ),
    ("list bad parent", lambda c: c.list_tasks(task_filter(parent_id="-p")), "filter.parent_id"),
    ("list negative page size", lambda c: c.list_tasks(page_size=-1), "page_size"),
    ("logs negative page size", lambda c: c.list_logs("t", page_size=-1), "page_size"),
    ("logs bad min_level", lambda c: c.list_logs("t", min_level=9), "min_level"),  # type: ignore[arg-type]
    ("logs long text", lambda c: c.list_logs("t", text="x" * 257), "text"),
    ("logs bad step key", lambda c: c.list_logs("t", step_key="Nope"), "step_key"),
    (
        "logs end before start",
        lambda c: c.list_logs("t", start_time=_time(200), end_time=_time(100)),
        "end_time",
    ),
]


@pytest.mark.parametrize(
    ("what", "call", "field"), VIOLATIONS, ids=[what for what, _, _ in VIOLATIONS]
)
async def test_field_violation(
    client: HeadwayClient,
    what: str,
    call: Callable[[HeadwayClient], Awaitable[object]],
    field: str,
) -> None:
    del what
    await client.create_task("t", steps=["a"], start=True)
    await client.append_logs("t", ["a line"])
    error = await rejected(
        client, lambda: call(client), InvalidArgumentError, "FIELD_VIOLATION", "t"
    )
    assert field in error.field_violations, error.field_violations
    assert error.field_violations[field]


async def test_every_violation_is_reported_at_once(client: HeadwayClient) -> None:
    error = await rejected(
        client,
        lambda: client.create_task(
            "-bad",
            labels={"Team": "x"},
            steps=["a", "a"],
            max_iterations=-2,
            metrics={"m": float("nan")},
        ),
        InvalidArgumentError,
        "FIELD_VIOLATION",
    )
    assert set(error.field_violations) == {
        "task_id",
        "labels['Team']",
        "steps[1].key",
        "max_iterations",
        "metrics['m']",
    }


async def test_request_id_reused_for_another_request(client: HeadwayClient) -> None:
    await client.create_task("t", request_id="req-1")
    error = await rejected(
        client,
        lambda: client.create_task("u", request_id="req-1"),
        InvalidArgumentError,
        "REQUEST_ID_REUSED",
        "t",
    )
    assert set(error.field_violations) == {"request_id"}
    assert error.metadata["request_id"] == "req-1"
    with pytest.raises(NotFoundError):
        await client.get_task("u")


async def test_request_id_reused_for_another_method(client: HeadwayClient) -> None:
    await client.create_task("t", request_id="req-1")
    await rejected(
        client,
        lambda: client.start_task("t", request_id="req-1"),
        InvalidArgumentError,
        "REQUEST_ID_REUSED",
        "t",
    )
    assert (await client.get_task("t")).state == task_pb2.TASK_STATE_PENDING


async def test_request_id_reused_with_another_expected_revision(client: HeadwayClient) -> None:
    await client.create_task("t")
    await client.update_task("t", message="x", request_id="req-2")
    await rejected(
        client,
        lambda: client.update_task("t", message="x", expected_revision=2, request_id="req-2"),
        InvalidArgumentError,
        "REQUEST_ID_REUSED",
        "t",
    )


# -- page tokens ----------------------------------------------------------------------


async def test_list_tasks_garbage_page_token(client: HeadwayClient) -> None:
    await client.create_task("t")
    for token in ("not-a-token", "eyJwIjpbMV19", "e30"):
        error = await rejected(
            client,
            lambda token=token: client.list_tasks(page_token=token),  # type: ignore[misc]
            InvalidArgumentError,
            "INVALID_PAGE_TOKEN",
            "t",
        )
        assert set(error.field_violations) == {"page_token"}


async def test_list_tasks_page_token_of_another_filter(client: HeadwayClient) -> None:
    for i in range(3):
        await client.create_task(f"t{i}", kind="build")
    page = await client.list_tasks(task_filter(kinds=["build"]), page_size=1)
    assert page.next_page_token
    await rejected(
        client,
        lambda: client.list_tasks(
            task_filter(kinds=["deploy"]), page_size=1, page_token=page.next_page_token
        ),
        InvalidArgumentError,
        "INVALID_PAGE_TOKEN",
    )
    await rejected(
        client,
        lambda: client.list_tasks(page_size=1, page_token=page.next_page_token),
        InvalidArgumentError,
        "INVALID_PAGE_TOKEN",
    )
    # The same filter with another page size is the same query: the token is accepted.
    rest = await client.list_tasks(
        task_filter(kinds=["build"]), page_size=5, page_token=page.next_page_token
    )
    assert [t.id for t in rest.tasks] == ["t1", "t2"]


async def test_list_logs_page_token_of_another_query(client: HeadwayClient) -> None:
    await client.create_task("t")
    await client.create_task("u")
    await client.append_logs("t", ["one", "two", "three"])
    await client.append_logs("u", ["one", "two", "three"])
    page = await client.list_logs("t", page_size=1)
    assert page.next_page_token
    for other in (
        lambda: client.list_logs("t", page_size=1, page_token=page.next_page_token, text="o"),
        lambda: client.list_logs(
            "t", page_size=1, page_token=page.next_page_token, min_level=log_pb2.LOG_LEVEL_INFO
        ),
        lambda: client.list_logs("u", page_size=1, page_token=page.next_page_token),
        lambda: client.list_tasks(page_token=page.next_page_token),
        lambda: client.list_logs("t", page_token="garbage"),
    ):
        await rejected(client, other, InvalidArgumentError, "INVALID_PAGE_TOKEN", "t", "u")


# -- malformed requests ---------------------------------------------------------------


def raw(client: HeadwayClient, method: str) -> grpc.aio.UnaryUnaryMultiCallable[Any, Any]:
    return client.channel.unary_unary(
        f"/headway.v1.TaskService/{method}",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )


INVALID_UTF8_ID = b"\x0a\x03\xff\xfe\x41"  # field 1 (task_id), 3 bytes that are not UTF-8


@pytest.mark.parametrize(
    ("method", "data"),
    [
        ("GetTask", INVALID_UTF8_ID),
        ("CreateTask", INVALID_UTF8_ID),
        ("StartTask", INVALID_UTF8_ID),
        ("GetTask", b"\x0a\x10short"),  # a length beyond the end of the message
        ("CreateTask", b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"),  # a broken varint tag
    ],
    ids=["get-utf8", "create-utf8", "start-utf8", "get-truncated", "create-bad-tag"],
)
async def test_malformed_request_is_invalid_argument(
    client: HeadwayClient, method: str, data: bytes
) -> None:
    await client.create_task("t")
    before = await observe(client, ("t",))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await raw(client, method)(data)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed" in (info.value.details() or "")
    error = from_rpc_error(info.value)
    assert error.reason == "MALFORMED_REQUEST"
    assert error.metadata == {"message_type": f"headway.v1.{method}Request"}
    assert await observe(client, ("t",)) == before
    # The server is unharmed and still answers well-formed calls.
    assert (await client.get_task("t")).id == "t"


async def test_well_formed_raw_request_is_served(client: HeadwayClient) -> None:
    """The raw path itself works, so the test above fails for the bytes, not the plumbing."""
    created = await client.create_task("t")
    data = await raw(client, "GetTask")(
        task_service_pb2.GetTaskRequest(task_id="t").SerializeToString()
    )
    assert task_service_pb2.GetTaskResponse.FromString(data).task == created
