"""Helpers for a server on a hand-moved clock (the `clocked_harness` fixture), and the past
runs that give its ETAs a history.

With the server's clock under the test's control, estimates are exact numbers:
two earlier runs whose steps took 40 s and 30 s make the next run's ETA 70 s.
"""

from __future__ import annotations

from headway.client import HeadwayClient
from headway.v1 import task_pb2
from tests.clock import FakeClock
from tests.harness import ServerHarness


async def check_liveness(harness: ServerHarness) -> None:
    """Run the server's lease and cancel-deadline checks now, at the clock's time."""
    assert harness.running is not None
    await harness.running.janitor.check_liveness()


async def run_once(
    client: HeadwayClient, clock: FakeClock, task_id: str, kind: str, durations: dict[str, float]
) -> None:
    """A successful run of `kind` whose steps take the given seconds on the clock."""
    await client.create_task(task_id, kind=kind, steps=list(durations), start=True)
    for key, seconds in durations.items():
        await client.update_step(task_id, key, state=task_pb2.STEP_STATE_RUNNING)
        clock.advance(seconds)
        await client.update_step(task_id, key, state=task_pb2.STEP_STATE_SUCCEEDED)
    await client.succeed_task(task_id)
