"""examples/node against a real server: the contract works from Node.js, built from the protos.

The example installs its pinned dependencies with `npm ci` and runs as a user would run it,
pointed at the test server by HEADWAY_ADDRESS (and HEADWAY_TOKEN when the server wants one).
What it printed is checked, and so is what the server holds afterwards, read through the
Python client.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from headway.client import HeadwayClient
from headway.server.auth.tokens import append_token
from headway.server.config import Settings
from headway.v1 import task_pb2
from tests.harness import QUIET, ServerHarness

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "node"
NODE = shutil.which("node")
NPM = shutil.which("npm")
STEPS = [
    "created",
    "snapshot",
    "synced",
    "updated",
    "disconnected",
    "resumed",
    "invalid_argument",
    "summary",
]

pytestmark = [
    pytest.mark.skipif(
        NODE is None or NPM is None, reason="examples/node needs `node` and `npm` on the PATH"
    ),
    # The first test also installs the example's dependencies.
    pytest.mark.timeout(300),
]


@pytest.fixture(scope="module")
def script() -> Path:
    """examples/node/progress.mjs, its pinned dependencies installed by `npm ci` once."""
    assert NPM is not None
    result = subprocess.run(
        [NPM, "ci", "--no-audit", "--no-fund", "--prefer-offline", "--loglevel=error"],
        cwd=EXAMPLE,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return EXAMPLE / "progress.mjs"


async def run(script: Path, target: str, token: str | None = None) -> tuple[int, list[Any]]:
    """Runs the example against `target`; its exit code and its JSON lines."""
    assert NODE is not None
    env = {key: value for key, value in os.environ.items() if key != "HEADWAY_TOKEN"}
    env["HEADWAY_ADDRESS"] = target
    if token is not None:
        env["HEADWAY_TOKEN"] = token
    # Asynchronously: the server under test runs on this event loop.
    process = await asyncio.create_subprocess_exec(
        NODE,
        str(script),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    lines = [json.loads(line) for line in stdout.decode().splitlines()]
    assert process.returncode is not None
    assert not stderr, stderr.decode()
    return process.returncode, lines


def by_step(lines: list[Any]) -> dict[str, Any]:
    assert [line["step"] for line in lines] == STEPS, lines
    return {line["step"]: line for line in lines}


async def test_the_node_example_reports_watches_resumes_and_reads_error_details(
    script: Path, harness: ServerHarness, client: HeadwayClient
) -> None:
    code, lines = await run(script, harness.target)
    assert code == 0, lines
    seen = by_step(lines)
    summary = seen["summary"]
    assert summary["ok"] is True
    assert summary["state"] == "TASK_STATE_SUCCEEDED"

    # Revisions arrive as decimal strings (int64 read with `longs: String`).
    created, snapshot = seen["created"], seen["snapshot"]
    assert created["revision"] == snapshot["revision"] == "1"
    assert snapshot["state"] == "TASK_STATE_PENDING"
    assert seen["synced"]["revision"] == "1"
    assert seen["updated"]["revision"] == "2"
    assert seen["updated"]["state"] == "TASK_STATE_RUNNING"
    # The task is this database's only one, so its changes are every revision: the resumed
    # stream delivered all of them after the one it resumed from, once each, in order,
    # and nothing for the rejected call.
    assert seen["disconnected"]["last_revision"] == seen["resumed"]["from"] == "2"
    assert seen["resumed"]["revisions"] == ["3", "4", "5"]
    assert summary["resumed_from"] == "2"
    assert summary["resumed_revisions"] == ["3", "4", "5", "6"]
    assert summary["revision"] == "6"

    # The error details, decoded from grpc-status-details-bin, with snake_case field paths.
    rejected = seen["invalid_argument"]
    assert rejected["code"] == "INVALID_ARGUMENT"
    assert (rejected["domain"], rejected["reason"]) == ("headway.v1", "FIELD_VIOLATION")
    assert [v["field"] for v in rejected["field_violations"]] == ["step_key", "progress.fraction"]
    assert all(v["description"] for v in rejected["field_violations"])

    # What the server holds is what the example did.
    task = await client.get_task(summary["task_id"])
    assert task.id == created["task_id"]
    assert task.state == task_pb2.TASK_STATE_SUCCEEDED
    assert task.revision == 6
    assert task.kind == "example.node"
    assert task.message == "done"
    assert [step.key for step in task.steps] == ["fetch", "analyze", "write"]
    fetch = task.steps[0]
    assert fetch.state == task_pb2.STEP_STATE_SUCCEEDED
    assert (fetch.progress.units.current, fetch.progress.units.total) == (40, 120)
    assert task.steps[1].progress.fraction == 0.5


async def test_the_node_example_sends_its_bearer_token(
    script: Path, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    agent = append_token(tokens, "node-agent", "acme", "agent")
    viewer = append_token(tokens, "watcher", "acme", "viewer")
    harness = ServerHarness(make_settings(auth_token_file=tokens, **QUIET))
    await harness.start()
    try:
        # Without a token the server refuses the first call, and the example says so.
        code, lines = await run(script, harness.target)
        assert code == 1
        assert lines[-1]["step"] == "failed"
        assert lines[-1]["details"][0]["reason"] == "TOKEN_MISSING"

        code, lines = await run(script, harness.target, token=agent)
        assert code == 0, lines
        seen = by_step(lines)
        assert seen["created"]["creator"] == "node-agent"
        task = await harness.client(token=viewer).get_task(seen["summary"]["task_id"])
        assert (task.tenant, task.creator) == ("acme", "node-agent")
        assert task.state == task_pb2.TASK_STATE_SUCCEEDED
    finally:
        await harness.close()
