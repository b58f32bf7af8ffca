"""The README's Agents and Viewers examples, run verbatim against a real server.

Each ```python block of those sections runs as its own script, in order (the
viewer examples read the tasks the agent examples made), pointed at the test
server through HEADWAY_SERVER as a reader would point it at theirs.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import sys
from pathlib import Path

import pytest

from headway.cli.main import build_parser
from headway.client import task_filter
from headway.v1 import task_pb2
from tests.harness import ServerHarness

README = Path(__file__).resolve().parents[2] / "README.md"
# An opening fence, its info string (any words), the body, the closing fence.
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def python_blocks(title: str) -> list[str]:
    return [body for info, body in FENCE.findall(section(title)) if info.split()[:1] == ["python"]]


def reading_commands() -> list[str]:
    """The ```sh lines of "Command line" that read tasks and end by themselves (not `demo`,
    `watch`, nor `cancel` of a task the examples do not make), comments dropped."""
    blocks = [body for info, body in FENCE.findall(section("Command line")) if info == "sh"]
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith(("headway tasks", "headway logs"))]


async def run_command(line: str, target: str) -> str:
    argv = shlex.split(line)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "headway.cli",
        *argv[1:],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "HEADWAY_SERVER": target},
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, f"{line}\n{stderr.decode()}"
    return stdout.decode()


async def run_example(code: str, tmp_path: Path, target: str) -> str:
    script = tmp_path / "example.py"
    script.write_text(code)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "HEADWAY_SERVER": target},
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, f"{code}\n{stderr.decode()}"
    return stdout.decode()


async def test_agent_and_viewer_examples_run_verbatim(
    harness: ServerHarness, tmp_path: Path
) -> None:
    agents = python_blocks("Agents")
    viewers = python_blocks("Viewers")
    assert len(agents) == 6
    assert len(viewers) == 1
    outputs = [await run_example(code, tmp_path, harness.target) for code in agents + viewers]
    report, failure, cancel, threads, criteria, nested, viewer = outputs
    assert report == "nightly-report SUCCEEDED 1520.0\n"
    assert failure == "FAILED ValueError FAILED\n"
    assert cancel == "CANCELLED alice\n"
    assert threads == "SUCCEEDED\n"
    assert criteria == "SUCCEEDED criteria 3/3\n"
    # The parent follows its children by weight: (1 * 1.0 + 3 * 0.6) / 4.
    assert nested == "70% 1/2 children done\nSUCCEEDED 100%\n"
    listed, ended, snapshot, synced = viewer.splitlines()
    assert listed == "nightly-report SUCCEEDED 100%"
    assert re.fullmatch(r"nightly-report ended SUCCEEDED after \d:\d\d:\d\d\.\d+", ended)
    assert snapshot == "Snapshot nightly-report SUCCEEDED"
    assert re.fullmatch(r"synced at revision \d+", synced)

    stored = await harness.client().get_task("nightly-report")
    assert stored.steps[0].progress.units.current == 120

    # The command line examples that read what the agents left: run as written.
    outputs = {line: await run_command(line, harness.target) for line in reading_commands()}
    assert len(outputs) == 3, outputs
    tail = next(out for line, out in outputs.items() if "--tail 20" in line)
    assert tail.rstrip().endswith("fetched 120 files source=s3"), tail
    failed = next(out for line, out in outputs.items() if line.startswith("headway tasks"))
    assert [task["state"] for task in json.loads(failed)] == ["TASK_STATE_FAILED"]

    # The criteria example makes a new task each run, so it works again on the same server.
    assert await run_example(agents[4], tmp_path, harness.target) == criteria
    fixes = await harness.client().list_tasks(filter=task_filter(kinds=["agent.fix"]))
    assert len(fixes.tasks) == 2
    for fix in fixes.tasks:
        assert [(c.name, c.met, c.detail) for c in fix.criteria] == [
            ("bug reproduced", True, "test_unicode_names fails"),
            ("tests pass", True, "43/43"),
            ("lint clean", True, ""),
        ]


def test_the_command_line_reference_covers_every_command() -> None:
    reference = section("Command line")
    # `headway --help` lists each command on a line of its own, indented by four spaces.
    commands = re.findall(r"^    (\w+) ", build_parser().format_help(), re.MULTILINE)
    assert "watch" in commands
    for name in commands:
        assert f"| `headway {name}" in reference, f"`headway {name}` is not in the README"


async def test_integration_examples_run_verbatim(harness: ServerHarness, tmp_path: Path) -> None:
    blocks = python_blocks("Integrations")
    bars = next(code for code in blocks if "contrib.tqdm" in code)
    logs = next(code for code in blocks if "contrib.logging" in code)
    client = harness.client()

    bars_task = (await run_example(bars, tmp_path, harness.target)).strip()
    task = await client.get_task(bars_task)
    assert task.state == task_pb2.TASK_STATE_SUCCEEDED
    assert task.kind == "images"
    assert [step.key for step in task.steps] == ["album-0", "album-1", "album-2"]
    assert all(step.progress.units.current == 40 for step in task.steps)
    assert task.steps[0].message == "last=IMG_0039.jpg"

    logs_task = (await run_example(logs, tmp_path, harness.target)).strip()
    lines = (await client.list_logs(logs_task)).entries
    assert [(line.message, line.step_key, line.fields["source"]) for line in lines] == [
        ("loading 3 rows", "", "etl"),
        ("skipped a bad row", "load", "etl"),
    ]
    assert "ValueError" in lines[1].fields["traceback"]


async def test_the_langchain_integration_example_runs_verbatim(
    harness: ServerHarness, tmp_path: Path
) -> None:
    blocks = python_blocks("Integrations")
    example = next(code for code in blocks if "HeadwayCallbackHandler" in code)
    output = await run_example(example, tmp_path, harness.target)
    task_id, answer = output.split()
    assert answer == "Hello!"
    task = await harness.client().get_task(task_id)
    assert task.state == task_pb2.TASK_STATE_SUCCEEDED
    assert task.kind == "greeting"
    assert [step.key.rsplit("-", 1)[0] for step in task.steps] == [
        "reply",
        "genericfakechatmodel",
    ]
    assert task.metrics["tokens.total"] == 15
    assert task.metrics["cost"] == pytest.approx((12 * 3.0 + 3 * 15.0) / 1e6)
