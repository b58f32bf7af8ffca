"""The subcommands that talk to a running server: watch, tasks, task, logs, cancel, delete.

Each takes the parsed arguments and a connected client, prints for a person (or,
with --json, for a program) and returns the exit code. Failures are raised as
HeadwayError or CliError and turned into one line by `main`.
"""

from __future__ import annotations

import argparse
import getpass
import json
import socket
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from google.protobuf.json_format import MessageToDict, MessageToJson
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from headway.cli import render
from headway.cli.errors import CliError
from headway.cli.filters import filter_from
from headway.cli.watch import Board, Display, LiveDisplay, PlainDisplay, watch
from headway.client import HeadwayClient, LiveView, events, subscribe, task_filter
from headway.client.models import CancelRequest, Estimate, LogEntry, LogLevel, Task, TaskState
from headway.v1 import log_pb2, task_service_pb2


def console(*, wide: bool = False) -> Console:
    """A console for stdout, as wide as the terminal; off a terminal, 80 columns ($COLUMNS).

    `wide` makes it 200 columns off a terminal, so a listing's rows are not wrapped.
    """
    return Console(width=200 if wide and not sys.stdout.isatty() else None, highlight=False)


async def nothing_listed(client: HeadwayClient, task_filter_: task_service_pb2.TaskFilter) -> str:
    """What to say when no task matched: none match, or there are none at all yet."""
    if task_filter_ != task_filter():
        page = await client.list_tasks(task_filter(), page_size=1)
        if page.tasks:
            return "No tasks match"
    return "No tasks yet"


async def cmd_watch(args: argparse.Namespace, client: HeadwayClient) -> int:
    task_filter_ = filter_from(args)
    # Fail fast, with one line, on an unreachable server or a filter it rejects;
    # once watching, the stream rides out disconnects by itself.
    await client.list_tasks(task_filter_, page_size=1)
    out = console()
    live = out.is_terminal and not args.plain
    nothing = await nothing_listed(client, task_filter_) if live else ""

    def display_for(board: Board) -> Display:
        if live:
            return LiveDisplay(
                board, args.server, log_lines=args.logs, console=out, nothing=nothing
            )
        return PlainDisplay()

    await watch(
        client,
        task_filter_,
        display_for,
        include_logs=args.logs > 0 or not live,
        until_done=args.until_done,
        limit=args.limit,
        log_lines=max(args.logs, 1),
        earlier_logs=live and args.logs > 0,
        conflate=live,
    )
    return 0


async def cmd_tasks(args: argparse.Namespace, client: HeadwayClient) -> int:
    tasks: list[Task] = []
    token = ""
    while True:
        page = await client.list_tasks(filter_from(args), page_size=1000, page_token=token)
        tasks.extend(Task.from_proto(task) for task in page.tasks)
        token = page.next_page_token
        if not token:
            break
    if args.limit is not None:
        # The listing runs oldest first; the newest N are its end.
        tasks = tasks[-args.limit :]
    if args.json:
        print(json.dumps([MessageToDict(task.raw) for task in tasks], indent=2))
        return 0
    if not tasks:
        print(f"{await nothing_listed(client, filter_from(args))}.", file=sys.stderr)
        return 0
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("ID", "NAME", "KIND", "STATE", "PROGRESS", "STEP", "UPDATED"):
        table.add_column(column, no_wrap=column in ("ID", "STATE"))
    now = datetime.now(UTC)
    for task in tasks:
        step = task.current_step
        updated = task.update_time
        table.add_row(
            task.id,
            task.display_name if task.display_name != task.id else "",
            task.kind,
            Text(render.state_name(task.state), style=render.STATE_STYLES[task.state]),
            render.percent(task),
            f"{step.key} ({render.step_detail(step) or step.state.name.lower()})"
            if step is not None and step.state is not None
            else "",
            f"{render.format_duration(now - updated)} ago" if updated else "",
        )
    console(wide=True).print(table)
    return 0


async def cmd_task(args: argparse.Namespace, client: HeadwayClient) -> int:
    task = Task.from_proto(await client.get_task(args.task_id))
    if args.json:
        print(MessageToJson(task.raw, indent=2))
        return 0
    now = datetime.now(UTC)
    details = Table.grid(padding=(0, 2))
    details.add_column(style="bold")
    details.add_column()
    for name, value in _details(task, now):
        details.add_row(name, value)
    parts: list[RenderableType] = [render.task_panel(task, log_lines=0, now=now), details]
    if task.criteria:
        parts.append(Text(render.criteria_text(task) or "", style="bold"))
        parts.append(render.criteria_checklist(task))
    if task.children is not None:
        children = await _children(client, task)
        parts.extend(
            [Text(f"children ({len(children)})", style="bold"), render.task_table(children)]
        )
    if task.error is not None and task.error.details.get("traceback"):
        parts.append(Text(task.error.details["traceback"].rstrip(), style="dim red"))
    console().print(Group(*parts))
    return 0


async def _children(client: HeadwayClient, task: Task) -> list[Task]:
    """The task's children: listed by parent, less those left by an earlier task of its id."""
    listed = await client.list_all_tasks(task_filter(parent_id=task.id))
    return [Task.from_proto(raw) for raw in listed if raw.create_revision > task.create_revision]


def _when(moment: datetime | None) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def _clock(moment: datetime) -> str:
    return moment.astimezone().strftime("%H:%M:%S")


def _details(task: Task, now: datetime) -> list[tuple[str, str]]:
    rows = [
        ("kind", task.kind or "-"),
        ("labels", ", ".join(f"{k}={v}" for k, v in sorted(task.labels.items())) or "-"),
        ("parent", task.parent_id or "-"),
        ("children", _children_detail(task)),
        ("created", _when(task.create_time)),
        ("started", _when(task.start_time)),
        ("finished", _when(task.finish_time)),
        ("revision", str(task.revision)),
    ]
    if not task.at_rest:
        rows.append(("eta", _eta_detail(task, now)))
        rows.extend(_liveness_details(task, now))
    if task.metrics:
        rows.append(("metrics", ", ".join(f"{k}={v:g}" for k, v in sorted(task.metrics.items()))))
    if task.cancel_request is not None:
        rows.append(("cancel", _cancel_detail(task.cancel_request, task.at_rest, now)))
    return rows


def _children_detail(task: Task) -> str:
    """Every state's count, and whether the task's progress is theirs or its own."""
    counts = task.children
    if counts is None:
        return "-"
    states = [
        (counts.pending, "pending"),
        (counts.running, "running"),
        (counts.succeeded, "succeeded"),
        (counts.failed, "failed"),
        (counts.cancelled, "cancelled"),
    ]
    text = f"{counts.total}: " + ", ".join(f"{n} {state}" for n, state in states if n)
    follows = not task.steps and task.progress is None and not task.at_rest
    return text + ("; progress follows them" if follows else "")


def _eta_detail(task: Task, now: datetime) -> str:
    """The time left and what it rests on, then the finish time and its plausible range."""
    left = render.eta_text(task, now) or "ETA unknown"
    estimate: Estimate | None = task.eta
    if estimate is None:
        return "unknown (no evidence yet: no rate, history or declared duration)"
    text = left.removeprefix("ETA ")
    text += f", confidence {estimate.confidence:.0%}"
    if estimate.finish_time is not None:
        text += f"; finish at {_clock(estimate.finish_time)}"
    early, late = estimate.earliest_finish_time, estimate.latest_finish_time
    if early is not None and late is not None and _clock(early) != _clock(late):
        text += f" (likely between {_clock(early)} and {_clock(late)})"
    return text


def _liveness_details(task: Task, now: datetime) -> list[tuple[str, str]]:
    """The lease, the last report, and whether the agent went silent for longer."""
    rows = []
    if task.lease_duration is not None:
        rows.append(("lease", render.format_duration(task.lease_duration)))
    if task.last_report_time is not None:
        silence = task.silence(now) or timedelta(0)
        ago = f" ({render.format_duration(silence)} ago)"
        rows.append(("last report", _when(task.last_report_time) + ago))
    stalled = render.stalled_text(task, now)
    rows.append(("stalled", f"yes: {stalled.removeprefix('STALLED, ')}" if stalled else "no"))
    return rows


def _cancel_detail(request: CancelRequest, at_rest: bool, now: datetime) -> str:
    """Who asked and why, and by when the agent must confirm (or that it did not)."""
    text = f"requested by {request.requested_by or 'someone'}"
    if request.request_time is not None:
        text += f" at {_when(request.request_time)}"
    if request.reason:
        text += f": {request.reason}"
    if request.forced:
        text += "; forced: the agent did not confirm in time"
    elif not at_rest and request.deadline_time is not None:
        left = max(request.deadline_time - now, timedelta(0))
        text += (
            f"; pending, the server cancels it at {_when(request.deadline_time)}"
            f" (in {render.format_countdown(left)}) unless its agent confirms first"
        )
    return text


async def cmd_logs(args: argparse.Namespace, client: HeadwayClient) -> int:
    if args.tail is not None and args.tail < 0:
        raise CliError("--tail must not be negative", exit_code=2)
    # The cursor is read before the listing, so following from it misses nothing.
    cursor = (await client.list_tasks(task_filter(task_ids=[args.task_id]), page_size=1)).revision
    task = Task.from_proto(await client.get_task(args.task_id))
    min_level = LogLevel[args.level.upper()] if args.level else None
    printed_up_to = 0
    async for raw in _listed_logs(client, args, min_level):
        _print_log(LogEntry.from_proto(raw), args.json)
        printed_up_to = max(printed_up_to, raw.revision)
    if not args.follow or task.at_rest:
        return 0
    async for event in subscribe(
        client,
        task_filter(task_ids=[args.task_id]),
        start_revision=cursor,
        include_logs=True,
        end_at_rest=True,
    ):
        if isinstance(event, events.LogsAppended) and event.revision > printed_up_to:
            for entry in event.entries:
                if _matches(entry, min_level, args.step, args.search):
                    _print_log(entry, args.json)
    return 0


async def _listed_logs(
    client: HeadwayClient, args: argparse.Namespace, min_level: LogLevel | None
) -> AsyncIterator[log_pb2.LogEntry]:
    """The task's matching lines, oldest first; with --tail N, only the last N.

    The last N are fetched newest first (so a long log is not paged through)
    and handed out in the order they happened.
    """
    left = args.tail  # None: every line
    newest: list[log_pb2.LogEntry] = []
    token = ""
    while left is None or left > 0:
        page = await client.list_logs(
            args.task_id,
            min_level=log_pb2.LogLevel.ValueType(min_level or 0),
            step_key=args.step,
            text=args.search,
            page_size=1000 if left is None else min(left, 1000),
            page_token=token,
            newest_first=left is not None,
        )
        if left is None:
            for raw in page.entries:
                yield raw
        else:
            newest.extend(page.entries)
            left -= len(page.entries)
        token = page.next_page_token
        if not token:
            break
    for raw in reversed(newest):
        yield raw


def _matches(entry: LogEntry, min_level: LogLevel | None, step: str, text: str) -> bool:
    """The server's ListLogs filters, applied to lines that arrive live."""
    level = entry.level or LogLevel.INFO
    return (
        (min_level is None or level >= min_level)
        and (not step or entry.step_key == step)
        and (not text or text.lower() in entry.message.lower())
    )


def _print_log(entry: LogEntry, as_json: bool) -> None:
    if as_json:
        print(json.dumps(MessageToDict(entry.raw)), flush=True)
    else:
        print(render.log_line(entry), flush=True)


async def cmd_cancel(args: argparse.Namespace, client: HeadwayClient) -> int:
    task = Task.from_proto(
        await client.cancel_task(
            args.task_id,
            reason=args.reason,
            requested_by=args.by or _who(),
            force=args.force,
            deadline=timedelta(seconds=args.deadline) if args.deadline is not None else None,
        )
    )
    if task.state is TaskState.CANCELLED:
        print(f"Cancelled {task.id}.")
        return 0
    request = task.cancel_request
    deadline = request.deadline_time if request is not None else None
    by = f", or the server cancels it at {_clock(deadline)}" if deadline is not None else ""
    print(f"Cancel requested for {task.id}; its agent stops at its next report{by}.")
    if args.wait:
        async with LiveView(client, task_filter(task_ids=[task.id])) as view:
            try:
                final = await view.wait_at_rest(task.id, timeout=args.wait)
            except TimeoutError:
                raise CliError(f"{task.id} is still {render.state_name(task.state)}") from None
        forced = final.cancel_request is not None and final.cancel_request.forced
        how = " (forced: its agent did not confirm in time)" if forced else ""
        print(f"{final.id} is {render.state_name(final.state)}{how}.")
    return 0


def _who() -> str:
    """Who asks, for the people reading the task: user@host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "someone"
    return f"{user}@{socket.gethostname()}"


async def cmd_delete(args: argparse.Namespace, client: HeadwayClient) -> int:
    revision = await client.delete_task(args.task_id)
    print(f"Deleted {args.task_id} (revision {revision}).")
    return 0


__all__ = ["cmd_cancel", "cmd_delete", "cmd_logs", "cmd_task", "cmd_tasks", "cmd_watch"]
