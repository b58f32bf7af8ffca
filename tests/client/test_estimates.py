"""ETAs, leases, stalls and cancel deadlines as the client reads them, on a server clock the
test moves: every number is exact."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp

from headway.client import EstimateBasis, HeadwayClient, Task, TaskState
from tests.client.history import check_liveness, run_once
from tests.clock import FakeClock
from tests.harness import ServerHarness


def now(clock: FakeClock) -> datetime:
    """The server's time, truncated to microseconds as the read models' datetimes are."""
    stamp = Timestamp()
    stamp.FromNanoseconds(clock.now_ns)
    return stamp.ToDatetime(tzinfo=UTC)


async def test_an_eta_from_history_reads_as_an_estimate(
    clocked_harness: ServerHarness, clock: FakeClock
) -> None:
    client = clocked_harness.client()
    for n in range(2):
        await run_once(client, clock, f"past-{n}", "report", {"fetch": 40, "write": 30})
    task = Task.from_proto(
        await client.create_task("now", kind="report", steps=["fetch", "write"], start=True)
    )
    assert task.eta is not None
    assert task.eta.basis is EstimateBasis.HISTORY
    assert task.eta.remaining == timedelta(seconds=70)
    assert task.eta.compute_time == now(clock)
    assert task.eta.finish_time == now(clock) + timedelta(seconds=70)
    assert task.eta.time_left(now(clock)) == timedelta(seconds=70)
    assert [step.eta.remaining for step in task.steps if step.eta] == [
        timedelta(seconds=40),
        timedelta(seconds=30),
    ]
    unknown = Task.from_proto(await client.create_task("new", kind="never-seen", start=True))
    assert unknown.eta is None  # no evidence: no estimate, rather than a made-up one
    done = Task.from_proto(await client.succeed_task("now"))
    assert done.eta is None
    assert all(step.eta is None for step in done.steps)


async def test_lease_stall_heartbeat_and_cancel_deadline(
    clocked_harness: ServerHarness, clock: FakeClock
) -> None:
    client: HeadwayClient = clocked_harness.client()
    created = Task.from_proto(
        await client.create_task("job", start=True, lease_duration=timedelta(seconds=10))
    )
    assert created.lease_duration == timedelta(seconds=10)
    assert not created.stalled
    assert created.last_report_time == now(clock)

    clock.advance(12)
    await check_liveness(clocked_harness)
    stalled = Task.from_proto(await client.get_task("job"))
    assert stalled.stalled
    assert stalled.state is TaskState.RUNNING
    assert stalled.last_report_time == created.last_report_time
    assert stalled.silence(now(clock)) == timedelta(seconds=12)

    asked = Task.from_proto(
        await client.cancel_task("job", requested_by="ops", deadline=timedelta(seconds=30))
    )
    assert asked.cancel_request is not None
    assert asked.cancel_request.deadline_time == now(clock) + timedelta(seconds=30)
    assert not asked.cancel_request.forced

    renewal = await client.heartbeat("job")
    assert renewal.lease_expire_time == now(clock) + timedelta(seconds=10)
    assert renewal.cancel_request is not None
    assert renewal.cancel_request.requested_by == "ops"
    assert renewal.revision == asked.revision + 1  # it cleared `stalled`: a change
    assert not (await client.get_task("job")).stalled

    clock.advance(31)
    await check_liveness(clocked_harness)
    forced = Task.from_proto(await client.get_task("job"))
    assert forced.state is TaskState.CANCELLED
    assert forced.cancel_request is not None
    assert forced.cancel_request.forced
