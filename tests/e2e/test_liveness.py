"""Leases, STALLED, lost agents and forced cancellation, on a clock the test controls."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

import grpc
import pytest

from headway.client import HeadwayClient
from headway.server.config import Settings
from headway.v1 import task_pb2, task_service_pb2
from tests.clock import FakeClock
from tests.harness import QUIET, ServerHarness
from tests.streams import Collector, kind

LEASE = timedelta(seconds=10)


@pytest.fixture
def clocked_settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(**QUIET, agent_lost_after=timedelta(minutes=5))


async def check(harness: ServerHarness) -> None:
    assert harness.running is not None
    await harness.running.janitor.check_liveness()


async def running_task(client: HeadwayClient, task_id: str = "job") -> task_pb2.Task:
    request = task_service_pb2.CreateTaskRequest(
        task_id=task_id, start=True, steps=[task_service_pb2.StepSpec(key="s")]
    )
    request.lease_duration.FromTimedelta(LEASE)
    return (await client.stub.CreateTask(request)).task


async def test_lease_is_set_at_creation_and_clamped(clocked_harness: ServerHarness) -> None:
    client = clocked_harness.client()
    task = await running_task(client)
    assert task.lease_duration.ToTimedelta() == LEASE
    assert not task.stalled
    default = await client.create_task("default-lease")
    assert default.lease_duration.ToTimedelta() == clocked_harness.settings.lease_default
    request = task_service_pb2.CreateTaskRequest(task_id="huge")
    request.lease_duration.FromTimedelta(timedelta(days=30))
    huge = (await client.stub.CreateTask(request)).task
    assert huge.lease_duration.ToTimedelta() == clocked_harness.settings.lease_max


async def test_silent_agent_is_stalled_and_its_next_report_clears_it(
    clocked_harness: ServerHarness, clock: FakeClock
) -> None:
    client = clocked_harness.client()
    created = await running_task(client)
    watcher = Collector().start(client, start_revision=created.revision)

    clock.advance(5)
    await check(clocked_harness)
    assert not (await client.get_task("job")).stalled  # within the lease

    clock.advance(6)
    await check(clocked_harness)
    stalled = await client.get_task("job")
    assert stalled.stalled
    assert stalled.state == task_pb2.TASK_STATE_RUNNING
    assert stalled.revision == created.revision + 1
    assert stalled.last_report_time == created.create_time
    await check(clocked_harness)
    assert (await client.get_task("job")).revision == stalled.revision  # flagged once

    report = await client.update_step("job", "s", progress=task_pb2.Progress(fraction=0.2))
    assert not report.stalled
    assert report.last_report_time.ToNanoseconds() == clock.now_ns

    events = await watcher.wait_revision(report.revision)
    await watcher.stop()
    assert [e.updated.stalled for e in events if kind(e) == "updated"] == [True, False]


async def test_heartbeat_renews_the_lease_without_a_change(
    clocked_harness: ServerHarness, clock: FakeClock
) -> None:
    client = clocked_harness.client()
    created = await running_task(client)
    for _ in range(3):
        clock.advance(8)
        beat = await client.stub.Heartbeat(task_service_pb2.HeartbeatRequest(task_id="job"))
        assert beat.revision == created.revision
        assert beat.lease_expire_time.ToNanoseconds() == clock.now_ns + int(10e9)
        await check(clocked_harness)
    task = await client.get_task("job")
    assert not task.stalled
    assert task.revision == created.revision
    assert (await client.list_tasks()).revision == created.revision


async def test_heartbeat_of_a_stalled_task_clears_it_with_a_revision(
    clocked_harness: ServerHarness, clock: FakeClock
) -> None:
    client = clocked_harness.client()
    created = await running_task(client)
    clock.advance(11)
    await check(clocked_harness)
    beat = await client.stub.Heartbeat(task_service_pb2.HeartbeatRequest(task_id="job"))
    assert beat.revision == created.revision + 2
    assert not (await client.get_task("job")).stalled


async def test_logs_renew_the_lease_and_recover_a_stalled_task(
    clocked_harness: ServerHarness, clock: FakeClock
) -> None:
    client = clocked_harness.client()
    await running_task(client)
    clock.advance(11)
    await check(clocked_harness)
    assert (await client.get_task("job")).stalled
    clock.advance(1)
    await client.append_logs("job", ["still here"])
    await check(clocked_harness)
    recovered = await client.get_task("job")
    assert not recovered.stalled
    assert recovered.last_report_time.ToNanoseconds() == clock.now_ns


async def test_lost_agent_fails_the_task(clocked_harness: ServerHarness, clock: FakeClock) -> None:
    client = clocked_harness.client()
    await running_task(client)
    clock.advance(11)
    await check(clocked_harness)
    clock.advance(4 * 60)
    await check(clocked_harness)
    assert (await client.get_task("job")).state == task_pb2.TASK_STATE_RUNNING
    clock.advance(2 * 60)
    await check(clocked_harness)
    lost = await client.get_task("job")
    assert lost.state == task_pb2.TASK_STATE_FAILED
    assert lost.error.code == "AGENT_LOST"
    assert "presumed lost" in lost.error.message
    assert lost.steps[0].state == task_pb2.STEP_STATE_CANCELLED
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await client.stub.Heartbeat(task_service_pb2.HeartbeatRequest(task_id="job"))
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_unconfirmed_cancel_is_forced_after_its_deadline(
    clocked_harness: ServerHarness, clock: FakeClock
) -> None:
    client = clocked_harness.client()
    await running_task(client)
    request = task_service_pb2.CancelTaskRequest(task_id="job", reason="enough")
    request.deadline.FromTimedelta(timedelta(seconds=30))
    asked = (await client.stub.CancelTask(request)).task
    assert asked.cancel_request.deadline_time.ToNanoseconds() == clock.now_ns + int(30e9)
    # The agent keeps reporting but never confirms.
    for _ in range(3):
        clock.advance(9)
        await client.update_step("job", "s", message="ignoring it")
        await check(clocked_harness)
    assert (await client.get_task("job")).state == task_pb2.TASK_STATE_RUNNING
    clock.advance(4)
    await check(clocked_harness)
    forced = await client.get_task("job")
    assert forced.state == task_pb2.TASK_STATE_CANCELLED
    assert forced.cancel_request.forced
    assert forced.cancel_request.reason == "enough"
    assert "did not confirm within 30s" in forced.message


async def test_lapsed_lease_is_handled_at_restart(
    clocked_harness: ServerHarness, clock: FakeClock
) -> None:
    client = clocked_harness.client()
    await running_task(client)
    await clocked_harness.stop()
    clock.advance(60)  # the lease ran out while the server was down
    await clocked_harness.start()
    client = clocked_harness.client()
    for _ in range(100):  # the start-up check runs at once, not one interval later
        if (await client.get_task("job")).stalled:
            break
        await asyncio.sleep(0.02)
    assert (await client.get_task("job")).stalled


async def test_agent_reports_renew_the_lease_across_a_restart(
    clocked_harness: ServerHarness, clock: FakeClock
) -> None:
    client = clocked_harness.client()
    await running_task(client)
    clock.advance(8)
    await client.stub.Heartbeat(task_service_pb2.HeartbeatRequest(task_id="job"))
    await clocked_harness.restart()
    clock.advance(8)  # 16 s after creation, 8 s after the heartbeat: still leased
    await check(clocked_harness)
    assert not (await clocked_harness.client().get_task("job")).stalled
