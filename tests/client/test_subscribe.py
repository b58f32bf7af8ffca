"""The resumable subscription: typed events, and no gap or duplicate across breaks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from headway.client import (
    Created,
    Deleted,
    Event,
    HeadwayClient,
    LogLevel,
    LogsAppended,
    Reconnecting,
    Resync,
    ResyncReason,
    Snapshot,
    StepState,
    Synced,
    TaskEvent,
    TaskState,
    UnavailableError,
    Updated,
    subscribe,
    task_filter,
)
from headway.client.errors import HeadwayError, OutOfRangeError, ResourceExhaustedError
from headway.server.config import Settings
from headway.v1 import event_pb2, log_pb2, task_pb2
from tests.harness import ServerHarness

CHANGES = Created | Updated | Deleted | LogsAppended


@dataclass
class Watcher:
    """Consumes a resumable subscription in the background, keeping every event."""

    client: HeadwayClient
    options: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def start(self) -> Watcher:
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        async for event in subscribe(self.client, **self.options):
            self.events.append(event)
            self._arrived.set()

    async def wait_for(self, predicate: Callable[[list[Event]], bool], timeout: float = 10) -> None:
        async with asyncio.timeout(timeout):
            while not predicate(self.events):
                self._arrived.clear()
                await self._arrived.wait()

    async def wait_revision(self, revision: int) -> None:
        await self.wait_for(
            lambda events: any(
                isinstance(e, CHANGES | Synced) and e.revision >= revision for e in events
            )
        )

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    def change_revisions(self) -> list[int]:
        return [e.revision for e in self.events if isinstance(e, CHANGES)]


async def head_of(client: HeadwayClient) -> int:
    return (await client.list_tasks(page_size=1)).revision


async def test_events_are_typed_with_friendly_models(harness: ServerHarness) -> None:
    client = harness.client()
    await client.create_task("before", kind="k")
    watcher = Watcher(client, {"include_logs": True}).start()
    await watcher.wait_for(lambda events: any(isinstance(e, Synced) for e in events))
    await client.create_task("typed", display_name="Typed", steps=["s"], labels={"team": "a"})
    await client.update_step("typed", "s", progress=task_pb2.Progress(fraction=0.25))
    await client.append_logs("typed", [log_pb2.LogEntry(message="hi", level=LogLevel.ERROR)])
    await client.cancel_task("typed", force=True, requested_by="me")
    deleted_at = await client.delete_task("typed")
    await watcher.wait_revision(deleted_at)
    await watcher.stop()

    snapshot, synced, created, updated, logs, cancelled, deleted = watcher.events
    assert isinstance(snapshot, Snapshot)
    assert snapshot.task.id == "before"
    assert snapshot.task.state is TaskState.PENDING
    assert snapshot.task.start_time is None
    assert snapshot.task.error is None
    assert isinstance(synced, Synced)
    assert isinstance(created, Created)
    assert created.task.display_name == "Typed"
    assert created.task.labels == {"team": "a"}
    assert created.commit_time is not None
    assert created.task.create_time is not None
    assert created.task.create_time.tzinfo is not None
    assert isinstance(updated, Updated)
    step = updated.task.steps[0]
    assert step.state is StepState.RUNNING
    assert step.progress is not None
    assert step.progress.fraction == 0.25
    assert step.progress.describe() == "25%"
    assert updated.task.current_step == step
    assert isinstance(logs, LogsAppended)
    assert logs.entries[0].task_id == "typed"
    assert logs.entries[0].level is LogLevel.ERROR
    assert isinstance(cancelled, Updated)
    assert cancelled.task.state is TaskState.CANCELLED
    assert cancelled.task.at_rest
    assert cancelled.task.cancel_request is not None
    assert cancelled.task.cancel_request.requested_by == "me"
    assert isinstance(deleted, Deleted)
    assert deleted.raw.WhichOneof("kind") == "deleted"
    assert isinstance(deleted, TaskEvent)


async def test_resumes_across_a_server_restart_without_gaps_or_duplicates(
    harness: ServerHarness,
) -> None:
    client = harness.client()
    await client.create_task("r", steps=["s"], start=True)
    watcher = Watcher(client, {"include_logs": True}).start()
    await watcher.wait_for(lambda events: any(isinstance(e, Synced) for e in events))
    synced_at = await head_of(client)
    for n in range(1, 6):
        await client.update_step("r", "s", progress=task_pb2.Progress(fraction=n / 20))
    await harness.restart()
    client = harness.client()
    for n in range(6, 11):
        await client.update_step("r", "s", progress=task_pb2.Progress(fraction=n / 20))
    await client.append_logs("r", ["after the restart"])
    head = await head_of(client)
    await watcher.wait_revision(head)
    await watcher.stop()

    reconnects = [e for e in watcher.events if isinstance(e, Reconnecting)]
    assert reconnects, "the stream never broke"
    assert isinstance(reconnects[0].error, UnavailableError)
    # Every change after the snapshot, exactly once, in order.
    assert watcher.change_revisions() == list(range(synced_at + 1, head + 1))
    assert not any(isinstance(e, Resync) for e in watcher.events)


async def test_resumes_after_being_evicted_as_too_slow(
    make_settings: Callable[..., Settings],
) -> None:
    harness = ServerHarness(make_settings(subscriber_queue_events=2))
    await harness.start()
    try:
        client = harness.client()
        for n in range(8):
            await client.create_task(f"e{n}", steps=["s"], start=True)
        watcher = Watcher(client).start()
        await watcher.wait_for(lambda events: any(isinstance(e, Synced) for e in events))
        synced_at = await head_of(client)

        def evicted(events: Sequence[Event]) -> bool:
            return any(
                isinstance(e, Reconnecting)
                and isinstance(e.error, ResourceExhaustedError)
                and e.error.reason == "SUBSCRIBER_TOO_SLOW"
                for e in events
            )

        # Bursts of concurrent updates commit together: more than the queue holds.
        for burst in range(1, 20):
            await asyncio.gather(
                *(
                    client.update_step(
                        f"e{n}", "s", progress=task_pb2.Progress(fraction=burst / 20)
                    )
                    for n in range(8)
                )
            )
            if evicted(watcher.events):
                break
        head = await head_of(client)
        await watcher.wait_revision(head)
        await watcher.stop()
        assert evicted(watcher.events)
        assert watcher.change_revisions() == list(range(synced_at + 1, head + 1))
    finally:
        await harness.close()


async def test_compacted_history_is_surfaced_as_a_resync_then_a_snapshot(
    make_settings: Callable[..., Settings],
) -> None:
    harness = ServerHarness(make_settings(history_retention_events=5))
    await harness.start()
    try:
        client = harness.client()
        await client.create_task("c", steps=["s"], start=True)
        for n in range(1, 20):
            await client.update_step("c", "s", progress=task_pb2.Progress(fraction=n / 20))
        assert harness.running is not None
        await harness.running.janitor.compact()

        # A consumer that kept revision 3 as its cursor comes back too late.
        watcher = Watcher(client, {"start_revision": 3}).start()
        await watcher.wait_for(lambda events: any(isinstance(e, Synced) for e in events))
        await client.update_step("c", "s", progress=task_pb2.Progress(fraction=0.99))
        await watcher.wait_revision(await head_of(client))
        await watcher.stop()
        resync, snapshot, synced, updated = watcher.events
        assert isinstance(resync, Resync)
        assert resync.reason is ResyncReason.REVISION_COMPACTED
        assert resync.oldest_revision == harness.running.engine.compacted("default")
        assert isinstance(snapshot, Snapshot)
        assert isinstance(synced, Synced)
        assert isinstance(updated, Updated)
    finally:
        await harness.close()


async def test_errors_that_reconnecting_cannot_cure_are_raised(client: HeadwayClient) -> None:
    with pytest.raises(OutOfRangeError) as raised:
        async for _ in subscribe(client, start_revision=99):
            pass
    assert raised.value.reason == "REVISION_IN_FUTURE"
    with pytest.raises(HeadwayError) as invalid:
        async for _ in subscribe(client, task_filter(kinds=["bad kind!"])):
            pass
    assert invalid.value.field_violations


async def test_a_single_task_stream_ends_at_rest(client: HeadwayClient) -> None:
    await client.create_task("ends", start=True)
    seen: list[Event] = []

    async def follow() -> None:
        async for event in subscribe(client, task_filter(task_ids=["ends"]), end_at_rest=True):
            seen.append(event)
            if isinstance(event, Synced):
                await client.succeed_task("ends")

    await asyncio.wait_for(follow(), 10)
    assert isinstance(seen[-1], Updated)
    assert seen[-1].task.state is TaskState.SUCCEEDED


# -- the resume logic on its own, with a scripted stream ----------------------------


class ScriptedClient(HeadwayClient):
    """A client whose Subscribe calls play scripted events, then end or fail."""

    def __init__(self, script: list[tuple[list[event_pb2.Event], HeadwayError | None]]) -> None:
        super().__init__("127.0.0.1:1")
        self.script = script
        self.requests: list[int | None] = []

    async def subscribe(  # type: ignore[override]
        self, filter: object = None, *, start_revision: int | None = None, **options: object
    ) -> AsyncGenerator[event_pb2.Event, None]:
        self.requests.append(start_revision)
        events, error = self.script.pop(0)
        for event in events:
            yield event
        if error is not None:
            raise error


def snapshot(revision: int, task_id: str) -> event_pb2.Event:
    return event_pb2.Event(revision=revision, snapshot=task_pb2.Task(id=task_id, revision=revision))


def updated(revision: int, task_id: str) -> event_pb2.Event:
    return event_pb2.Event(revision=revision, updated=task_pb2.Task(id=task_id, revision=revision))


def synced(revision: int) -> event_pb2.Event:
    return event_pb2.Event(revision=revision, synced=event_pb2.Synced())


def heartbeat(revision: int) -> event_pb2.Event:
    return event_pb2.Event(revision=revision, heartbeat=event_pb2.Heartbeat())


async def play(client: ScriptedClient) -> list[Event]:
    received: list[Event] = []
    async for event in subscribe(client):
        received.append(event)
    await client.close()
    return received


async def test_resumes_from_the_last_change_or_heartbeat_and_drops_replays() -> None:
    down = UnavailableError("restart")
    client = ScriptedClient(
        [
            ([snapshot(2, "a"), synced(4), updated(5, "a")], down),
            ([heartbeat(9)], down),
            ([updated(9, "a"), updated(10, "a")], None),  # 9 is a replay: dropped
        ]
    )
    received = await play(client)
    assert client.requests == [None, 5, 9]
    kinds = [type(e).__name__ for e in received]
    assert kinds == [
        "Snapshot",
        "Synced",
        "Updated",
        "Reconnecting",
        "Heartbeat",
        "Reconnecting",
        "Updated",
    ]
    assert received[-1].revision == 10


async def test_a_snapshot_cut_short_starts_over_with_a_resync() -> None:
    down = UnavailableError("restart")
    client = ScriptedClient(
        [
            ([snapshot(2, "a")], down),
            ([snapshot(2, "a"), snapshot(3, "b"), synced(3)], None),
        ]
    )
    received = await play(client)
    assert client.requests == [None, None]
    assert [type(e).__name__ for e in received] == [
        "Snapshot",
        "Reconnecting",
        "Resync",
        "Snapshot",
        "Snapshot",
        "Synced",
    ]
    resync = received[2]
    assert isinstance(resync, Resync)
    assert resync.reason is ResyncReason.SNAPSHOT_INTERRUPTED


async def test_a_server_that_lost_history_is_resynced() -> None:
    client = ScriptedClient(
        [
            ([synced(7)], UnavailableError("restart")),
            ([], OutOfRangeError("behind", reason="REVISION_IN_FUTURE")),
            ([snapshot(3, "a"), synced(3)], None),
        ]
    )
    received = await play(client)
    assert client.requests == [None, 7, None]
    resync = next(e for e in received if isinstance(e, Resync))
    assert resync.reason is ResyncReason.REVISION_IN_FUTURE


async def test_reconnecting_gives_up_after_the_deadline() -> None:
    from headway.client import RetryPolicy

    client = ScriptedClient([([], UnavailableError("down")) for _ in range(100)])
    policy = RetryPolicy(initial_backoff=0.01, max_backoff=0.02, deadline=0.1)
    with pytest.raises(UnavailableError):
        async for _ in subscribe(client, retry=policy):
            pass
    await client.close()
