"""The live view: tasks kept current from the stream, and waiting for a task to rest."""

from __future__ import annotations

import asyncio

import pytest

from headway.client import (
    HeadwayClient,
    LiveView,
    NotFoundError,
    TaskState,
    Tracker,
    task_filter,
)
from headway.client.events import Created, Deleted, Resync, ResyncReason
from headway.client.models import Task
from headway.v1 import event_pb2, task_pb2
from tests.harness import ServerHarness


async def test_the_view_follows_tasks_and_waits_until_one_rests(harness: ServerHarness) -> None:
    client = harness.client()
    await client.create_task("old", kind="job")
    async with LiveView(client, task_filter(kinds=["job"]), include_logs=True) as view:
        assert view.synced
        assert list(view.tasks) == ["old"]

        async def agent() -> None:
            async with (
                Tracker(harness.target) as tracker,
                tracker.task("new", kind="job", steps=["a"]) as task,
                task.step("a") as step,
            ):
                await step.progress(1, 2)
                await step.log("half way")
                await asyncio.sleep(0.05)

        running = asyncio.create_task(agent())
        await view.wait_until(lambda v: "new" in v.tasks, timeout=10)
        done = await view.wait_at_rest("new", timeout=10)
        await running
        assert done.state is TaskState.SUCCEEDED
        assert view.tasks["new"].state is TaskState.SUCCEEDED
        assert [entry.message for entry in view.logs["new"]] == ["half way"]
        assert view.revision == (await client.list_tasks(page_size=1)).revision

        await client.cancel_task("old", force=True)
        await client.delete_task("old")
        await view.wait_until(lambda v: "old" not in v.tasks, timeout=5)


async def test_waiting_for_a_task_that_is_not_there_fails_fast(client: HeadwayClient) -> None:
    async with LiveView(client) as view:
        with pytest.raises(NotFoundError):
            await view.wait_at_rest("ghost", timeout=5)


async def test_a_task_deleted_while_waited_for_still_reports_how_it_ended(
    client: HeadwayClient,
) -> None:
    await client.create_task("brief", start=True)
    async with LiveView(client) as view:
        waiting = asyncio.create_task(view.wait_at_rest("brief", timeout=5))
        await asyncio.sleep(0)
        # Two changes in a row: the waiter must not miss the one between them.
        await client.succeed_task("brief")
        await client.delete_task("brief")
        assert (await waiting).state is TaskState.SUCCEEDED


async def test_a_wait_times_out(client: HeadwayClient) -> None:
    await client.create_task("slow", start=True)
    async with LiveView(client) as view:
        with pytest.raises(TimeoutError):
            await view.wait_at_rest("slow", timeout=0.1)


async def test_apply_rebuilds_after_a_resync() -> None:
    client = HeadwayClient("127.0.0.1:1")
    view = LiveView(client)
    raw = event_pb2.Event(revision=1, created=task_pb2.Task(id="a", revision=1))
    view.apply(Created(1, Task.from_proto(raw.created), None, raw))
    assert list(view.tasks) == ["a"]
    view.apply(Resync(0, ResyncReason.SNAPSHOT_INTERRUPTED, 0, None))
    assert view.tasks == {}
    assert not view.synced
    gone = event_pb2.Event(revision=2, deleted=task_pb2.Task(id="a", revision=2))
    view.apply(Deleted(2, Task.from_proto(gone.deleted), None, gone))
    assert view.revision == 2
    await client.close()
