"""The engine's roll-up of children into parents, at the edges gRPC cannot reach on demand.

A store that fails on purpose, groups of mutations committed at once, the
janitor's expiry and liveness checks, and a restart on the real SQLite store.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from google.protobuf.duration_pb2 import Duration

from headway.server import domain, rollup
from headway.server.config import Limits
from headway.server.engine import Actor, Change, ChangeKind, MutationContext
from headway.server.errors import HeadwayError, Kind
from headway.server.filtering import CompiledFilter
from headway.server.janitor import Janitor
from headway.server.store.sqlite import SqliteStore
from headway.v1 import task_pb2, task_service_pb2
from tests.memory_store import MemoryStore
from tests.unit.test_engine import Apply, Rig, make_settings, memory, note


def child_of(task_id: str, parent_id: str = "", weight: float = 0.0) -> Apply:
    """Create a RUNNING task without steps, under `parent_id` when given."""

    def apply(task: task_pb2.Task | None, ctx: MutationContext) -> Change:
        assert task is None
        request = task_service_pb2.CreateTaskRequest(parent_id=parent_id, weight=weight, start=True)
        created = domain.new_task(
            request,
            tenant=ctx.tenant,
            task_id=task_id,
            revision=ctx.revision,
            now=ctx.now,
            lease=Duration(seconds=60),
        )
        return Change(ChangeKind.CREATED, created)

    return apply


def report(value: float, message: str = "") -> Apply:
    def apply(task: task_pb2.Task | None, ctx: MutationContext) -> Change:
        assert task is not None
        request = task_service_pb2.UpdateTaskRequest(progress=task_pb2.Progress(fraction=value))
        if message:
            request.message = message
        domain.update_task(task, request, ctx.now, Limits())
        return Change(ChangeKind.UPDATED, task)

    return apply


def succeed(task: task_pb2.Task | None, ctx: MutationContext) -> Change:
    assert task is not None
    domain.succeed_task(task, None, ctx.now)
    return Change(ChangeKind.UPDATED, task)


@pytest.fixture
async def family(tmp_path: Path) -> Rig:
    """A rig with a parent `p` and one child `c`, both RUNNING."""
    rig = Rig(MemoryStore(), make_settings(tmp_path, task_retention=timedelta(seconds=5)))
    await rig.engine.start()
    await rig.mutate("p", child_of("p"))
    await rig.mutate("c", child_of("c", "p"))
    return rig


async def test_a_failed_commit_leaves_the_parent_as_it_was(family: Rig) -> None:
    before = family.state()
    memory(family).refuse = lambda batch: ValueError("the store refuses this batch")

    with pytest.raises(HeadwayError) as raised:
        await family.mutate("c", report(0.5), request_id="r1")

    assert raised.value.reason == "CHANGE_NOT_STORABLE"
    assert family.state() == before
    memory(family).refuse = lambda batch: None
    outcome = await family.mutate("c", report(0.5), request_id="r1")
    assert family.engine.get("acme", "p").fraction == 0.5
    assert family.engine.get("acme", "p").revision == outcome.revision + 1
    await family.engine.stop()


async def test_a_child_over_its_budget_is_refused_and_the_parent_untouched(
    tmp_path: Path,
) -> None:
    rig = Rig(MemoryStore(), make_settings(tmp_path, limits=Limits(max_task_bytes=1024)))
    await rig.engine.start()
    await rig.mutate("p", child_of("p"))
    await rig.mutate("c", child_of("c", "p"))
    before = rig.state()

    with pytest.raises(HeadwayError) as raised:
        await rig.mutate("c", report(0.5, message="m" * 2000))

    assert (raised.value.kind, raised.value.reason) == (Kind.RESOURCE_EXHAUSTED, "TASK_TOO_LARGE")
    assert rig.state() == before
    await rig.engine.stop()


async def test_one_group_of_child_changes_gives_contiguous_revisions_in_order(
    family: Rig,
) -> None:
    engine = family.engine
    start = engine.head("acme")
    subscriber = family.hub.register(
        "acme",
        CompiledFilter.compile(task_service_pb2.TaskFilter()),
        include_logs=True,
        stop_at_rest=False,
    )
    outcomes = await asyncio.gather(
        family.mutate("c", report(0.5)),
        family.mutate("d", child_of("d", "p", weight=3)),
        family.mutate("p", note("mine")),
        family.mutate("c", report(0.6)),
    )

    events = subscriber.take()
    revisions = [event.revision for event in events]
    assert revisions == list(range(start + 1, start + len(events) + 1))
    assert engine.head("acme") == family.hub.head("acme") == revisions[-1]
    # Each child change is followed at once by its parent's; the parent's own
    # change (a note) is alone.
    ids = [event.facts.task_id for event in events]
    assert ids == ["c", "p", "d", "p", "p", "c", "p"]
    assert [o.revision for o in outcomes] == [start + 1, start + 3, start + 5, start + 6]
    parent = engine.get("acme", "p")
    assert parent.message == "mine"
    assert parent.fraction == pytest.approx(0.6 / 4)
    assert parent.children == task_pb2.ChildCounts(total=2, running=2)
    await engine.stop()


async def test_expiry_of_a_child_drops_it_from_the_index_and_the_parent(family: Rig) -> None:
    await family.mutate("c", succeed)
    assert family.engine.get("acme", "p").fraction == 1.0
    family.clock.advance(10)

    expired = await Janitor(family.engine).expire_tasks()

    assert expired == 1
    assert family.engine.children("acme", "p") == []
    parent = family.engine.get("acme", "p")
    assert not parent.HasField("children")
    assert parent.fraction == 0.0
    await family.engine.stop()


async def test_server_made_parent_changes_neither_renew_its_lease_nor_hide_a_stall(
    family: Rig,
) -> None:
    engine = family.engine
    lease = engine.lease_of(("acme", "p"))
    janitor = Janitor(engine)
    for value in (0.2, 0.4, 0.6):
        family.clock.advance(30)
        await family.mutate("c", report(value))  # the child's agent reports; p's is silent
    assert engine.lease_of(("acme", "p")) == lease

    await janitor.check_liveness()
    parent = engine.get("acme", "p")
    assert parent.stalled
    assert not engine.get("acme", "c").stalled
    family.clock.advance(1)
    await family.mutate("c", report(0.7))
    parent = engine.get("acme", "p")
    assert parent.stalled, "a change made by the server does not revive the parent"
    assert parent.fraction == pytest.approx(0.7)
    await janitor.check_liveness()
    assert engine.get("acme", "p").stalled
    await engine.stop()


async def test_the_chain_stops_at_the_depth_bound(family: Rig) -> None:
    parent = "p"
    for level in range(rollup.MAX_DEPTH + 2):
        await family.mutate(f"n{level}", child_of(f"n{level}", parent))
        parent = f"n{level}"
    start = family.engine.head("acme")

    await family.mutate(parent, report(0.5))

    assert family.engine.head("acme") == start + 1 + rollup.MAX_DEPTH
    assert family.engine.get("acme", "n1").fraction == pytest.approx(0.5)
    assert family.engine.get("acme", "n0").fraction == 0.0
    await family.engine.stop()


async def test_a_restart_on_sqlite_rebuilds_the_children_index(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    database = tmp_path / "rollup.db"
    rig = Rig(SqliteStore(database), settings)
    await rig.engine.start()
    await rig.mutate("p", child_of("p"))
    for name in ("a", "b"):
        await rig.mutate(name, child_of(name, "p"))
    await rig.engine.stop()

    restarted = Rig(SqliteStore(database), settings)
    await restarted.engine.start()
    try:
        assert {t.id for t in restarted.engine.children("acme", "p")} == {"a", "b"}
        await restarted.mutate("a", report(1.0), actor=Actor.AGENT)
        assert restarted.engine.get("acme", "p").fraction == pytest.approx(0.5)
    finally:
        await restarted.engine.stop()


def test_tasks_from_before_weights_count_one_and_a_resting_child_keeps_its_fraction() -> None:
    legacy = task_pb2.Task(state=task_pb2.TASK_STATE_FAILED, fraction=0.5)  # weight 0
    heavy = task_pb2.Task(state=task_pb2.TASK_STATE_SUCCEEDED, fraction=1.0, weight=2)
    parent = task_pb2.Task(state=task_pb2.TASK_STATE_RUNNING)

    assert rollup.derive(parent, [legacy, heavy])
    assert parent.fraction == pytest.approx((0.5 + 2) / 3)
    assert parent.children == task_pb2.ChildCounts(total=2, succeeded=1, failed=1)
    assert not rollup.derive(parent, [legacy, heavy]), "nothing changed the second time"


async def test_a_parent_at_rest_whose_children_change_is_expired_once(family: Rig) -> None:
    engine = family.engine
    await family.mutate("p", succeed)
    for n in range(3):  # each child born or ended moves the resting parent's counts
        await family.mutate(f"late{n}", child_of(f"late{n}", "p"))
        await family.mutate(f"late{n}", succeed)
    assert engine.get("acme", "p").children.succeeded == 3

    family.clock.advance(60)
    expired = engine.take_finished(family.clock(), limit=100)

    assert expired.count(("acme", "p")) == 1
    await engine.stop()
