"""`headway demo` runs to completion: every agent's story ends as it should."""

from __future__ import annotations

import re

import pytest

from headway.client import TaskState, task_filter
from tests.cli.conftest import Terminal, headway
from tests.harness import ServerHarness

FAST = ("--speed", "100")


async def test_the_demo_runs_on_an_embedded_server_when_none_is_reachable() -> None:
    result = await headway("demo", *FAST, "--server", "127.0.0.1:1")
    assert result.code == 0, result.stderr
    assert "no server at 127.0.0.1:1; running an embedded server" in result.stderr
    summary = result.stdout.split("The demo is over:\n")[1].splitlines()
    outcomes = {line.split()[0].rsplit("-", 1)[1]: line.split()[1] for line in summary}
    assert outcomes == {
        "close": "FAILED",
        "report": "SUCCEEDED",
        "train": "SUCCEEDED",
        "review": "SUCCEEDED",
        "import": "FAILED",
        "crawl": "CANCELLED",
        "backup": "SUCCEEDED",
    }
    # Everything moved: sub-progress, discovered steps, logs, the failure, the cancel.
    assert re.search(r"fetch: RUNNING \d+/120 files", result.stdout)
    assert re.search(r"read-3: RUNNING \d/6 pages", result.stdout)
    assert re.search(r"iteration 8/8", result.stdout)
    assert "error ValueError: row 62: expected 5 columns, found 4" in result.stdout
    assert "cancel requested by headway demo" in result.stdout
    assert "stopping: cancelled by headway demo" in result.stdout
    assert re.search(r"updated demo-\w+-backup RUNNING .*\| STALLED", result.stdout)
    # Declared durations give ETAs from the start; the observed rate joins in.
    assert re.search(r"\| ETA \d:\d\d:\d\d \(agent\)", result.stdout)
    assert re.search(r"\| ETA (\d:\d\d:\d\d|overdue) \(combined\)", result.stdout)


async def test_the_demo_reports_to_a_running_server(harness: ServerHarness) -> None:
    result = await headway("demo", *FAST, "--server", harness.target)
    assert result.code == 0, result.stderr
    label = re.search(r"headway tasks --label demo=(\w+)", result.stdout)
    assert label is not None, result.stdout
    tasks = await harness.client().list_all_tasks(task_filter(labels={"demo": label.group(1)}))
    states = sorted(TaskState(task.state).name for task in tasks)
    assert states == [
        "CANCELLED",
        "FAILED",
        "FAILED",
        "SUCCEEDED",
        "SUCCEEDED",
        "SUCCEEDED",
        "SUCCEEDED",
    ]
    crawl = next(task for task in tasks if task.id.endswith("-crawl"))
    assert crawl.cancel_request.requested_by == "headway demo"
    # The close reports nothing itself: its progress is its children's, by weight
    # (the report, weight 2, done; the import, weight 1, failed at row 62 of 100
    # in its second of three steps).
    close = next(task for task in tasks if task.id.endswith("-close"))
    children = [task for task in tasks if task.parent_id == close.id]
    assert sorted(task.id.rsplit("-", 1)[1] for task in children) == ["import", "report"]
    assert (close.children.total, close.children.succeeded, close.children.failed) == (2, 1, 1)
    report, imported = sorted(children, key=lambda task: task.id, reverse=True)
    assert close.fraction == pytest.approx((2 * report.fraction + imported.fraction) / 3)
    assert 0.6 < close.fraction < 1
    assert "1 of 2 parts failed" in close.error.message


async def test_the_demo_draws_panels_on_a_tall_terminal() -> None:
    terminal = Terminal(columns=100, rows=80)
    try:
        await terminal.start("demo", *FAST, "--embedded")
        screen = await terminal.wait_for(lambda text: "The demo is over" in text, timeout=30)
    finally:
        await terminal.close()
    for name in ("Quarterly report", "Fine-tune classifier", "Literature review"):
        assert name in screen
    assert "✘ ValueError: row 62: expected 5 columns, found 4" in screen
    assert "⊘ cancelled by headway demo: no longer needed" in screen
    assert "⇩ report.pdf  s3://reports/q3.pdf" in screen


async def test_the_demo_fits_a_small_terminal_with_one_line_per_task() -> None:
    terminal = Terminal(columns=100, rows=24)
    try:
        await terminal.start("demo", *FAST, "--embedded")
        screen = await terminal.wait_for(lambda text: "The demo is over" in text, timeout=30)
    finally:
        await terminal.close()
    rows = [
        line for line in screen.splitlines() if re.match(r"(SUCCEEDED|FAILED|CANCELLED) ", line)
    ]
    assert len(rows) == 7, screen
    assert "╭" not in screen  # no panels: they would not fit


async def test_ctrl_c_ends_the_demo_with_one_line_and_every_task_at_rest(
    harness: ServerHarness,
) -> None:
    terminal = Terminal(columns=120, rows=40)
    try:
        await terminal.start("demo", "--server", harness.target)
        await terminal.wait_for(lambda text: text.count("RUNNING") >= 3, timeout=15)
        code = await terminal.interrupt()
    finally:
        await terminal.close()
    screen = terminal.text
    assert code == 130, screen
    assert "Traceback" not in screen
    assert "Error" not in screen, screen
    # One line says what happened, and it is the last one.
    assert re.fullmatch(r"Interrupted: cancelled [4-9] demo tasks", screen.splitlines()[-1]), screen
    tasks = await harness.client().list_all_tasks()
    demo = [task for task in tasks if task.id.startswith("demo-")]
    assert len(demo) >= 4
    states = {task.id: TaskState(task.state).name for task in demo}
    assert set(states.values()) <= {"SUCCEEDED", "FAILED", "CANCELLED"}, states


async def test_the_demo_fits_120_by_40_with_compact_panels_and_a_stalled_task() -> None:
    terminal = Terminal(columns=120, rows=40)

    def stalled_board(text: str) -> bool:
        return (
            text.count("╭─") == 7  # seven panels, not one line per task
            and "⚠ STALLED, no report for" in text
            and re.search(r"▶ (Upload|Train|Analyze|Read: \w+)", text) is not None  # a step
            and re.search(r"\d\d:\d\d:\d\d epoch \d: loss", text) is not None  # a log line
            and re.search(r"iteration \d/8", text) is not None
            and "tokens" in text  # metrics
            and re.search(r"criteria \d/3", text) is not None
            and re.search(r"children \d/2 done", text) is not None  # the close's roll-up
        )

    try:
        await terminal.start("demo", "--speed", "10", "--embedded")
        stalled = await terminal.wait_for(stalled_board, timeout=15)
        recovered = await terminal.wait_for(
            lambda text: "storage mount back; resuming" in text and "STALLED" not in text
        )
        final = await terminal.wait_for(
            lambda text: re.search(r"The demo is over:(\n  .*){7}", text) is not None, timeout=15
        )
    finally:
        await terminal.close()
    assert "Back up /srv/data" in stalled
    assert re.search(r"RUNNING · STALLED ─╯", stalled), stalled
    panels = [line for line in stalled.splitlines() if line.startswith("╭─")]
    columns = [line.count("╭─") for line in panels]
    assert set(columns[:-1]) == {2}, "not two columns of panels"
    assert columns[-1] in (1, 2), "not two columns of panels"
    assert all(len(line) <= 120 for line in stalled.splitlines())
    assert re.search(r"RUNNING|SUCCEEDED", recovered)
    assert re.search(r"demo-\w+-backup +SUCCEEDED", final), final
