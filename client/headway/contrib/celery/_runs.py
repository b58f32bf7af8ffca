"""Celery's signals, turned into the Headway tasks of the runs a worker process executes.

Each tracked run (every task of an app given to `install`, or a task made with
`base=HeadwayTask`) becomes a Headway task when it starts (`task_prerun`) and is
current while its body runs, so `progress`, `step`, the tqdm bars and the logging
handler of headway.contrib report to it. It ends when the run ends
(`task_postrun`): succeeded, failed with the exception (`task_failure`), or
cancelled.

A retry keeps the Headway task RUNNING: the retry is a warning in its log and its
status line, and the next attempt goes on with the same task (in this process it
reuses the session; another worker adopts the task). One task per Celery task id
keeps the children of every attempt under one parent and the id derivable.

Every handler fails open: it catches what goes wrong and logs it, because an
exception raised from a signal handler would fail the Celery task.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections.abc import Callable
from contextvars import ContextVar, Token
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from celery import Celery, Task, signals, states
from celery.exceptions import Ignore
from google.protobuf.timestamp_pb2 import Timestamp

from headway.client.errors import (
    FailedPreconditionError,
    HeadwayError,
    NotFoundError,
    TaskCancelled,
)
from headway.contrib._reporter import Active, Reporter, activate, deactivate, default_reporter
from headway.contrib._session import LogLine, Progress, TaskSession
from headway.contrib.celery._naming import kind_of, labels_of, task_id_of
from headway.contrib.celery._task import CeleryTaskReporter
from headway.v1 import log_pb2, task_service_pb2

logger = logging.getLogger("headway.contrib.celery")

REVOKED_REASON = "revoked in Celery"

_F = TypeVar("_F", bound=Callable[..., Any])


class Cancelled(TaskCancelled, Ignore):
    """Stops a run whose Headway task was cancelled, or which Celery revoked.

    It is a TaskCancelled, so code that cleans up on a cancel sees it as such; and
    a Celery `Ignore`, so that the run is not recorded as failed: the run's result
    becomes REVOKED instead, as a revoke makes it.
    """


@dataclass
class Options:
    """How the runs of one app are reported (see `install`)."""

    reporter: Reporter | None = None
    lease: timedelta | None = None
    terminate: bool = False
    all_tasks: bool = True

    def resolve(self) -> Reporter | None:
        reporter = self.reporter or default_reporter()
        return None if reporter is None or reporter.closed else reporter


@dataclass(eq=False)
class Run:
    """One tracked run in this process: its session, and how it ended."""

    celery_id: str
    session: TaskSession
    reporter: CeleryTaskReporter
    active: Active
    token: Token[Active | None] | None = None
    error: BaseException | None = None
    cancelled: Cancelled | None = None
    attempts: int = 1

    def cancel_if_asked(self) -> None:
        """Raise Cancelled once Headway asked to cancel or the worker revoked the run."""
        if self.cancelled is not None:
            raise self.cancelled
        request = self.session.cancel_request
        if request is None and _revoked_here(self.celery_id):
            self.reporter.revoke_reason = REVOKED_REASON
        elif request is None:
            return
        self.cancelled = Cancelled(self.reporter.id, request)
        raise self.cancelled


class HeadwayTask(Task):  # type: ignore[type-arg]  # any arguments, any result
    """A Celery Task base that reports its runs: `@app.task(base=HeadwayTask)`.

    For a few tasks of an app; `install(app)` reports them all.
    """


_apps: weakref.WeakKeyDictionary[Celery, Options] = weakref.WeakKeyDictionary()
_runs: dict[str, Run] = {}
_lock = threading.Lock()
_current: ContextVar[Run | None] = ContextVar("headway_celery_run", default=None)


def install(
    app: Celery,
    reporter: Reporter | None = None,
    *,
    lease: timedelta | None = None,
    terminate: bool = False,
    all_tasks: bool = True,
) -> None:
    """Report the runs of `app`'s tasks to Headway.

    Args:
        app: The Celery app (its workers report; the callers need nothing).
        reporter: Where to report; the default reporter (from the environment) when None.
        lease: The tasks' lease: how soon a dead worker's task shows as stalled, and
            how soon a cancel request reaches a run that reports nothing (its
            heartbeats come every third of it). The server's default when None.
        terminate: Revoke with `terminate=True` when a task is cancelled in Headway, so
            that a prefork worker kills a run that does not call `progress`.
        all_tasks: False reports only the tasks made with `base=HeadwayTask`.
    """
    _apps[app] = Options(reporter, lease, terminate, all_tasks)
    _connect()


def current_run() -> Run | None:
    """The tracked run whose body is running in this context, if any."""
    return _current.get()


def _options(task: Task) -> Options | None:  # type: ignore[type-arg]
    options = _apps.get(task.app)
    if isinstance(task, HeadwayTask):
        return options or Options()
    return options if options is not None and options.all_tasks else None


def _revoked_here(celery_id: str) -> bool:
    """True when the worker of this process was told to revoke the run (solo, threads,
    gevent and eventlet pools run the body in that process; prefork does not)."""
    from celery.worker.state import revoked  # the worker's own set of revoked ids

    return celery_id in revoked


def _log_line(level: int, message: str, **fields: str) -> LogLine:
    now = Timestamp()
    now.GetCurrentTime()
    return LogLine(
        log_pb2.LogEntry(
            level=log_pb2.LogLevel.ValueType(level),
            message=message[:8192],
            fields={"source": "celery", **fields},
            time=now,
        )
    )


def _fail_open(handler: _F) -> _F:
    """Log what goes wrong in a signal handler instead of failing the Celery task."""

    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return handler(*args, **kwargs)
        except Exception:
            logger.warning("Headway reporting failed in %s", handler.__name__, exc_info=True)
            return None

    guarded.__name__ = handler.__name__
    return guarded  # type: ignore[return-value]


# -- the signal handlers ----------------------------------------------------------------


@_fail_open
def _on_prerun(task_id: str = "", task: Task | None = None, **_: Any) -> None:  # type: ignore[type-arg]
    if task is None or not task_id:
        return
    options = _options(task)
    if options is None:
        return
    with _lock:
        run = _runs.get(task_id)
    if run is not None and not run.session.ended:
        run.attempts += 1
        run.session.log(
            _log_line(
                log_pb2.LOG_LEVEL_INFO, f"attempt {run.attempts} started", attempt=str(run.attempts)
            )
        )
        run.session.progress(None, Progress(0, None, message=f"attempt {run.attempts}"))
        run.error = run.cancelled = None
    else:
        run = _begin(task, task_id, options)
        if run is None:
            return
    run.token = activate(run.active)
    _current.set(run)


def _begin(task: Task, celery_id: str, options: Options) -> Run | None:  # type: ignore[type-arg]
    reporter = options.resolve()
    if reporter is None:
        return None
    request = task.request
    delivery = request.delivery_info or {}
    queue = delivery.get("routing_key") or delivery.get("queue") or ""
    create = task_service_pb2.CreateTaskRequest(
        task_id=task_id_of(celery_id),
        display_name=(task.name or "")[:256],
        kind=kind_of(task.name or ""),
        labels=labels_of(str(queue), request.hostname),
        parent_id=task_id_of(request.parent_id) if request.parent_id else "",
        start=True,
    )
    if options.lease is not None:
        create.lease_duration.FromTimedelta(options.lease)
    app = task.app
    terminate = options.terminate

    def revoke() -> None:
        app.control.revoke(celery_id, terminate=terminate)

    task_reporter = CeleryTaskReporter(reporter.tracker, create, on_cancel=revoke)
    session = reporter.open(task_reporter)
    run = Run(celery_id, session, task_reporter, Active(session))
    if request.retries:
        run.attempts = request.retries + 1
    with _lock:
        _runs[celery_id] = run
    return run


@_fail_open
def _on_failure(task_id: str = "", exception: BaseException | None = None, **_: Any) -> None:
    with _lock:
        run = _runs.get(task_id)
    if run is not None and exception is not None:
        run.error = exception


@_fail_open
def _on_retry(request: Any = None, reason: object = None, **_: Any) -> None:
    celery_id = getattr(request, "id", None)
    with _lock:
        run = _runs.get(celery_id) if celery_id else None
    if run is None:
        return
    why = str(reason) if reason is not None else "retry"
    text = f"retrying after attempt {run.attempts}: {why}"
    run.session.log(_log_line(log_pb2.LOG_LEVEL_WARNING, text, attempt=str(run.attempts)))
    run.session.progress(None, Progress(0, None, message=text))


@_fail_open
def _on_postrun(task_id: str = "", task: Task | None = None, state: str = "", **_: Any) -> None:  # type: ignore[type-arg]
    with _lock:
        run = _runs.get(task_id)
    if run is None:
        return
    if run.token is not None:
        deactivate(run.token, run.active)
        run.token = None
    _current.set(None)
    if state == states.RETRY and run.cancelled is None:
        return  # the next attempt goes on with the same Headway task
    with _lock:
        _runs.pop(task_id, None)
    if run.cancelled is not None:
        if task is not None and state == states.IGNORED:
            task.backend.mark_as_revoked(
                task_id, run.cancelled.reason or REVOKED_REASON, request=task.request
            )
        run.session.close(run.cancelled)
    elif state == states.FAILURE:
        run.session.close(run.error or RuntimeError(f"Celery task {task_id} failed"))
    else:
        run.session.close()


@_fail_open
def _on_revoked(
    sender: Task | None = None,  # type: ignore[type-arg]
    request: Any = None,
    terminated: bool = False,
    **_: Any,
) -> None:
    celery_id = getattr(request, "id", None)
    if not celery_id or sender is None:
        return
    options = _options(sender)
    if options is None:
        return
    reason = f"{REVOKED_REASON} (terminated)" if terminated else REVOKED_REASON
    with _lock:
        run = _runs.pop(celery_id, None)
    if run is not None:
        # A run of this process waiting for its retry: its session confirms.
        run.reporter.revoke_reason = reason
        run.session.close(Cancelled(run.reporter.id))
        return
    reporter = options.resolve()
    if reporter is not None:
        # The run's process is gone (terminated) or the run never started here: say so
        # for the task that process reported, if there is one.
        future = asyncio.run_coroutine_threadsafe(
            _confirm_elsewhere(reporter, task_id_of(celery_id), reason), reporter.loop
        )
        future.add_done_callback(_log_failure)


async def _confirm_elsewhere(reporter: Reporter, task_id: str, reason: str) -> None:
    try:
        await reporter.tracker.client.confirm_cancel(task_id, reason=reason)
    except (NotFoundError, FailedPreconditionError):
        pass  # never started, or already at rest
    except HeadwayError as error:
        reporter.outage.refused(f"the cancellation of {task_id}", error)


def _log_failure(future: Any) -> None:
    error = future.exception()
    if error is not None:
        logger.warning("could not cancel a revoked task in Headway: %s", error)


_connected = False


def _connect() -> None:
    """Connect the handlers once (a HeadwayTask connects them as well, without install)."""
    global _connected
    with _lock:
        if _connected:
            return
        _connected = True
    signals.task_prerun.connect(_on_prerun, weak=False, dispatch_uid="headway.prerun")
    signals.task_failure.connect(_on_failure, weak=False, dispatch_uid="headway.failure")
    signals.task_retry.connect(_on_retry, weak=False, dispatch_uid="headway.retry")
    signals.task_postrun.connect(_on_postrun, weak=False, dispatch_uid="headway.postrun")
    signals.task_revoked.connect(_on_revoked, weak=False, dispatch_uid="headway.revoked")


_connect()

__all__ = ["Cancelled", "HeadwayTask", "Options", "Run", "current_run", "install"]
