"""Fail-open reporting, shared by every integration: a Tracker on a thread of its own.

Progress bars and logging calls happen in the job's code, which must never wait
for the network nor fail because of it. A `Reporter` runs a Tracker on an event
loop in a background thread; the integrations queue their reports in task
sessions (see _session.py) and return at once. Its client retries for as long
as the server is away (quietly: the `Outage` says it once, then every few
minutes), so a report is sent, exactly once, when the server is back, and the
queue is compacted meanwhile to stay within bounds.

Where a report goes is decided by what is current in the calling code: the
innermost bar that reports (a task of its own, or a step), else the task or step
of a Tracker block (headway.client.context), whose reports are queued on that
Tracker's own loop. Integrations of other libraries reuse the same pieces:
`current()` to find the task, `Reporter.task()` to open one, and a session's
`open_step`, `progress`, `log` and `close`.

The default reporter is made on first use from the environment, as every Headway
client is: `HEADWAY_SERVER` (else 127.0.0.1:50051), `HEADWAY_TOKEN` or
`HEADWAY_TOKEN_FILE`, `HEADWAY_TLS`, `HEADWAY_CA`, `HEADWAY_CERT`, `HEADWAY_KEY`;
`configure()` replaces it. At exit it waits a few seconds for what is queued.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
import weakref
from collections.abc import Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass

from headway.client.client import default_target
from headway.client.context import CurrentTask, current_task
from headway.client.retry import RetryPolicy
from headway.client.security import PemSource
from headway.client.sync import LoopThread
from headway.client.tracker import AGENT_RETRY, DEFAULT_PROGRESS_RATE, TaskReporter, Tracker
from headway.contrib._outage import DEFAULT_WARN_EVERY, Outage
from headway.contrib._session import (
    DEFAULT_MAX_LOGS,
    DEFAULT_MAX_PENDING,
    SLOW_REPORT,
    StepRef,
    TaskSession,
    wait_all,
)

logger = logging.getLogger("headway.contrib")

REPORTER_RETRY = RetryPolicy(
    initial_backoff=0.1, max_backoff=5.0, deadline=None, codes=AGENT_RETRY.codes, quiet=True
)
"""Retry for as long as the server is away: the job goes on meanwhile, and a report
sent late (with its first request_id) is better than a report lost."""

EXIT_FLUSH_TIMEOUT = 5.0
"""Seconds a finishing program waits for its queued reports to be sent."""


@dataclass(frozen=True)
class Active:
    """Where reports made now go: a session, and the step within it (none: the task)."""

    session: TaskSession
    step: StepRef | None = None
    step_key: str = ""  # a Tracker block's step, for a session attached to its task


_active: ContextVar[Active | None] = ContextVar("headway_contrib_active", default=None)


def activate(active: Active) -> Token[Active | None]:
    """Make `active` where the reports of the code running now go (a bar, while open)."""
    return _active.set(active)


def deactivate(token: Token[Active | None], active: Active) -> None:
    """Undo `activate`; from another context, only if `active` is still what it set."""
    try:
        _active.reset(token)
    except ValueError:
        if _active.get() is active:
            _active.set(token.old_value if token.old_value is not Token.MISSING else None)


class Reporter:
    """Reports tasks from a background thread, so that the job never waits for the server.

    Args:
        target: host:port of the server; `$HEADWAY_SERVER`, else 127.0.0.1:50051.
        token, tls, ca, cert, key, metadata: As for `HeadwayClient` (`$HEADWAY_TOKEN`…).
        progress_rate: Progress updates a second per step (or task) at most.
        warn_every: Seconds between two warnings while reports keep failing.
        slow: Seconds without an answer after which the server counts as away.
        max_pending: Reports one task may queue (progress is compacted first).
        max_logs: Log lines one task may queue; more are counted and dropped.
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        token: str | None = None,
        tls: bool | None = None,
        ca: PemSource | None = None,
        cert: PemSource | None = None,
        key: PemSource | None = None,
        metadata: tuple[tuple[str, str], ...] = (),
        progress_rate: float | None = DEFAULT_PROGRESS_RATE,
        warn_every: float = DEFAULT_WARN_EVERY,
        slow: float = SLOW_REPORT,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_logs: int = DEFAULT_MAX_LOGS,
    ) -> None:
        self.target = target or default_target()
        self.outage = Outage(self.target, warn_every)
        self.slow = slow
        self.max_pending = max_pending
        self.max_logs = max_logs
        self._lock = threading.RLock()  # attach() makes a session while holding it
        self._sessions: weakref.WeakSet[TaskSession] = weakref.WeakSet()
        self._attached: weakref.WeakKeyDictionary[TaskReporter, TaskSession] = (
            weakref.WeakKeyDictionary()
        )
        self._portal = LoopThread(name="headway-reporter")

        async def make() -> Tracker:
            # gRPC binds a channel to the loop it is created on: create it there.
            return Tracker(
                self.target,
                retry=REPORTER_RETRY,
                progress_rate=progress_rate,
                metadata=metadata,
                token=token,
                tls=tls,
                ca=ca,
                cert=cert,
                key=key,
            )

        try:
            self.tracker = self._portal.run(make())
        except BaseException:
            self._portal.close()
            raise

    @property
    def closed(self) -> bool:
        return self._portal.loop.is_closed()

    def task(
        self,
        task_id: str = "",
        *,
        display_name: str = "",
        kind: str = "",
        labels: Mapping[str, str] | None = None,
    ) -> TaskSession:
        """Open a task of its own (created in the background) and return its session."""
        reporter = self.tracker.task(
            task_id, display_name=display_name[:256], kind=kind, labels=labels
        )
        return self.open(reporter)

    def open(self, reporter: TaskReporter) -> TaskSession:
        """Create a task the caller described (made with `self.tracker`, perhaps with a parent
        or as a subclass of TaskReporter) in the background, and return its session."""
        session = self._session(reporter, self._portal.loop, owns=True)
        session.start()
        return session

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop of `tracker`: calls outside any session (such as cancelling a task
        another process reported) are scheduled on it, never awaited by the job."""
        return self._portal.loop

    def attach(self, current: CurrentTask) -> TaskSession:
        """The session that adds reports to a Tracker block's task, on that Tracker's loop."""
        with self._lock:
            session = self._attached.get(current.reporter)
            if session is None:
                session = self._session(current.reporter, current.loop, owns=False)
                self._attached[current.reporter] = session
                # The block's end waits for our reports: none may come after it.
                current.reporter.before_end(session.drained)
            return session

    def flush(self, timeout: float | None = EXIT_FLUSH_TIMEOUT) -> bool:
        """Wait until every queued report was sent; False if `timeout` came first."""
        with self._lock:
            sessions = list(self._sessions)
        return wait_all(sessions, timeout)

    def close(self, timeout: float | None = EXIT_FLUSH_TIMEOUT) -> None:
        """Send what is queued (waiting at most `timeout`), then stop the thread."""
        if self.closed:
            return
        if not self.flush(timeout):
            logger.warning(
                "reports to the Headway server at %s were still queued at exit; they are lost",
                self.target,
            )
        self._portal.run(self._shutdown())
        self._portal.close()

    async def _shutdown(self) -> None:
        current = asyncio.current_task()
        pending = [task for task in asyncio.all_tasks() if task is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self.tracker.close()

    def _session(
        self, reporter: TaskReporter, loop: asyncio.AbstractEventLoop, *, owns: bool
    ) -> TaskSession:
        session = TaskSession(
            reporter,
            loop,
            self.outage,
            owns=owns,
            max_pending=self.max_pending,
            max_logs=self.max_logs,
            slow=self.slow,
        )
        with self._lock:
            self._sessions.add(session)
        return session


_default: Reporter | None = None
_default_failed = False
_default_lock = threading.Lock()


def default_reporter() -> Reporter | None:
    """The process's reporter, made from the environment on first use.

    None when it cannot be made (say, `HEADWAY_TOKEN_FILE` names a missing file):
    that is logged once, and the integrations then only do their local work.
    """
    global _default, _default_failed
    with _default_lock:
        if _default is None and not _default_failed:
            try:
                _default = Reporter()
            except Exception as error:
                _default_failed = True
                logger.warning("Headway reporting is off: %s", error)
            else:
                atexit.register(_default.close)
        return _default


def configure(target: str | None = None, **options: object) -> Reporter:
    """Replace the default reporter with one made from these arguments (see `Reporter`)."""
    global _default, _default_failed
    reporter = Reporter(target, **options)  # type: ignore[arg-type]
    with _default_lock:
        previous, _default = _default, reporter
        _default_failed = False
    atexit.register(reporter.close)
    if previous is not None:
        atexit.unregister(previous.close)
        previous.close()
    return reporter


def current(reporter: Reporter | None = None) -> Active | None:
    """Where a report made now goes; None outside every task (nothing is reported then).

    The innermost open bar (or other integration) wins; else the task and step of
    the Tracker block the code runs in, through `reporter` (the default when None).
    """
    active = _active.get()
    if active is not None and not active.session.ended:
        if active.step is not None and active.step.closed:
            return Active(active.session)
        return active
    tracked = current_task()
    if tracked is None:
        return None
    reporter = reporter or default_reporter()
    if reporter is None or reporter.closed:
        return None
    return Active(reporter.attach(tracked), step_key=tracked.step_key)


__all__ = [
    "REPORTER_RETRY",
    "Active",
    "Reporter",
    "activate",
    "configure",
    "current",
    "deactivate",
    "default_reporter",
]
