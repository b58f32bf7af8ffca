"""Every mutation on its happy path: the exact state it leaves and the revision it takes.

Each test starts on a fresh database, so the first accepted change is revision 1
and every accepted change after it takes the next one, across all tasks.
"""

from __future__ import annotations

import uuid

import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from headway.client import HeadwayClient, NotFoundError
from headway.v1 import log_pb2, task_pb2, task_service_pb2


async def store_revision(client: HeadwayClient) -> int:
    return (await client.list_tasks(page_size=1)).revision


def fraction(value: float) -> task_pb2.Progress:
    return task_pb2.Progress(fraction=value)


# -- CreateTask -----------------------------------------------------------------------


async def test_create_task_records_every_field(client: HeadwayClient) -> None:
    created = await client.create_task(
        "build-1",
        display_name="Build #1",
        kind="ci.build",
        labels={"team": "core", "env": "prod"},
        steps=[
            task_service_pb2.StepSpec(
                key="fetch", display_name="Fetch", weight=2, expected_duration=Duration(seconds=30)
            ),
            "compile",
        ],
        message="queued",
        max_iterations=3,
        metrics={"cost": 1.5},
    )

    assert created.id == "build-1"
    assert created.tenant == "default"
    assert created.display_name == "Build #1"
    assert created.kind == "ci.build"
    assert dict(created.labels) == {"team": "core", "env": "prod"}
    assert created.parent_id == ""
    assert created.state == task_pb2.TASK_STATE_PENDING
    assert created.message == "queued"
    assert created.iteration == 0
    assert created.max_iterations == 3
    assert dict(created.metrics) == {"cost": 1.5}
    assert created.fraction == 0.0
    assert not created.artifacts
    assert not created.HasField("error")
    assert not created.HasField("cancel_request")
    assert created.revision == created.create_revision == 1
    assert created.HasField("create_time")
    assert created.update_time == created.create_time
    assert not created.HasField("start_time")
    assert not created.HasField("finish_time")

    fetch, compile_ = created.steps
    assert (fetch.key, fetch.index, fetch.display_name, fetch.weight) == ("fetch", 0, "Fetch", 2.0)
    assert fetch.expected_duration == Duration(seconds=30)
    assert (compile_.key, compile_.index, compile_.display_name, compile_.weight) == (
        "compile",
        1,
        "compile",
        1.0,
    )
    assert not compile_.HasField("expected_duration")
    for step in created.steps:
        assert step.state == task_pb2.STEP_STATE_PENDING
        assert step.fraction == 0.0
        assert step.restart_count == 0
        assert not step.HasField("start_time")
        assert not step.HasField("finish_time")

    assert await client.get_task("build-1") == created
    assert await store_revision(client) == 1


async def test_create_task_without_id_gets_a_server_made_uuid(client: HeadwayClient) -> None:
    first = await client.create_task(display_name="anonymous")
    second = await client.create_task(display_name="anonymous too")

    assert uuid.UUID(first.id).version == 4
    assert uuid.UUID(second.id).version == 4
    assert first.id != second.id
    assert (first.revision, second.revision) == (1, 2)
    assert await client.get_task(first.id) == first
    assert await client.get_task(second.id) == second


async def test_create_child_task_started(client: HeadwayClient) -> None:
    parent = await client.create_task("parent", steps=["plan"])
    child = await client.create_task("child", parent_id="parent", steps=["work"], start=True)

    assert child.parent_id == "parent"
    assert child.state == task_pb2.TASK_STATE_RUNNING
    assert child.start_time == child.create_time
    assert child.steps[0].state == task_pb2.STEP_STATE_PENDING
    assert (child.revision, child.create_revision) == (2, 2)
    # Creating a child leaves its parent as it was, but for counting it (a change of
    # its own, right after the child's); a parent with steps keeps its own fraction.
    counted = await client.get_task("parent")
    assert counted.children == task_pb2.ChildCounts(total=1, running=1)
    assert (parent.revision, counted.revision) == (1, 3)
    for changed in ("children", "revision", "update_time", "eta"):
        counted.ClearField(changed)
        parent.ClearField(changed)
    assert counted == parent


async def test_revisions_are_global_across_tasks(client: HeadwayClient) -> None:
    a = await client.create_task("a", steps=["s"])
    b = await client.create_task("b")
    a2 = await client.update_step("a", "s", progress=fraction(0.1))
    b2 = await client.start_task("b")
    a3 = await client.succeed_task("a")

    assert [t.revision for t in (a, b, a2, b2, a3)] == [1, 2, 3, 4, 5]
    assert (a3.create_revision, b2.create_revision) == (1, 2)
    assert await store_revision(client) == 5


# -- StartTask ------------------------------------------------------------------------


async def test_start_task(client: HeadwayClient) -> None:
    created = await client.create_task("t", steps=["a", "b"])
    started = await client.start_task("t")

    assert started.state == task_pb2.TASK_STATE_RUNNING
    assert started.revision == 2
    assert started.create_revision == 1
    assert started.HasField("start_time")
    assert started.start_time == started.update_time
    assert started.update_time.ToNanoseconds() >= created.update_time.ToNanoseconds()
    assert [s.state for s in started.steps] == [task_pb2.STEP_STATE_PENDING] * 2
    assert not started.HasField("finish_time")
    assert await client.get_task("t") == started


# -- AddSteps -------------------------------------------------------------------------


async def test_add_steps_appends_in_order_and_rolls_up(client: HeadwayClient) -> None:
    await client.create_task("t", steps=["a"])
    await client.update_step("t", "a", progress=fraction(0.5))

    extended = await client.add_steps(
        "t", ["b", task_service_pb2.StepSpec(key="c", display_name="Third", weight=3)]
    )

    assert extended.revision == 3
    assert [(s.key, s.index, s.display_name, s.weight) for s in extended.steps] == [
        ("a", 0, "a", 1.0),
        ("b", 1, "b", 1.0),
        ("c", 2, "Third", 3.0),
    ]
    assert [s.state for s in extended.steps] == [
        task_pb2.STEP_STATE_RUNNING,
        task_pb2.STEP_STATE_PENDING,
        task_pb2.STEP_STATE_PENDING,
    ]
    assert extended.fraction == pytest.approx(0.5 / 5)
    assert extended.state == task_pb2.TASK_STATE_RUNNING
    assert await client.get_task("t") == extended


# -- UpdateStep -----------------------------------------------------------------------


async def test_update_step_lifecycle(client: HeadwayClient) -> None:
    await client.create_task("t", steps=["a", "b", task_service_pb2.StepSpec(key="c", weight=2)])

    # Progress on a PENDING step starts it, and starts the PENDING task.
    t = await client.update_step(
        "t", "a", progress=task_pb2.Progress(units=task_pb2.Progress.Units(current=3, total=4))
    )
    a = t.steps[0]
    assert t.revision == 2
    assert t.state == task_pb2.TASK_STATE_RUNNING
    assert t.start_time == t.update_time
    assert a.state == task_pb2.STEP_STATE_RUNNING
    assert a.start_time == t.update_time
    assert a.progress.units.current == 3
    assert a.fraction == 0.75
    assert t.fraction == 0.75 / 4

    t = await client.update_step("t", "a", state=task_pb2.STEP_STATE_SUCCEEDED, message="done")
    a = t.steps[0]
    assert t.revision == 3
    assert (a.state, a.message, a.fraction) == (task_pb2.STEP_STATE_SUCCEEDED, "done", 1.0)
    assert a.finish_time == t.update_time
    assert t.fraction == 0.25

    failure = task_pb2.TaskError(code="TIMEOUT", message="took too long", details={"after": "5s"})
    t = await client.update_step("t", "b", state=task_pb2.STEP_STATE_FAILED, error=failure)
    b = t.steps[1]
    assert t.revision == 4
    assert b.state == task_pb2.STEP_STATE_FAILED
    assert b.error == failure
    assert b.start_time == b.finish_time == t.update_time
    assert t.state == task_pb2.TASK_STATE_RUNNING
    assert t.fraction == 0.25

    # Restarting a FAILED step runs it again, from the given progress.
    t = await client.update_step("t", "b", restart=True, progress=fraction(0.5))
    b = t.steps[1]
    assert t.revision == 5
    assert b.state == task_pb2.STEP_STATE_RUNNING
    assert b.restart_count == 1
    assert not b.HasField("error")
    assert not b.HasField("finish_time")
    assert b.start_time == t.update_time
    assert b.progress == fraction(0.5)
    assert t.fraction == (1 + 0.5) / 4

    # Restarting a RUNNING step lets its progress go back.
    t = await client.update_step("t", "b", restart=True, progress=fraction(0.1))
    b = t.steps[1]
    assert t.revision == 6
    assert (b.restart_count, b.progress.fraction) == (2, 0.1)

    # A PENDING step may be skipped; it counts as done.
    t = await client.update_step("t", "c", state=task_pb2.STEP_STATE_SKIPPED)
    c = t.steps[2]
    assert t.revision == 7
    assert c.state == task_pb2.STEP_STATE_SKIPPED
    assert not c.HasField("start_time")
    assert c.finish_time == t.update_time
    assert c.fraction == 1.0
    assert t.fraction == pytest.approx((1 + 0.1 + 2) / 4)

    # A RUNNING step may be reported RUNNING again with a new message and more progress.
    t = await client.update_step(
        "t", "b", state=task_pb2.STEP_STATE_RUNNING, message="still going", progress=fraction(0.9)
    )
    b = t.steps[1]
    assert t.revision == 8
    assert (b.state, b.message, b.fraction) == (task_pb2.STEP_STATE_RUNNING, "still going", 0.9)
    assert b.restart_count == 2

    assert await client.get_task("t") == t
    assert await store_revision(client) == 8


async def test_starting_a_step_starts_the_pending_task(client: HeadwayClient) -> None:
    await client.create_task("t", steps=["a", "b"])
    t = await client.update_step("t", "b", state=task_pb2.STEP_STATE_RUNNING)
    assert t.revision == 2
    assert t.state == task_pb2.TASK_STATE_RUNNING
    assert t.start_time == t.steps[1].start_time == t.update_time
    assert [s.state for s in t.steps] == [
        task_pb2.STEP_STATE_PENDING,
        task_pb2.STEP_STATE_RUNNING,
    ]
    assert t.fraction == 0.0


async def test_finishing_a_step_of_a_pending_task_starts_it(client: HeadwayClient) -> None:
    """TaskState: PENDING -> RUNNING on any step report, not only one that runs the step."""
    await client.create_task("t", steps=["a", "b"])
    t = await client.update_step("t", "a", state=task_pb2.STEP_STATE_SUCCEEDED)
    assert t.steps[0].state == task_pb2.STEP_STATE_SUCCEEDED
    assert t.fraction == 0.5
    assert t.state == task_pb2.TASK_STATE_RUNNING
    assert t.HasField("start_time")


async def test_update_step_indeterminate_progress_counts_as_zero(client: HeadwayClient) -> None:
    await client.create_task("t", steps=["a"])
    t = await client.update_step("t", "a", progress=task_pb2.Progress(indeterminate=True))
    assert t.steps[0].state == task_pb2.STEP_STATE_RUNNING
    assert t.steps[0].progress.indeterminate
    assert t.steps[0].fraction == 0.0
    assert t.fraction == 0.0
    assert t.revision == 2


# -- UpdateTask -----------------------------------------------------------------------


async def test_update_task(client: HeadwayClient) -> None:
    await client.create_task("t", metrics={"cost": 1.0})

    # Progress on a PENDING task starts it; without steps it is the task's fraction.
    t = await client.update_task("t", progress=fraction(0.4))
    assert t.revision == 2
    assert t.state == task_pb2.TASK_STATE_RUNNING
    assert t.start_time == t.update_time
    assert t.progress == fraction(0.4)
    assert t.fraction == 0.4

    t = await client.update_task(
        "t", message="looping", iteration=2, max_iterations=10, metrics={"tokens": 100}
    )
    assert t.revision == 3
    assert (t.message, t.iteration, t.max_iterations) == ("looping", 2, 10)
    assert dict(t.metrics) == {"cost": 1.0, "tokens": 100.0}
    assert t.fraction == 0.4

    t = await client.update_task(
        "t",
        progress=task_pb2.Progress(units=task_pb2.Progress.Units(current=30, total=60)),
        metrics={"cost": 2.5},
    )
    assert t.revision == 4
    assert t.fraction == 0.5
    assert dict(t.metrics) == {"cost": 2.5, "tokens": 100.0}
    assert (t.message, t.iteration) == ("looping", 2)

    assert await client.get_task("t") == t


async def test_update_task_progress_is_ignored_by_roll_up_when_task_has_steps(
    client: HeadwayClient,
) -> None:
    await client.create_task("t", steps=["a", "b"])
    await client.update_step("t", "a", state=task_pb2.STEP_STATE_SUCCEEDED)
    t = await client.update_task("t", progress=fraction(0.9))
    assert t.progress == fraction(0.9)
    assert t.fraction == 0.5
    assert t.revision == 3


# -- AppendLogs -----------------------------------------------------------------------


async def test_append_logs(client: HeadwayClient) -> None:
    created = await client.create_task("t", steps=["fetch"])
    when = Timestamp(seconds=1_700_000_000)

    response = await client.append_logs(
        "t",
        [
            "plain line",
            log_pb2.LogEntry(
                level=log_pb2.LOG_LEVEL_WARNING,
                step_key="fetch",
                message="slow mirror",
                fields={"url": "https://example.org", "attempt": "2"},
                time=when,
            ),
        ],
    )
    assert response.revision == 2
    assert not response.HasField("cancel_request")

    # Logs take a revision but do not change the task.
    assert await client.get_task("t") == created
    assert await store_revision(client) == 2

    # Output-only fields sent by the agent are ignored.
    second = await client.append_logs(
        "t", [log_pb2.LogEntry(message="another", revision=999, index=7, task_id="elsewhere")]
    )
    assert second.revision == 3

    entries = (await client.list_logs("t")).entries
    assert [(e.revision, e.index, e.task_id, e.message) for e in entries] == [
        (2, 0, "t", "plain line"),
        (2, 1, "t", "slow mirror"),
        (3, 0, "t", "another"),
    ]
    plain, slow, _ = entries
    assert plain.level == log_pb2.LOG_LEVEL_INFO  # unspecified is stored as INFO
    assert plain.step_key == ""
    assert plain.HasField("time")
    assert slow.level == log_pb2.LOG_LEVEL_WARNING
    assert slow.step_key == "fetch"
    assert dict(slow.fields) == {"url": "https://example.org", "attempt": "2"}
    assert slow.time == when


# -- AddArtifacts ---------------------------------------------------------------------


async def test_add_artifacts(client: HeadwayClient) -> None:
    await client.create_task("t", start=True)
    t = await client.add_artifacts(
        "t",
        [
            task_pb2.Artifact(
                name="report",
                uri="s3://bucket/report.pdf",
                media_type="application/pdf",
                size_bytes=2048,
            ),
            task_pb2.Artifact(name="log", uri="file:///tmp/log.txt"),
        ],
    )
    assert t.revision == 2
    assert [(a.name, a.uri, a.media_type, a.size_bytes) for a in t.artifacts] == [
        ("report", "s3://bucket/report.pdf", "application/pdf", 2048),
        ("log", "file:///tmp/log.txt", "", 0),
    ]
    assert all(a.create_time == t.update_time for a in t.artifacts)

    t = await client.add_artifacts("t", [task_pb2.Artifact(name="model", uri="s3://m")])
    assert t.revision == 3
    assert [a.name for a in t.artifacts] == ["report", "log", "model"]
    assert t.state == task_pb2.TASK_STATE_RUNNING
    assert await client.get_task("t") == t


# -- SucceedTask ----------------------------------------------------------------------


async def test_succeed_task_closes_steps(client: HeadwayClient) -> None:
    await client.create_task("t", steps=["a", "b", "c"], message="working")
    await client.update_step("t", "a", state=task_pb2.STEP_STATE_SUCCEEDED)
    await client.update_step("t", "b", progress=fraction(0.3))

    done = await client.succeed_task("t", message="all done")
    assert done.revision == 4
    assert done.state == task_pb2.TASK_STATE_SUCCEEDED
    assert done.message == "all done"
    assert done.fraction == 1.0
    assert done.finish_time == done.update_time
    assert [s.state for s in done.steps] == [
        task_pb2.STEP_STATE_SUCCEEDED,
        task_pb2.STEP_STATE_SUCCEEDED,
        task_pb2.STEP_STATE_SKIPPED,
    ]
    # Steps closed by the task finish with it; the one that finished earlier keeps its time.
    assert done.steps[0].finish_time.ToNanoseconds() <= done.finish_time.ToNanoseconds()
    assert done.steps[1].finish_time == done.steps[2].finish_time == done.finish_time
    assert [s.fraction for s in done.steps] == [1.0, 1.0, 1.0]
    assert await client.get_task("t") == done


async def test_succeed_pending_task_keeps_message_when_unset(client: HeadwayClient) -> None:
    await client.create_task("t", message="queued")
    done = await client.succeed_task("t")
    assert done.revision == 2
    assert done.state == task_pb2.TASK_STATE_SUCCEEDED
    assert done.message == "queued"
    assert done.fraction == 1.0
    # A task that never ran gets a start time when it ends.
    assert done.start_time == done.finish_time == done.update_time


# -- FailTask -------------------------------------------------------------------------


async def test_fail_task_records_error_and_cancels_unfinished_steps(
    client: HeadwayClient,
) -> None:
    await client.create_task("t", steps=["a", "b", "c"])
    await client.update_step("t", "a", state=task_pb2.STEP_STATE_SUCCEEDED)
    await client.update_step("t", "b", progress=fraction(0.5))

    failed = await client.fail_task(
        "t", code="OUT_OF_MEMORY", message="killed", details={"rss": "16G"}
    )
    assert failed.revision == 4
    assert failed.state == task_pb2.TASK_STATE_FAILED
    assert failed.error == task_pb2.TaskError(
        code="OUT_OF_MEMORY", message="killed", details={"rss": "16G"}
    )
    assert failed.finish_time == failed.update_time
    assert [s.state for s in failed.steps] == [
        task_pb2.STEP_STATE_SUCCEEDED,
        task_pb2.STEP_STATE_CANCELLED,
        task_pb2.STEP_STATE_CANCELLED,
    ]
    # The progress reached is kept: no jump back when the task stops.
    assert [s.fraction for s in failed.steps] == [1.0, 0.5, 0.0]
    assert failed.fraction == 0.5
    assert await client.get_task("t") == failed


# -- CancelTask and ConfirmCancel -----------------------------------------------------


async def test_cancel_handshake(client: HeadwayClient) -> None:
    await client.create_task("t", steps=["a", "b"])
    await client.update_step("t", "a", progress=fraction(0.2))

    asked = await client.cancel_task("t", reason="no longer needed", requested_by="alice")
    assert asked.revision == 3
    assert asked.state == task_pb2.TASK_STATE_RUNNING
    request = asked.cancel_request
    assert (request.reason, request.requested_by, request.revision) == (
        "no longer needed",
        "alice",
        3,
    )
    assert request.request_time == asked.update_time
    assert [s.state for s in asked.steps] == [
        task_pb2.STEP_STATE_RUNNING,
        task_pb2.STEP_STATE_PENDING,
    ]
    assert await client.get_task("t") == asked

    # The agent learns of the request from its next calls.
    reported = await client.update_step("t", "a", progress=fraction(0.4))
    assert reported.revision == 4
    assert reported.state == task_pb2.TASK_STATE_RUNNING
    assert reported.cancel_request == request
    logged = await client.append_logs("t", ["stopping soon"])
    assert logged.revision == 5
    assert logged.cancel_request == request
    updated = await client.update_task("t", message="wrapping up")
    assert updated.revision == 6
    assert updated.cancel_request == request

    # Asking again while the request is pending changes nothing.
    again = await client.cancel_task("t", reason="really", requested_by="bob")
    assert again == updated
    assert await store_revision(client) == 6

    cancelled = await client.confirm_cancel("t", reason="agent stopped")
    assert cancelled.revision == 7
    assert cancelled.state == task_pb2.TASK_STATE_CANCELLED
    assert cancelled.cancel_request == request  # the viewer's request, not the agent's reason
    assert cancelled.finish_time == cancelled.update_time
    assert [s.state for s in cancelled.steps] == [task_pb2.STEP_STATE_CANCELLED] * 2
    assert cancelled.fraction == pytest.approx(0.4 / 2)
    assert await client.get_task("t") == cancelled
    assert await store_revision(client) == 7


async def test_cancel_pending_task_then_confirm(client: HeadwayClient) -> None:
    await client.create_task("t")
    asked = await client.cancel_task("t", reason="dup")
    assert asked.revision == 2
    assert asked.state == task_pb2.TASK_STATE_PENDING
    assert asked.cancel_request.revision == 2
    cancelled = await client.confirm_cancel("t")
    assert cancelled.revision == 3
    assert cancelled.state == task_pb2.TASK_STATE_CANCELLED
    assert cancelled.start_time == cancelled.finish_time


async def test_cancel_with_force_ends_at_once(client: HeadwayClient) -> None:
    await client.create_task("t", steps=["a", "b"])
    await client.update_step("t", "a", progress=fraction(0.5))

    cancelled = await client.cancel_task("t", reason="stuck", requested_by="ops", force=True)
    assert cancelled.revision == 3
    assert cancelled.state == task_pb2.TASK_STATE_CANCELLED
    request = cancelled.cancel_request
    assert (request.reason, request.requested_by, request.revision) == ("stuck", "ops", 3)
    assert request.request_time == cancelled.finish_time == cancelled.update_time
    assert [s.state for s in cancelled.steps] == [task_pb2.STEP_STATE_CANCELLED] * 2
    assert await client.get_task("t") == cancelled


async def test_force_after_pending_request_keeps_the_request(client: HeadwayClient) -> None:
    await client.create_task("t", start=True)
    asked = await client.cancel_task("t", reason="first", requested_by="alice")
    forced = await client.cancel_task("t", reason="second", requested_by="bob", force=True)
    assert forced.revision == 3
    assert forced.state == task_pb2.TASK_STATE_CANCELLED
    assert forced.cancel_request == asked.cancel_request


async def test_confirm_cancel_without_request_records_agent_reason(
    client: HeadwayClient,
) -> None:
    await client.create_task("t", steps=["a"], start=True)
    cancelled = await client.confirm_cancel("t", reason="budget exhausted")
    assert cancelled.revision == 2
    assert cancelled.state == task_pb2.TASK_STATE_CANCELLED
    request = cancelled.cancel_request
    assert (request.reason, request.requested_by, request.revision) == (
        "budget exhausted",
        "agent",
        2,
    )
    assert request.request_time == cancelled.finish_time
    assert cancelled.steps[0].state == task_pb2.STEP_STATE_CANCELLED


# -- DeleteTask -----------------------------------------------------------------------


async def test_delete_task_removes_it_and_its_logs(client: HeadwayClient) -> None:
    await client.create_task("keep")
    await client.create_task("t")
    await client.append_logs("t", ["one", "two"])
    await client.succeed_task("t")

    revision = await client.delete_task("t")
    assert revision == 5
    assert await store_revision(client) == 5
    with pytest.raises(NotFoundError) as info:
        await client.get_task("t")
    assert info.value.reason == "TASK_NOT_FOUND"
    with pytest.raises(NotFoundError):
        await client.list_logs("t")
    assert [t.id for t in await client.list_all_tasks()] == ["keep"]

    # The id is free again; the new task starts with no logs.
    again = await client.create_task("t")
    assert (again.revision, again.create_revision) == (6, 6)
    assert not (await client.list_logs("t")).entries
    assert [t.id for t in await client.list_all_tasks()] == ["keep", "t"]


@pytest.mark.parametrize("how", ["fail", "cancel"])
async def test_delete_failed_or_cancelled_task(client: HeadwayClient, how: str) -> None:
    await client.create_task("t")
    if how == "fail":
        await client.fail_task("t", message="boom")
    else:
        await client.cancel_task("t", force=True)
    assert await client.delete_task("t") == 3
    assert (await client.list_tasks()).tasks == []
