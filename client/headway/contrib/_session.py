"""One task's reports, queued by the job's threads and sent in order by a worker on a loop.

An integration calls into a `TaskSession` from the job's own code — a progress
bar's update, a logging call — which must neither wait for the network nor fail
because of it. So each call only appends to a queue, under a lock, and returns;
a worker coroutine on the event loop of the task's reporter (the integrations'
background thread, or the loop of the Tracker whose task is current) takes the
reports out in order and sends them through the Tracker, which retries, coalesces
progress and keeps the task alive with heartbeats.

While the server is away the worker waits on the report in flight and the queue
grows, so it is compacted: a step's progress replaces the progress still queued
for it, log lines beyond a bound are counted and dropped (then reported as
"N log records dropped"), and reports beyond `max_pending` are dropped, except the
ones that open or end a task or a step. A report the server refuses for good is
dropped with a warning; a refused task drops its session.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import re
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Literal

from google.protobuf.timestamp_pb2 import Timestamp

from headway.client.errors import (
    FailedPreconditionError,
    HeadwayError,
    NotFoundError,
    TaskCancelled,
)
from headway.client.models import CancelRequest
from headway.client.tracker import AGENT_RETRY, StepReporter, TaskReporter
from headway.contrib._outage import Outage
from headway.v1 import log_pb2

logger = logging.getLogger("headway.contrib")

in_worker: ContextVar[bool] = ContextVar("headway_contrib_worker", default=False)
"""True in the code that sends reports: what it logs is about reporting, not the task's."""

DEFAULT_MAX_PENDING = 1000
"""Reports a task may queue while the server is away (progress is compacted, so these
are mostly steps opened and closed)."""

DEFAULT_MAX_LOGS = 1000
"""Log lines a task may queue while the server is away; more are counted and dropped."""

SLOW_REPORT = 2.0
"""Seconds a report may take before the server counts as away (it is still awaited)."""

_LOG_BATCH = 500
_RETRY_PAUSE = 5.0
_MAX_MESSAGE = 1024
_STEP_KEY_LENGTH = 56
_NOT_A_KEY = re.compile(r"[^a-z0-9._-]+")

Kind = Literal["start", "open_step", "progress", "close_step", "logs", "metrics", "close"]


def step_key_of(text: str) -> str:
    """A valid step key that reads like `text`: "Epoch 3/10" -> "epoch-3-10"."""
    key = _NOT_A_KEY.sub("-", text.lower()).strip("-._")[:_STEP_KEY_LENGTH].rstrip("-._")
    return key or "progress"


@dataclass(eq=False)
class StepRef:
    """A step opened by an integration; its key is chosen when the step is created."""

    display_name: str
    key: str = ""
    closed: bool = False


@dataclass
class Progress:
    """A bar's position: units when the total is known, "under way" when it is not."""

    current: float
    total: float | None
    unit: str = ""
    message: str | None = None


@dataclass
class LogLine:
    """A log entry and the step it is about: a step of ours, or a Tracker step's key."""

    entry: log_pb2.LogEntry
    step: StepRef | None = None
    step_key: str = ""


@dataclass(eq=False)
class _Report:
    kind: Kind
    step: StepRef | None = None
    progress: Progress | None = None
    error: BaseException | None = None
    lines: list[LogLine] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)


class TaskSession:
    """The queue of one task's reports and the worker that sends them.

    Args:
        reporter: The task's reporter. A session that `owns` it starts and ends the
            task; otherwise the task belongs to a Tracker block, and the session only
            adds steps, progress and logs to it (and holds the reporter weakly, so a
            finished block's reporter is not kept alive).
        loop: The loop the reporter's client is bound to.
        outage: Where failures are told.
    """

    def __init__(
        self,
        reporter: TaskReporter,
        loop: asyncio.AbstractEventLoop,
        outage: Outage,
        *,
        owns: bool,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_logs: int = DEFAULT_MAX_LOGS,
        slow: float = SLOW_REPORT,
    ) -> None:
        self.loop = loop
        self.outage = outage
        self.owns = owns
        self.max_pending = max_pending
        self.max_logs = max_logs
        self.slow = slow
        self._owned = reporter if owns else None
        self._ref = weakref.ref(reporter)
        self._lock = threading.Lock()
        self._queue: deque[_Report] = deque()
        self._latest: dict[StepRef | None, _Report] = {}  # queued progress, merged into
        self._tail_logs: _Report | None = None
        self._queued_metrics: _Report | None = None
        self._queued_logs = 0
        self._running = False
        self._worker: concurrent.futures.Future[None] | None = None
        self._idle = threading.Event()
        self._idle.set()
        self._ended = False  # the task was ended by us, or is gone: nothing more to send
        self._keys: set[str] = set()
        self._last_current: dict[str, float] = {}
        self.dropped_reports = 0
        self.dropped_logs = 0
        self._unsaid_logs = 0  # dropped log lines not yet reported in the task's log

    # -- read from the job's threads ----------------------------------------------------

    @property
    def reporter(self) -> TaskReporter | None:
        return self._owned or self._ref()

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def cancel_request(self) -> CancelRequest | None:
        """The viewer's request to cancel, once a report's answer brought it."""
        reporter = self.reporter
        return reporter.cancel_request if reporter is not None else None

    def cancelled(self) -> TaskCancelled | None:
        """The exception that stops the job, when a viewer asked to cancel its task."""
        reporter, request = self.reporter, self.cancel_request
        if reporter is None or request is None:
            return None
        return TaskCancelled(reporter.id, request)

    # -- called from the job's threads; never wait, never raise ---------------------------

    def start(self) -> None:
        """Create the task (a session that owns it)."""
        self._put(_Report("start"), keep=True)

    def open_step(self, display_name: str) -> StepRef:
        step = StepRef(display_name[:256])
        self._put(_Report("open_step", step=step), keep=True)
        return step

    def progress(self, step: StepRef | None, progress: Progress) -> None:
        """The latest position of a step (or of the task): replaces one still queued."""
        if progress.message is not None:
            progress.message = progress.message[:_MAX_MESSAGE]
        with self._lock:
            queued = self._latest.get(step)
            if queued is not None:
                queued.progress = progress
                return
        self._put(_Report("progress", step=step, progress=progress), keep=False)

    def close_step(self, step: StepRef, error: BaseException | None = None) -> None:
        self._put(_Report("close_step", step=step, error=error), keep=True)

    def close(self, error: BaseException | None = None) -> None:
        """End the task (a session that owns it): succeed, fail with `error`, or confirm a
        cancellation when `error` is the TaskCancelled the job stopped with."""
        self._put(_Report("close", error=error), keep=True)

    def log(self, line: LogLine) -> bool:
        """Queue a log line; False (and counted) when the queue of log lines is full."""
        with self._lock:
            if self._ended:
                return False
            if self._queued_logs >= self.max_logs:
                self.dropped_logs += 1
                self._unsaid_logs += 1
                return False
            self._queued_logs += 1
            if self._tail_logs is not None and self._queue and self._queue[-1] is self._tail_logs:
                self._tail_logs.lines.append(line)
                return True
        if self._put(_Report("logs", lines=[line]), keep=True):
            return True
        with self._lock:
            self._queued_logs -= 1
        return False

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every queued report was sent (or dropped); False on timeout."""
        return self._idle.wait(timeout)

    def metrics(self, values: Mapping[str, float]) -> None:
        """Set the task's metrics (totals such as tokens used): merged into those still queued."""
        with self._lock:
            queued = self._queued_metrics
            if queued is not None:
                queued.metrics.update(values)
                return
        report = _Report("metrics", metrics=dict(values))
        with self._lock:
            self._queued_metrics = report
        if not self._put(report, keep=False):
            with self._lock:
                self._queued_metrics = None

    def _put(self, report: _Report, *, keep: bool) -> bool:
        with self._lock:
            if self._ended:
                return False
            if not keep and len(self._queue) >= self.max_pending:
                self.dropped_reports += 1
                dropped = self.dropped_reports
            else:
                dropped = 0
                self._queue.append(report)
                # Later reports merge into this one while it waits (under the same lock
                # as the worker's taking it out, so nothing merges into a sent report).
                if report.kind == "progress":
                    self._latest[report.step] = report
                elif report.kind == "logs":
                    self._tail_logs = report
                self._idle.clear()
                launch, self._running = not self._running, True
        if dropped:
            self.outage.dropped(dropped, "progress reports")
            return False
        if launch:
            drain = self._drain()
            try:
                self._worker = asyncio.run_coroutine_threadsafe(drain, self.loop)
            except RuntimeError:  # the loop is closed: its task is over
                drain.close()  # never started: close it, or Python warns it was never awaited
                self._give_up()
        return True

    async def drained(self) -> None:
        """Wait, on the session's loop, until what is queued was sent (or dropped)."""
        while self._running:
            worker = self._worker
            if worker is None or worker.done():
                await asyncio.sleep(0.005)  # launched by another thread a moment ago
            else:
                await asyncio.wrap_future(worker)

    def _give_up(self) -> None:
        with self._lock:
            self._ended = True
            self._queue.clear()
            self._latest.clear()
            self._tail_logs = None
            self._queued_logs = 0
            self._running = False
            self._idle.set()

    # -- the worker, on the reporter's loop -------------------------------------------------

    async def _drain(self) -> None:
        in_worker.set(True)
        while True:
            with self._lock:
                if not self._queue or self._ended:
                    self._queue.clear()
                    self._running = False
                    self._idle.set()
                    return
                report = self._queue.popleft()
                if report.step in self._latest and self._latest[report.step] is report:
                    del self._latest[report.step]
                if report is self._queued_metrics:
                    self._queued_metrics = None
                if report is self._tail_logs:
                    self._tail_logs = None
                self._queued_logs -= len(report.lines)
            await self._send(report)

    async def _send(self, report: _Report) -> None:
        """Send one report, waiting out the server's absence; drop it if refused."""
        while not self._ended:
            reporter = self.reporter
            if reporter is None:
                self._give_up()
                return
            attempt = asyncio.ensure_future(self._apply(reporter, report))
            done: set[asyncio.Future[None]] = set()
            while not done:
                done, _ = await asyncio.wait({attempt}, timeout=self.slow)
                if not done:
                    self.outage.unreachable("no answer")
            try:
                attempt.result()
            except TaskCancelled:
                pass  # noted by the reporter; the job's thread raises it at its next update
            except (FailedPreconditionError, NotFoundError) as error:
                if report.kind in {"start", "close"} or error.reason in {
                    "TASK_AT_REST",
                    "TASK_NOT_FOUND",
                }:
                    self._give_up()  # the task ended without us, or never began
                    if report.kind == "start":
                        self.outage.refused("a new task", error)
                    return
                self.outage.refused(f"a {report.kind.replace('_', ' ')} report", error)
            except HeadwayError as error:
                if AGENT_RETRY.should_retry(error):
                    # A Tracker of the job's own, whose retries gave up: try again later.
                    self.outage.unreachable(error.code.name)
                    await asyncio.sleep(_RETRY_PAUSE)
                    continue
                if report.kind == "start":
                    self._give_up()
                self.outage.refused(f"a {report.kind.replace('_', ' ')} report", error)
                return
            except Exception as error:  # a bug of ours must not stop the job's reports
                logger.warning("could not send a %s report", report.kind, exc_info=error)
                return
            self.outage.recovered()
            return

    async def _apply(self, reporter: TaskReporter, report: _Report) -> None:
        if report.kind == "start":
            await reporter.start()
        elif report.kind == "open_step":
            assert report.step is not None
            report.step.key = self._new_key(reporter, report.step.display_name)
            await self._step(reporter, report.step).start()
        elif report.kind == "progress":
            await self._progress(reporter, report)
        elif report.kind == "close_step":
            assert report.step is not None
            report.step.closed = True
            if report.step.key:
                error = report.error
                tb = error.__traceback__ if error is not None else None
                await self._step(reporter, report.step).__aexit__(
                    type(error) if error is not None else None, error, tb
                )
        elif report.kind == "metrics":
            await reporter.metrics(report.metrics)
        elif report.kind == "logs":
            await self._logs(reporter, report.lines)
        else:
            error = report.error
            tb = error.__traceback__ if error is not None else None
            with self._lock:
                self._ended = True
            await reporter.__aexit__(type(error) if error is not None else None, error, tb)

    def _step(self, reporter: TaskReporter, step: StepRef) -> StepReporter:
        return reporter.step(step.key, display_name=step.display_name)

    def _new_key(self, reporter: TaskReporter, display_name: str) -> str:
        """A key no step of the task has: a step that succeeded cannot run again."""
        taken = self._keys | {step.key for step in reporter.task.steps}
        base = step_key_of(display_name)
        key, n = base, 1
        while key in taken:
            n += 1
            key = f"{base}-{n}"
        self._keys.add(key)
        return key

    async def _progress(self, reporter: TaskReporter, report: _Report) -> None:
        step, progress = report.step, report.progress
        assert progress is not None
        if step is not None and (not step.key or step.closed):
            return  # its step was never created (refused), or has ended
        target: TaskReporter | StepReporter = reporter
        if step is not None:
            target = self._step(reporter, step)
            last = self._last_current.get(step.key)
            if last is not None and progress.current < last:
                await target.restart()  # the bar was reset: progress may go back only so
            self._last_current[step.key] = progress.current
        if progress.total is not None and progress.total > 0:
            total = max(progress.total, progress.current)
            if total >= 1 and float(total).is_integer():
                current = min(max(int(progress.current), 0), int(total))
                await target.progress(
                    current, int(total), unit=progress.unit[:64], message=progress.message
                )
            else:
                fraction = min(max(progress.current / total, 0.0), 1.0)
                await target.progress(fraction=fraction, message=progress.message)
        else:
            await target.progress(message=progress.message)

    async def _logs(self, reporter: TaskReporter, lines: list[LogLine]) -> None:
        entries: list[log_pb2.LogEntry] = []
        for line in lines:
            key = line.step.key if line.step is not None else line.step_key
            if line.step is not None and not key:
                key = ""  # its step was never created: the line goes to the task
            line.entry.step_key = key
            entries.append(line.entry)
        with self._lock:
            unsaid, self._unsaid_logs = self._unsaid_logs, 0
        if unsaid:
            entries.append(dropped_line(unsaid))
        for start in range(0, len(entries), _LOG_BATCH):
            await reporter.logs(entries[start : start + _LOG_BATCH])


def dropped_line(count: int) -> log_pb2.LogEntry:
    """The log line that says how many records were dropped to keep memory bounded."""
    now = Timestamp()
    now.GetCurrentTime()
    return log_pb2.LogEntry(
        level=log_pb2.LOG_LEVEL_WARNING,
        message=f"{count} log records dropped",
        fields={"source": "headway.contrib"},
        time=now,
    )


def wait_all(sessions: list[TaskSession], timeout: float | None) -> bool:
    """Wait for every session to be idle, within one overall `timeout`."""
    deadline = None if timeout is None else time.monotonic() + timeout
    for session in sessions:
        remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        if not session.wait_idle(remaining):
            return False
    return True


__all__ = ["LogLine", "Progress", "StepRef", "TaskSession", "in_worker", "step_key_of"]
