"""The agent API: report a task and its steps in a few lines, and learn when to stop.

    async with Tracker() as tracker:
        async with tracker.task(kind="report", steps=["fetch", "write"]) as task:
            async with task.step("fetch") as step:
                for n in range(1, 121):
                    await step.progress(n, 120, unit="files")
            async with task.step("write"):
                ...

Entering a task creates and starts it; leaving it succeeds it, and an exception
fails it with the error recorded (code = the exception's type, message, and the
traceback in the details). Steps work the same way. Every call goes through a
client that retries transient failures with the same request_id, so a report is
applied exactly once however often it is retried; progress is coalesced (see
coalesce.py) so a tight loop does not flood the server.

Cancellation is a handshake. A viewer's CancelTask is recorded on the task and
every mutation response carries it; the agent's next progress, step or task report
raises `TaskCancelled` (logs never raise, so an agent can log its clean-up), and
`cancel_requested` / `wait_cancelled()` let it poll. When the agent stops — the
exception leaves the task's block, or the block ends while a cancel is pending —
the tracker confirms the cancellation and the task becomes CANCELLED.

Liveness: while a task is open, a heartbeat goes out whenever nothing else was
sent for a third of the task's lease (see keepalive.py), so an agent busy in a
long silent computation is not marked stalled, and a cancel request reaches it
even then. Heartbeats stop when the task ends or the tracker closes; an agent
that dies stops them too, and its task is marked stalled once its lease lapses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import Token
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from headway.client import models
from headway.client.client import HeadwayClient
from headway.client.coalesce import Coalescer, PendingUpdate, Send
from headway.client.context import CurrentTask, enter, leave
from headway.client.errors import (
    FailedPreconditionError,
    HeadwayError,
    NotFoundError,
    TaskCancelled,
)
from headway.client.keepalive import KeepAlive
from headway.client.retry import TRANSIENT_CODES, RetryPolicy
from headway.client.security import PemSource
from headway.v1 import log_pb2, task_pb2, task_service_pb2

logger = logging.getLogger(__name__)

AGENT_RETRY = RetryPolicy(
    initial_backoff=0.1,
    max_backoff=5.0,
    deadline=60.0,
    # gRPC cancels the calls still queued when a server begins to shut down
    # (grpc/grpc#41785): CANCELLED then means "not applied, try again", and a
    # request_id makes trying again safe either way.
    codes=TRANSIENT_CODES | {grpc.StatusCode.CANCELLED},
)
"""Agents ride out a server restart or a network blip of up to a minute."""

DEFAULT_PROGRESS_RATE = 4.0
"""Progress updates per second and per step (or task) at most, when coalescing."""

HEARTBEATS_PER_LEASE = 3
"""A heartbeat is due after a third of the lease in silence: two more fit before it lapses."""

# Reconnect quickly after a server restart: gRPC's own default backs off up to 2 min.
CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
)

# Field limits of the contract, applied here so that a long message or traceback
# is shortened instead of failing the agent's report.
_MAX_CODE = 128
_MAX_ERROR_MESSAGE = 4096
_MAX_DETAIL = 16384
_MAX_LOG_MESSAGE = 8192
_MAX_LOG_FIELD = 4096
_MAX_CRITERION_DETAIL = 1024
_CONFIRM_TIMEOUT = 5.0


def progress_message(
    current: int | None = None,
    total: int | None = None,
    *,
    unit: str = "",
    fraction: float | None = None,
) -> task_pb2.Progress:
    """Progress from the ways an agent states it: units, a fraction, or nothing (indeterminate).

    Raises:
        ValueError: `current` without `total`, or units together with `fraction`.
    """
    if fraction is not None:
        if current is not None or total is not None:
            raise ValueError("give either current and total, or fraction")
        return task_pb2.Progress(fraction=fraction)
    if current is None and total is None:
        return task_pb2.Progress(indeterminate=True)
    if current is None or total is None:
        raise ValueError("progress in units needs both current and total (or use fraction=)")
    units = task_pb2.Progress.Units(current=int(current), total=int(total), unit=unit)
    return task_pb2.Progress(units=units)


def error_from_exception(
    error: BaseException, retryable: tuple[type[BaseException], ...] = ()
) -> task_pb2.TaskError:
    """The TaskError recorded for an exception: its type as the code, and its traceback.

    It is `retryable` when the exception is an instance of one of the types the
    agent registered as passing (such as TimeoutError or ConnectionError).
    """
    kind = type(error)
    trace = "".join(traceback.format_exception(error))
    return task_pb2.TaskError(
        retryable=isinstance(error, retryable),
        code=kind.__name__[:_MAX_CODE],
        message=_shorten(str(error) or kind.__name__, _MAX_ERROR_MESSAGE),
        details={
            "exception": f"{kind.__module__}.{kind.__qualname__}"[:_MAX_DETAIL],
            # The end of a traceback says the most: keep that when it is too long.
            "traceback": trace[-_MAX_DETAIL:],
        },
    )


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _now() -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(datetime.now(UTC))
    return stamp


def _step_spec(
    key: str, display_name: str, weight: float, expected_duration: timedelta | None
) -> task_service_pb2.StepSpec:
    duration = None
    if expected_duration is not None:
        duration = Duration()
        duration.FromTimedelta(expected_duration)
    return task_service_pb2.StepSpec(
        key=key, display_name=display_name, weight=weight, expected_duration=duration
    )


class Tracker:
    """Creates tasks and reports their progress for an agent.

    Args:
        target: host:port of the server (`$HEADWAY_SERVER` or 127.0.0.1:50051 when
            None), or a HeadwayClient whose channel to share.
        retry: How transient failures are retried.
        progress_rate: At most this many progress updates per second per step (or
            task); None sends every update.
        timeout: Seconds one attempt of a call may take.
        metadata: Sent with every call.
        token, tls, ca, cert, key: How to authenticate and secure the channel, as for
            `HeadwayClient` (`$HEADWAY_TOKEN`, `$HEADWAY_CA`… when None); ignored when
            `target` is a HeadwayClient, whose channel already has them.
    """

    def __init__(
        self,
        target: str | HeadwayClient | None = None,
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
        """Connect to `target` (HEADWAY_TARGET or localhost:50051 when None).

        `retryable` names the exception types whose failures may pass on a retry
        (say `(TimeoutError, ConnectionError)`): a task or step failed by one of
        them is recorded with `TaskError.retryable` set.
        """
        self.retryable = retryable
        if isinstance(target, HeadwayClient):
            # Share the caller's channel (which the caller closes), with retries on top.
            self.client = HeadwayClient(
                channel=target.channel,
                timeout=target.timeout,
                metadata=target.metadata,
                retry=retry,
            )
        else:
            self.client = HeadwayClient(
                target,
                timeout=timeout,
                metadata=metadata,
                options=CHANNEL_OPTIONS,
                retry=retry,
                token=token,
                tls=tls,
                ca=ca,
                cert=cert,
                key=key,
            )
        self.progress_rate = progress_rate
        # The heartbeat loops of the tasks still open, stopped when the tracker closes.
        self._keep_alives: set[KeepAlive] = set()

    async def __aenter__(self) -> Tracker:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop heartbeats and close the connection (a shared channel stays open for its owner)."""
        keep_alives, self._keep_alives = list(self._keep_alives), set()
        for keep_alive in keep_alives:
            await keep_alive.stop()
        await self.client.close()

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
    ) -> TaskReporter:
        """A task to report; `async with` it (or `await reporter.start()`) to create it.

        Args:
            task_id: The task's id; the server makes one when empty.
            display_name: A name for humans.
            kind: The type of work, such as "report".
            labels: Labels for filtering.
            parent_id: The task this one is part of: its progress follows its
                children's (weighted by `weight`) unless it reports its own.
            steps: The steps known up front, by key or as StepSpec; more can be
                added as they are discovered (`task.step(new_key)` adds it).
            message: An initial status line.
            max_iterations: The most iterations, for an iterative agent.
            metrics: Initial metrics.
            lease: How long the agent may be silent before the task is marked
                stalled; the server's default (60 s) when None, clamped to its bounds.
                Heartbeats keep the task alive while it is open, so a shorter lease
                only means that watchers learn sooner when the agent died.
            criteria: The success criteria the agent will check, in the order
                viewers list them: names (not met yet) or Criterion messages. Set
                them with `task.set_criterion(...)`; new names may be set later too.
            weight: This task's weight in its parent's progress; 0 means 1.
        """
        request = task_service_pb2.CreateTaskRequest(
            task_id=task_id,
            display_name=display_name,
            kind=kind,
            labels=labels or {},
            parent_id=parent_id,
            steps=[
                task_service_pb2.StepSpec(key=step) if isinstance(step, str) else step
                for step in steps
            ],
            message=message,
            max_iterations=max_iterations,
            metrics=metrics or {},
            start=True,
            criteria=[
                task_pb2.Criterion(name=value) if isinstance(value, str) else value
                for value in criteria
            ],
            weight=weight,
        )
        if lease is not None:
            request.lease_duration.FromTimedelta(lease)
        return TaskReporter(
            self.client, request, self.progress_rate, self._keep_alives, self.retryable
        )


class TaskReporter:
    """Reports one task. Made by `Tracker.task()`; use as an async context manager."""

    def __init__(
        self,
        client: HeadwayClient,
        create: task_service_pb2.CreateTaskRequest,
        progress_rate: float | None,
        keep_alives: set[KeepAlive] | None = None,
        retryable: tuple[type[BaseException], ...] = (),
    ) -> None:
        self._client = client
        self.retryable = retryable
        self._create = create
        self._progress_rate = progress_rate
        self._keep_alives = keep_alives if keep_alives is not None else set()
        self._keep_alive: KeepAlive | None = None
        self._task: models.Task | None = None
        self._steps: dict[str, StepReporter] = {}
        self._cancel_request: models.CancelRequest | None = None
        self._cancel_seen = asyncio.Event()
        self._finished = False
        self._coalescer = self._new_coalescer(self._send_task_update)
        self._context: Token[CurrentTask | None] | None = None
        self._before_end: list[Callable[[], Awaitable[None]]] = []

    # -- what the agent reads -------------------------------------------------------

    @property
    def id(self) -> str:
        """The task's id (made by the server when none was given)."""
        return self.task.id

    @property
    def task(self) -> models.Task:
        """The task as of the last response from the server."""
        if self._task is None:
            raise RuntimeError("the task has not been created yet: enter it with `async with`")
        return self._task

    @property
    def state(self) -> models.TaskState | None:
        """The task's state as of the last response."""
        return self.task.state

    @property
    def cancel_requested(self) -> bool:
        """True once a viewer asked to cancel (as learnt from a response)."""
        return self._cancel_request is not None

    @property
    def cancel_request(self) -> models.CancelRequest | None:
        """Who asked to cancel, and why; None while nobody has."""
        return self._cancel_request

    async def wait_cancelled(self) -> models.CancelRequest:
        """Wait until a response reveals a cancel request.

        Reports and, while the agent is silent, heartbeats keep it up to date: the
        request arrives within about a third of the task's lease at the latest.
        """
        await self._cancel_seen.wait()
        assert self._cancel_request is not None
        return self._cancel_request

    def raise_if_cancelled(self) -> None:
        """Raise TaskCancelled if a viewer asked to cancel. Sends nothing."""
        if self._cancel_request is not None:
            raise TaskCancelled(self.id, self._cancel_request)

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> TaskReporter:
        """Create the task, RUNNING, and keep it alive until it ends. Called by `async with`.

        Called without `async with`, end the task with `succeed()`, `fail()` or
        `confirm_cancel()`: until then (or until the tracker closes) heartbeats
        keep it from being marked stalled.
        """
        create = self._create
        raw = await self._client.create_task(
            create.task_id,
            display_name=create.display_name,
            kind=create.kind,
            labels=create.labels,
            parent_id=create.parent_id,
            steps=list(create.steps),
            message=create.message,
            max_iterations=create.max_iterations,
            metrics=create.metrics,
            criteria=list(create.criteria),
            start=True,
            weight=create.weight,
            lease_duration=(
                create.lease_duration.ToTimedelta() if create.HasField("lease_duration") else None
            ),
        )
        self._observe(raw)
        self._start_heartbeats()
        return self

    async def __aenter__(self) -> TaskReporter:
        """Start the task and make it current for the block (see context.py)."""
        await self.start()
        self._context = enter(CurrentTask(self, asyncio.get_running_loop()))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        """Succeed, fail, or confirm a cancellation, depending on how the block ended."""
        if self._context is not None:
            leave(self._context)
            self._context = None
        try:
            return await self._end_block(exc)
        finally:
            await self._stop_heartbeats()

    async def _end_block(self, exc: BaseException | None) -> bool:
        cancelled_here = isinstance(exc, TaskCancelled) and exc.task_id == self.id
        if self._finished:
            return cancelled_here
        if cancelled_here or (exc is None and self.cancel_requested):
            await self._confirm()
            return cancelled_here  # the cancellation was honoured; the agent goes on
        if exc is None:
            # A cancel forced meanwhile leaves the task CANCELLED already: nothing to do.
            with contextlib.suppress(TaskCancelled):
                await self.succeed()
            return False
        if not isinstance(exc, Exception):
            # Interrupted (KeyboardInterrupt, asyncio cancellation): the agent stops, so
            # say so rather than leave the task running with nobody behind it.
            await self._confirm_quietly(f"the agent stopped: {type(exc).__name__}")
            return False
        try:
            await self.fail(exc)
        except (HeadwayError, TaskCancelled) as error:
            logger.warning("could not record the failure of task %s: %s", self.id, error)
        return False

    async def succeed(self, message: str | None = None) -> models.Task:
        """End the task SUCCEEDED; running steps succeed and pending ones are skipped."""
        await self._flush_all()
        raw = await self._mutate(self._client.succeed_task(self.id, message=message))
        self._finished = True
        await self._stop_heartbeats()
        return raw

    async def fail(
        self,
        error: str | BaseException,
        *,
        code: str = "",
        details: Mapping[str, str] | None = None,
        retryable: bool | None = None,
    ) -> models.Task:
        """End the task FAILED with an error: a message, or an exception (with its traceback).

        `retryable` says whether trying again may succeed; when None, an exception
        of a type registered with the Tracker is retryable, anything else is not.
        """
        with contextlib.suppress(HeadwayError, TaskCancelled):
            await self._flush_all()  # the last progress shows where it failed
        recorded = _error_of(error, code, details, retryable, self.retryable)
        raw = await self._mutate(
            self._client.fail_task(
                self.id,
                message=recorded.message,
                code=recorded.code,
                details=dict(recorded.details),
                retryable=recorded.retryable,
            )
        )
        self._finished = True
        await self._stop_heartbeats()
        return raw

    async def confirm_cancel(self, reason: str = "") -> models.Task:
        """End the task CANCELLED: the agent stopped (the answer to a cancel request)."""
        for step in self._steps.values():
            await step.discard_pending()
        await self._coalescer.discard()
        try:
            raw = await self._mutate(self._client.confirm_cancel(self.id, reason=reason))
        finally:
            self._finished = True
            await self._stop_heartbeats()
        return raw

    async def _confirm(self) -> None:
        """Confirm a requested cancellation; one already forced needs no confirmation."""
        with contextlib.suppress(TaskCancelled):
            await self.confirm_cancel()

    async def _confirm_quietly(self, reason: str) -> None:
        try:
            async with asyncio.timeout(_CONFIRM_TIMEOUT):
                await self.confirm_cancel(reason)
        except (HeadwayError, TaskCancelled, TimeoutError) as error:
            logger.warning("could not confirm the cancellation of %s: %s", self.id, error)

    # -- reports --------------------------------------------------------------------

    def step(
        self,
        key: str,
        *,
        display_name: str = "",
        weight: float = 0.0,
        expected_duration: timedelta | None = None,
    ) -> StepReporter:
        """The step with this key; a key the task does not have yet is added when it starts.

        Args:
            key: The step's key (lowercase letters, digits, '-', '_', '.').
            display_name: For a new step: a name for humans.
            weight: For a new step: its weight in the task's progress (default 1).
            expected_duration: For a new step: how long it should take.
        """
        if key not in self._steps:
            spec = _step_spec(key, display_name, weight, expected_duration)
            self._steps[key] = StepReporter(self, key, spec)
        return self._steps[key]

    async def add_steps(self, *steps: str | task_service_pb2.StepSpec) -> models.Task:
        """Append steps discovered while running."""
        specs = [task_service_pb2.StepSpec(key=s) if isinstance(s, str) else s for s in steps]
        task = await self._mutate(self._client.add_steps(self.id, specs))
        self.raise_if_cancelled()
        return task

    async def progress(
        self,
        current: int | None = None,
        total: int | None = None,
        *,
        unit: str = "",
        fraction: float | None = None,
        message: str | None = None,
    ) -> None:
        """Task-level progress, for tasks without steps: units, a fraction, or indeterminate.

        Coalesced: at most `progress_rate` updates a second reach the server. A
        `message` (the task's status line) goes in the same update.
        """
        update = PendingUpdate(
            progress=progress_message(current, total, unit=unit, fraction=fraction),
            message=message,
        )
        await self._submit(self._coalescer, update)

    async def message(self, text: str) -> None:
        """The task's status line (coalesced with its progress)."""
        await self._submit(self._coalescer, PendingUpdate(message=text))

    async def log(
        self,
        message: str,
        *,
        level: models.LogLevel = models.LogLevel.INFO,
        step: str = "",
        **fields: object,
    ) -> int:
        """Append one log line; returns its revision.

        A pending cancel request does not make it raise, so an agent can log its
        clean-up; only a task already CANCELLED (with force) refuses it with
        TaskCancelled.

        Args:
            message: The line (shortened past 8192 characters).
            level: Its severity.
            step: The key of the step it is about, if any.
            **fields: Structured context, such as url="…" or attempt=2 (made strings).
        """
        entry = log_pb2.LogEntry(
            level=log_pb2.LogLevel.ValueType(level),
            step_key=step,
            message=_shorten(message, _MAX_LOG_MESSAGE) or "-",
            fields={key: _shorten(str(value), _MAX_LOG_FIELD) for key, value in fields.items()},
            time=_now(),
        )
        return await self.logs([entry])

    async def logs(self, entries: list[log_pb2.LogEntry]) -> int:
        """Append a batch of log lines under one revision; returns it."""
        response = await self._mutate_logs(self._client.append_logs(self.id, entries))
        if response.HasField("cancel_request"):
            self._note_cancel(models.CancelRequest.from_proto(response.cancel_request))
        return response.revision

    async def metrics(self, values: Mapping[str, float] | None = None, /, **more: float) -> None:
        """Set metrics, such as `await task.metrics(tokens=1520, cost_usd=0.03)`.

        Keys that are not Python names (such as "gpu.hours") go in the mapping.
        """
        merged = {**(values or {}), **more}
        await self._mutate(self._client.update_task(self.id, metrics=merged))
        self.raise_if_cancelled()

    async def add_metrics(
        self, values: Mapping[str, float] | None = None, /, **more: float
    ) -> None:
        """Add to metrics, such as the tokens and cost of one more model call."""
        current = self.task.metrics
        merged = {**(values or {}), **more}
        await self.metrics({key: current.get(key, 0.0) + value for key, value in merged.items()})

    async def set_criterion(self, name: str, met: bool = True, *, detail: str = "") -> None:
        """Say whether a success criterion holds, such as
        `await task.set_criterion("tests pass", False, detail="41/42")`.

        The criterion of that name is replaced whole (an empty `detail` clears the
        old one); a name the task does not have yet is added after the others.
        Sent at once, like metrics: criteria change rarely and each one matters.

        Raises:
            TaskCancelled: A viewer asked to cancel the task.
        """
        await self.set_criteria({name: met}, details={name: detail})

    async def set_criteria(
        self, values: Mapping[str, bool], *, details: Mapping[str, str] | None = None
    ) -> None:
        """Set several success criteria in one report: `{name: met}`, with optional details.

        Each criterion named is replaced as by `set_criterion`; the others are
        left as they are. A detail past 1024 characters is shortened.
        """
        details = details or {}
        criteria = [
            task_pb2.Criterion(
                name=name, met=met, detail=_shorten(details.get(name, ""), _MAX_CRITERION_DETAIL)
            )
            for name, met in values.items()
        ]
        await self._mutate(self._client.update_task(self.id, criteria=criteria))
        self.raise_if_cancelled()

    async def artifact(
        self, name: str, uri: str, *, media_type: str = "", size_bytes: int = 0
    ) -> None:
        """Record a result the task produced."""
        artifact = task_pb2.Artifact(
            name=name, uri=uri, media_type=media_type, size_bytes=size_bytes
        )
        await self._mutate(self._client.add_artifacts(self.id, [artifact]))
        self.raise_if_cancelled()

    async def iteration(self, number: int, *, max_iterations: int | None = None) -> None:
        """The current iteration of an iterative agent (and, optionally, the most it will run)."""
        await self._mutate(
            self._client.update_task(self.id, iteration=number, max_iterations=max_iterations)
        )
        self.raise_if_cancelled()

    # -- plumbing -------------------------------------------------------------------

    def _new_coalescer(self, send: Send) -> Coalescer:
        interval = 0.0 if not self._progress_rate else 1.0 / self._progress_rate
        return Coalescer(send, interval)

    async def _submit(self, coalescer: Coalescer, update: PendingUpdate) -> None:
        self.raise_if_cancelled()
        await coalescer.submit(update)
        self.raise_if_cancelled()

    async def _send_task_update(self, update: PendingUpdate) -> None:
        await self._mutate(
            self._client.update_task(self.id, progress=update.progress, message=update.message)
        )

    def before_end(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Await `hook` before the task succeeds or fails.

        Code that queues reports for this task to send them later (a logging
        handler, a progress bar) sends them first, so that none arrives after the
        task is at rest and is refused.
        """
        self._before_end.append(hook)

    async def _flush_all(self) -> None:
        for hook in list(self._before_end):
            await hook()
        for step in list(self._steps.values()):
            await step.flush()
        await self._coalescer.flush()

    async def _mutate(self, call: Awaitable[task_pb2.Task]) -> models.Task:
        """Await one mutation and learn from its answer (the task, and any cancel request)."""
        try:
            raw = await call
        except FailedPreconditionError as error:
            await self._raise_if_force_cancelled(error)
            raise
        self._heard()
        return self._observe(raw)

    async def _mutate_logs(
        self, call: Awaitable[task_service_pb2.AppendLogsResponse]
    ) -> task_service_pb2.AppendLogsResponse:
        try:
            response = await call
        except FailedPreconditionError as error:
            await self._raise_if_force_cancelled(error)
            raise
        self._heard()
        return response

    async def _raise_if_force_cancelled(self, error: FailedPreconditionError) -> None:
        """A viewer cancelled with `force`: the task is CANCELLED and refuses every report."""
        if await self._learn_if_force_cancelled(error):
            raise TaskCancelled(self.id, self._cancel_request) from error

    async def _learn_if_force_cancelled(self, error: FailedPreconditionError) -> bool:
        """Note a cancellation that happened without the agent (forced); True if it did."""
        if error.reason != "TASK_AT_REST" or error.metadata.get("state") != "CANCELLED":
            return False
        self._finished = True
        with contextlib.suppress(HeadwayError):
            self._observe(await self._client.get_task(self.id))
        if self._cancel_request is None:
            self._note_cancel(models.CancelRequest.from_proto(task_pb2.CancelRequest()))
        return True

    # -- liveness -------------------------------------------------------------------

    def _start_heartbeats(self) -> None:
        """Keep the task's lease while it is open, at a third of the lease the server chose."""
        lease = self.task.lease_duration
        if self._keep_alive is not None or self.task.at_rest or not lease:
            return  # no lease in the answer: a server that predates leases
        self._keep_alive = KeepAlive(
            self._heartbeat, lease.total_seconds() / HEARTBEATS_PER_LEASE, name=self.id
        )
        self._keep_alives.add(self._keep_alive)
        self._keep_alive.start()

    async def _stop_heartbeats(self) -> None:
        keep_alive, self._keep_alive = self._keep_alive, None
        if keep_alive is not None:
            self._keep_alives.discard(keep_alive)
            await keep_alive.stop()

    def _heard(self) -> None:
        """The server answered a report, which renewed the lease: the heartbeat can wait."""
        if self._keep_alive is not None:
            self._keep_alive.touch()

    async def _heartbeat(self) -> bool:
        """Send one heartbeat; learn of a cancel request from its answer like from any other.

        Returns False once the task needs no more heartbeats: it ended (here, by the
        server, or by a forced cancel) or is gone. Other errors are raised, and the
        keep-alive loop logs them and tries again.
        """
        if self._finished:
            return False
        try:
            renewal = await self._client.heartbeat(self.id)
        except FailedPreconditionError as error:
            if error.reason != "TASK_AT_REST":
                raise
            if not await self._learn_if_force_cancelled(error):
                state = error.metadata.get("state", "at rest")
                logger.warning("task %s was ended without its agent (%s)", self.id, state)
            return False
        except NotFoundError:
            logger.warning("task %s no longer exists: no more heartbeats", self.id)
            return False
        except HeadwayError as error:
            if error.code is grpc.StatusCode.UNIMPLEMENTED:
                logger.info("the server does not know heartbeats; task %s has none", self.id)
                return False
            raise
        if renewal.cancel_request is not None:
            self._note_cancel(renewal.cancel_request)
        return True

    def _observe(self, raw: task_pb2.Task) -> models.Task:
        """Keep the newest task seen (a replayed retry may answer with an older one)."""
        task = models.Task.from_proto(raw)
        if self._task is None or task.revision >= self._task.revision:
            self._task = task
        if task.cancel_request is not None:
            self._note_cancel(task.cancel_request)
        return task

    def _note_cancel(self, request: models.CancelRequest) -> None:
        if self._cancel_request is None:
            self._cancel_request = request
            self._cancel_seen.set()


class StepReporter:
    """Reports one step. Made by `TaskReporter.step()`; use as an async context manager.

    It reports through its TaskReporter, which owns the client, the cancellation
    state and the coalescing rate, so that every report of the task learns of a
    cancel request the same way.
    """

    def __init__(self, task: TaskReporter, key: str, spec: task_service_pb2.StepSpec) -> None:
        self._task = task
        self.key = key
        self._spec = spec
        self._finished = False
        self._coalescer = task._new_coalescer(self._send_update)
        self._context: Token[CurrentTask | None] | None = None

    @property
    def task_reporter(self) -> TaskReporter:
        """The reporter of the task this step belongs to."""
        return self._task

    @property
    def step(self) -> models.Step | None:
        """The step as of the last response, or None before it was added."""
        return self._task.task.step(self.key)

    @property
    def state(self) -> models.StepState | None:
        """The step's state as of the last response."""
        step = self.step
        return step.state if step is not None else None

    async def start(self, *, restart: bool = False) -> StepReporter:
        """Mark the step RUNNING (adding it to the task first if it is new).

        A step that FAILED runs again (a restart), so an agent retries a step by
        entering it again.

        Args:
            restart: Start a RUNNING step over from the start.
        """
        step = self.step
        if step is None:
            await self._task.add_steps(self._spec)
        restart = restart or (step is not None and step.state is models.StepState.FAILED)
        self._finished = False
        await self._update(state=task_pb2.STEP_STATE_RUNNING, restart=restart)
        return self

    async def __aenter__(self) -> StepReporter:
        """Start the step and make it current for the block, within its task."""
        await self.start()
        current = CurrentTask(self._task, asyncio.get_running_loop(), step_key=self.key)
        self._context = enter(current)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        """Succeed the step, or fail it with the exception; a cancellation passes through."""
        if self._context is not None:
            leave(self._context)
            self._context = None
        if self._finished:
            return False
        if exc is None:
            await self.succeed()
        elif isinstance(exc, TaskCancelled) or not isinstance(exc, Exception):
            await self.discard_pending()  # the server closes the step with its task
        else:
            try:
                with contextlib.suppress(HeadwayError):
                    await self.flush()  # the last progress shows where it failed
                await self._finish(
                    task_pb2.STEP_STATE_FAILED,
                    error=error_from_exception(exc, self._task.retryable),
                    check_cancel=False,
                )
            except (HeadwayError, TaskCancelled) as error:
                logger.warning("could not record the failure of step %s: %s", self.key, error)
        return False

    async def progress(
        self,
        current: int | None = None,
        total: int | None = None,
        *,
        unit: str = "",
        fraction: float | None = None,
        message: str | None = None,
    ) -> None:
        """The step's progress: `progress(40, 120, unit="files")`, `progress(fraction=0.3)`,
        or `progress()` for "under way, size unknown".

        Coalesced: at most `progress_rate` updates a second reach the server; the
        latest value is sent when the interval ends and when the step ends. A
        `message` goes in the same update as the progress.

        Raises:
            TaskCancelled: A viewer asked to cancel the task.
        """
        update = PendingUpdate(
            progress=progress_message(current, total, unit=unit, fraction=fraction),
            message=message,
        )
        await self._task._submit(self._coalescer, update)

    async def message(self, text: str) -> None:
        """The step's status line, such as "fetching page 3" (coalesced with its progress)."""
        await self._task._submit(self._coalescer, PendingUpdate(message=text))

    async def log(
        self, message: str, *, level: models.LogLevel = models.LogLevel.INFO, **fields: object
    ) -> int:
        """Append a log line about this step; see TaskReporter.log."""
        return await self._task.log(message, level=level, step=self.key, **fields)

    async def succeed(self, message: str | None = None) -> None:
        """Mark the step SUCCEEDED (after sending its pending progress)."""
        await self.flush()
        await self._finish(task_pb2.STEP_STATE_SUCCEEDED, message=message)

    async def skip(self, message: str | None = None) -> None:
        """Mark a pending step SKIPPED: it was not needed."""
        await self.discard_pending()
        await self._finish(task_pb2.STEP_STATE_SKIPPED, message=message)

    async def fail(
        self,
        error: str | BaseException,
        *,
        code: str = "",
        details: Mapping[str, str] | None = None,
        retryable: bool | None = None,
    ) -> None:
        """Mark the step FAILED with an error; the task goes on unless the error propagates."""
        with contextlib.suppress(HeadwayError):
            await self.flush()
        recorded = _error_of(error, code, details, retryable, self._task.retryable)
        await self._finish(task_pb2.STEP_STATE_FAILED, error=recorded)

    async def restart(self) -> None:
        """Run the step again from the start (its progress resets, its restart count grows)."""
        await self.discard_pending()
        await self.start(restart=True)

    async def flush(self) -> None:
        """Send the pending progress now."""
        await self._coalescer.flush()

    async def discard_pending(self) -> None:
        """Drop progress not sent yet (the step ends some other way)."""
        await self._coalescer.discard()

    async def _finish(
        self,
        state: task_pb2.StepState.ValueType,
        *,
        message: str | None = None,
        error: task_pb2.TaskError | None = None,
        check_cancel: bool = True,
    ) -> None:
        self._finished = True
        await self._update(state=state, message=message, error=error, check_cancel=check_cancel)

    async def _update(self, *, check_cancel: bool = True, **changes: Any) -> None:
        await self._task._mutate(self._task._client.update_step(self._task.id, self.key, **changes))
        if check_cancel:
            self._task.raise_if_cancelled()

    async def _send_update(self, update: PendingUpdate) -> None:
        await self._task._mutate(
            self._task._client.update_step(
                self._task.id, self.key, progress=update.progress, message=update.message
            )
        )


def _error_of(
    error: str | BaseException,
    code: str,
    details: Mapping[str, str] | None,
    retryable: bool | None,
    retryable_types: tuple[type[BaseException], ...],
) -> task_pb2.TaskError:
    if isinstance(error, BaseException):
        recorded = error_from_exception(error, retryable_types)
    else:
        recorded = task_pb2.TaskError(message=_shorten(error, _MAX_ERROR_MESSAGE))
    if retryable is not None:
        recorded.retryable = retryable
    if code:
        recorded.code = code
    if details:
        recorded.details.update(details)
    return recorded


__all__ = [
    "AGENT_RETRY",
    "DEFAULT_PROGRESS_RATE",
    "StepReporter",
    "TaskReporter",
    "Tracker",
    "error_from_exception",
    "progress_message",
]
