"""The README's examples, run verbatim against a server on the default port.

A user copies these commands as they are; if one of them stops working, this
test fails before the user finds out.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.processes import ServerProcess

README = Path(__file__).resolve().parents[2] / "README.md"
FENCE = re.compile(r"```(\w*)\n(.*?)```", re.DOTALL)
DEFAULT_PORT = 50051
DEFAULT_HTTP_PORT = 8080

pytestmark = pytest.mark.grpcurl


@dataclass
class Example:
    command: str
    expected_error: str | None = None


def readme_blocks(text: str | None = None) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(text or README.read_text())]


def section(title: str) -> str:
    """The README's `## title` section, up to the next one."""
    return README.read_text().split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def grpcurl_examples(title: str = "Try it with grpcurl") -> list[Example]:
    """Every grpcurl command in a section, with the error output shown after it, if any.

    The Security section's examples need a TLS server: test_readme_security.py runs them.
    """
    blocks = readme_blocks(section(title))
    examples: list[Example] = []
    for i, (language, body) in enumerate(blocks):
        if language != "sh":
            continue
        commands = [line for line in body.splitlines() if line.startswith("grpcurl ")]
        examples.extend(Example(command) for command in commands)
        following = blocks[i + 1] if i + 1 < len(blocks) else ("", "")
        if commands and following[0] == "" and following[1].startswith("ERROR:"):
            examples[-1].expected_error = following[1]
    return examples


def python_example() -> str:
    return next(body for language, body in readme_blocks() if language == "python")


def environment() -> dict[str, str]:
    """The user's shell after `source .venv/bin/activate`: grpcurl and python on PATH."""
    venv_bin = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}"}


@pytest.fixture(scope="module")
def default_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    for port in (DEFAULT_PORT, DEFAULT_HTTP_PORT):
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("0.0.0.0", port))
            except OSError:
                pytest.fail(f"port {port} is busy: stop the server listening there first")
    folder = tmp_path_factory.mktemp("readme")
    # As `make run` starts it: default address, a database in the working folder.
    server = ServerProcess(
        folder / "headway.db", address="127.0.0.1:50051", http_address="127.0.0.1:8080"
    ).start()
    try:
        yield server
    finally:
        assert server.stop() == 0, server.log.read_text()


def run(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        shlex.split(command), capture_output=True, text=True, env=environment(), timeout=30
    )


def test_readme_has_the_examples_the_brief_promises() -> None:
    commands = " ".join(example.command for example in grpcurl_examples())
    for needed in (" list", " describe ", "/CreateTask", "/UpdateStep", "/Subscribe"):
        assert needed in commands


def test_grpcurl_examples_run_verbatim(default_server: ServerProcess) -> None:
    watchers: list[subprocess.Popen[str]] = []
    try:
        check_examples(watchers)
    finally:
        for process in watchers:
            if process.poll() is None:
                process.kill()
            process.communicate()


def check_examples(watchers: list[subprocess.Popen[str]]) -> None:
    examples = grpcurl_examples()
    streams = [e for e in examples if "/Subscribe" in e.command]
    assert len(streams) == 1
    outputs: dict[str, str] = {}
    watcher: subprocess.Popen[str] | None = None
    for example in examples:
        if example is streams[0]:
            watcher = subprocess.Popen(
                shlex.split(example.command),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=environment(),
            )
            watchers.append(watcher)
            # The watcher has its snapshot before the agent reports anything.
            assert watcher.stdout is not None
            first_response = "".join(iter(watcher.stdout.readline, "}\n"))
            assert re.search(r'"synced": \{\s*\}', first_response), first_response
            continue
        result = run(example.command)
        if example.expected_error is not None:
            assert result.returncode != 0
            for line in example.expected_error.strip().splitlines():
                assert line.strip() in result.stderr, f"{line!r} not in {result.stderr!r}"
            continue
        assert result.returncode == 0, f"{example.command}\n{result.stderr}"
        outputs[example.command] = result.stdout

    def output_of(fragment: str) -> str:
        return "\n".join(out for command, out in outputs.items() if fragment in command)

    assert "headway.v1.TaskService" in output_of(" list")
    assert "rpc Subscribe" in output_of(" describe ")
    assert json.loads(output_of("Health/Check")) == {"status": "SERVING"}
    created = json.loads(output_of("/CreateTask"))["task"]
    assert created["state"] == "TASK_STATE_PENDING"
    final = json.loads(output_of("/GetTask"))["task"]
    assert final["state"] == "TASK_STATE_SUCCEEDED"
    assert "fetched page 3" in output_of("/ListLogs")
    assert "report-42" in output_of("/ListTasks")

    assert watcher is not None
    stream_output, stream_errors = watcher.communicate(timeout=30)
    assert watcher.returncode == 0, stream_errors
    assert stream_output.count('"updated": {') >= 3
    assert "TASK_STATE_SUCCEEDED" in stream_output


def test_python_example_runs_verbatim(default_server: ServerProcess, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(python_example())
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=environment(), timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"[0-9a-f-]{36}: TASK_STATE_SUCCEEDED at revision \d+\n", result.stdout)


def test_configuration_table_lists_every_setting() -> None:
    from headway.server.config import Limits, Settings

    text = README.read_text()
    flags = [f"--{name.replace('_', '-')}" for name in Settings.model_fields if name != "limits"]
    flags += [f"--limits.{name.replace('_', '-')}" for name in Limits.model_fields]
    missing = [flag for flag in flags if f"| `{flag}` |" not in text]
    assert not missing, f"README configuration table lacks {missing}"


def curl_script() -> str:
    """The shell block of the HTTP section: what an agent with only curl runs."""
    blocks = readme_blocks(section("HTTP and Server-Sent Events"))
    scripts = [body for language, body in blocks if language == "sh" and "curl " in body]
    assert len(scripts) == 1
    return scripts[0]


def test_curl_examples_run_verbatim(default_server: ServerProcess) -> None:
    # Twice: the task id is new each run, so the examples work again on the same server.
    for _ in range(2):
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", curl_script()],
            capture_output=True,
            text=True,
            env=environment(),
            timeout=30,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        answers = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
        assert answers[0]["task"]["state"] == "TASK_STATE_PENDING"
        final = answers[-1]["task"]
        assert final["state"] == "TASK_STATE_SUCCEEDED"
        assert final["message"] == "report ready"
        assert final["steps"][0]["state"] == "STEP_STATE_SUCCEEDED"
        events = [line for line in result.stdout.splitlines() if line.startswith("event: ")]
        assert events == ["event: snapshot", "event: synced"]
