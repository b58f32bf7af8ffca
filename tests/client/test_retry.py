"""Safe retries: transient failures are retried with one request_id, and never double-apply."""

from __future__ import annotations

import asyncio
import logging
import random
import re
import socket
import time
from dataclasses import replace

import grpc
import pytest

from headway.client import (
    HeadwayClient,
    InvalidArgumentError,
    NotFoundError,
    RetryPolicy,
    StepState,
    TaskState,
    Tracker,
    UnavailableError,
)
from headway.client.retry import Backoff, call_with_retry
from headway.client.tracker import AGENT_RETRY
from tests.client.conftest import CallCounter, InterceptedHarness, LoseFirstAnswer
from tests.harness import ServerHarness
from tests.streams import Collector, changes, validate_ordered, validate_unique

FAST_RETRY = replace(AGENT_RETRY, initial_backoff=0.01, max_backoff=0.05, deadline=10.0)


async def test_retries_after_a_lost_answer_never_apply_twice(
    faulty: InterceptedHarness, lose_first_answer: LoseFirstAnswer, counter: CallCounter
) -> None:
    async with (
        Tracker(faulty.target, retry=FAST_RETRY, progress_rate=None) as tracker,
        tracker.task("retried", steps=["fetch"]) as task,
    ):
        async with task.step("fetch") as step:
            await step.progress(1, 2)
            await step.progress(2, 2)
            await step.log("fetched")
        async with task.step("found-later"):
            await task.add_metrics(tokens=10)
            await task.add_metrics(tokens=5)
            await task.iteration(1)
            await task.artifact("out.csv", "file:///tmp/out.csv")

    # Every mutation committed, lost its answer, and was retried: 2 calls each.
    mutations = [method for method, _ in lose_first_answer.lost]
    assert mutations == [
        "CreateTask",
        *["UpdateStep"] * 3,  # fetch: start, two progress reports
        "AppendLogs",
        "UpdateStep",  # fetch succeeded
        "AddSteps",  # found-later, discovered
        "UpdateStep",  # found-later started
        *["UpdateTask"] * 3,  # metrics twice, iteration
        "AddArtifacts",
        "UpdateStep",  # found-later succeeded
        "SucceedTask",
    ]
    assert all(counter.calls[method] == 2 * mutations.count(method) for method in set(mutations))
    # ...and each was applied exactly once: one change event per logical mutation.
    client = faulty.client()
    head = (await client.list_tasks(page_size=1)).revision
    history = Collector().start(client, start_revision=0, include_logs=True)
    events = await history.wait_revision(head)
    await history.stop()
    validate_ordered(events)
    validate_unique(events)
    assert len(changes(events)) == len(mutations)
    stored = await client.get_task("retried")
    assert stored.state == TaskState.SUCCEEDED
    assert [s.key for s in stored.steps] == ["fetch", "found-later"]  # no step added twice
    assert stored.metrics["tokens"] == 15  # not 25: no increment applied twice
    assert len(stored.artifacts) == 1
    assert len((await client.list_logs("retried")).entries) == 1
    assert task.task.revision == stored.revision


async def test_the_client_keeps_one_request_id_across_retries(
    faulty: InterceptedHarness, lose_first_answer: LoseFirstAnswer
) -> None:
    client = HeadwayClient(faulty.target, retry=FAST_RETRY)
    created = await client.create_task("same-id", request_id="my-request")
    assert created.id == "same-id"  # the retry got the first answer, not ALREADY_EXISTS
    assert lose_first_answer.lost == [("CreateTask", "my-request")]
    await client.close()


async def test_other_errors_are_raised_at_once_with_reason_and_fields(
    counted: InterceptedHarness, counter: CallCounter
) -> None:
    client = HeadwayClient(counted.target, retry=FAST_RETRY)
    await client.create_task("typed", steps=["a"])
    with pytest.raises(NotFoundError) as missing:
        await client.update_step("typed", "nope", state=StepState.RUNNING)
    assert missing.value.reason == "STEP_NOT_FOUND"
    assert counter.calls["UpdateStep"] == 1  # not retried
    with pytest.raises(InvalidArgumentError) as invalid:
        await client.create_task("not valid!")
    assert invalid.value.reason == "FIELD_VIOLATION"
    assert "task_id" in invalid.value.field_violations
    assert invalid.value.code == grpc.StatusCode.INVALID_ARGUMENT
    await client.close()


async def test_retrying_gives_up_at_the_overall_deadline() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = HeadwayClient(
        f"127.0.0.1:{port}",
        retry=RetryPolicy(initial_backoff=0.02, max_backoff=0.1, deadline=0.5),
    )
    started = time.monotonic()
    with pytest.raises(UnavailableError):
        await client.get_task("any")
    assert 0.3 < time.monotonic() - started < 3
    await client.close()


async def test_an_agent_rides_out_a_server_restart(harness: ServerHarness) -> None:
    async with (
        Tracker(harness.target, retry=FAST_RETRY, progress_rate=None) as tracker,
        tracker.task("restarted", steps=["work"]) as task,
        task.step("work") as step,
    ):
        await step.progress(1, 3)
        restart = asyncio.create_task(harness.restart())
        await step.progress(2, 3)  # may hit the restart: retried until it is back
        await restart
        await step.progress(3, 3)
    stored = await harness.client().get_task("restarted")
    assert stored.state == TaskState.SUCCEEDED
    assert stored.steps[0].progress.units.current == 3


async def test_call_with_retry_backs_off_with_jitter_until_the_deadline() -> None:
    now = 0.0
    waits: list[float] = []

    async def sleep(delay: float) -> None:
        nonlocal now
        waits.append(delay)
        now += delay

    attempts: list[float | None] = []

    async def always_unavailable(timeout: float | None) -> None:
        attempts.append(timeout)
        raise UnavailableError("down")

    policy = RetryPolicy(initial_backoff=1.0, max_backoff=4.0, multiplier=2.0, deadline=20.0)
    with pytest.raises(UnavailableError):
        await call_with_retry(
            always_unavailable, policy, timeout=5.0, sleep=sleep, clock=lambda: now
        )
    ceilings = [1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    assert len(waits) >= 5
    for wait, ceiling in zip(waits, ceilings, strict=False):
        assert ceiling / 2 <= wait <= ceiling
    assert sum(waits) < 20.0
    assert all(timeout is not None and timeout <= 5.0 for timeout in attempts)


async def test_call_with_retry_returns_the_first_success() -> None:
    failures = 2

    async def flaky(timeout: float | None) -> str:
        nonlocal failures
        if failures:
            failures -= 1
            raise UnavailableError("blip")
        return "ok"

    async def no_wait(delay: float) -> None:
        pass

    assert await call_with_retry(flaky, RetryPolicy(), timeout=1.0, sleep=no_wait) == "ok"


def test_backoff_resets_after_progress() -> None:
    backoff = Backoff(RetryPolicy(initial_backoff=1.0, max_backoff=8.0), random.Random(1))
    first = [backoff.next_delay() for _ in range(4)]
    assert first[-1] > 2.0
    backoff.reset()
    assert backoff.next_delay() <= 1.0


async def test_a_tracker_without_its_server_warns_while_it_retries(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    target = f"127.0.0.1:{port}"
    caplog.set_level(logging.WARNING, logger="headway.client")
    policy = RetryPolicy(initial_backoff=0.05, max_backoff=0.1, deadline=0.6)
    with pytest.raises(UnavailableError):
        async with (
            Tracker(target, retry=policy, progress_rate=None) as tracker,
            tracker.task("unreachable"),
        ):
            pass
    warnings = [
        record
        for record in caplog.records
        if record.levelno == logging.WARNING and record.name.startswith("headway.client")
    ]
    assert warnings, "no warning while retrying"
    messages = [record.getMessage() for record in warnings]
    assert all(
        re.fullmatch(
            rf"cannot reach {re.escape(target)} \(UNAVAILABLE\); "
            r"retrying for up to \d+\.\d s",
            message,
        )
        for message in messages
    ), messages
    # The first failed attempt is announced, not only the later ones.
    assert float(messages[0].split()[-2]) > 0.3
