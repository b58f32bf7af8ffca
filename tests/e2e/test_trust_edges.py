"""The edges where trust broke: a task grown unreadable, leases lost across a restart.

Each test drives a real server over a real socket and a real SQLite file, and
fails on a server without the fix it names.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import grpc

from headway.client import HeadwayClient
from headway.v1 import log_pb2, task_pb2, task_service_pb2
from tests.clock import FakeClock
from tests.harness import ServerHarness
from tests.streams import Collector, kind

DETAIL = "x" * 16_000  # within the per-value limit of an error detail


def big_error(step: int) -> task_pb2.TaskError:
    """An error within every per-request limit: about 512 KB of details."""
    return task_pb2.TaskError(
        code="E", message=f"step {step} failed", details={f"k{i}": DETAIL for i in range(32)}
    )


async def test_a_task_cannot_grow_past_its_budget_and_stays_readable(
    harness: ServerHarness, client: HeadwayClient
) -> None:
    steps = [task_service_pb2.StepSpec(key=f"s{i}") for i in range(12)]
    await client.stub.CreateTask(
        task_service_pb2.CreateTaskRequest(task_id="big", start=True, steps=steps)
    )
    refused: grpc.aio.AioRpcError | None = None
    for i in range(12):
        before = (await client.stub.GetTask(task_service_pb2.GetTaskRequest(task_id="big"))).task
        try:
            await client.stub.UpdateStep(
                task_service_pb2.UpdateStepRequest(
                    task_id="big",
                    step_key=f"s{i}",
                    state=task_pb2.STEP_STATE_FAILED,
                    error=big_error(i),
                )
            )
        except grpc.aio.AioRpcError as error:
            refused = error
            break
    assert refused is not None, "a task of 6 MB was accepted"
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "TASK_TOO_LARGE" in str(refused.trailing_metadata())
    # The refused call changed nothing, and the task is as readable as before.
    after = (await client.stub.GetTask(task_service_pb2.GetTaskRequest(task_id="big"))).task
    assert after == before
    assert after.ByteSize() <= harness.settings.limits.max_task_bytes
    listed = await client.stub.ListTasks(task_service_pb2.ListTasksRequest())
    assert [t.id for t in listed.tasks] == ["big"]
    collector = Collector().start(client)
    await collector.wait_for(lambda events: any(kind(e) == "synced" for e in events))
    assert [e.snapshot.id for e in collector.events if kind(e) == "snapshot"] == ["big"]
    await collector.stop()


async def test_list_pages_are_bounded_in_bytes(client: HeadwayClient) -> None:
    for i in range(6):
        await client.stub.CreateTask(
            task_service_pb2.CreateTaskRequest(
                task_id=f"t{i}",
                steps=[task_service_pb2.StepSpec(key="s")],
                labels={f"l{j}": "v" * 250 for j in range(32)},
            )
        )
        await client.stub.FailTask(
            task_service_pb2.FailTaskRequest(task_id=f"t{i}", error=big_error(i))
        )
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await client.stub.ListTasks(
            task_service_pb2.ListTasksRequest(page_size=1000, page_token=token)
        )
        pages += 1
        # At most max_response_bytes (2 MiB) of tasks, plus the one that crossed it.
        assert page.ByteSize() <= 3 * 1024 * 1024
        seen += [t.id for t in page.tasks]
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"t{i}" for i in range(6)], "every task once, in order"
    assert pages >= 2, "3 MB of tasks do not fit one page"


async def test_a_lease_renewed_by_logs_survives_a_restart(
    clocked_harness: ServerHarness, clock: FakeClock
) -> None:
    clocked = clocked_harness
    client = clocked.client()
    request = task_service_pb2.CreateTaskRequest(task_id="logger", start=True)
    request.lease_duration.FromTimedelta(timedelta(seconds=60))
    await client.stub.CreateTask(request)
    clock.advance(50)
    await client.stub.AppendLogs(
        task_service_pb2.AppendLogsRequest(
            task_id="logger", entries=[log_pb2.LogEntry(message="still working")]
        )
    )  # the lease now runs to 110 s
    await clocked.restart()
    clock.advance(20)  # 70 s: past the creation lease, within the renewed one
    assert clocked.running is not None
    await clocked.running.janitor.check_liveness()
    task = (await client.stub.GetTask(task_service_pb2.GetTaskRequest(task_id="logger"))).task
    assert not task.stalled, "the lease renewed by AppendLogs was lost in the restart"
    clock.advance(41)  # 111 s: now it has lapsed
    await clocked.running.janitor.check_liveness()
    task = (await client.stub.GetTask(task_service_pb2.GetTaskRequest(task_id="logger"))).task
    assert task.stalled


async def test_an_unstorable_log_time_is_refused_and_its_batch_mates_commit(
    client: HeadwayClient,
) -> None:
    steps = [task_service_pb2.StepSpec(key=f"s{i}") for i in range(40)]
    await client.stub.CreateTask(
        task_service_pb2.CreateTaskRequest(task_id="busy", start=True, steps=steps)
    )
    await client.stub.CreateTask(task_service_pb2.CreateTaskRequest(task_id="poison", start=True))
    entry = log_pb2.LogEntry(message="from the far future")
    entry.time.FromJsonString("9999-12-31T23:59:59Z")
    updates = [
        client.stub.UpdateStep(
            task_service_pb2.UpdateStepRequest(
                task_id="busy", step_key=f"s{i}", state=task_pb2.STEP_STATE_RUNNING
            )
        )
        for i in range(40)
    ]
    poisoned = client.stub.AppendLogs(
        task_service_pb2.AppendLogsRequest(task_id="poison", entries=[entry])
    )
    results = await asyncio.gather(*updates[:20], poisoned, *updates[20:], return_exceptions=True)
    refused = results[20]
    assert isinstance(refused, grpc.aio.AioRpcError)
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "entries[0].time" in str(refused.trailing_metadata())
    failed = [r for i, r in enumerate(results) if i != 20 and isinstance(r, BaseException)]
    assert failed == [], "a neighbour of the bad request failed with it"
    task = (await client.stub.GetTask(task_service_pb2.GetTaskRequest(task_id="busy"))).task
    assert all(step.state == task_pb2.STEP_STATE_RUNNING for step in task.steps)
    logs = await client.stub.ListLogs(task_service_pb2.ListLogsRequest(task_id="poison"))
    assert list(logs.entries) == []
