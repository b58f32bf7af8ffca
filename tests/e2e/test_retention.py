"""Retention and compaction: finished tasks expire, history shrinks, final snapshots outlive it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from headway.client import NotFoundError
from headway.server.config import Settings
from headway.v1 import task_pb2
from tests.clock import FakeClock
from tests.harness import QUIET, ServerHarness, StartClocked
from tests.streams import Collector, changes, kind


@pytest.fixture
def clocked_settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(
        **QUIET,
        task_retention=timedelta(hours=1),
        history_retention=timedelta(hours=2),
        history_retention_events=1000,
        janitor_batch=2,
    )


async def test_tasks_at_rest_expire_after_their_retention(
    clocked_harness: ServerHarness, clock: FakeClock
) -> None:
    assert clocked_harness.running is not None
    client = clocked_harness.client()
    for n in range(5):
        await client.create_task(f"old-{n}", start=True)
        await client.succeed_task(f"old-{n}")
    await client.create_task("still-running", start=True)
    clock.advance(40 * 60)
    await client.create_task("recent", start=True)
    await client.fail_task("recent", message="no")
    head = (await client.list_tasks()).revision
    watcher = Collector().start(client, start_revision=head)

    clock.advance(30 * 60)  # the first five finished 70 minutes ago, "recent" 30
    deleted = await clocked_harness.running.janitor.expire_tasks()
    assert deleted == 5  # in batches of two: bounded steps, all of them in the end

    events = await watcher.wait_revision(head + 5)
    await watcher.stop()
    assert sorted(e.deleted.id for e in changes(events)) == [f"old-{n}" for n in range(5)]
    assert [t.id for t in await client.list_all_tasks()] == ["still-running", "recent"]
    with pytest.raises(NotFoundError):
        await client.get_task("old-0")
    assert await clocked_harness.running.janitor.expire_tasks() == 0


async def test_final_snapshot_outlives_compacted_history(
    make_settings: Callable[..., Settings], make_clocked: StartClocked
) -> None:
    harness = await make_clocked(
        make_settings(history_retention_events=5, compaction_interval=timedelta(hours=1))
    )
    client = harness.client()
    await client.create_task("finished", steps=["s"], start=True)
    final = await client.fail_task("finished", message="broke", code="E42")
    await client.create_task("busy", steps=["s"], start=True)
    for i in range(1, 16):
        await client.update_step("busy", "s", progress=task_pb2.Progress(fraction=i / 20))
    assert harness.running is not None
    await harness.running.janitor.compact()
    assert harness.running.engine.compacted("default") == 13  # 18 changes, the newest 5 kept

    # A late watcher still learns the outcome of the finished task.
    watcher = Collector().start(client)
    events = await watcher.wait_for(lambda es: any(kind(e) == "synced" for e in es))
    await watcher.stop()
    snapshot = {e.snapshot.id: e.snapshot for e in events if kind(e) == "snapshot"}
    assert snapshot["finished"] == final
    assert snapshot["finished"].error.code == "E42"

    # And a restart keeps both the compaction mark and the final state.
    await harness.restart()
    assert harness.running.engine.compacted("default") == 13
    assert await harness.client().get_task("finished") == final


async def test_history_is_compacted_by_age(
    clocked_harness: ServerHarness, clock: FakeClock
) -> None:
    assert clocked_harness.running is not None
    client = clocked_harness.client()
    await client.create_task("a", start=True)
    await client.update_task("a", message="early")
    early = (await client.list_tasks()).revision
    clock.advance(3 * 3600)
    await client.update_task("a", message="late")
    await clocked_harness.running.janitor.compact()
    assert clocked_harness.running.engine.compacted("default") == early

    resumed = Collector().start(client, start_revision=early)
    events = await resumed.wait_revision(early + 1)
    await resumed.stop()
    assert [e.updated.message for e in changes(events)] == ["late"]


async def test_compaction_never_passes_a_catching_up_subscriber(
    make_settings: Callable[..., Settings], make_clocked: StartClocked
) -> None:
    harness = await make_clocked(make_settings(history_retention_events=1))
    client = harness.client()
    await client.create_task("t", start=True)
    for i in range(10):
        await client.update_task("t", message=f"m{i}")
    assert harness.running is not None
    engine = harness.running.engine
    pin = engine.pin("default", 3)  # what a subscriber replaying from revision 3 holds
    await harness.running.janitor.compact()
    assert engine.compacted("default") == 3
    engine.unpin(pin)
    await harness.running.janitor.compact()
    assert engine.compacted("default") == 10
