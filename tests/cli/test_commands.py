"""Every subcommand's output and exit code, and the one-line errors a person may meet."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from datetime import timedelta
from pathlib import Path

import pytest

from headway.client import HeadwayClient, LogLevel, TaskState, Tracker
from headway.client.client import duration
from headway.client.tracker import progress_message
from headway.v1 import task_service_pb2
from tests.cli.conftest import HEADWAY, Stream, Terminal, environment, headway
from tests.harness import ServerHarness


async def populate(harness: ServerHarness) -> None:
    """Three tasks: a finished report with logs, a running training, a failed import."""
    async with Tracker(harness.target, progress_rate=None) as tracker:
        async with tracker.task(
            "report-1",
            display_name="Nightly report",
            kind="report",
            labels={"team": "bi"},
            steps=["fetch", "write"],
        ) as task:
            async with task.step("fetch") as step:
                await step.log("fetched 3 pages")
                await step.log("slow mirror", level=LogLevel.WARNING, mirror="eu")
            async with task.step("write"):
                await task.log("wrote report.pdf")
                await task.metrics(tokens=1520)
        train = tracker.task("train-1", kind="ml.train", labels={"team": "ml"}, steps=["epochs"])
        await train.start()
        await train.step("epochs").progress(3, 10, unit="epochs")
        with pytest.raises(KeyError):
            async with (
                tracker.task("import-1", kind="etl", steps=["parse"]) as failing,
                failing.step("parse"),
            ):
                raise KeyError("customer_id")


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{text}"
    return lines[0]


async def test_tasks_lists_a_table_filters_and_json(harness: ServerHarness) -> None:
    await populate(harness)
    server = ("--server", harness.target)
    listed, running, labelled, kinds, none, limited = await asyncio.gather(
        headway("tasks", *server),
        headway("tasks", *server, "--state", "running"),
        headway("tasks", *server, "--label", "team=bi", "--json"),
        headway("tasks", *server, "--kind", "etl", "--kind", "report"),
        headway("tasks", *server, "--kind", "nothing"),
        headway("tasks", *server, "--limit", "2", "--json"),
    )
    assert listed.code == 0, listed.stderr
    header, *rows = listed.lines
    assert header.split() == ["ID", "NAME", "KIND", "STATE", "PROGRESS", "STEP", "UPDATED"]
    assert [row.split()[0] for row in rows] == ["report-1", "train-1", "import-1"]
    assert re.search(r"report-1\s+Nightly report\s+report\s+SUCCEEDED\s+100%", listed.stdout)
    assert re.search(r"train-1\s+ml.train\s+RUNNING\s+30%\s+epochs \(3/10 epochs\)", listed.stdout)
    assert re.search(r"import-1\s+etl\s+FAILED", listed.stdout)

    assert [row.split()[0] for row in running.lines[1:]] == ["train-1"]
    assert labelled.code == 0
    (task,) = json.loads(labelled.stdout)
    assert task["id"] == "report-1"
    assert task["state"] == "TASK_STATE_SUCCEEDED"
    assert [row.split()[0] for row in kinds.lines[1:]] == ["report-1", "import-1"]
    assert (none.code, none.stdout, none.stderr.strip()) == (0, "", "No tasks match.")
    # The newest two, in the listing's order (oldest first).
    assert [t["id"] for t in json.loads(limited.stdout)] == ["train-1", "import-1"]


async def test_no_tasks_yet_differs_from_no_tasks_matching(harness: ServerHarness) -> None:
    server = ("--server", harness.target)
    empty = await headway("tasks", *server, "--kind", "etl")
    assert (empty.code, empty.stdout, empty.stderr.strip()) == (0, "", "No tasks yet.")
    unfiltered = await headway("tasks", *server)
    assert (unfiltered.code, unfiltered.stderr.strip()) == (0, "No tasks yet.")
    await harness.client().create_task("load-1", kind="etl")
    other = await headway("tasks", *server, "--kind", "report")
    assert (other.code, other.stdout, other.stderr.strip()) == (0, "", "No tasks match.")


async def test_watch_on_a_terminal_says_whether_tasks_exist_or_none_match(
    harness: ServerHarness,
) -> None:
    empty = Terminal()
    try:
        await empty.start("watch", "--server", harness.target)
        await empty.wait_for(lambda text: "No tasks yet. Waiting for some…" in text)
    finally:
        await empty.close()
    await harness.client().create_task("load-1", kind="etl")
    filtered = Terminal()
    try:
        await filtered.start("watch", "--kind", "report", "--server", harness.target)
        screen = await filtered.wait_for(lambda text: "Waiting for some…" in text)
        assert "No tasks match. Waiting for some…" in screen
    finally:
        await filtered.close()


async def test_global_options_go_before_the_command_too(harness: ServerHarness) -> None:
    await harness.client().create_task("early-1", kind="etl")
    before = await headway("--server", harness.target, "--timeout", "5", "tasks", "--json")
    assert before.code == 0, before.stderr
    assert [t["id"] for t in json.loads(before.stdout)] == ["early-1"]
    # One given after the command wins over one given before it.
    both = await headway("--server", "127.0.0.1:9", "tasks", "--server", harness.target)
    assert both.code == 0, both.stderr
    assert "early-1" in both.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("tasks", "--limit", "-3"), "argument --limit: '-3' is not a positive whole number"),
        (("tasks", "--limit", "0"), "argument --limit: '0' is not a positive whole number"),
        (("watch", "--limit", "-3"), "argument --limit: '-3' is not zero or a positive"),
        (("watch", "--logs", "-1"), "argument --logs: '-1' is not zero or a positive"),
        (("tasks", "--timeout", "0"), "argument --timeout: '0' is not a positive number"),
        (("--timeout", "-2", "tasks"), "argument --timeout: '-2' is not a positive number"),
    ],
)
async def test_bad_numbers_are_usage_errors(args: tuple[str, ...], message: str) -> None:
    result = await headway(*args, "--server", "127.0.0.1:9")
    assert result.code == 2, result
    assert message in one_line(result.stderr)
    assert "Deadline" not in result.stderr


async def test_task_piped_uses_80_columns(harness: ServerHarness) -> None:
    await populate(harness)
    result = await headway(
        "task", "report-1", "--server", harness.target, env=environment(COLUMNS="")
    )
    assert result.code == 0, result.stderr
    assert max(len(line) for line in result.lines) == 80


async def test_task_at_80_columns_wraps_the_timing_instead_of_cutting_the_eta(
    harness: ServerHarness,
) -> None:
    client = harness.client()
    await client.create_task(
        "report-42",
        display_name="Quarterly report",
        kind="report",
        steps=[
            task_service_pb2.StepSpec(
                key="fetch", expected_duration=duration(timedelta(seconds=90))
            )
        ],
        start=True,
        max_iterations=8,
    )
    await client.update_task("report-42", iteration=3, metrics={"tokens": 1200, "cost": 0.03})
    await client.update_step("report-42", "fetch", progress=progress_message(40, 120, unit="files"))
    result = await headway("task", "report-42", "--server", harness.target, env=environment())
    assert result.code == 0, result.stderr
    panel = result.stdout.split("╰")[0]
    assert max(len(line) for line in result.lines) == 80
    assert "…" not in panel, panel
    assert "33%" in panel
    assert re.search(r"ETA \d:\d\d:\d\d \(agent\)", panel), panel
    assert "iteration 3/8" in panel
    assert re.search(r"cost 0.03 +tokens 1200", panel), panel


async def test_task_shows_one_task_in_detail(harness: ServerHarness) -> None:
    await populate(harness)
    server = ("--server", harness.target)
    shown, report, as_json = await asyncio.gather(
        headway("task", "import-1", *server),
        headway("task", "report-1", *server),
        headway("task", "train-1", *server, "--json"),
    )
    assert shown.code == 0, shown.stderr
    assert "import-1" in shown.stdout
    assert "FAILED" in shown.stdout
    assert "✘ parse" in shown.stdout
    assert "✘ KeyError: 'customer_id'" in shown.stdout
    assert "Traceback (most recent call last)" in shown.stdout  # the recorded one
    assert re.search(r"labels\s+team=bi", report.stdout)
    assert re.search(r"metrics\s+tokens=1520", report.stdout)
    assert json.loads(as_json.stdout)["steps"][0]["progress"]["units"]["current"] == "3"


async def test_logs_prints_filters_and_searches(harness: ServerHarness) -> None:
    await populate(harness)
    server = ("--server", harness.target)
    logs, warnings, found, by_step, as_json = await asyncio.gather(
        headway("logs", "report-1", *server),
        headway("logs", "report-1", *server, "--level", "warning"),
        headway("logs", "report-1", *server, "--search", "REPORT"),
        headway("logs", "report-1", *server, "--step", "fetch"),
        headway("logs", "report-1", *server, "--json"),
    )
    assert logs.code == 0, logs.stderr
    assert len(logs.lines) == 3
    assert re.fullmatch(r"\d\d:\d\d:\d\d INFO +fetch: fetched 3 pages", logs.lines[0])
    assert logs.lines[1].endswith("WARNING fetch: slow mirror mirror=eu")
    assert logs.lines[2].endswith("INFO    wrote report.pdf")
    assert [line.split(" ", 1)[1] for line in warnings.lines] == [
        "WARNING fetch: slow mirror mirror=eu"
    ]
    assert len(found.lines) == 1
    assert found.lines[0].endswith("wrote report.pdf")
    assert len(by_step.lines) == 2
    assert json.loads(as_json.lines[0])["message"] == "fetched 3 pages"


async def test_logs_follow_prints_new_lines_until_the_task_rests(harness: ServerHarness) -> None:
    async with Tracker(harness.target) as tracker, tracker.task("tail-1") as task:
        await task.log("before")
        follow = await Stream.start(
            "logs", "tail-1", "--follow", "--search", "line", "--server", harness.target
        )
        await task.log("first line")
        await follow.wait_for(lambda lines: any("first line" in line for line in lines))
        await task.log("ignored: does not match")
        await task.log("second line")
    result = await follow.finish()
    assert result.code == 0, result.stderr
    assert [line.split()[-2:] for line in result.lines] == [["first", "line"], ["second", "line"]]


async def test_logs_tail_prints_the_last_lines_in_order(harness: ServerHarness) -> None:
    async with HeadwayClient(harness.target) as client:
        await client.create_task("long-1")
        for first in range(0, 10, 4):  # several lines per append, as agents send them
            await client.append_logs("long-1", [f"line {n}" for n in range(first, first + 4)])
    server = ("--server", harness.target)
    tail, more, none, matching, as_json, negative = await asyncio.gather(
        headway("logs", "long-1", "--tail", "3", *server),
        headway("logs", "long-1", "--tail", "50", *server),
        headway("logs", "long-1", "--tail", "0", *server),
        headway("logs", "long-1", "-n", "2", "--search", "line 1", *server),
        headway("logs", "long-1", "--tail", "1", "--json", *server),
        headway("logs", "long-1", "--tail", "-1", *server),
    )
    assert tail.code == 0, tail.stderr
    assert [line.split(" ", 1)[1].split() for line in tail.lines] == [
        ["INFO", "line", "9"],
        ["INFO", "line", "10"],
        ["INFO", "line", "11"],
    ]
    assert [line.split()[-1] for line in more.lines] == [str(n) for n in range(12)]
    assert (none.code, none.stdout) == (0, "")
    assert [line.split()[-1] for line in matching.lines] == ["10", "11"]
    assert [json.loads(line)["message"] for line in as_json.lines] == ["line 11"]
    assert negative.code == 2
    assert "--tail" in one_line(negative.stderr)


async def test_logs_tail_follow_prints_the_last_lines_then_new_ones(
    harness: ServerHarness,
) -> None:
    async with Tracker(harness.target) as tracker, tracker.task("tail-2") as task:
        for n in range(5):
            await task.log(f"old {n}")
        follow = await Stream.start(
            "logs", "tail-2", "--tail", "3", "--follow", "--server", harness.target
        )
        await follow.wait_for(lambda lines: len(lines) == 3)
        await task.log("new 0")
        await follow.wait_for(lambda lines: any("new 0" in line for line in lines))
        await task.log("new 1")
    result = await follow.finish()
    assert result.code == 0, result.stderr
    assert [line.split()[-2:] for line in result.lines] == [
        ["old", "2"],
        ["old", "3"],
        ["old", "4"],
        ["new", "0"],
        ["new", "1"],
    ]


async def test_logs_follow_ends_quietly_on_ctrl_c(harness: ServerHarness) -> None:
    async with Tracker(harness.target) as tracker, tracker.task("tail-3") as task:
        await task.log("only line")
        follow = await Stream.start(
            "logs", "tail-3", "--tail", "5", "--follow", "--server", harness.target
        )
        await follow.wait_for(lambda lines: len(lines) == 1)
        result = await follow.interrupt()
    assert result.code == 130
    assert result.stderr == ""
    assert result.lines[0].endswith("only line")


async def test_cancel_reaches_the_agent_and_waits_for_its_confirmation(
    harness: ServerHarness,
) -> None:
    working = asyncio.Event()

    async def agent() -> None:
        async with (
            Tracker(harness.target, progress_rate=50) as tracker,
            tracker.task("cancel-me", steps=["loop"]) as task,
            task.step("loop") as step,
        ):
            for n in range(100_000):
                await step.progress(n, 100_000)
                working.set()
                await asyncio.sleep(0.005)

    running = asyncio.create_task(agent())
    await working.wait()
    result = await headway(
        "cancel",
        "cancel-me",
        "--reason",
        "wrong input",
        "--by",
        "dana",
        "--wait",
        "10",
        "--server",
        harness.target,
    )
    await asyncio.wait_for(running, 10)
    assert result.code == 0, result.stderr
    requested, ended = result.lines
    assert re.fullmatch(
        r"Cancel requested for cancel-me; its agent stops at its next report, "
        r"or the server cancels it at \d\d:\d\d:\d\d\.",
        requested,
    )
    assert ended == "cancel-me is CANCELLED."
    task = await harness.client().get_task("cancel-me")
    assert (task.cancel_request.requested_by, task.cancel_request.reason) == ("dana", "wrong input")


async def test_cancel_force_and_delete(harness: ServerHarness) -> None:
    client = harness.client()
    await client.create_task("stuck", start=True)
    refused = await headway("delete", "stuck", "--server", harness.target)
    assert refused.code == 1
    assert one_line(refused.stderr).endswith("[TASK_NOT_AT_REST]")
    assert one_line(refused.stderr).startswith("headway: ")
    forced = await headway("cancel", "stuck", "--force", "--server", harness.target)
    assert (forced.code, forced.stdout) == (0, "Cancelled stuck.\n")
    task = await client.get_task("stuck")
    assert task.state == TaskState.CANCELLED
    assert "@" in task.cancel_request.requested_by  # user@host by default
    deleted = await headway("delete", "stuck", "--server", harness.target)
    assert deleted.code == 0
    assert re.fullmatch(r"Deleted stuck \(revision \d+\)\.\n", deleted.stdout)


async def test_an_unknown_task_is_one_line_and_exit_1(harness: ServerHarness) -> None:
    commands = ("task", "logs", "cancel", "delete")
    results = await asyncio.gather(
        *(headway(command, "nope", "--server", harness.target) for command in commands)
    )
    for command, result in zip(commands, results, strict=True):
        assert result.code == 1, command
        assert one_line(result.stderr) == "headway: task 'nope' not found [TASK_NOT_FOUND]"
        assert result.stdout == ""


async def test_an_unreachable_server_is_one_line_and_exit_1() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    commands = (["tasks"], ["watch"], ["task", "x"], ["logs", "x"], ["cancel", "x"])
    results = await asyncio.gather(
        *(headway(*command, "--server", f"127.0.0.1:{port}") for command in commands)
    )
    for command, result in zip(commands, results, strict=True):
        assert result.code == 1, command
        assert one_line(result.stderr).startswith(
            f"headway: cannot reach a Headway server at 127.0.0.1:{port}"
        )


async def test_bad_filters_are_one_line(harness: ServerHarness) -> None:
    server = ("--server", harness.target)
    bad_state, bad_label, rejected, watch_rejected = await asyncio.gather(
        headway("tasks", "--state", "sleeping", *server),
        headway("watch", "--label", "team", *server),
        headway("tasks", "--kind", "no spaces allowed", *server),
        headway("watch", "--kind", "no spaces", *server),
    )
    assert bad_state.code == 2
    assert "invalid choice: 'sleeping'" in one_line(bad_state.stderr)
    assert bad_label.code == 2
    assert "'team' is not KEY=VALUE" in one_line(bad_label.stderr)
    assert rejected.code == 1
    assert "filter.kinds[0]" in one_line(rejected.stderr)
    assert watch_rejected.code == 1
    assert "filter.kinds[0]" in one_line(watch_rejected.stderr)


async def test_the_server_address_comes_from_the_environment(harness: ServerHarness) -> None:
    await harness.client().create_task("from-env")
    result = await headway("tasks", env=environment(HEADWAY_SERVER=harness.target))
    assert result.code == 0, result.stderr
    assert "from-env" in result.stdout


async def test_serve_runs_the_server_with_its_own_flags(tmp_path: Path) -> None:
    helped = await headway("serve", "--help")
    assert helped.code == 0
    assert "--database" in helped.stdout
    process = await asyncio.create_subprocess_exec(
        str(HEADWAY),
        "serve",
        "--address",
        "127.0.0.1:0",
        "--database",
        str(tmp_path / "s.db"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=environment(),
    )
    assert process.stdout is not None
    async with asyncio.timeout(20):
        while True:
            line = (await process.stdout.readline()).decode()
            assert line, "the server exited"
            serving = re.search(r"headway serving on port (\d+)", line)
            if serving:
                break
    async with HeadwayClient(f"127.0.0.1:{serving.group(1)}") as client:
        assert (await client.create_task("served")).id == "served"
    process.terminate()
    assert await asyncio.wait_for(process.wait(), 20) == 0
    invalid = await headway("serve", "--max-subscribers", "0")
    assert invalid.code == 2


async def test_task_says_when_its_error_is_retryable(harness: ServerHarness) -> None:
    async with Tracker(harness.target, retryable=(TimeoutError,)) as tracker:
        with pytest.raises(TimeoutError):
            async with tracker.task("flaky-1", steps=["fetch"]) as task, task.step("fetch"):
                raise TimeoutError("the mirror did not answer")
    shown = await headway("task", "flaky-1", "--server", harness.target)
    assert shown.code == 0, shown.stderr
    assert "✘ TimeoutError: the mirror did not answer (retryable)" in shown.stdout
