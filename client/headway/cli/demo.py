"""`headway demo`: simulated agents at work, so a newcomer sees everything move in a minute.

Seven agents report through the real API while the watch view follows them: a
quarterly close with no steps of its own, whose progress follows its two child
tasks (the server rolls it up) and which fails when one of them does; its
children, a report with sub-progress in units, a fraction and a spinner, and an
import that fails on a bad row (the exception and its traceback are recorded);
a training loop with iterations, metrics and success criteria met as its loss
falls; a literature review that discovers its steps as it goes; a crawl that a
viewer cancels, which the agent learns at its next report; and a backup whose
agent goes silent past its lease on a hung mount, so that its task shows
STALLED, then recovers and finishes. All but the backup use the agent API
(`Tracker`), whose heartbeats keep a task alive while its agent waits; the
backup reports through the plain client, without heartbeats. Each agent
declares how long its steps should take (`expected_duration`, scaled by
--speed), so ETAs show from the first moment and move as the observed rate
takes over; run the demo twice against one server and the first run's history
joins in. With no server reachable, the demo runs an embedded one on a
temporary database.

Ctrl-C stops the agents before the connection closes, so every demo task is left
at rest (cancelled), and ends the demo with one line and exit status 130.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from headway.cli import render
from headway.cli.commands import console
from headway.cli.errors import CliError
from headway.cli.watch import Board, Display, LiveDisplay, PlainDisplay, watch
from headway.client import (
    FailedPreconditionError,
    HeadwayClient,
    HeadwayError,
    TaskCancelled,
    Tracker,
    UnavailableError,
    task_filter,
)
from headway.client.models import LogLevel, Task
from headway.client.tracker import progress_message
from headway.v1 import log_pb2, task_pb2, task_service_pb2

RUNNING = task_pb2.STEP_STATE_RUNNING
SUCCEEDED = task_pb2.STEP_STATE_SUCCEEDED
WARNING = LogLevel.WARNING

CANCEL_AFTER = 12.0  # seconds (at speed 1) before the demo's viewer cancels the crawl
BACKUP_LEASE = 6.0  # seconds (at speed 1) the backup's agent may be silent before it is stalled
STALL = 20.0  # seconds (at speed 1) the backup's agent stays silent
STALL_LEASES = 4  # the silence lasts at least this many of the leases the server granted
STOP_TIMEOUT = 5.0  # seconds for each stage of stopping the demo after Ctrl-C
INTERRUPTED = 130  # the exit status of a command stopped by Ctrl-C (128 + SIGINT)


@dataclass(frozen=True)
class Pace:
    """Scales every pause of the simulated work by the --speed factor."""

    speed: float

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds / self.speed)


@dataclass(frozen=True)
class Run:
    """One demo run: its agents share a tracker, a label and a pace."""

    tracker: Tracker
    id: str
    pace: Pace

    def task_id(self, name: str) -> str:
        return f"demo-{self.id}-{name}"

    @property
    def labels(self) -> dict[str, str]:
        return {"demo": self.id}

    def spec(
        self, key: str, name: str, expect: float, weight: float = 0.0
    ) -> task_service_pb2.StepSpec:
        """A step that should take about `expect` seconds at speed 1 (the agent's own guess)."""
        step = task_service_pb2.StepSpec(key=key, display_name=name, weight=weight)
        step.expected_duration.FromTimedelta(timedelta(seconds=expect / self.pace.speed))
        return step


async def quarterly_close(run: Run) -> None:
    """A parent of two tasks: it reports nothing itself, so its progress is theirs, by weight."""
    async with run.tracker.task(
        run.task_id("close"),
        display_name="Quarterly close",
        kind="pipeline",
        labels=run.labels,
    ) as close:
        outcomes = await asyncio.gather(
            quarterly_report(run, parent_id=close.id),
            flaky_import(run, parent_id=close.id),
            return_exceptions=True,
        )
        failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        for failure in failures:
            if not isinstance(failure, Exception):  # cancelled, or interrupted: not a story
                raise failure
        if failures:
            raise ValueError(f"{len(failures)} of {len(outcomes)} parts failed: {failures[0]}")


async def quarterly_report(run: Run, parent_id: str = "") -> None:
    """Sub-progress three ways: units, a fraction, then a spinner; an artifact at the end."""
    async with run.tracker.task(
        run.task_id("report"),
        parent_id=parent_id,
        weight=2,
        display_name="Quarterly report",
        kind="report",
        labels=run.labels,
        steps=[
            run.spec("fetch", "Fetch sources", 10),
            run.spec("analyze", "Analyze", 5),
            run.spec("write", "Write", 5, weight=2),
        ],
    ) as task:
        async with task.step("fetch") as step:
            for n in range(1, 121):
                await step.progress(n, 120, unit="files")
                if n % 40 == 0:
                    await step.log(f"fetched {n} of 120 files", source="s3://finance")
                await run.pace.sleep(0.08)
        async with task.step("analyze") as step:
            for n in range(1, 21):
                await step.progress(fraction=n / 20)
                await step.message(f"table {n} of 20")
                await run.pace.sleep(0.3)
        async with task.step("write") as step:
            await step.progress()
            await step.message("drafting the summary")
            await run.pace.sleep(4)
            await task.artifact("report.pdf", "s3://reports/q3.pdf", media_type="application/pdf")


async def train_model(run: Run) -> None:
    """An iterative agent: iterations, metrics (tokens, cost, loss), a log line per epoch,
    and success criteria met one by one as the loss falls."""
    epochs = 8
    async with run.tracker.task(
        run.task_id("train"),
        display_name="Fine-tune classifier",
        kind="ml.train",
        labels=run.labels,
        steps=[
            run.spec("prepare", "Prepare data", 2),
            run.spec("train", "Train", 25, weight=4),
            run.spec("evaluate", "Evaluate", 3),
        ],
        max_iterations=epochs,
        criteria=["loss < 0.5", "loss < 0.2", "accuracy >= 0.9"],
    ) as task:
        async with task.step("prepare") as step:
            await step.progress()
            await run.pace.sleep(2)
        async with task.step("train") as step:
            prev_loss = math.inf
            for epoch in range(1, epochs + 1):
                await run.pace.sleep(3)
                loss = round(2.0 * math.exp(-epoch / 3), 3)
                await task.iteration(epoch)
                await task.add_metrics(tokens=12_000, cost_usd=0.18)
                await task.metrics(loss=loss)
                await step.progress(epoch, epochs, unit="epochs")
                await step.log(f"epoch {epoch}: loss {loss}", epoch=epoch)
                for threshold in (0.5, 0.2):
                    if loss < threshold <= prev_loss:
                        await task.set_criterion(
                            f"loss < {threshold}", met=True, detail=f"epoch {epoch}"
                        )
                prev_loss = loss
        async with task.step("evaluate") as step:
            for n in range(1, 4):
                await step.progress(fraction=n / 3)
                await run.pace.sleep(1)
            await task.set_criterion("accuracy >= 0.9", met=True, detail="0.93 on held-out")


async def literature_review(run: Run) -> None:
    """Steps discovered along the way: the papers to read are known only after searching."""
    papers = ["Attention is all you need", "Scaling laws", "Chinchilla"]
    async with run.tracker.task(
        run.task_id("review"),
        display_name="Literature review",
        kind="literature-review",
        labels=run.labels,
        steps=[run.spec("search", "Search", 3)],
    ) as task:
        async with task.step("search") as step:
            await step.progress()
            await step.message("querying the index")
            await run.pace.sleep(3)
            await step.log(f"found {len(papers)} papers")
        await task.add_steps(
            *(run.spec(f"read-{n}", f"Read: {title}", 3) for n, title in enumerate(papers, 1)),
            run.spec("summarize", "Summarize", 2),
        )
        for n in range(1, len(papers) + 1):
            async with task.step(f"read-{n}") as step:
                for page in range(1, 7):
                    await step.progress(page, 6, unit="pages")
                    await run.pace.sleep(0.5)
        async with task.step("summarize"):
            await run.pace.sleep(2)


async def flaky_import(run: Run, parent_id: str = "") -> None:
    """Fails on a malformed row: the exception fails the step and the task, traceback kept."""
    async with run.tracker.task(
        run.task_id("import"),
        parent_id=parent_id,
        display_name="Import customers.csv",
        kind="etl",
        labels=run.labels,
        steps=[
            run.spec("download", "Download", 2),
            run.spec("parse", "Parse rows", 5),
            run.spec("load", "Load", 3),
        ],
    ) as task:
        async with task.step("download") as step:
            for n in range(1, 5):
                await step.progress(n * 25, 100, unit="MB")
                await run.pace.sleep(0.5)
        async with task.step("parse") as step:
            for row in range(1, 101):
                if row == 62:
                    await step.log("row 62 has 4 columns", level=LogLevel.ERROR)
                    raise ValueError("row 62: expected 5 columns, found 4")
                await step.progress(row, 100, unit="rows")
                await run.pace.sleep(0.05)


async def endless_crawl(run: Run) -> None:
    """Runs until a viewer cancels it; the agent logs its clean-up, the tracker confirms."""
    async with (
        run.tracker.task(
            run.task_id("crawl"),
            display_name="Crawl docs.example.com",
            kind="crawl",
            labels=run.labels,
            steps=[run.spec("crawl", "Crawl pages", 600, weight=3), run.spec("index", "Index", 30)],
        ) as task,
        task.step("crawl") as step,
    ):
        try:
            for page in range(1, 5001):
                await step.progress(page, 5000, unit="pages")
                if page % 50 == 0:
                    await step.log(f"crawled {page} pages")
                await run.pace.sleep(0.1)
        except TaskCancelled as cancelled:
            await task.log(f"stopping: cancelled by {cancelled.requested_by}")
            raise


async def stuck_backup(run: Run) -> None:
    """Goes silent past its lease, as an agent stuck on a hung mount would: the server
    marks the task STALLED; then the agent recovers, reports again, and finishes.

    It reports through the plain client, without the Tracker's heartbeats (which
    would keep the lease while it waits), and asks for a short lease so that the
    silence shows within seconds. The server may lengthen a lease that is too short
    and checks leases about once a second, so at high speeds the silence lasts a few
    of the leases it granted, long enough to be seen.
    """
    client = run.tracker.client
    task_id = run.task_id("backup")
    created = await client.create_task(
        task_id,
        display_name="Back up /srv/data",
        kind="backup",
        labels=run.labels,
        steps=[
            run.spec("snapshot", "Snapshot", 3),
            run.spec("upload", "Upload", 12, weight=3),
            run.spec("verify", "Verify", 2),
        ],
        start=True,
        lease_duration=timedelta(seconds=BACKUP_LEASE / run.pace.speed),
    )
    lease = Task.from_proto(created).lease_duration or timedelta(seconds=BACKUP_LEASE)
    silence = max(STALL / run.pace.speed, STALL_LEASES * lease.total_seconds())
    try:
        await client.update_step(task_id, "snapshot", state=RUNNING, progress=progress_message())
        await run.pace.sleep(3)
        await client.update_step(task_id, "snapshot", state=SUCCEEDED)
        await client.update_step(task_id, "upload", state=RUNNING)
        for chunk in range(1, 41):
            if chunk == 13:
                await _log(client, task_id, "upload", "storage mount not responding", WARNING)
                await asyncio.sleep(silence)  # nothing reaches the server meanwhile
                await _log(client, task_id, "upload", "storage mount back; resuming")
            await client.update_step(
                task_id, "upload", progress=progress_message(chunk, 40, unit="GB")
            )
            await run.pace.sleep(0.3)
        await client.update_step(task_id, "upload", state=SUCCEEDED)
        await client.update_step(task_id, "verify", state=RUNNING, progress=progress_message())
        await run.pace.sleep(2)
        await client.succeed_task(task_id, message="40 GB backed up")
    except asyncio.CancelledError:
        # Interrupted: say the agent stopped, as the Tracker does for its tasks.
        with contextlib.suppress(HeadwayError, TimeoutError):
            async with asyncio.timeout(STOP_TIMEOUT):
                await client.confirm_cancel(task_id, reason="the agent stopped")
        raise


async def _log(
    client: HeadwayClient, task_id: str, step: str, message: str, level: LogLevel = LogLevel.INFO
) -> None:
    entry = log_pb2.LogEntry(
        level=log_pb2.LogLevel.ValueType(level), step_key=step, message=message
    )
    entry.time.FromDatetime(datetime.now(UTC))
    await client.append_logs(task_id, [entry])


DEMO_TASKS = 7  # the agents' tasks, the close's two children included

AGENTS: tuple[Callable[[Run], Awaitable[None]], ...] = (
    quarterly_close,  # and its two children: the report and the import
    train_model,
    literature_review,
    endless_crawl,
    stuck_backup,
)


async def cancel_later(client: HeadwayClient, run: Run) -> None:
    """The demo's viewer: it changes its mind about the crawl."""
    await run.pace.sleep(CANCEL_AFTER)
    with contextlib.suppress(Exception):
        await client.cancel_task(
            run.task_id("crawl"), reason="no longer needed", requested_by="headway demo"
        )


async def run_agent(agent: Callable[[Run], Awaitable[None]], run: Run) -> None:
    """One agent; its failure is part of the show (recorded on its task), not the demo's."""
    with contextlib.suppress(ValueError):
        await agent(run)


async def cmd_demo(args: argparse.Namespace, client: HeadwayClient) -> int:
    async with contextlib.AsyncExitStack() as stack:
        target = args.server
        if args.embedded or not await _reachable(client):
            target = await _embedded_server(stack)
            why = "" if args.embedded else f"no server at {args.server}; "
            print(
                f"headway demo: {why}running an embedded server on {target} "
                "with a temporary database.",
                file=sys.stderr,
            )
            client = await stack.enter_async_context(HeadwayClient(target, tls=False))
        # The embedded server asks for nothing; the user's server for their credentials.
        options = args.connection if target == args.server else {"tls": False}
        tracker = await stack.enter_async_context(Tracker(target, **options))
        run = Run(tracker, uuid.uuid4().hex[:6], Pace(args.speed))
        out = console()
        live = out.is_terminal and not args.plain

        def display_for(board: Board) -> Display:
            if live:
                return LiveDisplay(board, target, log_lines=2, console=out)
            return PlainDisplay()

        agents = [asyncio.create_task(run_agent(agent, run)) for agent in AGENTS]
        viewer = asyncio.create_task(cancel_later(client, run))
        try:
            await watch(
                client,
                task_filter(labels=run.labels),
                display_for,
                include_logs=True,
                until_done=True,
                expected_tasks=DEMO_TASKS,
                conflate=live,
            )
            await asyncio.gather(*agents)
        except asyncio.CancelledError:
            if not _interrupted():
                raise
            # Ctrl-C: stop the agents while the channel is still open, so that no
            # demo task is left RUNNING on the server with nobody behind it.
            print(await stop_demo(client, run, agents, viewer), file=sys.stderr)
            return INTERRUPTED
        finally:
            viewer.cancel()
        tasks = [
            Task.from_proto(task)
            for task in await client.list_all_tasks(task_filter(labels=run.labels))
        ]
    print()
    print("The demo is over:")
    for task in tasks:
        print(f"  {task.id:<24} {render.state_name(task.state)}")
    if target == args.server:  # the tasks outlive the demo: point at them
        print(f"Look closer: headway tasks --label demo={run.id}")
        print(f"             headway logs {run.task_id('crawl')}")
    return 0


def _interrupted() -> bool:
    """True when this command was cancelled by Ctrl-C (asyncio.run cancels its main task),
    which it then takes back to wind down; False for a cancellation from elsewhere."""
    current = asyncio.current_task()
    if current is None or current.cancelling() != 1:
        return False
    current.uncancel()
    return True


async def stop_demo(
    client: HeadwayClient,
    run: Run,
    agents: Sequence[asyncio.Task[None]],
    viewer: asyncio.Task[None],
) -> str:
    """Stop the demo's agents and see every demo task at rest; returns the line to print.

    Each agent, cancelled, confirms its task's cancellation on its way out (the
    Tracker does that for an interrupted block). A task whose agent could not say
    so in time is cancelled with `force`; then the server is asked what is left.
    Each stage is bounded, so a second Ctrl-C is never needed.
    """
    try:
        async with asyncio.timeout(STOP_TIMEOUT):
            running = len(await _unfinished(client, run))
    except (HeadwayError, TimeoutError):
        running = sum(1 for agent in agents if not agent.done())
    for agent in (*agents, viewer):
        agent.cancel()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(STOP_TIMEOUT):
            await asyncio.gather(*agents, viewer, return_exceptions=True)
    try:
        async with asyncio.timeout(STOP_TIMEOUT):
            for task in await _unfinished(client, run):
                with contextlib.suppress(FailedPreconditionError):  # it came to rest meanwhile
                    await client.cancel_task(
                        task.id,
                        reason="the demo was interrupted",
                        requested_by="headway demo",
                        force=True,
                    )
            left = await _unfinished(client, run)
    except (HeadwayError, TimeoutError):
        return f"Interrupted: demo tasks may still be running: headway tasks --label demo={run.id}"
    if left:
        names = ", ".join(task.id for task in left)
        return f"Interrupted: could not stop {names}"
    noun = "task" if running == 1 else "tasks"
    return f"Interrupted: cancelled {running} demo {noun}"


async def _unfinished(client: HeadwayClient, run: Run) -> list[Task]:
    tasks = await client.list_all_tasks(task_filter(labels=run.labels))
    return [task for task in map(Task.from_proto, tasks) if not task.at_rest]


async def _reachable(client: HeadwayClient) -> bool:
    try:
        await client.list_tasks(page_size=1, timeout=3)
    except UnavailableError:
        return False
    return True


async def _embedded_server(stack: contextlib.AsyncExitStack) -> str:
    """A server in this process on a temporary database, stopped when the demo ends."""
    try:
        from headway.server.app import create_server
        from headway.server.config import Settings
    except ImportError as error:
        raise CliError(
            "no server is reachable and none is installed to start: "
            "pip install 'headway[server]', or pass --server"
        ) from error
    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="headway-demo-")))
    settings = Settings(
        address="127.0.0.1:0", database=folder / "demo.db", sqlite_synchronous="NORMAL"
    )
    running = await create_server(settings)
    stack.push_async_callback(running.stop, 1.0)
    return f"127.0.0.1:{running.port}"


__all__ = ["AGENTS", "DEMO_TASKS", "cmd_demo"]
