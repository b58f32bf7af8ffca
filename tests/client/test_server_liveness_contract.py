"""Liveness promises seen from a client: a task forced to rest is no longer stalled, and
when two server-made endings fall due together, the one due first wins."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from headway.client import LiveView, Task, TaskState, task_filter
from headway.server.config import Settings
from tests.client.history import check_liveness
from tests.clock import FakeClock
from tests.harness import QUIET, ServerHarness


@pytest.fixture
def clocked_settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(agent_lost_after=timedelta(seconds=60), **QUIET)


async def test_a_stalled_task_forced_to_rest_is_no_longer_stalled(
    clocked_harness: ServerHarness, clock: FakeClock
) -> None:
    client = clocked_harness.client()
    await client.create_task("job", start=True, lease_duration=timedelta(seconds=10))
    clock.advance(12)
    await check_liveness(clocked_harness)
    assert (await client.get_task("job")).stalled
    cancelled = Task.from_proto(await client.cancel_task("job", force=True))
    assert cancelled.state is TaskState.CANCELLED
    assert not cancelled.stalled


async def test_an_earlier_cancel_deadline_wins_over_a_later_agent_lost_limit(
    clocked_harness: ServerHarness, clock: FakeClock
) -> None:
    client = clocked_harness.client()
    await client.create_task("job", start=True, lease_duration=timedelta(seconds=10))
    await client.cancel_task("job", requested_by="ops", deadline=timedelta(seconds=20))
    clock.advance(12)
    await check_liveness(clocked_harness)  # t=12: stalled
    await clocked_harness.stop()
    clock.advance(63)  # down until t=75: the deadline (t=20), then agent-lost (t=70) pass
    await clocked_harness.start()
    async with LiveView(clocked_harness.client(), task_filter(task_ids=["job"])) as view:
        task = await view.wait_at_rest("job", timeout=5)  # the start-up check runs at once
    # "A cancel request that the agent does not confirm by its deadline_time ends the
    # task CANCELLED anyway, with cancel_request.forced set." (README, Liveness)
    assert task.state is TaskState.CANCELLED
    assert task.cancel_request is not None
    assert task.cancel_request.forced
