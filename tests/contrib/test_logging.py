"""headway.contrib.logging against a real server: records logged in a task reach its log."""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Iterator

import pytest

from headway.client import HeadwayClient, SyncTracker
from headway.contrib import Reporter
from headway.contrib.logging import HeadwayHandler
from headway.contrib.tqdm import tqdm
from headway.v1 import log_pb2, task_pb2
from tests.contrib.conftest import at_rest, wait_for_task
from tests.harness import ServerHarness


@pytest.fixture
def job_log(reporter: Reporter) -> Iterator[tuple[logging.Logger, HeadwayHandler]]:
    """A logger of the job's own, with the handler on it (and not on the root logger)."""
    log = logging.getLogger("jobs.etl")
    handler = HeadwayHandler(reporter=reporter)
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        yield log, handler
    finally:
        log.removeHandler(handler)


async def test_records_logged_in_a_task_and_its_step_reach_its_log(
    client: HeadwayClient,
    harness: ServerHarness,
    task_id: str,
    job_log: tuple[logging.Logger, HeadwayHandler],
) -> None:
    log, _ = job_log

    def job() -> None:
        log.info("outside any task: not sent")
        with SyncTracker(harness.target) as tracker, tracker.task(task_id) as task:
            log.info("fetched %d rows", 42)
            with task.step("load"):
                try:
                    int("x")
                except ValueError:
                    log.exception("skipping a bad row")

    await asyncio.to_thread(job)
    lines = (await client.list_logs(task_id)).entries
    assert [(line.level, line.message, line.step_key) for line in lines] == [
        (log_pb2.LOG_LEVEL_INFO, "fetched 42 rows", ""),
        (log_pb2.LOG_LEVEL_ERROR, "skipping a bad row", "load"),
    ]
    assert all(line.fields["source"] == "jobs.etl" for line in lines)
    failure = lines[1].fields
    assert failure["exception"] == "ValueError: invalid literal for int() with base 10: 'x'"
    assert failure["traceback"].startswith("Traceback (most recent call last):")
    assert 'int("x")' in failure["traceback"]


async def test_records_inside_a_bar_go_to_its_task_and_step(
    client: HeadwayClient,
    reporter: Reporter,
    task_id: str,
    job_log: tuple[logging.Logger, HeadwayHandler],
) -> None:
    log, _ = job_log

    def job() -> None:
        for epoch in tqdm(range(2), task_id=task_id, file=io.StringIO(), reporter=reporter):
            log.warning("epoch %d", epoch)
            for _ in tqdm(range(3), desc="batches", file=io.StringIO()):
                pass
            log.debug("after the batches")

    await asyncio.to_thread(job)
    await wait_for_task(client, task_id, at_rest)
    assert reporter.flush(10)
    lines = (await client.list_logs(task_id)).entries
    assert [(line.message, line.step_key) for line in lines] == [
        ("epoch 0", ""),
        ("after the batches", ""),
        ("epoch 1", ""),
        ("after the batches", ""),
    ]
    assert lines[0].level == log_pb2.LOG_LEVEL_WARNING
    assert lines[1].level == log_pb2.LOG_LEVEL_DEBUG


async def test_overflow_is_counted_and_said_in_the_log_when_the_server_is_back(
    client: HeadwayClient, harness: ServerHarness, task_id: str
) -> None:
    reporter = Reporter(harness.target, slow=0.5, max_logs=5)
    handler = HeadwayHandler(reporter=reporter)
    log = logging.getLogger("jobs.overflow")
    log.addHandler(handler)
    try:
        await harness.stop()

        def job() -> float:
            started = time.monotonic()
            with tqdm(total=50, task_id=task_id, file=io.StringIO(), reporter=reporter) as bar:
                for n in range(50):
                    log.warning("line %d", n)
                    bar.update()
            return time.monotonic() - started

        # A dead server never blocks logging calls.
        assert await asyncio.to_thread(job) < 5
        assert handler.dropped == 45

        await harness.start()
        task = await wait_for_task(client, task_id, at_rest)
        assert task.state == task_pb2.TASK_STATE_SUCCEEDED
        assert await asyncio.to_thread(reporter.flush, 20)
        messages = [line.message for line in (await client.list_logs(task_id)).entries]
        assert messages == [f"line {n}" for n in range(5)] + ["45 log records dropped"]
    finally:
        log.removeHandler(handler)
        await asyncio.to_thread(reporter.close, 5.0)
