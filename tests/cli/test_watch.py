"""`headway watch` on a real terminal (a redrawn board) and piped (one line per change)."""

from __future__ import annotations

import asyncio
import re

from headway.client import Tracker
from tests.cli.conftest import Stream, Terminal, headway
from tests.harness import ServerHarness


async def test_watch_draws_the_board_in_place_on_a_terminal(
    harness: ServerHarness, terminal: Terminal
) -> None:
    halfway = asyncio.Event()
    watching = asyncio.Event()
    finish = asyncio.Event()

    async def agent() -> None:
        async with (
            Tracker(harness.target, progress_rate=None) as tracker,
            tracker.task(
                "report-42",
                display_name="Quarterly report",
                kind="report",
                steps=["fetch", "analyze", "write"],
            ) as task,
        ):
            async with task.step("fetch"):
                await task.log("fetched 120 files", step="fetch")  # before the watch
            async with task.step("analyze") as step:
                await step.progress(60, 120, unit="tables")
                halfway.set()
                await watching.wait()
                await step.log("read table 60")
                await finish.wait()
                await step.progress(120, 120, unit="tables")
            await task.step("write").skip()

    running = asyncio.create_task(agent())
    await halfway.wait()
    await terminal.start("watch", "--server", harness.target)
    # fetch done (1), analyze half (0.5), write pending: (1 + 0.5) / 3 = 50%.
    await terminal.wait_for(lambda text: "50%" in text)
    watching.set()
    screen = await terminal.wait_for(
        lambda text: "read table 60" in text and "fetched 120 files" in text
    )
    assert "report-42 · Quarterly report (report)" in screen
    assert "RUNNING" in screen
    assert re.search(r"━{10,}", screen), "no progress bar"
    assert re.search(r"✔ fetch", screen)
    assert re.search(r"▶ analyze\s+60/120 tables", screen)
    assert re.search(r"○ write", screen)
    # The latest log lines: one from before the watch started, one live.
    assert re.search(r"\d\d:\d\d:\d\d INFO +fetch: fetched 120 files", screen)
    assert re.search(r"\d\d:\d\d:\d\d INFO +analyze: read table 60", screen)
    # Whatever the server estimated from this burst of changes, the row says it.
    assert re.search(r"elapsed \d:\d\d:\d\d  ETA (unknown|overdue|\d:\d\d:\d\d)", screen)

    finish.set()
    await running
    screen = await terminal.wait_for(lambda text: "SUCCEEDED" in text and "100%" in text)
    assert screen.count("report-42") == 1, "the board was appended to, not redrawn"
    assert "50%" not in screen
    assert re.search(r"✔ analyze", screen)
    assert re.search(r"↷ write", screen)  # skipped
    assert "ETA" not in screen  # a task at rest has none
    assert await terminal.interrupt() == 130
    assert "Traceback" not in terminal.text


async def test_watch_piped_prints_one_plain_line_per_change(harness: ServerHarness) -> None:
    async with Tracker(harness.target, progress_rate=None) as tracker:
        await tracker.client.create_task("other", kind="other")
        watch = await Stream.start(
            "watch", "--server", harness.target, "--kind", "etl", "--until-done"
        )
        await watch.wait_for(lambda lines: any("synced" in line for line in lines))
        async with (
            tracker.task("load-7", kind="etl", steps=["extract"]) as task,
            task.step("extract") as step,
        ):
            await step.progress(5, 10, unit="rows")
            await step.log("half the rows")
        result = await watch.finish()

    assert result.code == 0, result.stderr
    lines = result.lines
    assert not any("\x1b" in line for line in lines), "escape codes in piped output"
    assert re.fullmatch(r"rev=\d+ synced", lines[0])
    assert not any("other" in line for line in lines)  # filtered out
    assert any(re.search(r"created load-7 RUNNING 0% \| extract: PENDING", line) for line in lines)
    assert any("extract: RUNNING 5/10 rows" in line for line in lines)
    assert any(re.search(r"log load-7 .*INFO +extract: half the rows", line) for line in lines)
    assert lines[-1].endswith("updated load-7 SUCCEEDED 100%")
    revisions = [int(line.split()[0].removeprefix("rev=")) for line in lines]
    assert revisions == sorted(revisions)


async def test_watch_resumes_after_the_server_restarts(harness: ServerHarness) -> None:
    client = harness.client()
    await client.create_task("steady", steps=["s"], start=True)
    watch = await Stream.start("watch", "--server", harness.target, "--plain")
    await watch.wait_for(lambda lines: any("synced" in line for line in lines))
    await harness.restart()
    client = harness.client()
    await client.update_step("steady", "s", message="after the restart")
    await watch.wait_for(lambda lines: any("after the restart" in line for line in lines))
    result = await watch.interrupt()
    assert result.code == 130
    assert re.search(
        r"stream interrupted \(UNAVAILABLE\); resuming from revision \d+", result.stderr
    )
    assert "Traceback" not in result.stderr
    changes = [line for line in result.lines if " updated " in line or " created " in line]
    assert len(changes) == len(set(changes)), "a change was printed twice"


async def test_watch_until_done_of_a_missing_task_fails_at_once(harness: ServerHarness) -> None:
    result = await headway("watch", "nope", "--until-done", "--server", harness.target, timeout=15)
    assert result.code == 1, result
    assert result.stderr.strip() == "headway: task 'nope' not found"
    several = await headway(
        "watch", "nope", "gone", "--until-done", "--server", harness.target, timeout=15
    )
    assert several.code == 1, several
    assert several.stderr.strip() == "headway: tasks 'nope', 'gone' not found"


async def test_watch_of_a_missing_task_says_so_once_and_waits_for_it(
    harness: ServerHarness,
) -> None:
    watch = await Stream.start("watch", "later", "--plain", "--server", harness.target)
    await watch.wait_for(lambda lines: any("synced" in line for line in lines))
    await harness.client().create_task("later", kind="etl")
    await watch.wait_for(lambda lines: any("created later" in line for line in lines))
    result = await watch.interrupt()
    assert result.code == 130
    assert result.stderr.count("task 'later' not found") == 1, result.stderr
    assert "Traceback" not in result.stderr


async def test_watch_of_tasks_that_exist_but_do_not_match_is_not_an_error(
    harness: ServerHarness,
) -> None:
    await harness.client().create_task("idle", kind="etl")  # pending, never running
    watch = await Stream.start(
        "watch", "idle", "--state", "running", "--plain", "--server", harness.target
    )
    await watch.wait_for(lambda lines: any("synced" in line for line in lines))
    result = await watch.interrupt()
    assert result.code == 130
    assert "not found" not in result.stderr


def stale_fragments(screen: str, columns: int) -> list[str]:
    """Lines that are not part of one whole frame drawn at `columns`: pieces of panels
    drawn at another width, or anything below the last panel."""
    lines = screen.splitlines()
    last = max((n for n, line in enumerate(lines) if line.startswith("╰")), default=-1)
    wrong = [line for line in lines[last + 1 :] if line.strip()]
    for line in lines[1 : last + 1]:
        ends = {"╭": "╮", "╰": "╯", "│": "│"}
        if len(line) != columns or ends.get(line[0]) != line[-1]:
            wrong.append(line)
    return wrong


async def test_watch_redraws_whole_frames_after_the_window_is_resized(
    harness: ServerHarness, terminal: Terminal
) -> None:
    client = harness.client()
    for n in range(3):
        await client.create_task(f"job-{n}", kind="etl", steps=["extract", "load"], start=True)
        await client.update_step(f"job-{n}", "extract", message=f"reading part {n} of many")
    await terminal.start("watch", "--server", harness.target)
    await terminal.wait_for(lambda text: "job-2" in text)
    for columns, rows in ((60, 20), (120, 45), (50, 30), (110, 25), (70, 35), (90, 30), (80, 28)):
        terminal.resize(columns, rows)
        await asyncio.sleep(0.2)  # a person drags the corner; frames come in between

    def settled(text: str) -> bool:
        return text.startswith("Headway · ") and not stale_fragments(text, 80)

    # The clocks redraw the board every second, so a stale screen would stay stale.
    screen = await terminal.wait_for(settled)
    await asyncio.sleep(1.5)
    screen = terminal.text
    assert screen.startswith("Headway · "), screen
    assert stale_fragments(screen, 80) == [], screen
    assert screen.count("Headway") == 1, screen
    for n in range(3):
        assert screen.count(f"job-{n}") == 1, screen
        assert f"reading part {n} of many" in screen
    assert await terminal.interrupt() == 130
    assert "Traceback" not in terminal.text


async def test_watch_on_a_terminal_says_under_its_header_that_a_task_is_missing(
    harness: ServerHarness, terminal: Terminal
) -> None:
    await terminal.start("watch", "later", "--server", harness.target)
    screen = await terminal.wait_for(lambda text: "not found" in text)
    lines = screen.splitlines()
    assert lines[0].startswith("Headway · ")
    assert lines[1] == "task 'later' not found; still watching, in case of a later creation"
    await harness.client().create_task("later", kind="etl")
    await terminal.wait_for(lambda text: "╭─ later (etl)" in text)
    assert await terminal.interrupt() == 130
