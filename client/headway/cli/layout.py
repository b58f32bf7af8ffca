"""How a board of tasks fits the terminal: whole panels, compact panels side by side, or
one line per task.

A live board shows the most that fits the window. Each layout is tried from the
richest down, and the first whose frame leaves the terminal's last line free is
drawn: a whole panel per task; then compact panels (see `render.compact_panel`)
in as many columns as the width allows; then, only when even those do not fit,
one line per task. Compact panels are measured with `SPARE_LINES` more per panel,
so that a panel which grows by a line of detail does not tip the board into one
line per task.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from rich.console import Console, Group, RenderableType
from rich.table import Table

from headway.cli import render
from headway.client.models import LogEntry, Task

COMPACT_WIDTH = 50
"""The narrowest compact panel: its bar, percentage and ETA still fit on one line."""

MAX_COLUMNS = 3
"""Compact panels side by side at most, however wide the terminal."""

SPARE_LINES = 1
"""Lines each compact panel may grow by before the board stops fitting."""

COMPACT_LOG_LINES = 2
"""The latest log lines of a compact panel, at most."""

Logs = Mapping[str, Iterable[LogEntry]]


def board(
    header: RenderableType,
    tasks: Sequence[Task],
    logs: Logs,
    *,
    log_lines: int,
    console: Console,
) -> RenderableType:
    """The header and the tasks in the richest layout that fits `console`'s size."""
    panels = Group(header, *full_panels(tasks, logs, log_lines))
    if _height(console, panels) < console.height:
        return panels
    columns = compact_columns(console.width)
    log_lines = min(log_lines, COMPACT_LOG_LINES)
    compact = Group(
        header, compact_grid(tasks, logs, console, columns=columns, log_lines=log_lines)
    )
    rows = -(-len(tasks) // columns)
    if _height(console, compact) + SPARE_LINES * rows < console.height:
        return compact
    return Group(header, render.task_table(tasks))


def full_panels(tasks: Sequence[Task], logs: Logs, log_lines: int) -> list[RenderableType]:
    """A whole panel per task, one under the other: the step checklist and its details."""
    return [render.task_panel(task, logs.get(task.id, ()), log_lines=log_lines) for task in tasks]


def compact_columns(width: int) -> int:
    """How many compact panels fit side by side in `width` columns (at least one)."""
    return max(1, min(MAX_COLUMNS, width // COMPACT_WIDTH))


def compact_grid(
    tasks: Sequence[Task], logs: Logs, console: Console, *, columns: int, log_lines: int
) -> RenderableType:
    """Compact panels in rows of `columns`, each row's panels padded to the same height."""
    grid = Table.grid(expand=True)
    for _ in range(columns):
        grid.add_column(ratio=1)
    width = console.width // columns
    for start in range(0, len(tasks), columns):
        row = tasks[start : start + columns]
        panels = [
            render.compact_panel(task, logs.get(task.id, ()), log_lines=log_lines) for task in row
        ]
        tallest = max(_height(console, panel, width) for panel in panels)
        for panel in panels:
            panel.height = tallest
        grid.add_row(*panels)
    return grid


def _height(console: Console, renderable: RenderableType, width: int | None = None) -> int:
    options = console.options if width is None else console.options.update_width(width)
    return len(console.render_lines(renderable, options, pad=False))


__all__ = ["board", "compact_columns", "compact_grid", "full_panels"]
