"""What a tqdm bar reports, shared by the drop-in classes of `headway.contrib.tqdm`.

A bar is drawn as tqdm draws it; in addition it reports to the task that is
current where it is opened: inside a bar that reports, or a Tracker block, it
becomes a step of that task (desc -> the step's name); elsewhere it opens a task
of its own (desc -> the task's display name). Its position (n, total, unit) is
the progress of that step or task and its postfix the status line, sent when
tqdm redraws — so tqdm's `mininterval` is the floor of the reporting interval —
and coalesced again by the Tracker. Closing the bar ends its step (or task):
succeeded, or failed with the exception that left a `with tqdm(...)` block.

A viewer's cancel request stops the loop as a Tracker does: the bar's next update
raises `TaskCancelled`, and the task ends CANCELLED once its owner (the bar that
opened it, or the Tracker block) sees the exception go by.

Python does not tell an iterator why a `for` loop stopped early, so a bare
`for x in tqdm(...)` left by an exception ends like one left by `break`
(succeeded); `with tqdm(...) as bar: for x in bar:` records the exception.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextvars import Token
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from tqdm.std import tqdm as std_tqdm

from headway.client.errors import TaskCancelled
from headway.contrib._reporter import (
    Active,
    Reporter,
    activate,
    current,
    deactivate,
    default_reporter,
)
from headway.contrib._session import Progress, StepRef, TaskSession

logger = logging.getLogger("headway.contrib")

_T = TypeVar("_T")

if TYPE_CHECKING:
    _TqdmBase = std_tqdm
else:

    class _TqdmBase(std_tqdm, Generic[_T]):
        """tqdm, generic at run time too (its stubs make it generic for the type checker)."""


class BarReport:
    """The reports of one bar: where they go, and what was sent last (to skip repeats)."""

    def __init__(self, session: TaskSession, step: StepRef | None) -> None:
        self.session = session
        self.step = step
        self.error: BaseException | None = None
        self._last: tuple[float, float | None, str, str | None] | None = None
        self._active = Active(session, step)
        self._token: Token[Active | None] | None = activate(self._active)

    @classmethod
    def open(
        cls,
        desc: str,
        *,
        task_id: str,
        kind: str,
        labels: Mapping[str, str] | None,
        reporter: Reporter | None,
    ) -> BarReport | None:
        """Start reporting a bar just opened; None when nothing can be reported."""
        where = current(reporter)
        if where is not None:
            return cls(where.session, where.session.open_step(desc or "progress"))
        reporter = reporter or default_reporter()
        if reporter is None or reporter.closed:
            return None
        session = reporter.task(task_id, display_name=desc, kind=kind, labels=labels)
        return cls(session, None)

    def update(self, bar: std_tqdm[Any]) -> None:
        """Queue the bar's position and postfix, unless they did not change."""
        postfix = bar.postfix if isinstance(bar.postfix, str) and bar.postfix else None
        state = (float(bar.n), None if bar.total is None else float(bar.total), bar.unit, postfix)
        if state == self._last:
            return
        self._last = state
        n, total, unit, message = state
        self.session.progress(self.step, Progress(n, total, unit, message))

    def raise_if_cancelled(self) -> None:
        """Stop the loop with TaskCancelled once a viewer asked to cancel the task."""
        cancelled = self.session.cancelled()
        if cancelled is not None:
            self.error = cancelled
            raise cancelled

    def close(self, bar: std_tqdm[Any]) -> None:
        """Send the last position, then end the bar's step (or its task)."""
        if self._token is not None:
            deactivate(self._token, self._active)
            self._token = None
        self.update(bar)
        if self.step is not None:
            self.session.close_step(self.step, self.error)
        else:
            self.session.close(self.error)


class ReportingBar(_TqdmBase[_T]):
    """Overrides of tqdm's methods that report; mixed in before a tqdm class."""

    _headway: BarReport | None = None

    def __init__(
        self,
        *args: Any,
        task_id: str = "",
        kind: str = "",
        labels: Mapping[str, str] | None = None,
        reporter: Reporter | None = None,
        **kwargs: Any,
    ) -> None:
        """Open the bar as tqdm does; then report it (unless the bar is disabled).

        Args:
            task_id: The id of the task a bar outside any task opens (else made by
                the server).
            kind: That task's kind.
            labels: That task's labels.
            reporter: Where to report; the default reporter (from the environment)
                when None.
        """
        super().__init__(*args, **kwargs)
        if self.disable:
            return
        try:
            self._headway = BarReport.open(
                self.desc.rstrip(": "),
                task_id=task_id,
                kind=kind,
                labels=labels,
                reporter=reporter,
            )
            if self._headway is not None:
                self._headway.update(self)
        except Exception:  # reporting must never break the job
            logger.warning("could not report a progress bar to Headway", exc_info=True)

    def update(self, n: float | None = 1) -> bool | None:
        """tqdm's update; then a cancel request, if one came, stops the loop."""
        displayed = super().update(n)
        if self._headway is not None:
            self._headway.raise_if_cancelled()
        return displayed

    def refresh(
        self,
        nolock: bool = False,
        lock_args: tuple[bool | None, float | None] | tuple[bool | None] | None = None,
    ) -> None:
        """tqdm's redraw, which is also when the bar reports where it is."""
        super().refresh(nolock, lock_args)
        if self._headway is not None:
            try:
                self._headway.update(self)
            except Exception:
                logger.debug("could not report a bar's progress", exc_info=True)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: Any,
    ) -> None:
        """Leaving a `with` block by an exception ends the bar's step or task with it."""
        if exc_value is not None and self._headway is not None and self._headway.error is None:
            self._headway.error = exc_value
        super().__exit__(exc_type, exc_value, traceback)

    def close(self) -> None:
        """tqdm's close; then the bar's step (or task) ends."""
        report, self._headway = self._headway, None
        try:
            super().close()
        finally:
            if report is not None:
                try:
                    report.close(self)
                except Exception:
                    logger.warning("could not end a progress bar's report", exc_info=True)


__all__ = ["BarReport", "ReportingBar", "TaskCancelled"]
