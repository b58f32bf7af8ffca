"""Heartbeats against a real server with short leases: a silent agent stays alive, a dead
one is marked stalled, a cancel request reaches an agent that reports nothing, and a
failing heartbeat never hurts the agent.

The server checks leases every 50 ms; tasks take a lease of 0.5 s, so the tracker
sends a heartbeat after about 0.17 s of silence.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import grpc
import pytest

from headway.client import (
    HeadwayClient,
    StepState,
    SyncTracker,
    TaskCancelled,
    TaskState,
    Tracker,
    task_filter,
)
from headway.server.config import Settings
from headway.v1 import event_pb2
from tests.client.conftest import CallCounter, FailHeartbeats, InterceptedHarness
from tests.streams import Collector, kind

LEASE = timedelta(milliseconds=500)


@pytest.fixture
def short_leases(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(
        lease_min=timedelta(milliseconds=100), liveness_interval=timedelta(milliseconds=50)
    )


@pytest.fixture
async def server(short_leases: Settings, counter: CallCounter) -> AsyncIterator[InterceptedHarness]:
    harness = InterceptedHarness(short_leases, [counter])
    await harness.start()
    try:
        yield harness
    finally:
        await harness.close()


def stalls(events: list[event_pb2.Event]) -> list[bool]:
    """The `stalled` flag of every change the watcher saw."""
    return [e.updated.stalled for e in events if kind(e) == "updated"]


def heartbeat_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("headway-heartbeat")]


async def test_heartbeats_keep_a_silent_agent_alive_and_stop_with_its_block(
    server: InterceptedHarness, counter: CallCounter
) -> None:
    watcher = Collector().start(server.client(), filter=task_filter(task_ids=["silent"]))
    async with Tracker(server.target) as tracker:
        async with tracker.task("silent", lease=LEASE) as task:
            assert task.task.lease_duration == LEASE
            await asyncio.sleep(1.0)  # a long call that reports nothing: two leases
            assert len(heartbeat_tasks()) == 1
        assert heartbeat_tasks() == []  # they stop with the block
        beats = counter.calls["Heartbeat"]
    assert beats >= 2
    assert task.state is TaskState.SUCCEEDED
    await watcher.wait_revision(task.task.revision)
    await watcher.stop()
    assert stalls(watcher.events) == [False]  # the success only: never stalled


async def test_a_dead_agent_stops_heartbeating_and_its_task_is_marked_stalled(
    server: InterceptedHarness,
) -> None:
    # A real death: the agent's process is killed inside its block, with no chance to
    # close it. Its heartbeats die with it, and the lease lapses.
    agent = (
        "import asyncio, sys\n"
        "from datetime import timedelta\n"
        "from headway.client import Tracker\n"
        "async def main():\n"
        "    async with Tracker(sys.argv[1]) as tracker, tracker.task(\n"
        "        'doomed', lease=timedelta(milliseconds=500)\n"
        "    ):\n"
        "        print('working', flush=True)\n"
        "        await asyncio.sleep(3600)\n"
        "asyncio.run(main())\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", agent, server.target, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    try:
        assert await asyncio.wait_for(process.stdout.readline(), 20) == b"working\n"
        client = server.client()
        watcher = Collector().start(client, filter=task_filter(task_ids=["doomed"]))
        await watcher.wait_for(lambda events: any(kind(e) == "synced" for e in events))
    finally:
        process.kill()
        await process.wait()
    await watcher.wait_for(lambda events: True in stalls(events))
    await watcher.stop()
    stored = await client.get_task("doomed")
    assert stored.state == TaskState.RUNNING
    assert stored.stalled
    assert stored.HasField("last_report_time")


async def test_a_cancel_request_reaches_a_silent_agent_through_a_heartbeat(
    server: InterceptedHarness, counter: CallCounter
) -> None:
    viewer = server.client()
    thinking = asyncio.Event()
    raised: list[TaskCancelled] = []
    calls_at_cancel: dict[str, int] = {}

    async def agent(tracker: Tracker) -> None:
        async with (
            tracker.task("quiet", steps=["think"], lease=LEASE) as task,
            task.step("think") as step,
        ):
            thinking.set()
            request = await task.wait_cancelled()  # while reporting nothing at all
            assert task.cancel_requested
            assert request.requested_by == "erin"
            assert request.deadline_time is not None
            try:
                await step.progress(1, 2)  # the next report raises, as after any answer
            except TaskCancelled as cancelled:
                raised.append(cancelled)
                raise

    async with Tracker(server.target) as tracker:
        running = asyncio.create_task(agent(tracker))
        await thinking.wait()
        await viewer.cancel_task(
            "quiet", reason="enough", requested_by="erin", deadline=timedelta(seconds=30)
        )
        calls_at_cancel.update(counter.calls)
        await asyncio.wait_for(running, 10)  # the block confirmed and swallowed it

    (cancelled,) = raised
    assert (cancelled.requested_by, cancelled.reason) == ("erin", "enough")
    after = {method: n - calls_at_cancel.get(method, 0) for method, n in counter.calls.items()}
    # Only heartbeats told the agent: it sent nothing else before confirming.
    assert {method for method, n in after.items() if n} == {"Heartbeat", "ConfirmCancel"}
    stored = await viewer.get_task("quiet")
    assert stored.state == TaskState.CANCELLED
    assert not stored.cancel_request.forced
    assert stored.steps[0].state == StepState.CANCELLED


async def test_failing_heartbeats_are_retried_and_logged_and_never_reach_the_agent(
    short_leases: Settings, counter: CallCounter, caplog: pytest.LogCaptureFixture
) -> None:
    # The first failure is transient (retried at once by the client); the next two are
    # not: each is logged, and the next heartbeat is tried a third of a lease later.
    failures = FailHeartbeats(
        grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.INTERNAL
    )
    harness = InterceptedHarness(short_leases, [counter, failures])
    await harness.start()
    try:
        async with Tracker(harness.target) as tracker, tracker.task("flaky", lease=LEASE) as task:
            await asyncio.wait_for(failures.recovered.wait(), 10)
            await task.log("still here")  # reports go on as if nothing happened
    finally:
        await harness.close()
    assert task.state is TaskState.SUCCEEDED
    assert counter.calls["Heartbeat"] >= 4  # failed, retried, failed, failed, got through
    warnings = [r for r in caplog.records if r.name == "headway.client.keepalive"]
    assert len(warnings) == 2
    assert all(r.levelno == logging.WARNING for r in warnings)
    assert "heartbeat of flaky failed (INTERNAL" in warnings[0].getMessage()


async def test_a_sync_agent_busy_in_its_own_thread_is_kept_alive(
    server: InterceptedHarness,
) -> None:
    client: HeadwayClient = server.client()
    watcher = Collector().start(client, filter=task_filter(task_ids=["crunch"]))
    done = threading.Event()

    def agent() -> None:
        with (
            SyncTracker(server.target) as tracker,
            tracker.task("crunch", steps=["compute"], lease=LEASE) as task,
            task.step("compute"),
        ):
            time.sleep(0.8)  # the thread computes; the loop thread sends heartbeats
        done.set()

    await asyncio.to_thread(agent)
    assert done.is_set()
    stored = await client.get_task("crunch")
    assert stored.state == TaskState.SUCCEEDED
    await watcher.wait_revision(stored.revision)
    await watcher.stop()
    assert True not in stalls(watcher.events)
