"""Fixtures for the integrations: a reporter pointed at the test server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from headway.client import HeadwayClient
from headway.contrib import Reporter
from headway.v1 import task_pb2
from tests.harness import ServerHarness


@pytest.fixture
async def reporter(harness: ServerHarness) -> AsyncIterator[Reporter]:
    """Reports to the test server; counts the server as away after half a second."""
    reporter = Reporter(harness.target, slow=0.5)
    try:
        yield reporter
    finally:
        await asyncio.to_thread(reporter.close, 5.0)


@pytest.fixture
def task_id() -> str:
    return f"job-{uuid.uuid4().hex[:12]}"


async def wait_for_task(
    client: HeadwayClient,
    task_id: str,
    condition: Callable[[task_pb2.Task], bool],
    timeout: float = 30.0,
) -> task_pb2.Task:
    """Poll GetTask until `condition` holds for the task (which may not exist yet)."""
    deadline = asyncio.get_running_loop().time() + timeout
    last: task_pb2.Task | None = None
    while asyncio.get_running_loop().time() < deadline:
        try:
            last = await client.get_task(task_id)
        except Exception:
            last = None
        if last is not None and condition(last):
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"task {task_id} never met the condition; last seen: {last}")


def at_rest(task: task_pb2.Task) -> bool:
    return task.state in {
        task_pb2.TASK_STATE_SUCCEEDED,
        task_pb2.TASK_STATE_FAILED,
        task_pb2.TASK_STATE_CANCELLED,
    }
