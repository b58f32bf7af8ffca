"""The stream contract, one named test per guarantee.

ordered, unique, reliable, atomic, resumable (also across a restart),
bookmarked, snapshot-then-SYNCED; plus compaction, filters and ending at rest.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from headway.client import HeadwayClient, OutOfRangeError, UnavailableError, task_filter
from headway.server.config import Settings
from headway.v1 import event_pb2, log_pb2, task_pb2, task_service_pb2
from tests.harness import ServerHarness
from tests.streams import (
    Collector,
    changes,
    kind,
    rebuild,
    validate_ordered,
    validate_reliable,
    validate_unique,
)


async def store_revision(client: HeadwayClient) -> int:
    return (await client.list_tasks(page_size=1)).revision


async def busy_agents(client: HeadwayClient, agents: int, updates: int) -> None:
    """Several agents reporting at once, each on its own task."""

    async def agent(n: int) -> None:
        task_id = f"agent-{n}"
        await client.create_task(task_id, steps=["work"], kind="load")
        for i in range(1, updates + 1):
            await client.update_step(
                task_id, "work", progress=task_pb2.Progress(fraction=i / updates)
            )
            if i % 5 == 0:
                await client.append_logs(task_id, [f"update {i}"])
        await client.succeed_task(task_id)

    await asyncio.gather(*(agent(n) for n in range(agents)))


async def test_snapshot_then_synced(client: HeadwayClient) -> None:
    await client.create_task("a", steps=["s"])
    await client.create_task("b")
    await client.update_step("a", "s", progress=task_pb2.Progress(fraction=0.3))
    head = await store_revision(client)

    watcher = Collector().start(client)
    await watcher.wait_for(lambda events: any(kind(e) == "synced" for e in events))
    await client.create_task("c")
    events = await watcher.wait_revision(head + 1)
    await watcher.stop()

    kinds = [kind(e) for e in events]
    assert kinds[:3] == ["snapshot", "snapshot", "synced"]
    # Snapshot in revision order: b (rev 2) before a (rev 3, its step update).
    assert [e.snapshot.id for e in events[:2]] == ["b", "a"]
    assert [e.revision for e in events[:2]] == [2, 3]
    assert events[0].snapshot == await client.get_task("b")
    assert events[2].revision == head
    assert kinds[3] == "created"
    assert events[3].created.id == "c"
    assert events[3].revision == head + 1


async def test_ordered_unique_reliable_under_concurrent_writers(client: HeadwayClient) -> None:
    first = Collector().start(client, include_logs=True)
    second = Collector().start(client, include_logs=True)
    await first.wait_for(lambda events: any(kind(e) == "synced" for e in events))
    await second.wait_for(lambda events: any(kind(e) == "synced" for e in events))

    await busy_agents(client, agents=6, updates=30)
    head = await store_revision(client)

    for watcher in (first, second):
        events = await watcher.wait_revision(head)
        validate_ordered(events)
        validate_unique(events)
        # Every revision is a change of this tenant, and both watchers saw from 1.
        validate_reliable(events, range(1, head + 1))
        assert len(changes(events)) == head
    await first.stop()
    await second.stop()


async def test_atomic_one_mutation_one_event(client: HeadwayClient) -> None:
    await client.create_task("t", steps=["a", "b", "c"], start=True)
    await client.update_step("t", "a", progress=task_pb2.Progress(fraction=0.5))
    before = await store_revision(client)
    watcher = Collector().start(client, start_revision=before, include_logs=True)

    failed = await client.fail_task("t", message="boom", code="E")
    events = await watcher.wait_revision(failed.revision)
    assert [kind(e) for e in changes(events)] == ["updated"]
    update = events[0].updated
    # The failure, the closed steps and the new revision arrive together.
    assert update.state == task_pb2.TASK_STATE_FAILED
    assert [s.state for s in update.steps] == [task_pb2.STEP_STATE_CANCELLED] * 3
    assert update == await client.get_task("t")
    await watcher.stop()

    await client.create_task("u")
    watcher = Collector().start(client, start_revision=await store_revision(client),
                                include_logs=True)  # fmt: skip
    response = await client.append_logs("u", ["one", "two", "three"])
    events = await watcher.wait_revision(response.revision)
    assert len(changes(events)) == 1
    assert [e.message for e in events[0].logs_appended.entries] == ["one", "two", "three"]
    assert [e.index for e in events[0].logs_appended.entries] == [0, 1, 2]
    await watcher.stop()


async def test_resumable_from_last_revision(client: HeadwayClient) -> None:
    await client.create_task("r", steps=["s"], start=True)
    watcher = Collector().start(client)
    await watcher.wait_for(lambda events: any(kind(e) == "synced" for e in events))
    for i in range(1, 6):
        await client.update_step("r", "s", progress=task_pb2.Progress(fraction=i / 10))
    seen = await watcher.wait_revision(6)
    await watcher.stop()
    last = seen[-1].revision

    for i in range(6, 11):
        await client.update_step("r", "s", progress=task_pb2.Progress(fraction=i / 10))
    head = await store_revision(client)

    resumed = Collector().start(client, start_revision=last)
    rest = await resumed.wait_revision(head)
    await resumed.stop()
    assert [e.revision for e in changes(rest)] == list(range(last + 1, head + 1))
    assert "synced" not in [kind(e) for e in rest]
    combined = seen + rest
    validate_ordered(combined)
    validate_unique(combined)
    validate_reliable(combined, range(1, head + 1))
    assert rebuild(combined)["r"] == await client.get_task("r")


async def test_resumable_across_server_restart(harness: ServerHarness) -> None:
    client = harness.client()
    await client.create_task("x", steps=["s"], start=True)
    watcher = Collector().start(client)
    # The snapshot holds x at revision 1; the update after it arrives as a change.
    await watcher.wait_for(lambda events: any(kind(e) == "synced" for e in events))
    await client.update_step("x", "s", progress=task_pb2.Progress(fraction=0.5))
    seen = await watcher.wait_revision(2)

    await harness.restart()
    await watcher.wait_done()
    assert isinstance(watcher.error, UnavailableError)

    client = harness.client()
    await client.update_step("x", "s", progress=task_pb2.Progress(fraction=0.7))
    await client.succeed_task("x")
    resumed = Collector().start(client, start_revision=seen[-1].revision)
    rest = await resumed.wait_revision(4)
    await resumed.stop()
    assert [e.revision for e in changes(rest)] == [3, 4]
    validate_reliable(seen + rest, range(1, 5))
    assert rebuild(seen + rest)["x"] == await client.get_task("x")


async def test_bookmarked_heartbeats_carry_current_revision(client: HeadwayClient) -> None:
    await client.create_task("h")
    await client.create_task("other")
    head = await store_revision(client)
    watcher = Collector().start(
        client, filter=task_filter(task_ids=["h"]), heartbeat_interval=timedelta(milliseconds=100)
    )
    events = await watcher.wait_for(lambda es: sum(kind(e) == "heartbeat" for e in es) >= 3)
    beats = [e for e in events if kind(e) == "heartbeat"]
    # "other" was created last, outside the filter: the bookmark still moves past it.
    assert all(beat.revision == head for beat in beats)

    await client.create_task("unwatched")
    events = await watcher.wait_for(
        lambda es: any(kind(e) == "heartbeat" and e.revision == head + 1 for e in es)
    )
    assert not [e for e in changes(events) if e.revision > head]
    await watcher.stop()


async def test_heartbeat_interval_is_clamped(client: HeadwayClient, settings: Settings) -> None:
    watcher = Collector().start(client, heartbeat_interval=timedelta(microseconds=1))
    await asyncio.sleep(0.5)
    await watcher.stop()
    beats = sum(kind(e) == "heartbeat" for e in watcher.events)
    floor = settings.heartbeat_min.total_seconds()
    assert 1 <= beats <= 0.5 / floor + 2


async def test_a_negative_heartbeat_interval_is_refused_as_documented(
    client: HeadwayClient,
) -> None:
    """The proto says: clamped to the server's bounds, and must not be negative."""
    request = task_service_pb2.SubscribeRequest(heartbeat_interval=Duration(seconds=-5))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in client.stub.Subscribe(request):
            pass
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(raised.value)
    assert status is not None
    violations = [
        v.field
        for detail in status.details
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR)
        for v in _unpack_bad_request(detail).field_violations
    ]
    assert violations == ["heartbeat_interval"]


def _unpack_bad_request(detail: Any) -> error_details_pb2.BadRequest:
    bad_request = error_details_pb2.BadRequest()
    detail.Unpack(bad_request)
    return bad_request


@pytest.mark.parametrize(
    ("policy", "expect_resync"),
    [
        (task_service_pb2.COMPACTED_POLICY_FAIL, False),
        (task_service_pb2.COMPACTED_POLICY_RESYNC, True),
        (task_service_pb2.COMPACTED_POLICY_UNSPECIFIED, True),
    ],
)
async def test_compacted_history_resyncs_or_fails(
    make_settings: object, policy: int, expect_resync: bool
) -> None:
    harness = ServerHarness(make_settings(history_retention_events=5))  # type: ignore[operator]
    await harness.start()
    try:
        client = harness.client()
        await client.create_task("c", steps=["s"], start=True)
        for i in range(1, 20):
            await client.update_step("c", "s", progress=task_pb2.Progress(fraction=i / 20))
        assert harness.running is not None
        await harness.running.janitor.compact()
        oldest = harness.running.engine.compacted("default")
        assert oldest == 15

        watcher = Collector().start(client, start_revision=3, on_compacted=policy)
        if not expect_resync:
            await watcher.wait_done()
            assert isinstance(watcher.error, OutOfRangeError)
            assert watcher.error.reason == "REVISION_COMPACTED"
            assert watcher.error.metadata["oldest_revision"] == str(oldest)
            return
        events = await watcher.wait_for(lambda es: any(kind(e) == "synced" for e in es))
        await watcher.stop()
        assert kind(events[0]) == "resync"
        assert events[0].resync.reason == event_pb2.RESYNC_REASON_REVISION_COMPACTED
        assert events[0].resync.oldest_revision == oldest
        assert [kind(e) for e in events[1:]] == ["snapshot", "synced"]
        assert events[1].snapshot == await client.get_task("c")

        # Resuming at the oldest retained revision still works without a resync.
        watcher = Collector().start(client, start_revision=oldest)
        events = await watcher.wait_revision(20)
        await watcher.stop()
        assert [e.revision for e in changes(events)] == list(range(oldest + 1, 21))
    finally:
        await harness.close()


async def test_start_revision_in_the_future_is_out_of_range(client: HeadwayClient) -> None:
    await client.create_task("f")
    watcher = Collector().start(client, start_revision=99)
    await watcher.wait_done()
    assert isinstance(watcher.error, OutOfRangeError)
    assert watcher.error.reason == "REVISION_IN_FUTURE"


async def test_single_task_stream_ends_at_rest(client: HeadwayClient) -> None:
    await client.create_task("e", steps=["s"])
    watcher = Collector().start(client, filter=task_filter(task_ids=["e"]), end_at_rest=True)
    await watcher.wait_for(lambda es: any(kind(e) == "synced" for e in es))
    await client.update_step("e", "s", state=task_pb2.STEP_STATE_RUNNING)
    await client.succeed_task("e")
    await watcher.wait_done()
    assert watcher.error is None
    assert watcher.events[-1].updated.state == task_pb2.TASK_STATE_SUCCEEDED

    # Already at rest when subscribing: snapshot, synced, end.
    again = Collector().start(client, filter=task_filter(task_ids=["e"]), end_at_rest=True)
    await again.wait_done()
    assert [kind(e) for e in again.events] == ["snapshot", "synced"]
    # From a revision: the history up to the resting change, then the end.
    replay = Collector().start(
        client, filter=task_filter(task_ids=["e"]), end_at_rest=True, start_revision=0
    )
    await replay.wait_done()
    assert [kind(e) for e in replay.events] == ["created", "updated", "updated"]


async def test_task_leaving_a_state_filter_is_sent_once_more(client: HeadwayClient) -> None:
    await client.create_task("l", start=True)
    watcher = Collector().start(client, filter=task_filter(states=[task_pb2.TASK_STATE_RUNNING]))
    await watcher.wait_for(lambda es: any(kind(e) == "synced" for e in es))
    done = await client.succeed_task("l")
    await client.create_task("pending-one")
    events = await watcher.wait_revision(done.revision)
    assert events[-1].updated.state == task_pb2.TASK_STATE_SUCCEEDED
    assert rebuild(events)["l"].state == task_pb2.TASK_STATE_SUCCEEDED
    await watcher.stop()
    assert all(e.created.id != "pending-one" for e in watcher.events)


async def test_logs_only_when_asked(client: HeadwayClient) -> None:
    await client.create_task("g")
    with_logs = Collector().start(client, include_logs=True, start_revision=1)
    without = Collector().start(client, start_revision=1, heartbeat_interval=timedelta(seconds=1))
    entry = log_pb2.LogEntry(level=log_pb2.LOG_LEVEL_WARNING, message="hot", fields={"k": "v"})
    response = await client.append_logs("g", [entry])
    events = await with_logs.wait_revision(response.revision)
    logged = events[-1].logs_appended
    assert logged.task_id == "g"
    assert logged.entries[0].message == "hot"
    assert logged.entries[0].fields["k"] == "v"
    await without.wait_revision(response.revision)
    assert not [e for e in without.events if kind(e) == "logs_appended"]
    await with_logs.stop()
    await without.stop()


async def test_shutdown_ends_streams_with_unavailable(harness: ServerHarness) -> None:
    client = harness.client()
    watcher = Collector().start(client)
    await watcher.wait_for(lambda es: any(kind(e) == "synced" for e in es))
    await harness.stop()
    await watcher.wait_done()
    assert isinstance(watcher.error, UnavailableError)
    assert watcher.error.reason == "SHUTTING_DOWN"
