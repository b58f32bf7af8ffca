"""`headway watch`: a live view of tasks that redraws in place, or one line per change.

On a terminal the view is a rich `Live` display, redrawn by this process's event
loop (never by rich's refresh thread, which would read the view while the stream
changes it): at once after a change, at most ten times a second, and every
second for the elapsed times. When the output is not a terminal, each change is
one plain line, for logs and `grep`. Either way the subscription resumes by
itself after a disconnect, and the view says so while it waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import Protocol

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from headway.cli import layout, render
from headway.cli.errors import CliError
from headway.client import (
    HeadwayClient,
    HeadwayError,
    LiveView,
    NotFoundError,
    events,
    subscribe,
)
from headway.client.models import Task
from headway.v1 import task_service_pb2

REDRAW_INTERVAL = 0.1
TICK_INTERVAL = 1.0


class Display(Protocol):
    """Where a watch shows what happens."""

    def __enter__(self) -> Display: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def show(self, event: events.Event | None, previous: Task | None) -> None:
        """Show one event; None when the view changed outside the stream (a backfill)."""

    async def tick(self) -> None: ...

    def note(self, text: str) -> None:
        """Say something about the watch itself (not about a task)."""


class Board:
    """What a watch shows: the view's tasks, in a useful order, and at most `limit` of them."""

    def __init__(
        self,
        view: LiveView,
        states: frozenset[int],
        limit: int,
        expected_tasks: int = 1,
    ) -> None:
        self.view = view
        self._states = states
        self._limit = limit
        self._expected_tasks = expected_tasks

    def tasks(self) -> list[Task]:
        """Unfinished tasks first (oldest first), then the most recently finished."""
        shown = [
            task
            for task in self.view.tasks.values()
            if not self._states or (task.state is not None and int(task.state) in self._states)
        ]
        active = sorted((t for t in shown if not t.at_rest), key=lambda t: t.create_revision)
        resting = sorted((t for t in shown if t.at_rest), key=lambda t: -t.revision)
        return (active + resting)[: self._limit] if self._limit else active + resting

    def all_done(self) -> bool:
        """Every task shown is at rest (and there are as many as expected)."""
        tasks = self.tasks()
        return (
            self.view.synced
            and len(tasks) >= self._expected_tasks
            and all(task.at_rest for task in tasks)
        )


class LiveDisplay:
    """Redraws the board in place on a terminal, on the alternate screen.

    Each frame is drawn whole from the top-left corner of the alternate screen
    (as full-screen programs do), never by moving the cursor up over the last
    frame: once a window has been narrowed, the terminal may have wrapped that
    frame onto more lines than were drawn, and moving up by its height would
    leave pieces of it behind. On SIGWINCH the board takes the window's new size
    from the terminal itself ($COLUMNS and $LINES are not updated by a resize)
    and is redrawn at once. When the watch ends, the last frame is printed on the
    ordinary screen, so that it stays in view and in the scrollback.
    """

    def __init__(
        self,
        board: Board,
        target: str,
        *,
        log_lines: int,
        console: Console,
        nothing: str = "No tasks yet",
    ) -> None:
        self._board = board
        self._nothing = nothing
        self._target = target
        self._log_lines = log_lines
        self._console = console
        self._live = Live(console=console, auto_refresh=False, screen=True)
        self._notes: list[str] = []
        self._dirty = True
        self._drawn_at = 0.0

    def __enter__(self) -> LiveDisplay:
        self._live.__enter__()
        with contextlib.suppress(NotImplementedError, RuntimeError):  # no signals here
            asyncio.get_running_loop().add_signal_handler(signal.SIGWINCH, self._resized)
        self._draw()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGWINCH)
        self._live.__exit__(exc_type, exc, tb)
        self._console.print(self.renderable())

    def note(self, text: str) -> None:
        """A remark about the watch itself, shown under the header."""
        self._notes.append(text)
        self._draw()

    def _resized(self) -> None:
        with contextlib.suppress(OSError):
            self._console.size = os.get_terminal_size(self._console.file.fileno())
        self._draw()

    def show(self, event: events.Event | None, previous: Task | None) -> None:
        """Note a change (None: the view changed outside the stream) and redraw if due."""
        self._dirty = True
        if (
            event is None
            or time.monotonic() - self._drawn_at >= REDRAW_INTERVAL
            or isinstance(event, events.Synced | events.Reconnecting)
        ):
            self._draw()

    async def tick(self) -> None:
        """Redraw what changed since the last frame, and the clocks once a second."""
        while True:
            await asyncio.sleep(REDRAW_INTERVAL)
            if self._dirty or time.monotonic() - self._drawn_at >= TICK_INTERVAL:
                self._draw()

    def _draw(self) -> None:
        self._live.update(self.renderable(), refresh=True)
        self._dirty = False
        self._drawn_at = time.monotonic()

    def renderable(self) -> RenderableType:
        view = self._board.view
        tasks = self._board.tasks()
        status = ""
        if view.reconnecting is not None:
            status = f"reconnecting ({view.reconnecting.error.code.name})…"
        elif not view.synced:
            status = "connecting…"
        header: RenderableType = render.board_header(self._target, tasks, view.revision, status)
        if self._notes:
            header = Group(header, *(Text(note, style="bold") for note in self._notes))
        if view.synced and not tasks:
            return Group(header, Text(f"{self._nothing}. Waiting for some…", style="dim"))
        return layout.board(
            header, tasks, view.logs, log_lines=self._log_lines, console=self._console
        )


async def backfill_logs(board: Board, display: Display) -> None:
    """Show the log lines written before the watch started, for the tasks on the board."""
    for task in board.tasks():
        with contextlib.suppress(HeadwayError):
            await board.view.backfill_logs(task.id)
    display.show(None, None)


async def missing_tasks(
    client: HeadwayClient, filter: task_service_pb2.TaskFilter, view: LiveView
) -> str:
    """ "task 'x' not found" when the filter names tasks and none of them exists; else ""."""
    if not filter.task_ids or any(task_id in view.tasks for task_id in filter.task_ids):
        return ""
    for task_id in filter.task_ids:
        try:
            await client.get_task(task_id)
        except NotFoundError:
            continue
        return ""  # it exists, but other filters leave it out
    names = ", ".join(f"'{task_id}'" for task_id in filter.task_ids)
    return f"task {names} not found" if len(filter.task_ids) == 1 else f"tasks {names} not found"


class PlainDisplay:
    """One line per change, for pipes and files; interruptions go to stderr."""

    def __init__(self, *, show_snapshot: bool = True) -> None:
        self._show_snapshot = show_snapshot

    def __enter__(self) -> PlainDisplay:
        return self

    def __exit__(self, *exc_info: object) -> None:
        sys.stdout.flush()

    def show(self, event: events.Event | None, previous: Task | None) -> None:
        if event is None:
            return
        if isinstance(event, events.Reconnecting):
            resume = f"from revision {event.revision}" if event.revision is not None else "anew"
            print(
                f"headway: stream interrupted ({event.error.code.name}); "
                f"resuming {resume} in {event.delay:.1f}s",
                file=sys.stderr,
                flush=True,
            )
            return
        if isinstance(event, events.Snapshot) and not self._show_snapshot:
            return
        line = render.plain_line(event, previous)
        if line is not None:
            print(line, flush=True)

    async def tick(self) -> None:
        await asyncio.Event().wait()  # nothing to refresh

    def note(self, text: str) -> None:
        print(f"headway: {text}", file=sys.stderr, flush=True)


async def watch(
    client: HeadwayClient,
    filter: task_service_pb2.TaskFilter,
    display_for: Callable[[Board], Display],
    *,
    include_logs: bool,
    until_done: bool,
    limit: int = 0,
    log_lines: int = 50,
    expected_tasks: int = 1,
    earlier_logs: bool = False,
    conflate: bool = False,
) -> None:
    """Follow the tasks matching `filter` and show every change until interrupted.

    Args:
        client: Where to subscribe.
        filter: Which tasks.
        display_for: Makes the display for the board (live or plain).
        include_logs: Also follow log lines.
        until_done: Return once every shown task is at rest.
        limit: Show at most this many tasks (0: all).
        log_lines: Log lines kept per task.
        expected_tasks: With `until_done`, how many tasks must be there first.
        earlier_logs: Also show the log lines written before the watch started.
        conflate: Let the server conflate the stream when this watch falls behind: right
            for a live view, which shows each task's latest state, and wrong for one
            line per change, which must show every change and every log line (the
            stream then resumes after an eviction instead, from its last revision).

    Raises:
        CliError: With `until_done`, when none of the task ids in `filter` exists.
    """
    view = LiveView(client, filter, include_logs=include_logs, log_lines=log_lines)
    board = Board(view, frozenset(int(state) for state in filter.states), limit, expected_tasks)
    checked = False
    with display_for(board) as display:
        helpers = [asyncio.create_task(display.tick())]
        try:
            policy = (
                task_service_pb2.SLOW_CONSUMER_POLICY_CONFLATE
                if conflate
                else task_service_pb2.SLOW_CONSUMER_POLICY_END
            )
            async for event in subscribe(
                client, filter, include_logs=include_logs, slow_consumer=policy
            ):
                previous = (
                    view.tasks.get(event.task.id) if isinstance(event, events.TaskEvent) else None
                )
                view.apply(event)
                # Before `synced` is shown: whoever waits for it sees the verdict first.
                if isinstance(event, events.Synced) and not checked:
                    checked = True
                    missing = await missing_tasks(client, filter, view)
                    if missing:
                        if until_done:
                            raise CliError(missing)
                        display.note(f"{missing}; still watching, in case of a later creation")
                display.show(event, previous)
                if isinstance(event, events.Synced) and earlier_logs:
                    helpers.append(asyncio.create_task(backfill_logs(board, display)))
                if until_done and board.all_done():
                    return
        finally:
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)


__all__ = ["Board", "LiveDisplay", "PlainDisplay", "watch"]
