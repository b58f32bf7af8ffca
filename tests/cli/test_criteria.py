"""Success criteria on the command line: `headway task` lists them, `headway watch` counts them."""

from __future__ import annotations

import re

from rich.console import Console

from headway.cli import render
from headway.client import Task, Tracker
from headway.v1 import task_pb2
from tests.cli.conftest import Stream, Terminal, headway
from tests.harness import ServerHarness

CRITERIA = ["tests pass", "lint clean", "docs", "changelog", "benchmarks"]


async def test_task_lists_each_criterion_and_how_many_are_met(harness: ServerHarness) -> None:
    async with Tracker(harness.target) as tracker:
        task = tracker.task("loop-1", kind="agent", criteria=CRITERIA)
        await task.start()
        await task.set_criteria(
            {"tests pass": True, "lint clean": True, "docs": True, "changelog": False},
            details={"tests pass": "42/42", "changelog": "no entry yet"},
        )
        shown = await headway("task", "loop-1", "--server", harness.target)
        await task.succeed()

    assert shown.code == 0, shown.stderr
    assert shown.stdout.count("criteria 3/5") == 2  # on the panel, and above the list
    lines = shown.lines
    checklist = [line.strip() for line in lines if line.strip()[:1] in ("✓", "✗")]
    assert checklist == [
        "✓ tests pass — 42/42",
        "✓ lint clean",
        "✓ docs",
        "✗ changelog — no entry yet",
        "✗ benchmarks",
    ]


async def test_a_task_without_criteria_shows_none(harness: ServerHarness) -> None:
    await harness.client().create_task("plain-1")
    shown = await headway("task", "plain-1", "--server", harness.target)
    assert shown.code == 0, shown.stderr
    assert "criteria" not in shown.stdout


async def test_watch_piped_says_when_the_count_changes(harness: ServerHarness) -> None:
    async with Tracker(harness.target, progress_rate=None) as tracker:
        watch = await Stream.start("watch", "--server", harness.target, "--until-done")
        await watch.wait_for(lambda lines: any("synced" in line for line in lines))
        async with tracker.task("loop-2", criteria=["a", "b"]) as task:
            await task.message("working")
            await task.set_criterion("a")
        result = await watch.finish()

    assert result.code == 0, result.stderr
    lines = [line for line in result.lines if "loop-2" in line]
    assert re.search(r"created loop-2 RUNNING 0% \| criteria 0/2", lines[0])
    # Reported only when it changes, so a person sees each step of the checklist once.
    assert "criteria" not in next(line for line in lines if "working" in line)
    assert sum("| criteria 1/2" in line for line in lines) == 1


async def test_watch_panel_shows_the_count(harness: ServerHarness, terminal: Terminal) -> None:
    async with Tracker(harness.target) as tracker:
        task = tracker.task("loop-3", criteria=CRITERIA)
        await task.start()
        await terminal.start("watch", "--server", harness.target)
        await terminal.wait_for(lambda text: "loop-3" in text)
        await task.set_criteria({"tests pass": True, "docs": True})
        screen = await terminal.wait_for(lambda text: "criteria 2/5" in text)
        await task.succeed()
    # Inside loop-3's panel, on the line under its bar.
    assert re.search(r"│\s+criteria 2/5\s+│", screen), screen
    assert await terminal.interrupt() == 130


def test_the_one_line_table_has_a_criteria_column() -> None:
    raw = task_pb2.Task(
        id="loop-4",
        state=task_pb2.TASK_STATE_RUNNING,
        criteria=[task_pb2.Criterion(name="a", met=True), task_pb2.Criterion(name="b")],
    )
    plain = task_pb2.Task(id="plain-4", state=task_pb2.TASK_STATE_RUNNING)
    console = Console(width=120, record=True)
    console.print(render.task_table([Task.from_proto(raw), Task.from_proto(plain)]))
    with_criteria, without = console.export_text().splitlines()
    assert with_criteria.rstrip().endswith("criteria 1/2")
    assert "criteria" not in without
