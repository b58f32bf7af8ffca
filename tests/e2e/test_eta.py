"""ETAs from rate, from history, from the agent, combined, and unknown: on a controlled clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from headway.client import HeadwayClient
from headway.server.config import Settings
from headway.v1 import task_pb2, task_service_pb2
from tests.clock import FakeClock
from tests.harness import QUIET, ServerHarness

RUNNING = task_pb2.STEP_STATE_RUNNING
DONE = task_pb2.STEP_STATE_SUCCEEDED


@pytest.fixture
def clocked_settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(**QUIET, lease_default=timedelta(hours=1))


def remaining(estimate: task_pb2.Estimate, clock: FakeClock) -> float:
    """Seconds from now to the estimated finish."""
    return (estimate.finish_time.ToNanoseconds() - clock.now_ns) / 1e9


def fraction(value: float) -> task_pb2.Progress:
    return task_pb2.Progress(fraction=value)


async def run_once(
    client: HeadwayClient, clock: FakeClock, task_id: str, durations: dict[str, float]
) -> None:
    """A successful run of kind "report" whose steps take the given seconds."""
    await client.create_task(task_id, kind="report", steps=list(durations), start=True)
    for key, seconds in durations.items():
        await client.update_step(task_id, key, state=RUNNING)
        clock.advance(seconds)
        await client.update_step(task_id, key, state=DONE)
    await client.succeed_task(task_id)


async def test_no_evidence_means_no_eta(clocked_harness: ServerHarness, clock: FakeClock) -> None:
    client = clocked_harness.client()
    task = await client.create_task("fresh", kind="new-kind", steps=["a"], start=True)
    clock.advance(5)
    task = await client.update_step("fresh", "a", state=RUNNING)
    assert task.eta.basis == task_pb2.ESTIMATE_BASIS_UNSPECIFIED
    assert not task.eta.HasField("finish_time")
    assert not task.steps[0].eta.HasField("finish_time")


async def test_eta_from_the_observed_rate(clocked_harness: ServerHarness, clock: FakeClock) -> None:
    client = clocked_harness.client()
    await client.create_task("r", steps=["a"], start=True)
    for i in range(1, 4):
        clock.advance(10)
        task = await client.update_step("r", "a", progress=fraction(i / 10))
    assert task.steps[0].eta.basis == task_pb2.ESTIMATE_BASIS_RATE
    assert task.eta.basis == task_pb2.ESTIMATE_BASIS_RATE
    assert remaining(task.eta, clock) == pytest.approx(70, abs=0.01)
    assert task.steps[0].eta.rate == pytest.approx(0.01)
    assert task.eta.remaining.ToTimedelta().total_seconds() == pytest.approx(70, abs=0.01)


async def test_a_pause_moves_the_rate_eta_only_by_its_share(
    clocked_harness: ServerHarness, clock: FakeClock
) -> None:
    client = clocked_harness.client()
    await client.create_task("p", steps=["a"], start=True)
    for i in range(1, 7):
        clock.advance(10)
        await client.update_step("p", "a", progress=fraction(i / 20))
    steady = 0.005  # fraction per second before the pause
    clock.advance(30)  # an interval three times longer than usual
    task = await client.update_step("p", "a", progress=fraction(7 / 20))
    last_interval_alone = 0.05 / 30
    # The estimate slows down, but moves less than halfway to what the pause alone says.
    assert (steady + last_interval_alone) / 2 < task.steps[0].eta.rate < steady


async def test_eta_from_the_agents_expected_duration(
    clocked_harness: ServerHarness, clock: FakeClock
) -> None:
    client = clocked_harness.client()
    spec = task_service_pb2.StepSpec(key="a")
    spec.expected_duration.FromTimedelta(timedelta(seconds=100))
    await client.create_task("x", steps=[spec], start=True)
    await client.update_step("x", "a", state=RUNNING)
    clock.advance(40)
    task = await client.update_step("x", "a", message="working")
    assert task.eta.basis == task_pb2.ESTIMATE_BASIS_AGENT
    assert remaining(task.eta, clock) == pytest.approx(60, abs=0.01)


async def test_eta_from_history_then_combined_with_the_rate(
    clocked_harness: ServerHarness, clock: FakeClock
) -> None:
    client = clocked_harness.client()
    for n in range(3):
        await run_once(client, clock, f"past-{n}", {"fetch": 100, "write": 50})

    await client.create_task("now", kind="report", steps=["fetch", "write"], start=True)
    task = await client.update_step("now", "fetch", state=RUNNING)
    assert task.eta.basis == task_pb2.ESTIMATE_BASIS_HISTORY
    assert remaining(task.eta, clock) == pytest.approx(150, abs=0.01)
    assert remaining(task.steps[1].eta, clock) == pytest.approx(50, abs=0.01)

    clock.advance(25)
    task = await client.update_step("now", "fetch", progress=fraction(0.25))
    assert task.eta.basis == task_pb2.ESTIMATE_BASIS_HISTORY
    assert remaining(task.eta, clock) == pytest.approx(125, abs=0.01)

    clock.advance(25)
    task = await client.update_step("now", "fetch", progress=fraction(0.5))
    assert task.steps[0].eta.basis == task_pb2.ESTIMATE_BASIS_COMBINED
    assert task.eta.basis == task_pb2.ESTIMATE_BASIS_COMBINED
    assert remaining(task.eta, clock) == pytest.approx(100, abs=0.01)
    assert 0 < task.eta.confidence <= 1


async def test_history_spread_gives_a_range_and_survives_restart(
    clocked_harness: ServerHarness, clock: FakeClock
) -> None:
    client = clocked_harness.client()
    for n, seconds in enumerate([80, 100, 120, 90, 110]):
        await run_once(client, clock, f"past-{n}", {"only": seconds})
    await clocked_harness.restart()
    client = clocked_harness.client()
    await client.create_task("after", kind="report", steps=["only"], start=True)
    task = await client.update_step("after", "only", state=RUNNING)
    assert task.eta.basis == task_pb2.ESTIMATE_BASIS_HISTORY
    assert remaining(task.eta, clock) == pytest.approx(100, abs=0.01)
    earliest = (task.eta.earliest_finish_time.ToNanoseconds() - clock.now_ns) / 1e9
    latest = (task.eta.latest_finish_time.ToNanoseconds() - clock.now_ns) / 1e9
    assert earliest == pytest.approx(90, abs=0.01)
    assert latest == pytest.approx(110, abs=0.01)


async def test_task_without_steps_uses_task_level_progress(
    clocked_harness: ServerHarness, clock: FakeClock
) -> None:
    client = clocked_harness.client()
    await client.create_task("flat", start=True)
    for i in range(1, 4):
        clock.advance(20)
        task = await client.update_task("flat", progress=fraction(i / 10))
    assert task.eta.basis == task_pb2.ESTIMATE_BASIS_RATE
    assert remaining(task.eta, clock) == pytest.approx(140, abs=0.01)


async def test_a_task_at_rest_carries_no_eta(
    clocked_harness: ServerHarness, clock: FakeClock
) -> None:
    client = clocked_harness.client()
    await client.create_task("done", steps=["a"], start=True)
    for i in range(1, 4):
        clock.advance(10)
        task = await client.update_step("done", "a", progress=fraction(i / 10))
    assert task.eta.HasField("finish_time")
    finished = await client.succeed_task("done")
    assert not finished.HasField("eta")
    assert not finished.steps[0].HasField("eta")
