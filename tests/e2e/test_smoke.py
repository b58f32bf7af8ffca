"""The shortest path through the service: create, report, finish, read back."""

from __future__ import annotations

from headway.client import HeadwayClient
from headway.v1 import task_pb2


async def test_create_report_succeed(client: HeadwayClient) -> None:
    created = await client.create_task("smoke", display_name="Smoke", steps=["a", "b"])
    assert created.state == task_pb2.TASK_STATE_PENDING
    assert created.revision == created.create_revision == 1

    running = await client.update_step("smoke", "a", progress=task_pb2.Progress(fraction=0.5))
    assert running.state == task_pb2.TASK_STATE_RUNNING
    assert running.fraction == 0.25
    assert running.revision == 2

    done = await client.succeed_task("smoke")
    assert done.state == task_pb2.TASK_STATE_SUCCEEDED
    assert [s.state for s in done.steps] == [
        task_pb2.STEP_STATE_SUCCEEDED,
        task_pb2.STEP_STATE_SKIPPED,
    ]
    assert await client.get_task("smoke") == done
