"""Tenants are worlds apart: ids are per tenant, and nothing of one is visible to another."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from headway.client import HeadwayClient, HeadwayError
from headway.server.config import Settings
from headway.v1 import event_pb2, task_pb2
from tests.auth_helpers import TokenNamesPrincipal
from tests.harness import ServerHarness
from tests.streams import Collector, changes, kind

A, B = "admin-a@acme", "admin-b@globex"


@pytest.fixture
async def two_tenants(settings: Settings) -> AsyncIterator[ServerHarness]:
    harness = ServerHarness(settings, authenticator=TokenNamesPrincipal())
    await harness.start()
    try:
        yield harness
    finally:
        await harness.close()


async def test_ids_are_per_tenant(two_tenants: ServerHarness) -> None:
    a, b = two_tenants.client(A), two_tenants.client(B)
    mine = await a.create_task("same", steps=["s"], labels={"who": "a"})
    theirs = await b.create_task("same", steps=["s"], labels={"who": "b"})
    assert (mine.tenant, theirs.tenant) == ("acme", "globex")
    await b.succeed_task("same")
    assert (await a.get_task("same")).state == task_pb2.TASK_STATE_PENDING
    assert (await a.get_task("same")).labels["who"] == "a"
    await b.delete_task("same")
    assert (await a.get_task("same")).labels["who"] == "a"
    with pytest.raises(HeadwayError) as refused:
        await a.create_task("child", parent_id="only-b")
    assert refused.value.reason == "PARENT_NOT_FOUND"
    await b.create_task("only-b")
    with pytest.raises(HeadwayError) as refused:
        await a.create_task("child", parent_id="only-b")
    assert (refused.value.code, refused.value.reason) == (
        grpc.StatusCode.NOT_FOUND,
        "PARENT_NOT_FOUND",
    )


Op = Callable[[HeadwayClient], Awaitable[Any]]

EVERY_TASK_RPC: dict[str, Op] = {
    "StartTask": lambda c: c.start_task("b-task"),
    "AddSteps": lambda c: c.add_steps("b-task", ["x"]),
    "UpdateStep": lambda c: c.update_step("b-task", "s", message="hi"),
    "UpdateTask": lambda c: c.update_task("b-task", message="hi"),
    "AppendLogs": lambda c: c.append_logs("b-task", ["hi"]),
    "AddArtifacts": lambda c: c.add_artifacts("b-task", [task_pb2.Artifact(name="a", uri="u:x")]),
    "SucceedTask": lambda c: c.succeed_task("b-task"),
    "FailTask": lambda c: c.fail_task("b-task", message="no"),
    "CancelTask": lambda c: c.cancel_task("b-task"),
    "ConfirmCancel": lambda c: c.confirm_cancel("b-task"),
    "Heartbeat": lambda c: c.heartbeat("b-task"),
    "DeleteTask": lambda c: c.delete_task("b-done"),
    "GetTask": lambda c: c.get_task("b-task"),
    "ListLogs": lambda c: c.list_logs("b-task"),
}


@pytest.mark.parametrize("rpc", list(EVERY_TASK_RPC))
async def test_another_tenants_task_is_not_found(two_tenants: ServerHarness, rpc: str) -> None:
    """Even for a tenant's admin, which may do everything in its own tenant."""
    a, b = two_tenants.client(A), two_tenants.client(B)
    await b.create_task("b-task", steps=["s"])
    await b.append_logs("b-task", ["b's line"])
    await b.create_task("b-done")
    await b.succeed_task("b-done")

    async def observe() -> list[bytes]:
        tasks = (await b.list_tasks()).tasks
        logs = (await b.list_logs("b-task")).entries
        return [t.SerializeToString(deterministic=True) for t in tasks] + [
            e.SerializeToString() for e in logs
        ]

    before = await observe()
    with pytest.raises(HeadwayError) as refused:
        await EVERY_TASK_RPC[rpc](a)
    assert (refused.value.code, refused.value.reason) == (
        grpc.StatusCode.NOT_FOUND,
        "TASK_NOT_FOUND",
    )
    assert await observe() == before
    assert (await a.list_tasks()).tasks == []


async def write_randomly(
    client: HeadwayClient, prefix: str, rng: random.Random, count: int
) -> list[int]:
    """A random sequence of mutations over a few tasks of one tenant; their revisions."""
    revisions: list[int] = []
    running: list[str] = []
    for i in range(count):
        choice = rng.random()
        if not running or choice < 0.2:
            task = await client.create_task(f"{prefix}{i}", steps=["s"], labels={"n": str(i)})
            running.append(task.id)
            revisions.append(task.revision)
        elif choice < 0.55:
            task_id = rng.choice(running)
            progress = task_pb2.Progress(fraction=min(1.0, i / count))
            revisions.append((await client.update_step(task_id, "s", progress=progress)).revision)
        elif choice < 0.8:
            task_id = rng.choice(running)
            revisions.append((await client.append_logs(task_id, [f"line {i}"])).revision)
        elif choice < 0.9:
            task_id = running.pop(rng.randrange(len(running)))
            revisions.append((await client.succeed_task(task_id)).revision)
            revisions.append(await client.delete_task(task_id))
        else:
            await client.heartbeat(rng.choice(running))  # no revision: not an event
        await asyncio.sleep(0)
    return revisions


def concerns(event: event_pb2.Event) -> str:
    which = kind(event)
    if which == "logs_appended":
        return event.logs_appended.task_id
    task: task_pb2.Task = getattr(event, which)
    assert task.tenant == "acme", event
    return task.id


@pytest.mark.parametrize("seed", [7, 2026])
async def test_a_subscriber_sees_only_its_tenant_while_both_write(
    two_tenants: ServerHarness, seed: int
) -> None:
    rng = random.Random(seed)
    a, b = two_tenants.client(A), two_tenants.client(B)
    # The other tenant has tasks of the same ids before the stream starts.
    for task_id in ("a-0", "a-1"):
        await b.create_task(task_id)
    watcher = Collector().start(a, include_logs=True)
    try:
        await watcher.wait_for(lambda events: any(kind(e) == "synced" for e in events))
        b_rng = random.Random(rng.random())
        written, _ = await asyncio.gather(
            write_randomly(a, "a-", rng, 60),
            write_randomly(b, "b-", b_rng, 60),
        )
        last = max(written)
        await watcher.wait_for(lambda events: any(e.revision == last for e in changes(events)))
        received = changes(watcher.events)
        # Every change of A, exactly once, and nothing else at all.
        assert [e.revision for e in received] == sorted(written)
        assert all(concerns(e).startswith("a-") for e in received)
        listing = await a.list_tasks(page_size=1000)
        assert all(t.tenant == "acme" and t.id.startswith("a-") for t in listing.tasks)
    finally:
        await watcher.stop()
