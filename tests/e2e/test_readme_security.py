"""The README's Security examples, run verbatim against a TLS server on the default port.

Each `python -m headway.server --…` line is parsed into the server's settings
exactly as the server would parse it, in a folder holding the certificates the
README names (made by trustme); the grpcurl lines that follow run in a shell
there against that server. The server's authenticator is the test's: it knows
the token in $HEADWAY_TOKEN and the client certificate's common name.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from headway.server.app import create_server
from headway.server.auth.principal import Role
from headway.server.config import Settings
from tests.e2e.test_readme import Example, readme_blocks, section
from tests.security import CLIENT_NAME, RecordingAuthenticator, make_certificates

pytestmark = pytest.mark.grpcurl

TOKEN = "hw_readme-example-token"
SERVER_LINE = "python -m headway.server --"


@dataclass
class ServerExample:
    command: str
    examples: list[Example] = field(default_factory=list)


def security_examples() -> list[ServerExample]:
    """Each server line of the Security section, with the grpcurl lines that follow it."""
    blocks = readme_blocks(section("Security"))
    servers: list[ServerExample] = []
    for i, (language, body) in enumerate(blocks):
        if language != "sh":
            continue
        for line in body.splitlines():
            if line.startswith(SERVER_LINE):
                servers.append(ServerExample(line))
            elif line.startswith("grpcurl "):
                servers[-1].examples.append(Example(line))
        following = blocks[i + 1] if i + 1 < len(blocks) else ("", "")
        if following[0] == "" and following[1].startswith("ERROR:"):
            servers[-1].examples[-1].expected_error = following[1]
    return servers


def test_the_section_shows_tls_tokens_and_mutual_tls() -> None:
    servers = security_examples()
    assert [("--tls-client-ca" in s.command) for s in servers] == [False, True]
    commands = " ".join(e.command for s in servers for e in s.examples)
    for needed in (
        "-cacert ca.pem",
        "-cert client.pem -key client-key.pem",
        "authorization: Bearer",
    ):
        assert needed in commands


async def run(command: str, folder: Path) -> tuple[int, str, str]:
    venv_bin = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "HEADWAY_TOKEN": TOKEN,
    }
    process = await asyncio.create_subprocess_shell(
        command,
        cwd=folder,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_security_examples_run_verbatim(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", 50051))
        except OSError:
            pytest.fail("port 50051 is busy: stop the server listening there first")
    certs = make_certificates(tmp_path)
    monkeypatch.chdir(tmp_path)  # the README's relative paths, as a user would run them
    outputs: dict[str, str] = {}
    for server in security_examples():
        settings = Settings(_cli_parse_args=shlex.split(server.command)[3:])
        assert settings.address == "0.0.0.0:50051"
        authenticator = RecordingAuthenticator(
            tokens={TOKEN: Role.ADMIN}, peers={CLIENT_NAME: Role.ADMIN}
        )
        running = await create_server(settings, authenticator=authenticator)
        try:
            for example in server.examples:
                code, stdout, stderr = await run(example.command, certs.folder)
                if example.expected_error is not None:
                    assert code != 0
                    for line in example.expected_error.strip().splitlines():
                        assert line.strip() in stderr, f"{line!r} not in {stderr!r}"
                    continue
                assert code == 0, f"{example.command}\n{stderr}"
                outputs[example.command] = stdout
        finally:
            await running.stop(0.5)
        if settings.tls_client_ca is not None:
            assert {seen.peer for seen in authenticator.seen} == {CLIENT_NAME}
        else:
            assert "Bearer " + TOKEN in {seen.authorization for seen in authenticator.seen}

    def output_of(*fragments: str) -> str:
        return "\n".join(
            out for command, out in outputs.items() if all(f in command for f in fragments)
        )

    assert json.loads(output_of("Health/Check")) == {"status": "SERVING"}
    created = json.loads(output_of("Bearer", "/CreateTask"))["task"]
    assert created["id"] == "deploy-9"
    assert json.loads(output_of("Bearer", "/GetTask"))["task"]["kind"] == "deploy"
    assert "headway.v1.TaskService" in output_of("-cert client.pem", " list")
    assert json.loads(output_of("-cert client.pem", "/CreateTask"))["task"]["id"] == "deploy-10"
