"""The task (and step) that the code running now reports to.

A Tracker's `async with tracker.task(...)` and `async with task.step(...)` blocks
(and their SyncTracker `with` forms) make their task current for the code inside
them, so that code which was not handed the reporter — a progress bar, a logging
handler — can still find the task it works for. A context variable carries it:
it follows the code into the tasks it spawns with asyncio, and not into other
threads, which work for a task only when told so.
"""

from __future__ import annotations

import asyncio
import contextlib
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from headway.client.tracker import TaskReporter


@dataclass(frozen=True)
class CurrentTask:
    """The task being reported, the loop its reporter runs on, and the step open in it.

    Attributes:
        reporter: The task's reporter; call it only on `loop`.
        loop: The event loop its client is bound to (gRPC channels belong to one loop).
        step_key: The key of the step open in the code running now; empty for none.
    """

    reporter: TaskReporter
    loop: asyncio.AbstractEventLoop
    step_key: str = ""


_current: ContextVar[CurrentTask | None] = ContextVar("headway_current_task", default=None)


def current_task() -> CurrentTask | None:
    """The task the running code reports to, or None outside every task block."""
    return _current.get()


def enter(current: CurrentTask) -> Token[CurrentTask | None]:
    """Make `current` the current task until `leave()` with the token returned."""
    return _current.set(current)


def leave(token: Token[CurrentTask | None]) -> None:
    """Restore the task that was current before `enter()`.

    A block left in another context than the one it was entered in (a reporter
    entered in one asyncio task and exited in another) cannot restore it there;
    that context never saw the change, so there is nothing to undo.
    """
    with contextlib.suppress(ValueError):
        _current.reset(token)


__all__ = ["CurrentTask", "current_task", "enter", "leave"]
