"""Who may call what: every RPC against every role, in its own tenant and in another.

The matrix runs each RPC once per caller against a fresh server holding the
same tasks, and checks the exact status and ErrorInfo reason; a refused call
must leave every task, its logs and both tenants' listings as they were.
Then the ownership rule, `requested_by`, and what a scoped read token sees.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from headway.client import HeadwayClient, HeadwayError, task_filter
from headway.server.config import Settings
from headway.v1 import event_pb2, task_pb2
from tests.auth_helpers import TokenNamesPrincipal, scoped
from tests.harness import ServerHarness
from tests.streams import Collector, changes, kind

ACME, GLOBEX = "acme", "globex"
TARGET = "acme-t"  # PENDING, created by agent-a of acme, with a step and a log line
DONE = "acme-done"  # SUCCEEDED, created by agent-a of acme: what DeleteTask deletes
OTHER = "acme-other"  # created by agent-b of acme, labelled team=blue

# Every caller of the matrix, by token. The scoped tokens are registered below.
TOKENS = {
    "owner": "agent-a@acme",
    "agent": "agent-b@acme",
    "viewer": "viewer-v@acme",
    "operator": "operator-o@acme",
    "admin": "admin-x@acme",
    "scoped": "read-red@acme",  # covers the team=red tasks: TARGET and DONE
    "scoped-out": "read-other@acme",  # covers OTHER only
    "f-agent": "agent-g@globex",
    "f-viewer": "viewer-g@globex",
    "f-operator": "operator-g@globex",
    "f-admin": "admin-g@globex",
    "f-scoped": "read-red@globex",  # team=red, but in globex
}
ACTORS = tuple(TOKENS)


def authenticator() -> TokenNamesPrincipal:
    auth = TokenNamesPrincipal()
    auth.register("read-red@acme", scoped("read-red", ACME, labels={"team": "red"}))
    auth.register("read-other@acme", scoped("read-other", ACME, task_ids=(OTHER,)))
    auth.register("read-red@globex", scoped("read-red", GLOBEX, labels={"team": "red"}))
    return auth


# -- expected outcomes --------------------------------------------------------------

OK = "ok"  # the call succeeds (reads: and the target is visible)
HIDDEN = "hidden"  # a listing or stream that succeeds without the target in it
DENIED = "denied"  # PERMISSION_DENIED / PERMISSION_DENIED: the role lacks the RPC
NOT_OWNER = "not-owner"  # PERMISSION_DENIED / NOT_TASK_OWNER
MISSING = "missing"  # NOT_FOUND / TASK_NOT_FOUND
NO_PARENT = "no-parent"  # NOT_FOUND / PARENT_NOT_FOUND

REFUSALS = {
    DENIED: (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED"),
    NOT_OWNER: (grpc.StatusCode.PERMISSION_DENIED, "NOT_TASK_OWNER"),
    MISSING: (grpc.StatusCode.NOT_FOUND, "TASK_NOT_FOUND"),
    NO_PARENT: (grpc.StatusCode.NOT_FOUND, "PARENT_NOT_FOUND"),
}

_, Y, H, D, N, M, P = None, OK, HIDDEN, DENIED, NOT_OWNER, MISSING, NO_PARENT
# An agent's report on a task: only its creator (or an admin) may make it.
REPORT = (Y, N, D, D, Y, D, D, M, D, D, M, D)
# Columns, as ACTORS: owner agent viewer operator admin scoped scoped-out,
# then the other tenant's f-agent f-viewer f-operator f-admin f-scoped.
MATRIX: dict[str, tuple[str | None, ...]] = {
    "CreateTask": (Y, Y, D, D, Y, D, D, P, D, D, P, D),  # a child of TARGET
    "StartTask": REPORT,
    "AddSteps": REPORT,
    "UpdateStep": REPORT,
    "UpdateTask": REPORT,
    "AppendLogs": REPORT,
    "AddArtifacts": REPORT,
    "SucceedTask": REPORT,
    "FailTask": REPORT,
    "ConfirmCancel": REPORT,
    "Heartbeat": REPORT,
    "CancelTask": (D, D, D, Y, Y, D, D, D, D, M, M, D),
    "DeleteTask": (D, D, D, Y, Y, D, D, D, D, M, M, D),  # of DONE
    "GetTask": (Y, Y, Y, Y, Y, Y, M, M, M, M, M, M),
    "ListLogs": (Y, Y, Y, Y, Y, Y, M, M, M, M, M, M),
    "ListTasks": (Y, Y, Y, Y, Y, Y, H, H, H, H, H, H),
    "Subscribe": (Y, Y, Y, Y, Y, Y, H, H, H, H, H, H),
}
assert all(len(row) == len(ACTORS) and None not in row for row in MATRIX.values())


async def first_snapshot(client: HeadwayClient, selection: Any = None) -> list[event_pb2.Event]:
    """The snapshot a new subscription starts with, up to and without `synced`."""
    events: list[event_pb2.Event] = []
    async with aclosing(client.subscribe(selection)) as stream:
        async for event in stream:
            if kind(event) == "synced":
                return events
            events.append(event)
    raise AssertionError("the stream ended before synced")


def listed_ids(response: Any) -> set[str]:
    return {task.id for task in response.tasks}


def snapshot_ids(events: list[event_pb2.Event]) -> set[str]:
    return {event.snapshot.id for event in events if kind(event) == "snapshot"}


@dataclass(frozen=True)
class Call:
    """One RPC of the matrix: what it targets, how to make it, how to check a success."""

    run: Callable[[HeadwayClient], Awaitable[Any]]
    target: str = TARGET
    check: Callable[[Any, str], None] = lambda result, name: None


def visible(result: set[str], name: str) -> None:
    del name
    assert TARGET in result


CALLS: dict[str, Call] = {
    "CreateTask": Call(
        lambda c: c.create_task("child", parent_id=TARGET),
        check=lambda task, name: (
            (task.parent_id == TARGET and task.creator == name) or pytest.fail(str(task))
        ),
    ),
    "StartTask": Call(lambda c: c.start_task(TARGET)),
    "AddSteps": Call(lambda c: c.add_steps(TARGET, ["s2"])),
    "UpdateStep": Call(
        lambda c: c.update_step(TARGET, "s", progress=task_pb2.Progress(fraction=0.5))
    ),
    "UpdateTask": Call(lambda c: c.update_task(TARGET, message="half way")),
    "AppendLogs": Call(lambda c: c.append_logs(TARGET, ["more"])),
    "AddArtifacts": Call(
        lambda c: c.add_artifacts(TARGET, [task_pb2.Artifact(name="out", uri="file:///o")])
    ),
    "SucceedTask": Call(lambda c: c.succeed_task(TARGET)),
    "FailTask": Call(lambda c: c.fail_task(TARGET, code="BROKEN", message="no")),
    "ConfirmCancel": Call(lambda c: c.confirm_cancel(TARGET, reason="done with it")),
    "Heartbeat": Call(lambda c: c.heartbeat(TARGET)),
    "CancelTask": Call(
        lambda c: c.cancel_task(TARGET, reason="stop", requested_by="mallory"),
        # requested_by is the caller, never what the request claims.
        check=lambda task, name: task.cancel_request.requested_by == name or pytest.fail(str(task)),
    ),
    "DeleteTask": Call(lambda c: c.delete_task(DONE), target=DONE),
    "GetTask": Call(
        lambda c: c.get_task(TARGET),
        check=lambda task, name: (task.id == TARGET) or pytest.fail(str(task)),
    ),
    "ListLogs": Call(
        lambda c: c.list_logs(TARGET),
        check=lambda r, name: [e.message for e in r.entries] == ["first"] or pytest.fail(str(r)),
    ),
    "ListTasks": Call(lambda c: _list_ids(c)),
    "Subscribe": Call(lambda c: _snapshot_ids(c)),
}
assert set(CALLS) == set(MATRIX)


async def _list_ids(client: HeadwayClient) -> set[str]:
    return listed_ids(await client.list_tasks(page_size=1000))


async def _snapshot_ids(client: HeadwayClient) -> set[str]:
    return snapshot_ids(await first_snapshot(client))


# -- the world every case starts from -----------------------------------------------


@pytest.fixture
async def world(settings: Settings) -> AsyncIterator[ServerHarness]:
    harness = ServerHarness(settings, authenticator=authenticator())
    await harness.start()
    try:
        owner = harness.client(TOKENS["owner"])
        red = {"team": "red"}
        await owner.create_task(TARGET, steps=["s"], labels=red)
        await owner.append_logs(TARGET, ["first"])
        await owner.create_task(DONE, labels=red)
        await owner.succeed_task(DONE)
        await harness.client(TOKENS["agent"]).create_task(OTHER, labels={"team": "blue"})
        # The other tenant has a task of the same id as TARGET's sibling, and a red one.
        foreign = harness.client(TOKENS["f-agent"])
        await foreign.create_task(OTHER, labels={"team": "red"})
        await foreign.append_logs(OTHER, ["globex line"])
        yield harness
    finally:
        await harness.close()


async def observe(harness: ServerHarness) -> list[Any]:
    """Everything a refused call must leave alone: both tenants' tasks, listings and logs."""
    seen: list[Any] = []
    for admin in (TOKENS["admin"], TOKENS["f-admin"]):
        client = harness.client(admin)
        listing = await client.list_tasks(page_size=1000)
        seen.append([task.SerializeToString(deterministic=True) for task in listing.tasks])
        seen.append(listing.revision)
        for task in listing.tasks:
            logs = await client.list_logs(task.id, page_size=1000)
            seen.append([entry.SerializeToString() for entry in logs.entries])
    return seen


@pytest.mark.parametrize("actor", ACTORS)
@pytest.mark.parametrize("rpc", list(MATRIX))
async def test_role_matrix(world: ServerHarness, rpc: str, actor: str) -> None:
    expected = MATRIX[rpc][ACTORS.index(actor)]
    call = CALLS[rpc]
    token = TOKENS[actor]
    client = world.client(token)
    if expected in (OK, HIDDEN):
        result = await call.run(client)
        if expected == HIDDEN:
            assert TARGET not in result
            # Nothing of another tenant, nothing out of scope.
            assert result <= {OTHER}, result
        elif rpc in ("ListTasks", "Subscribe"):
            visible(result, token)
        else:
            call.check(result, token.partition("@")[0])
        return
    code, reason = REFUSALS[str(expected)]
    before = await observe(world)
    with pytest.raises(HeadwayError) as refused:
        await call.run(client)
    assert (refused.value.code, refused.value.reason) == (code, reason), refused.value
    if expected == NOT_OWNER:
        assert refused.value.metadata == {"task_id": call.target, "permission": "report-any"}
    if expected == MISSING:
        assert refused.value.metadata == {"task_id": call.target}
    assert await observe(world) == before


# -- ownership and requested_by -------------------------------------------------------


async def test_without_authentication_the_anonymous_admin_creates_and_reports(
    client: HeadwayClient,
) -> None:
    created = await client.create_task("t", steps=["s"])
    assert created.creator == "anonymous"
    assert (await client.succeed_task("t")).state == task_pb2.TASK_STATE_SUCCEEDED


async def test_an_agent_reports_on_its_own_tasks_and_an_admin_on_any(world: ServerHarness) -> None:
    owner = world.client(TOKENS["owner"])
    other = world.client(TOKENS["agent"])
    admin = world.client(TOKENS["admin"])
    mine = await other.create_task("mine", steps=["s"])
    assert mine.creator == "agent-b"
    await other.update_step("mine", "s", progress=task_pb2.Progress(fraction=0.3))
    with pytest.raises(HeadwayError) as refused:
        await owner.update_step("mine", "s", progress=task_pb2.Progress(fraction=0.9))
    assert refused.value.reason == "NOT_TASK_OWNER"
    # The creator never changes, whoever else reports.
    reported = await admin.update_task("mine", message="admin was here")
    assert reported.creator == "agent-b"
    # Ownership is checked before the task's state: a task at rest is still not yours.
    await other.succeed_task("mine")
    with pytest.raises(HeadwayError) as refused:
        await owner.append_logs("mine", ["late"])
    assert refused.value.reason == "NOT_TASK_OWNER"


async def test_a_cancel_is_confirmed_only_by_the_owning_agent(world: ServerHarness) -> None:
    owner = world.client(TOKENS["owner"])
    operator = world.client(TOKENS["operator"])
    asked = await operator.cancel_task(TARGET, reason="stop", requested_by="someone-else")
    assert asked.cancel_request.requested_by == "operator-o"
    for intruder in (TOKENS["agent"], TOKENS["viewer"], TOKENS["operator"]):
        with pytest.raises(HeadwayError) as refused:
            await world.client(intruder).confirm_cancel(TARGET)
        assert refused.value.code == grpc.StatusCode.PERMISSION_DENIED
    renewal = await owner.heartbeat(TARGET)
    assert renewal.cancel_request is not None
    confirmed = await owner.confirm_cancel(TARGET)
    assert confirmed.state == task_pb2.TASK_STATE_CANCELLED
    assert confirmed.cancel_request.requested_by == "operator-o"


async def test_concurrent_reports_by_owner_and_intruder_only_the_owners_commit(
    world: ServerHarness,
) -> None:
    """Checked inside each mutation: a group commit mixing both applies exactly the owner's."""
    owner = world.client(TOKENS["owner"])
    intruder = world.client(TOKENS["agent"])
    calls = [owner.append_logs(TARGET, [f"owner {i}"]) for i in range(10)]
    calls += [intruder.append_logs(TARGET, [f"intruder {i}"]) for i in range(10)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(not isinstance(r, BaseException) for r in results[:10])
    assert all(isinstance(r, HeadwayError) and r.reason == "NOT_TASK_OWNER" for r in results[10:])
    logs = await world.client(TOKENS["admin"]).list_logs(TARGET, page_size=100)
    assert sorted(e.message for e in logs.entries) == sorted(
        ["first"] + [f"owner {i}" for i in range(10)]
    )


async def test_unknown_callers_are_unauthenticated(world: ServerHarness) -> None:
    for client in (world.client(), world.client("nobody@acme")):
        with pytest.raises(HeadwayError) as refused:
            await client.get_task(TARGET)
        assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED


# -- scope ---------------------------------------------------------------------------


async def test_a_scoped_token_reads_and_watches_only_its_task(world: ServerHarness) -> None:
    auth = world.authenticator
    assert isinstance(auth, TokenNamesPrincipal)
    token = auth.register("read-t@acme", scoped("read-t", ACME, task_ids=(TARGET,)))
    reader = world.client(token)
    owner = world.client(TOKENS["owner"])
    admin = world.client(TOKENS["admin"])

    assert (await reader.get_task(TARGET)).id == TARGET
    assert [e.message for e in (await reader.list_logs(TARGET)).entries] == ["first"]
    assert listed_ids(await reader.list_tasks()) == {TARGET}
    # A filter naming other tasks is intersected with the scope, never widened.
    wide = task_filter(task_ids=[TARGET, OTHER, DONE])
    assert listed_ids(await reader.list_tasks(wide)) == {TARGET}

    # Out of scope is indistinguishable from missing.
    for task_id in (OTHER, DONE, "no-such-task"):
        for read in (reader.get_task, reader.list_logs):
            with pytest.raises(HeadwayError) as refused:
                await read(task_id)
            assert (refused.value.code, refused.value.reason) == (
                grpc.StatusCode.NOT_FOUND,
                "TASK_NOT_FOUND",
            )
            assert refused.value.metadata == {"task_id": task_id}
            assert refused.value.message == f"task {task_id!r} not found"

    # Every mutation is refused, also on the task it may read.
    before = await observe(world)
    for rpc in MATRIX:
        if rpc in ("GetTask", "ListLogs", "ListTasks", "Subscribe"):
            continue
        with pytest.raises(HeadwayError) as refused:
            await CALLS[rpc].run(reader)
        assert (refused.value.code, refused.value.reason) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "PERMISSION_DENIED",
        ), rpc
    assert await observe(world) == before

    # The stream: a snapshot of its task only, then only its task's changes.
    watcher = Collector().start(reader, include_logs=True)
    everything = Collector().start(admin, include_logs=True)
    try:
        await watcher.wait_for(lambda events: any(kind(e) == "synced" for e in events))
        await everything.wait_for(lambda events: any(kind(e) == "synced" for e in events))
        assert snapshot_ids(watcher.events) == {TARGET}
        await world.client(TOKENS["agent"]).append_logs(OTHER, ["not for the reader"])
        await admin.create_task("later", labels={"team": "red"})
        await owner.append_logs(TARGET, ["for the reader"])
        await owner.succeed_task(TARGET)
        last = await admin.delete_task(TARGET)
        await everything.wait_for(lambda events: any(e.revision == last for e in events))
        await watcher.wait_for(lambda events: any(e.revision == last for e in events))
        seen = changes(watcher.events)
        assert [kind(e) for e in seen] == ["snapshot", "logs_appended", "updated", "deleted"]
        assert {_task_id(e) for e in seen} == {TARGET}
        # Everything else happened, the reader just did not see it.
        assert len(changes(everything.events)) > len(seen)
    finally:
        await watcher.stop()
        await everything.stop()


async def test_a_label_scope_follows_tasks_created_later(world: ServerHarness) -> None:
    reader = world.client(TOKENS["scoped"])  # team=red of acme
    admin = world.client(TOKENS["admin"])
    watcher = Collector().start(reader)
    try:
        await watcher.wait_for(lambda events: any(kind(e) == "synced" for e in events))
        assert snapshot_ids(watcher.events) == {TARGET, DONE}
        await admin.create_task("blue", labels={"team": "blue"})
        red = await admin.create_task("red-2", labels={"team": "red", "extra": "x"})
        await watcher.wait_for(lambda events: any(e.revision == red.revision for e in events))
        created = [e.created.id for e in watcher.events if kind(e) == "created"]
        assert created == ["red-2"]
        assert listed_ids(await reader.list_tasks()) == {TARGET, DONE, "red-2"}
        with pytest.raises(HeadwayError) as refused:
            await reader.get_task("blue")
        assert refused.value.code == grpc.StatusCode.NOT_FOUND
        # A subscription filtered to an out-of-scope task sees nothing of it.
        narrow = await first_snapshot(reader, task_filter(task_ids=["blue"]))
        assert narrow == []
    finally:
        await watcher.stop()


def _task_id(event: event_pb2.Event) -> str:
    which = kind(event)
    if which == "logs_appended":
        return event.logs_appended.task_id
    task: task_pb2.Task = getattr(event, which)
    return task.id
