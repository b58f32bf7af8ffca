"""What one tenant can learn of another through revisions: nothing.

Revisions count per tenant. A tenant's changes, heartbeats, listings and
resumes use its own sequence (1, 2, 3, … with no gaps), so a neighbour's write
rate shows up nowhere — not as gaps between revisions, not in a heartbeat.
Real server, real token file, two tenants writing at once.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from google.protobuf.duration_pb2 import Duration

from headway.client import HeadwayClient
from headway.server.auth.tokens import append_token
from headway.server.config import Settings
from headway.v1 import event_pb2, task_pb2, task_service_pb2
from tests.harness import ServerHarness


class Caller:
    """The raw stub of one principal, sending its bearer token on every call."""

    def __init__(self, client: HeadwayClient, secret: str) -> None:
        self.stub = client.stub
        self.auth = (("authorization", f"Bearer {secret}"),)


class Tenants:
    def __init__(self, harness: ServerHarness, secrets: dict[str, str]) -> None:
        self.harness = harness
        self.secrets = secrets

    def client(self, name: str) -> Caller:
        return Caller(self.harness.client(), self.secrets[name])


@pytest.fixture
async def tenants(make_settings: Callable[..., Settings], tmp_path: Path) -> AsyncIterator[Tenants]:
    token_file = tmp_path / "tokens"
    secrets = {
        name: append_token(token_file, name, tenant, "agent")
        for name, tenant in (("alice", "acme"), ("bob", "globex"))
    }
    harness = ServerHarness(make_settings(auth_token_file=token_file))
    await harness.start()
    try:
        yield Tenants(harness, secrets)
    finally:
        await harness.close()


async def write(client: Caller, prefix: str, count: int, seed: int) -> None:
    """Create tasks and report on them in a random order; every call must succeed."""
    rng = random.Random(seed)
    ids = [f"{prefix}-{i}" for i in range(4)]
    for task_id in ids:
        await client.stub.CreateTask(
            task_service_pb2.CreateTaskRequest(
                task_id=task_id, start=True, steps=[task_service_pb2.StepSpec(key="s")]
            ),
            metadata=client.auth,
        )
    for n in range(count):
        task_id = rng.choice(ids)
        await client.stub.UpdateTask(
            task_service_pb2.UpdateTaskRequest(task_id=task_id, message=f"{prefix} {n}"),
            metadata=client.auth,
        )
        if rng.random() < 0.2:
            await asyncio.sleep(0.01)


async def test_a_tenant_sees_only_its_own_changes_and_revisions(tenants: Tenants) -> None:
    alice, bob = tenants.client("alice"), tenants.client("bob")
    request = task_service_pb2.SubscribeRequest(heartbeat_interval=Duration(nanos=50_000_000))
    seen: list[event_pb2.Event] = []

    async def watch() -> None:
        async for response in alice.stub.Subscribe(request, metadata=alice.auth):
            seen.extend(response.events)

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.2)
    await asyncio.gather(write(alice, "a", 40, seed=1), write(bob, "b", 400, seed=2))
    await asyncio.sleep(0.3)  # a few heartbeats after the last write
    watcher.cancel()
    await asyncio.gather(watcher, return_exceptions=True)

    changes = [e for e in seen if e.WhichOneof("kind") in ("created", "updated")]
    tasks = [getattr(e, str(e.WhichOneof("kind"))) for e in changes]
    assert {t.tenant for t in tasks} == {"acme"}, "nothing of the other tenant"
    assert all(t.id.startswith("a-") for t in tasks)
    assert [e.revision for e in changes] == list(range(1, 45)), "acme's own 1, 2, 3, … no gaps"
    beats = [e.revision for e in seen if e.WhichOneof("kind") == "heartbeat"]
    assert beats, "heartbeats came"
    assert max(beats) == 44, "a heartbeat carries acme's revision, not the busier neighbour's"
    listing = await alice.stub.ListTasks(task_service_pb2.ListTasksRequest(), metadata=alice.auth)
    assert listing.revision == 44
    assert (
        await bob.stub.ListTasks(task_service_pb2.ListTasksRequest(), metadata=bob.auth)
    ).revision == 404


async def test_a_task_id_may_exist_in_two_tenants(tenants: Tenants) -> None:
    alice, bob = tenants.client("alice"), tenants.client("bob")
    mine = await alice.stub.CreateTask(
        task_service_pb2.CreateTaskRequest(task_id="same"), metadata=alice.auth
    )
    theirs = await bob.stub.CreateTask(
        task_service_pb2.CreateTaskRequest(task_id="same"), metadata=bob.auth
    )
    assert (mine.task.tenant, theirs.task.tenant) == ("acme", "globex")
    assert mine.task.revision == theirs.task.revision == 1
    await bob.stub.SucceedTask(
        task_service_pb2.SucceedTaskRequest(task_id="same"), metadata=bob.auth
    )
    again = await alice.stub.GetTask(
        task_service_pb2.GetTaskRequest(task_id="same"), metadata=alice.auth
    )
    assert again.task.state == task_pb2.TASK_STATE_PENDING, "the other tenant's change is theirs"


async def test_resume_is_exact_within_a_tenant_whatever_the_neighbours_write(
    tenants: Tenants,
) -> None:
    alice, bob = tenants.client("alice"), tenants.client("bob")
    await write(alice, "a", 10, seed=3)  # revisions 1..14
    await write(bob, "b", 50, seed=4)
    await write(alice, "a2", 5, seed=5)  # revisions 15..23
    request = task_service_pb2.SubscribeRequest(start_revision=14)
    got: list[int] = []
    async for response in alice.stub.Subscribe(request, metadata=alice.auth):
        got += [e.revision for e in response.events if e.WhichOneof("kind") != "heartbeat"]
        if got and got[-1] >= 23:
            break
    assert got == list(range(15, 24))
