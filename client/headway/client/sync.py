"""The agent API for code that is not an asyncio program: plain functions and threads.

    with SyncTracker() as tracker, tracker.task(kind="etl", steps=["extract"]) as task:
        with task.step("extract") as step:
            step.progress(40, 120, unit="rows")

Every feature of the async `Tracker` is here, with the same names: each call runs
the async code on one event loop in a background thread and waits for it. The
loop thread also runs the coalescing timers and the heartbeats, so the latest
progress is sent, and the task kept alive, even while the agent's own thread is
busy computing. Any number of threads may share
one SyncTracker.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Mapping, Sequence
from concurrent.futures import TimeoutError as FutureTimeoutError
from contextvars import Token
from datetime import timedelta
from types import TracebackType
from typing import Any, TypeVar

from headway.client import models
from headway.client.context import CurrentTask, enter, leave
from headway.client.retry import RetryPolicy
from headway.client.security import PemSource
from headway.client.tracker import (
    AGENT_RETRY,
    DEFAULT_PROGRESS_RATE,
    StepReporter,
    TaskReporter,
    Tracker,
)
from headway.v1 import log_pb2, task_pb2, task_service_pb2

T = TypeVar("T")


class LoopThread:
    """An event loop running in a daemon thread, to call async code from sync code."""

    def __init__(self, name: str = "headway-client") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run a coroutine on the loop and wait for its result (or exception)."""
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise RuntimeError("a SyncTracker cannot be used from its own event loop thread")
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(timeout)
        except FutureTimeoutError:
            future.cancel()
            raise TimeoutError from None

    def close(self) -> None:
        """Stop the loop and its thread; pending tasks (such as timers) are cancelled."""
        if self.loop.is_closed():
            return

        async def cancel_pending() -> None:
            current = asyncio.current_task()
            pending = [task for task in asyncio.all_tasks() if task is not current]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            await self.loop.shutdown_asyncgens()

        self.run(cancel_pending())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class SyncTracker:
    """Creates tasks and reports their progress, from any thread. See `Tracker`."""

    def __init__(
        self,
        target: str | None = None,
        *,
        retry: RetryPolicy = AGENT_RETRY,
        progress_rate: float | None = DEFAULT_PROGRESS_RATE,
        timeout: float = 10.0,
        metadata: tuple[tuple[str, str], ...] = (),
        token: str | None = None,
        tls: bool | None = None,
        ca: PemSource | None = None,
        cert: PemSource | None = None,
        key: PemSource | None = None,
        retryable: tuple[type[BaseException], ...] = (),
    ) -> None:
        self._portal = LoopThread()

        async def make() -> Tracker:
            # gRPC binds a channel to the loop it is created on: create it there.
            return Tracker(
                target,
                retry=retry,
                progress_rate=progress_rate,
                timeout=timeout,
                metadata=metadata,
                token=token,
                tls=tls,
                ca=ca,
                cert=cert,
                key=key,
                retryable=retryable,
            )

        self.tracker = self._portal.run(make())

    def __enter__(self) -> SyncTracker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection and stop the background thread."""
        if not self._portal.loop.is_closed():
            self._portal.run(self.tracker.close())
            self._portal.close()

    def task(
        self,
        task_id: str = "",
        *,
        display_name: str = "",
        kind: str = "",
        labels: Mapping[str, str] | None = None,
        parent_id: str = "",
        steps: Sequence[str | task_service_pb2.StepSpec] = (),
        message: str = "",
        max_iterations: int = 0,
        metrics: Mapping[str, float] | None = None,
        lease: timedelta | None = None,
        criteria: Sequence[str | task_pb2.Criterion] = (),
        weight: float = 0.0,
    ) -> SyncTaskReporter:
        """A task to report; `with` it to create it. Arguments as for `Tracker.task`.

        Its heartbeats run on the background loop, so they go on while the calling
        thread is busy: a long computation between reports does not stall the task.
        """
        reporter = self.tracker.task(
            task_id,
            display_name=display_name,
            kind=kind,
            labels=labels,
            parent_id=parent_id,
            steps=steps,
            message=message,
            max_iterations=max_iterations,
            metrics=metrics,
            lease=lease,
            criteria=criteria,
            weight=weight,
        )
        return SyncTaskReporter(reporter, self._portal)


class SyncTaskReporter:
    """Reports one task from sync code; each method is `TaskReporter`'s, waited for."""

    def __init__(self, reporter: TaskReporter, portal: LoopThread) -> None:
        self.reporter = reporter
        self._portal = portal
        self._steps: dict[str, SyncStepReporter] = {}
        self._context: Token[CurrentTask | None] | None = None

    @property
    def id(self) -> str:
        return self.reporter.id

    @property
    def task(self) -> models.Task:
        return self.reporter.task

    @property
    def state(self) -> models.TaskState | None:
        return self.reporter.state

    @property
    def cancel_requested(self) -> bool:
        return self.reporter.cancel_requested

    @property
    def cancel_request(self) -> models.CancelRequest | None:
        return self.reporter.cancel_request

    def wait_cancelled(self, timeout: float | None = None) -> models.CancelRequest | None:
        """Block until a cancel request is seen; None if none came within `timeout` seconds."""
        try:
            return self._portal.run(self.reporter.wait_cancelled(), timeout)
        except TimeoutError:
            return None

    def raise_if_cancelled(self) -> None:
        self.reporter.raise_if_cancelled()

    def start(self) -> SyncTaskReporter:
        self._portal.run(self.reporter.start())
        return self

    def __enter__(self) -> SyncTaskReporter:
        """Start the task and make it current in this thread (the loop thread's is not ours)."""
        self.start()
        self._context = enter(CurrentTask(self.reporter, self._portal.loop))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if self._context is not None:
            leave(self._context)
            self._context = None
        return self._portal.run(self.reporter.__aexit__(exc_type, exc, tb))

    def step(
        self,
        key: str,
        *,
        display_name: str = "",
        weight: float = 0.0,
        expected_duration: timedelta | None = None,
    ) -> SyncStepReporter:
        if key not in self._steps:
            step = self.reporter.step(
                key, display_name=display_name, weight=weight, expected_duration=expected_duration
            )
            self._steps[key] = SyncStepReporter(step, self._portal)
        return self._steps[key]

    def add_steps(self, *steps: str | task_service_pb2.StepSpec) -> models.Task:
        return self._portal.run(self.reporter.add_steps(*steps))

    def progress(
        self,
        current: int | None = None,
        total: int | None = None,
        *,
        unit: str = "",
        fraction: float | None = None,
    ) -> None:
        self._portal.run(self.reporter.progress(current, total, unit=unit, fraction=fraction))

    def message(self, text: str) -> None:
        self._portal.run(self.reporter.message(text))

    def log(
        self,
        message: str,
        *,
        level: models.LogLevel = models.LogLevel.INFO,
        step: str = "",
        **fields: object,
    ) -> int:
        return self._portal.run(self.reporter.log(message, level=level, step=step, **fields))

    def logs(self, entries: list[log_pb2.LogEntry]) -> int:
        return self._portal.run(self.reporter.logs(entries))

    def metrics(self, values: Mapping[str, float] | None = None, /, **more: float) -> None:
        self._portal.run(self.reporter.metrics(values, **more))

    def add_metrics(self, values: Mapping[str, float] | None = None, /, **more: float) -> None:
        self._portal.run(self.reporter.add_metrics(values, **more))

    def set_criterion(self, name: str, met: bool = True, *, detail: str = "") -> None:
        self._portal.run(self.reporter.set_criterion(name, met, detail=detail))

    def set_criteria(
        self, values: Mapping[str, bool], *, details: Mapping[str, str] | None = None
    ) -> None:
        self._portal.run(self.reporter.set_criteria(values, details=details))

    def artifact(self, name: str, uri: str, *, media_type: str = "", size_bytes: int = 0) -> None:
        self._portal.run(
            self.reporter.artifact(name, uri, media_type=media_type, size_bytes=size_bytes)
        )

    def iteration(self, number: int, *, max_iterations: int | None = None) -> None:
        self._portal.run(self.reporter.iteration(number, max_iterations=max_iterations))

    def succeed(self, message: str | None = None) -> models.Task:
        return self._portal.run(self.reporter.succeed(message))

    def fail(
        self,
        error: str | BaseException,
        *,
        code: str = "",
        details: Mapping[str, str] | None = None,
        retryable: bool | None = None,
    ) -> models.Task:
        return self._portal.run(
            self.reporter.fail(error, code=code, details=details, retryable=retryable)
        )

    def confirm_cancel(self, reason: str = "") -> models.Task:
        return self._portal.run(self.reporter.confirm_cancel(reason))


class SyncStepReporter:
    """Reports one step from sync code; each method is `StepReporter`'s, waited for."""

    def __init__(self, reporter: StepReporter, portal: LoopThread) -> None:
        self.reporter = reporter
        self._portal = portal
        self._context: Token[CurrentTask | None] | None = None

    @property
    def key(self) -> str:
        return self.reporter.key

    @property
    def step(self) -> models.Step | None:
        return self.reporter.step

    @property
    def state(self) -> models.StepState | None:
        return self.reporter.state

    def start(self, *, restart: bool = False) -> SyncStepReporter:
        self._portal.run(self.reporter.start(restart=restart))
        return self

    def __enter__(self) -> SyncStepReporter:
        """Start the step and make it current in this thread, within its task."""
        self.start()
        task = self.reporter.task_reporter
        self._context = enter(CurrentTask(task, self._portal.loop, step_key=self.key))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if self._context is not None:
            leave(self._context)
            self._context = None
        return self._portal.run(self.reporter.__aexit__(exc_type, exc, tb))

    def progress(
        self,
        current: int | None = None,
        total: int | None = None,
        *,
        unit: str = "",
        fraction: float | None = None,
    ) -> None:
        self._portal.run(self.reporter.progress(current, total, unit=unit, fraction=fraction))

    def message(self, text: str) -> None:
        self._portal.run(self.reporter.message(text))

    def log(
        self, message: str, *, level: models.LogLevel = models.LogLevel.INFO, **fields: object
    ) -> int:
        return self._portal.run(self.reporter.log(message, level=level, **fields))

    def succeed(self, message: str | None = None) -> None:
        self._portal.run(self.reporter.succeed(message))

    def skip(self, message: str | None = None) -> None:
        self._portal.run(self.reporter.skip(message))

    def fail(
        self,
        error: str | BaseException,
        *,
        code: str = "",
        details: Mapping[str, str] | None = None,
        retryable: bool | None = None,
    ) -> None:
        self._portal.run(self.reporter.fail(error, code=code, details=details, retryable=retryable))

    def restart(self) -> None:
        self._portal.run(self.reporter.restart())

    def flush(self) -> None:
        self._portal.run(self.reporter.flush())


__all__ = ["LoopThread", "SyncStepReporter", "SyncTaskReporter", "SyncTracker"]
