"""headway.contrib.celery with a real Celery worker on the local Redis broker and a real server.

The worker runs in a thread of the test process (threads pool, so that it handles
a revoke while a task runs); the tasks report through a Reporter pointed at the
test server, which the test reads back with GetTask. Each test has a worker of its
own, and no two run at once (see `in_process_worker`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from celery import Celery, chain
from celery.contrib.testing.worker import start_worker
from celery.result import AsyncResult
from kombu.asynchronous import get_event_loop

from headway.client import HeadwayClient
from headway.contrib import Reporter
from headway.contrib.celery import REVOKED_REASON, Cancelled, install, progress, step, task_id_of
from headway.v1 import task_pb2
from tests.harness import ServerHarness

BROKER = "redis://127.0.0.1:6379/13"
QUEUE = f"headway-test-{uuid.uuid4().hex[:8]}"


def _redis_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return True
    except OSError:
        return False


pytestmark = [
    pytest.mark.skipif(
        not _redis_reachable(), reason="no Redis at 127.0.0.1:6379 for the Celery broker"
    ),
    # Celery's Redis result backend still calls SETEX, which redis-py marks deprecated.
    pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning"),
]

app = Celery("headway-tests", broker=BROKER, backend=BROKER, set_as_current=False)
app.conf.update(
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    result_expires=600,
)
attempts: dict[str, int] = {}


@app.task(name="tests.resize", bind=True)
def resize(self: Any, count: int) -> tuple[int, str]:
    with step("load"):
        progress(1, 1)
    for n in range(1, count + 1):
        time.sleep(0.05)
        progress(n, count, message=f"image {n}")
    return count, self.request.hostname


@app.task(name="tests.broken")
def broken() -> None:
    raise ValueError("no such image: cat.png")


@app.task(name="tests.flaky", bind=True, max_retries=3)
def flaky(self: Any, key: str) -> str:
    attempts[key] = attempts.get(key, 0) + 1
    if attempts[key] < 2:
        raise self.retry(exc=ConnectionError("mirror down"), countdown=0.2)
    return "fetched"


@app.task(name="tests.add")
def add(x: int, y: int) -> int:
    progress(x, x + y)
    return x + y


cleaned_up: set[str] = set()


@app.task(name="tests.stoppable", bind=True)
def stoppable(self: Any, seconds: float) -> str:
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            progress(message="working")
            time.sleep(0.05)
    except Cancelled:
        cleaned_up.add(self.request.id)
        raise
    return "finished"


@contextlib.contextmanager
def root_logging_kept() -> Iterator[None]:
    """Celery's test worker sets the root logger's level (to ERROR) even when it may not
    hijack it; put it back, so the tests that run after these still see warnings."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        yield
    finally:
        root.setLevel(level)
        root.handlers[:] = handlers


@contextlib.contextmanager
def in_process_worker(
    celery_app: Celery, queue: str, *, concurrency: int, hostname: str
) -> Iterator[None]:
    """A Celery worker in a thread of this process, the only one while it runs.

    A worker's event loop is kombu's process-wide hub: a second worker started
    while the first runs adopts that hub instead of making its own, and the two
    consumer threads then poll the same sockets. When the hub finds a socket readable,
    one thread reads what came and the other blocks for good in recv() on the socket
    left empty, so its worker never stops. The stop signal (celery.worker.state) is process-wide
    too. So a worker starts only when no other one runs here: a test that needs a
    worker of another app gets it while none of this module's workers runs.
    """
    assert get_event_loop() is None, "another Celery worker runs in this process"
    with (
        root_logging_kept(),
        start_worker(
            celery_app,
            pool="threads",
            concurrency=concurrency,
            perform_ping_check=False,
            queues=[queue],
            hostname=hostname,
            shutdown_timeout=30,
        ),
    ):
        yield


@pytest.fixture
def worker() -> Iterator[str]:
    """A worker for this test alone: one kept for the module would still run when the
    README's test starts the worker of its own app (see `in_process_worker`)."""
    hostname = f"headway-{uuid.uuid4().hex[:6]}@localhost"
    with in_process_worker(app, QUEUE, concurrency=2, hostname=hostname):
        yield hostname


@pytest.fixture
async def reporter(harness: ServerHarness) -> AsyncIterator[Reporter]:
    reporter = Reporter(harness.target, slow=0.5)
    install(app, reporter, lease=timedelta(seconds=1))
    try:
        yield reporter
    finally:
        await asyncio.to_thread(reporter.close, 5.0)


async def wait_for(
    client: HeadwayClient,
    task_id: str,
    condition: Callable[[task_pb2.Task], bool],
    timeout: float = 15.0,
) -> task_pb2.Task:
    """Poll GetTask until `condition` holds for the task (which may not exist yet)."""
    deadline = time.monotonic() + timeout
    last: task_pb2.Task | None = None
    while time.monotonic() < deadline:
        try:
            last = await client.get_task(task_id)
        except Exception:
            last = None
        if last is not None and condition(last):
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"task {task_id} never met the condition; last seen: {last}")


def state(name: str) -> Callable[[task_pb2.Task], bool]:
    wanted = task_pb2.TaskState.Value(f"TASK_STATE_{name}")
    return lambda task: task.state == wanted


def close_connections(celery_app: Celery) -> None:
    """Close the app's broker and result-backend connections to Redis: left to the
    garbage collector, they would close later, in some other test, with a warning."""
    celery_app.close()
    celery_app.backend.client.connection_pool.disconnect()


@pytest.fixture(scope="module", autouse=True)
def connections_closed() -> Iterator[None]:
    yield
    close_connections(app)


async def result_of(result: AsyncResult[Any], timeout: float = 15.0) -> Any:
    return await asyncio.to_thread(result.get, timeout=timeout, propagate=False)


async def test_a_run_is_a_task_with_kind_labels_progress_and_steps(
    worker: str, reporter: Reporter, client: HeadwayClient
) -> None:
    result = resize.delay(20)
    task_id = task_id_of(result.id)
    moving = await wait_for(
        client,
        task_id,
        lambda t: 0 < t.progress.units.current < 20 and t.progress.units.total == 20,
    )
    assert moving.state == task_pb2.TASK_STATE_RUNNING
    assert moving.kind == "tests.resize"
    assert moving.labels["queue"] == QUEUE
    assert moving.message.startswith("image ")
    count, hostname = await result_of(result)
    assert count == 20
    assert moving.labels["worker"] == hostname
    done = await wait_for(client, task_id, state("SUCCEEDED"))
    assert [s.key for s in done.steps] == ["load"]
    assert done.steps[0].state == task_pb2.STEP_STATE_SUCCEEDED
    assert done.progress.units.current == 20


async def test_a_failure_records_the_exception(
    worker: str, reporter: Reporter, client: HeadwayClient
) -> None:
    result = broken.delay()
    await result_of(result)
    assert result.state == "FAILURE"
    failed = await wait_for(client, task_id_of(result.id), state("FAILED"))
    assert failed.error.code == "ValueError"
    assert failed.error.message == "no such image: cat.png"
    assert failed.error.details["exception"] == "builtins.ValueError"
    assert "raise ValueError" in failed.error.details["traceback"]


async def test_a_retry_is_logged_and_the_task_goes_on_to_succeed(
    worker: str, reporter: Reporter, client: HeadwayClient
) -> None:
    key = uuid.uuid4().hex
    result = flaky.delay(key)
    assert await result_of(result) == "fetched"
    assert attempts[key] == 2
    task_id = task_id_of(result.id)
    done = await wait_for(client, task_id, state("SUCCEEDED"))
    assert done.kind == "tests.flaky"
    lines = [entry.message for entry in (await client.list_logs(task_id)).entries]
    assert any("retrying after attempt 1" in line and "mirror down" in line for line in lines)
    assert "attempt 2 started" in lines


async def test_a_chain_nests_each_link_under_the_one_that_sent_it(
    worker: str, reporter: Reporter, client: HeadwayClient
) -> None:
    result = chain(add.s(1, 2), add.s(3), add.s(4)).delay()
    assert await result_of(result) == 10
    last = result
    first = result.parent.parent  # type: ignore[union-attr]
    middle = result.parent  # type: ignore[union-attr]
    ids = [task_id_of(r.id) for r in (first, middle, last)]  # type: ignore[union-attr]
    tasks = [await wait_for(client, task_id, state("SUCCEEDED")) for task_id in ids]
    assert tasks[0].parent_id == ""
    assert tasks[1].parent_id == ids[0]
    assert tasks[2].parent_id == ids[1]


async def test_a_cancel_in_headway_stops_and_revokes_the_celery_task(
    worker: str, reporter: Reporter, client: HeadwayClient
) -> None:
    result = stoppable.delay(15)
    task_id = task_id_of(result.id)
    await wait_for(client, task_id, lambda t: t.message == "working")
    started = time.monotonic()
    await client.cancel_task(task_id, reason="not needed")
    cancelled = await wait_for(client, task_id, state("CANCELLED"))
    assert not cancelled.cancel_request.forced  # confirmed by the run, not forced
    assert cancelled.cancel_request.reason == "not needed"
    await result_of(result)
    assert result.state == "REVOKED"
    assert result.id in cleaned_up
    assert time.monotonic() - started < 10
    # The revoke reached the worker too: a redelivery of the message would not run.
    inspect = app.control.inspect(destination=[worker], timeout=2)
    revoked = await asyncio.to_thread(inspect.revoked)
    assert result.id in (revoked or {}).get(worker, [])


async def test_a_revoke_in_celery_cancels_in_headway(
    worker: str, reporter: Reporter, client: HeadwayClient
) -> None:
    result = stoppable.delay(15)
    task_id = task_id_of(result.id)
    await wait_for(client, task_id, lambda t: t.message == "working")
    await asyncio.to_thread(app.control.revoke, result.id)
    cancelled = await wait_for(client, task_id, state("CANCELLED"))
    assert cancelled.cancel_request.reason == REVOKED_REASON
    assert not cancelled.cancel_request.forced
    await result_of(result)
    assert result.state == "REVOKED"
    # The body stops too, at its next report, rather than running on in the worker.
    for _ in range(200):  # up to 10 s
        if result.id in cleaned_up:
            break
        await asyncio.sleep(0.05)
    assert result.id in cleaned_up


async def test_a_task_succeeds_while_the_server_is_down(worker: str, tmp_path: Any) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed: nothing listens there
    down = Reporter(f"127.0.0.1:{port}", slow=0.2)
    install(app, down)
    try:
        started = time.monotonic()
        result = resize.delay(5)
        assert (await result_of(result))[0] == 5
        assert result.state == "SUCCESS"
        assert time.monotonic() - started < 10
        assert down.outage.down
    finally:
        await asyncio.to_thread(down.close, 0.5)


async def test_the_readme_example_reports_from_a_worker(
    client: HeadwayClient, harness: Any
) -> None:
    """The README's Celery block, run as the module `reports` a worker would import."""
    from tests.client.test_readme_examples import python_blocks

    code = next(block for block in python_blocks("Integrations") if "install(app)" in block)
    module: dict[str, Any] = {"__name__": "reports"}
    exec(compile(code, "README.md", "exec"), module)
    example: Celery = module["app"]
    queue = f"headway-readme-{uuid.uuid4().hex[:8]}"
    example.conf.update(
        broker_url=BROKER,
        result_backend=BROKER,
        task_default_queue=queue,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    reporter = Reporter(harness.target, slow=0.5)
    install(example, reporter)  # as the example's install(app), pointed at the test server
    try:
        with in_process_worker(example, queue, concurrency=1, hostname=f"readme@{queue}"):
            result = module["render"].delay(4)
            assert await result_of(result) == 4
            done = await wait_for(client, task_id_of(result.id), state("SUCCEEDED"))
        assert done.kind == "reports.render"
        assert [s.key for s in done.steps] == ["fetch-data"]
        assert done.progress.units.total == 4
    finally:
        await asyncio.to_thread(reporter.close, 5.0)
        close_connections(example)
