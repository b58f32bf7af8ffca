"""The README's Agents and Viewers examples, run verbatim against a real server.

Each ```python block of those sections runs as its own script, in order (the
viewer examples read the tasks the agent examples made), pointed at the test
server through HEADWAY_SERVER as a reader would point it at theirs.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest

from headway.cli.main import build_parser
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
    assert len(agents) == 4
    assert len(viewers) == 1
    outputs = [await run_example(code, tmp_path, harness.target) for code in agents + viewers]
    report, failure, cancel, threads, viewer = outputs
    assert report == "nightly-report SUCCEEDED 1520.0\n"
    assert failure == "FAILED ValueError FAILED\n"
    assert cancel == "CANCELLED alice\n"
    assert threads == "SUCCEEDED\n"
    listed, ended, snapshot, synced = viewer.splitlines()
    assert listed == "nightly-report SUCCEEDED 100%"
    assert re.fullmatch(r"nightly-report ended SUCCEEDED after \d:\d\d:\d\d\.\d+", ended)
    assert snapshot == "Snapshot nightly-report SUCCEEDED"
    assert re.fullmatch(r"synced at revision \d+", synced)

    stored = await harness.client().get_task("nightly-report")
    assert stored.steps[0].progress.units.current == 120


def test_the_command_line_reference_covers_every_command() -> None:
    reference = section("Command line")
    # `headway --help` lists each command on a line of its own, indented by four spaces.
    commands = re.findall(r"^    (\w+) ", build_parser().format_help(), re.MULTILINE)
    assert "watch" in commands
    for name in commands:
        assert f"| `headway {name}" in reference, f"`headway {name}` is not in the README"


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
