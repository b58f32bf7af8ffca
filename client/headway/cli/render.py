"""How tasks look in a terminal: rich renderables for people, plain lines for pipes.

Every view of the command line draws tasks with these functions, so `watch`,
`task` and `demo` agree on symbols, colours and wording.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

from rich.columns import Columns
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from headway.client import events
from headway.client.models import LogEntry, LogLevel, Step, StepState, Task, TaskState

BAR_WIDTH = 32
COMPACT_BAR_WIDTH = 16

STATE_STYLES: dict[TaskState | None, str] = {
    TaskState.PENDING: "dim",
    TaskState.RUNNING: "bold yellow",
    TaskState.SUCCEEDED: "bold green",
    TaskState.FAILED: "bold red",
    TaskState.CANCELLED: "bold magenta",
    None: "dim",
}

# The step checklist: done, running, pending, failed, and the two ways of not running.
STEP_MARKS: dict[StepState | None, tuple[str, str]] = {
    StepState.SUCCEEDED: ("✔", "green"),
    StepState.RUNNING: ("▶", "yellow"),
    StepState.PENDING: ("○", "dim"),
    StepState.FAILED: ("✘", "red"),
    StepState.SKIPPED: ("↷", "dim"),
    StepState.CANCELLED: ("⊘", "magenta"),
    None: ("?", "dim"),
}

LEVEL_STYLES: dict[LogLevel | None, str] = {
    LogLevel.DEBUG: "dim",
    LogLevel.INFO: "",
    LogLevel.WARNING: "yellow",
    LogLevel.ERROR: "red",
    None: "",
}


STALLED_STYLE = "bold red"

# A success criterion is met or not: nothing in between, so two marks.
CRITERION_MARKS: dict[bool, tuple[str, str]] = {True: ("✓", "green"), False: ("✗", "red")}


def task_eta(task: Task, now: datetime | None = None) -> timedelta | None:
    """The estimated time left of a task as of `now` (default: now), or None without one.

    This is the one place every view asks for an ETA. The server computes it (from
    the observed rate, past runs of the same kind, or the agent's declared
    durations) and stamps an absolute finish time, so the time left counts down
    between changes; a task at rest has none, and nothing is ever guessed here.
    """
    if task.eta is None or task.at_rest:
        return None
    return task.eta.time_left(now)


def eta_text(task: Task, now: datetime | None = None) -> str | None:
    """ "ETA 0:01:10 (history)", "ETA unknown" while nothing is known, None at rest."""
    if task.at_rest:
        return None
    left = task_eta(task, now)
    if left is None or task.eta is None:
        return "ETA unknown"
    basis = f" ({task.eta.basis.name.lower()})" if task.eta.basis is not None else ""
    if not left:
        return f"ETA overdue{basis}"  # the estimated finish has passed; the next change says more
    return f"ETA {format_countdown(left)}{basis}"


def stalled_text(task: Task, now: datetime | None = None) -> str | None:
    """ "STALLED, no report for 0:00:42" while the agent is silent past its lease, else None."""
    if not task.stalled or task.at_rest:
        return None
    silence = task.silence(now)
    return f"STALLED, no report for {format_duration(silence)}" if silence else "STALLED"


def criteria_text(task: Task) -> str | None:
    """ "criteria 3/5": how many success criteria are met, of how many; None without any.

    The one wording every view uses (panels, table rows, plain lines), so an agent's
    checklist reads the same wherever it is watched.
    """
    if not task.criteria:
        return None
    return f"criteria {task.criteria_met}/{task.criteria_total}"


def criteria_checklist(task: Task) -> Table:
    """The success criteria one a line, in the order declared: `✓ name — detail`."""
    checklist = Table.grid(padding=(0, 1))
    checklist.add_column(width=1)
    checklist.add_column()
    for criterion in task.criteria:
        mark, style = CRITERION_MARKS[criterion.met]
        line = Text(criterion.name)
        if criterion.detail:
            line.append(f" — {criterion.detail}", style="dim")
        checklist.add_row(Text(mark, style=style), line)
    return checklist


def state_name(state: TaskState | StepState | None) -> str:
    return state.name if state is not None else "UNKNOWN"


def format_duration(duration: timedelta) -> str:
    """H:MM:SS, the way clocks and rich's own progress columns show durations."""
    seconds = int(duration.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"


def format_countdown(duration: timedelta) -> str:
    """H:MM:SS rounded up, so a countdown shows 0:00:00 only when nothing is left."""
    return format_duration(timedelta(seconds=math.ceil(duration.total_seconds())))


def percent(task: Task) -> str:
    return f"{task.fraction:.0%}"


def step_detail(step: Step) -> str:
    """What a step is doing, in a few words: its sub-progress and its status line."""
    parts = []
    if step.progress is not None and step.state is StepState.RUNNING:
        parts.append(step.progress.describe())
    if step.error is not None:
        parts.append(step.error.describe())
    elif step.message:
        parts.append(step.message)
    return "  ".join(part for part in parts if part)


def children_text(task: Task) -> str | None:
    """A parent's children in a few words, such as "children 2/3 done (1 failed)"; None without.

    "Done" counts every child at rest, so the numbers meet when nothing is left
    to wait for; the ones that did not succeed are named after it.
    """
    counts = task.children
    if counts is None:
        return None
    text = f"children {counts.done}/{counts.total} done"
    troubles = [(counts.failed, "failed"), (counts.cancelled, "cancelled")]
    named = ", ".join(f"{count} {what}" for count, what in troubles if count)
    return f"{text} ({named})" if named else text


def log_line(entry: LogEntry, *, with_task: bool = False) -> str:
    """One log line as text: time, level, step and message, then its fields."""
    stamp = entry.time.astimezone().strftime("%H:%M:%S") if entry.time else "--:--:--"
    level = state_name_of_level(entry.level)
    where = f"{entry.task_id} " if with_task else ""
    step = f"{entry.step_key}: " if entry.step_key else ""
    fields = "".join(f" {key}={value}" for key, value in sorted(entry.fields.items()))
    return f"{stamp} {level:<7} {where}{step}{entry.message}{fields}"


def state_name_of_level(level: LogLevel | None) -> str:
    return level.name if level is not None else "INFO"


# -- rich renderables -------------------------------------------------------------------


def task_panel(
    task: Task,
    logs: Iterable[LogEntry] = (),
    *,
    log_lines: int = 3,
    now: datetime | None = None,
) -> Panel:
    """A task as a panel: bar and percentage, timing, step checklist, latest logs."""
    now = now or datetime.now(UTC)
    rows: list[RenderableType] = [_progress_row(task, now)]
    stalled = stalled_text(task, now)
    if stalled is not None:
        rows.append(Text(f"⚠ {stalled}", style=STALLED_STYLE))
    if task.message:
        rows.append(Text(task.message, style="italic"))
    children = children_text(task)
    if children is not None:
        rows.append(Text(f"⊞ {children}", style="dim"))
    if task.steps:
        rows.append(_step_checklist(task.steps))
    rows.extend(_outcome(task))
    recent = list(logs)[-log_lines:] if log_lines else []
    rows.extend(Text(log_line(entry), style=f"dim {LEVEL_STYLES[entry.level]}") for entry in recent)
    title = _panel_title(task)
    if task.kind:
        title.append(f" ({task.kind})", style="dim")
    return _framed(task, rows, title, stalled is not None)


def _panel_title(task: Task) -> Text:
    title = Text.assemble((task.id, "bold"))
    if task.display_name != task.id:
        title.append(f" · {task.display_name}")
    return title


def _framed(
    task: Task,
    rows: list[RenderableType],
    title: Text,
    stalled: bool,
    height: int | None = None,
    clock: str = "",
) -> Panel:
    """The frame of a task's panel: its title, its state below (after `clock`, if any),
    coloured by the state."""
    style = STATE_STYLES.get(task.state, "dim")
    subtitle = Text(f"{clock} · ", style="dim") if clock else Text()
    subtitle.append(state_name(task.state), style=style)
    if stalled:
        subtitle.append(" · STALLED", style=STALLED_STYLE)
    return Panel(
        Group(*rows),
        title=title,
        title_align="left",
        subtitle=subtitle,
        subtitle_align="right",
        border_style=STALLED_STYLE if stalled else style,
        expand=True,
        height=height,
    )


def task_table(tasks: Sequence[Task], *, now: datetime | None = None) -> Table:
    """Tasks one line each, for when their panels do not fit the terminal."""
    now = now or datetime.now(UTC)
    table = Table.grid(padding=(0, 1), expand=True)
    table.add_column(no_wrap=True)  # state
    table.add_column(no_wrap=True, overflow="ellipsis", max_width=40)  # id · name
    table.add_column(width=BAR_WIDTH // 2)
    table.add_column(justify="right", width=4)
    table.add_column(no_wrap=True, overflow="ellipsis", ratio=1)  # step
    table.add_column(no_wrap=True, style="dim")  # elapsed
    table.add_column(no_wrap=True, style="dim")  # ETA
    table.add_column(no_wrap=True, style="dim")  # criteria
    for task in tasks:
        style = STATE_STYLES.get(task.state, "dim")
        state = Text(state_name(task.state), style=style)
        if task.stalled and not task.at_rest:
            state = Text("STALLED", style=STALLED_STYLE)  # the state that needs a look
        name = task.id if task.display_name == task.id else f"{task.id} · {task.display_name}"
        step = task.current_step
        doing = ""
        if step is not None:
            mark, _ = STEP_MARKS.get(step.state, STEP_MARKS[None])
            doing = f"{mark} {step.display_name}  {step_detail(step)}".rstrip()
        elif task.error is not None:
            doing = f"✘ {task.error.describe()}"
        elapsed = task.elapsed(now)
        table.add_row(
            state,
            Text(name, style="bold"),
            ProgressBar(total=1.0, completed=task.fraction, width=BAR_WIDTH // 2),
            Text(percent(task), style="bold"),
            doing,
            format_duration(elapsed) if elapsed is not None else "",
            eta_text(task, now) or "",
            criteria_text(task) or "",
        )
    return table


# -- compact panels, for boards of many tasks -------------------------------------------


def compact_panel(
    task: Task,
    logs: Iterable[LogEntry] = (),
    *,
    log_lines: int = 2,
    now: datetime | None = None,
    height: int | None = None,
) -> Panel:
    """A task's panel in a few lines of one row each, so that several fit side by side.

    It keeps what a person glances at (state, bar, ETA, the step under way, the
    iteration and metrics, the latest log lines, how it ended) and condenses the
    step checklist into the steps running and a count. Every row is cut to one
    line, so a panel's height does not depend on its width.

    Args:
        task: The task.
        logs: Its log lines, oldest first; the last `log_lines` are shown.
        log_lines: How many log lines at most.
        now: The time for clocks and ETAs (default: now).
        height: Pad the panel to this many lines (to line up with its neighbours).
    """
    now = now or datetime.now(UTC)
    rows: list[RenderableType] = [_compact_progress(task, now)]
    rows.extend(_one_line(line) for line in compact_lines(task, now))
    recent = list(logs)[-log_lines:] if log_lines else []
    rows.extend(
        _one_line(Text(short_log_line(entry), style=f"dim {LEVEL_STYLES[entry.level]}"))
        for entry in recent
    )
    elapsed = task.elapsed(now)
    clock = f"elapsed {format_duration(elapsed)}" if elapsed is not None else ""
    stalled = stalled_text(task, now) is not None
    return _framed(task, rows, _panel_title(task), stalled, height, clock)


def compact_lines(task: Task, now: datetime) -> list[Text]:
    """The rows of a compact panel between its bar and its log lines, each a short line."""
    lines: list[Text] = []
    stalled = stalled_text(task, now)
    if stalled is not None:
        lines.append(Text(f"⚠ {stalled}", style=STALLED_STYLE))
    steps = steps_line(task.steps)
    if steps is not None:
        lines.append(steps)
    counters = counters_line(task)
    if counters is not None:
        lines.append(counters)
    criteria = criteria_text(task)
    if criteria is not None:
        lines.append(Text(criteria, style="dim"))
    children = children_text(task)
    if children is not None:
        lines.append(Text(f"⊞ {children}", style="dim"))
    if task.message:
        lines.append(Text(task.message, style="italic"))
    lines.extend(line for line in _outcome(task) if isinstance(line, Text))
    return lines


def steps_line(steps: Sequence[Step]) -> Text | None:
    """The steps under way (or the one that failed) with their detail, and how many are done.

    "▶ Analyze  table 4 of 20 · 1/3 steps done"; None for a task without steps.
    """
    if not steps:
        return None
    current = [step for step in steps if step.state is StepState.RUNNING]
    if not current:
        current = [step for step in steps if step.state is StepState.FAILED][-1:]
    line = Text()
    for step in current:
        mark, style = STEP_MARKS.get(step.state, STEP_MARKS[None])
        line.append(f"{mark} ", style=style)
        line.append(step.display_name, style="bold")
        # A failed step's error is the task's too, on a line of its own below.
        detail = step_detail(step) if step.state is StepState.RUNNING else ""
        if detail:
            line.append(f"  {detail}", style="dim")
        line.append(" · ", style="dim")
    done = sum(1 for step in steps if step.state in (StepState.SUCCEEDED, StepState.SKIPPED))
    line.append(f"{done}/{len(steps)} steps done", style="dim")
    return line


def counters_line(task: Task) -> Text | None:
    """ "iteration 3/8 · cost_usd 0.54  loss 0.736"; None when the task counts nothing."""
    parts = []
    if task.max_iterations:
        parts.append(f"iteration {task.iteration}/{task.max_iterations}")
    elif task.iteration:
        parts.append(f"iteration {task.iteration}")
    if task.metrics:
        parts.append("  ".join(f"{key} {value:g}" for key, value in sorted(task.metrics.items())))
    return Text(" · ".join(parts), style="dim") if parts else None


def short_log_line(entry: LogEntry) -> str:
    """A log line for a compact panel: its time, its level unless INFO, its message."""
    stamp = entry.time.astimezone().strftime("%H:%M:%S") if entry.time else "--:--:--"
    level = "" if entry.level in (LogLevel.INFO, None) else f"{state_name_of_level(entry.level)} "
    fields = "".join(f" {key}={value}" for key, value in sorted(entry.fields.items()))
    return f"{stamp} {level}{entry.message}{fields}"


def _compact_progress(task: Task, now: datetime) -> Table:
    """A shorter bar, the percentage and the ETA on one line (the elapsed time is on the
    frame). The ETA's column alone gives way when the panel is narrow."""
    row = Table.grid(padding=(0, 1))
    row.add_column(width=COMPACT_BAR_WIDTH)
    row.add_column(justify="right", width=4)
    row.add_column()
    row.add_row(
        _bar(task, COMPACT_BAR_WIDTH),
        Text(percent(task), style="bold"),
        _one_line(Text(eta_text(task, now) or "", style="dim")),
    )
    return row


def _one_line(text: Text) -> Text:
    text.no_wrap = True
    text.overflow = "ellipsis"
    return text


def _bar(task: Task, width: int) -> ProgressBar:
    indeterminate = task.state is TaskState.RUNNING and task.fraction == 0 and _spinning(task)
    return ProgressBar(
        total=1.0,
        completed=task.fraction,
        width=width,
        pulse=indeterminate,
        complete_style="green" if task.state is TaskState.SUCCEEDED else "yellow",
        finished_style="green",
    )


def _progress_row(task: Task, now: datetime) -> Table:
    """The bar, the percentage, then timing and iteration; criteria and metrics on a line below.

    In a narrow panel the bar and percentage keep their width and the timing flows
    onto more lines, item by item, so the ETA is never cut off.
    """
    row = Table.grid(padding=(0, 2))
    row.add_column(width=BAR_WIDTH)
    row.add_column(justify="right", width=4)
    row.add_column()  # the one that gives way
    bar = _bar(task, BAR_WIDTH)
    timing = []
    elapsed = task.elapsed(now)
    if elapsed is not None:
        timing.append(f"elapsed {format_duration(elapsed)}")
    eta = eta_text(task, now)
    if eta is not None:
        timing.append(eta)
    if task.max_iterations:
        timing.append(f"iteration {task.iteration}/{task.max_iterations}")
    elif task.iteration:
        timing.append(f"iteration {task.iteration}")
    row.add_row(bar, Text(percent(task), style="bold"), _flow(timing))
    # The criteria count leads the second line, where the timing cannot crowd it out.
    facts = [criteria_text(task) or ""]
    facts.extend(f"{key} {value:g}" for key, value in sorted(task.metrics.items()))
    if any(facts):
        row.add_row("", "", _flow(fact for fact in facts if fact))
    return row


def _flow(items: Iterable[str]) -> Columns:
    """Short items side by side, two spaces apart, wrapping between items (never inside)."""
    return Columns([Text(item, style="dim") for item in items], padding=(0, 2))


def _spinning(task: Task) -> bool:
    current = task.current_step
    if current is not None:
        return current.progress is not None and current.progress.indeterminate
    return task.progress is not None and task.progress.indeterminate


def _step_checklist(steps: Sequence[Step]) -> Table:
    checklist = Table.grid(padding=(0, 1))
    checklist.add_column(width=1)
    checklist.add_column(no_wrap=True)
    checklist.add_column(style="dim")
    for step in steps:
        mark, style = STEP_MARKS.get(step.state, STEP_MARKS[None])
        name_style = "bold" if step.state is StepState.RUNNING else ""
        checklist.add_row(
            Text(mark, style=style), Text(step.display_name, style=name_style), step_detail(step)
        )
    return checklist


def _outcome(task: Task) -> list[RenderableType]:
    lines: list[RenderableType] = []
    if task.error is not None:
        lines.append(Text(f"✘ {task.error.describe()}", style="red"))
    if task.cancel_request is not None:
        request = task.cancel_request
        by = f" by {request.requested_by}" if request.requested_by else ""
        why = f": {request.reason}" if request.reason else ""
        verb = "cancelled" if task.state is TaskState.CANCELLED else "cancel requested"
        lines.append(Text(f"⊘ {verb}{by}{why}", style="magenta"))
    for artifact in task.artifacts:
        lines.append(Text(f"⇩ {artifact.name}  {artifact.uri}", style="cyan"))
    return lines


def board_header(target: str, tasks: Sequence[Task], revision: int, status: str = "") -> Text:
    """The line above the panels: where, how many tasks in which states, and the revision."""
    counts: dict[str, int] = {}
    for task in tasks:
        counts[state_name(task.state).lower()] = counts.get(state_name(task.state).lower(), 0) + 1
    summary = ", ".join(f"{count} {state}" for state, count in counts.items())
    noun = "task" if len(tasks) == 1 else "tasks"
    header = Text.assemble(("Headway", "bold"), f" · {target} · {len(tasks)} {noun}")
    if summary:
        header.append(f" ({summary})")
    stalled = sum(1 for task in tasks if task.stalled and not task.at_rest)
    if stalled:
        header.append(f" · {stalled} stalled", style=STALLED_STYLE)
    header.append(f" · revision {revision}", style="dim")
    if status:
        header.append(f" · {status}", style="bold red")
    return header


# -- plain lines, for pipes and logs ----------------------------------------------------


def plain_line(event: events.Event, previous: Task | None = None) -> str | None:
    """One line for one change; None for events that change nothing (heartbeats).

    Args:
        event: The event to describe.
        previous: The task as it was before this event, to name the step that changed.
    """
    match event:
        case events.Snapshot() | events.Created() | events.Updated():
            kind = type(event).__name__.lower()
            # A change is described as of its commit (its line is its record); a
            # snapshot, which has no commit time, as of now.
            summary = task_summary(event.task, previous, now=event.commit_time)
            return f"rev={event.revision} {kind} {summary}"
        case events.Deleted():
            return f"rev={event.revision} deleted {event.task.id}"
        case events.LogsAppended():
            return "\n".join(
                f"rev={event.revision} log {event.task_id} {log_line(entry)}"
                for entry in event.entries
            )
        case events.Synced():
            return f"rev={event.revision} synced"
        case events.Resync():
            return f"resync ({event.reason.value.lower()}): rebuilding from a snapshot"
    return None


def task_summary(task: Task, previous: Task | None = None, *, now: datetime | None = None) -> str:
    """`id STATE 45% | step: RUNNING 40/120 files, message` for the step that changed, then
    the STALLED marker and the ETA (as of `now`, default now) while the task is not at rest."""
    text = f"{task.id} {state_name(task.state)} {percent(task)}"
    step = changed_step(task, previous) or task.current_step
    if step is not None:
        detail = step_detail(step)
        text += f" | {step.key}: {state_name(step.state)}" + (f" {detail}" if detail else "")
    if task.message and (previous is None or previous.message != task.message):
        text += f' | "{task.message}"'
    if task.iteration and (previous is None or previous.iteration != task.iteration):
        of = f"/{task.max_iterations}" if task.max_iterations else ""
        text += f" | iteration {task.iteration}{of}"
    if task.metrics and (previous is None or previous.metrics != task.metrics):
        text += " | " + " ".join(f"{k}={v:g}" for k, v in sorted(task.metrics.items()))
    criteria = criteria_text(task)
    if criteria is not None and (previous is None or previous.criteria != task.criteria):
        text += f" | {criteria}"
    children = children_text(task)
    if children is not None and (previous is None or previous.children != task.children):
        text += f" | {children}"
    if task.error is not None:
        text += f" | error {task.error.describe()}"
    if task.cancel_request is not None and not task.at_rest:
        text += f" | cancel requested by {task.cancel_request.requested_by or 'someone'}"
    for marker in (stalled_text(task, now), eta_text(task, now)):
        if marker is not None:
            text += f" | {marker}"
    return text


def changed_step(task: Task, previous: Task | None) -> Step | None:
    """The last step whose state, progress or status line differs from before."""
    if previous is None:
        return None
    before = {step.key: step for step in previous.steps}
    changed = None
    for step in task.steps:
        old = before.get(step.key)
        if old is None or (old.state, old.raw.progress, old.message) != (
            step.state,
            step.raw.progress,
            step.message,
        ):
            changed = step
    return changed


__all__ = [
    "board_header",
    "compact_panel",
    "criteria_checklist",
    "criteria_text",
    "eta_text",
    "format_countdown",
    "format_duration",
    "log_line",
    "plain_line",
    "stalled_text",
    "task_eta",
    "task_panel",
    "task_summary",
    "task_table",
]
