"""`headway` with tokens and TLS against a real server: refusals are one line and exit 77."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from headway.client import HeadwayClient
from headway.server.app import create_server
from headway.server.auth.principal import Role
from headway.server.config import Settings
from tests.cli.conftest import environment, headway
from tests.security import CLIENT_NAME, Certificates, RecordingAuthenticator, make_certificates

TOKENS = {"admin-token": Role.ADMIN, "viewer-token": Role.VIEWER}


@pytest.fixture
def authenticator() -> RecordingAuthenticator:
    return RecordingAuthenticator(tokens=TOKENS, peers={CLIENT_NAME: Role.OPERATOR})


@pytest.fixture
async def server(
    make_settings: Callable[..., Settings], authenticator: RecordingAuthenticator
) -> AsyncIterator[str]:
    running = await create_server(make_settings(), authenticator=authenticator)
    async with HeadwayClient(f"127.0.0.1:{running.port}", token="admin-token") as client:
        await client.create_task("nightly", kind="report")
    try:
        yield f"127.0.0.1:{running.port}"
    finally:
        await running.stop(0.5)


async def test_no_token_is_one_line_with_the_reason_and_exit_77(server: str) -> None:
    result = await headway("tasks", "--server", server)
    assert result.code == 77
    assert result.stderr.splitlines() == [
        "headway: not authenticated (TOKEN_MISSING): this server needs a bearer token "
        "(pass --token or --token-file, or set HEADWAY_TOKEN)"
    ]


async def test_a_bad_token_is_one_line(server: str) -> None:
    result = await headway("task", "nightly", "--server", server, "--token", "stale")
    assert result.code == 77
    assert result.stderr == "headway: not authenticated (TOKEN_INVALID): the token is not valid\n"


async def test_permission_denied_is_one_line(
    server: str, authenticator: RecordingAuthenticator
) -> None:
    result = await headway("cancel", "nightly", "--server", server, "--token", "viewer-token")
    assert result.code == 77
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("headway: permission denied (PERMISSION_DENIED): CancelTask")
    assert "Traceback" not in result.stderr
    assert authenticator.calls == 2  # the setup's CreateTask, then one CancelTask: no retry


async def test_the_options_go_before_or_after_the_command(
    server: str, authenticator: RecordingAuthenticator
) -> None:
    before = await headway("--token", "viewer-token", "tasks", "--server", server)
    assert before.code == 0, before.stderr
    assert "nightly" in before.stdout
    after_wins = await headway(
        "--token", "stale", "tasks", "--server", server, "--token", "admin-token"
    )
    assert after_wins.code == 0, after_wins.stderr
    assert [seen.authorization for seen in authenticator.seen[-2:]] == [
        "Bearer viewer-token",
        "Bearer admin-token",
    ]


async def test_token_file_and_environment(server: str, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("viewer-token\n")
    from_flag = await headway("tasks", "--server", server, "--token-file", str(token_file))
    assert from_flag.code == 0, from_flag.stderr
    from_env = await headway(
        "tasks", "--server", server, env=environment(HEADWAY_TOKEN_FILE=str(token_file))
    )
    assert from_env.code == 0, from_env.stderr
    from_token_env = await headway(
        "tasks", "--server", server, env=environment(HEADWAY_TOKEN="admin-token")
    )
    assert from_token_env.code == 0, from_token_env.stderr
    missing = await headway("tasks", "--server", server, "--token-file", str(tmp_path / "none"))
    assert missing.code == 2
    assert missing.stderr.startswith("headway: cannot read the token file")


@pytest.fixture
def certs(tmp_path: Path) -> Certificates:
    return make_certificates(tmp_path / "certs")


@pytest.fixture
async def tls_server(
    make_settings: Callable[..., Settings],
    authenticator: RecordingAuthenticator,
    certs: Certificates,
) -> AsyncIterator[str]:
    settings = make_settings(
        tls_cert=certs.server_cert, tls_key=certs.server_key, tls_client_ca=certs.ca
    )
    running = await create_server(settings, authenticator=authenticator)
    try:
        yield f"localhost:{running.port}"
    finally:
        await running.stop(0.5)


async def test_mutual_tls_from_flags_and_environment(
    tls_server: str, certs: Certificates, authenticator: RecordingAuthenticator
) -> None:
    pair = ("--cert", str(certs.client_cert), "--key", str(certs.client_key))
    result = await headway("--ca", str(certs.ca), *pair, "tasks", "--server", tls_server)
    assert result.code == 0, result.stderr
    assert authenticator.seen[-1].peer == CLIENT_NAME
    env = environment(
        HEADWAY_TLS="1",
        HEADWAY_CA=str(certs.ca),
        HEADWAY_CERT=str(certs.client_cert),
        HEADWAY_KEY=str(certs.client_key),
    )
    from_env = await headway("tasks", "--server", tls_server, env=env)
    assert from_env.code == 0, from_env.stderr


async def test_a_failed_handshake_says_tls(tls_server: str, certs: Certificates) -> None:
    result = await headway("tasks", "--server", tls_server, "--tls")  # the system's CAs
    assert result.code == 1
    assert result.stderr.startswith(f"headway: TLS with {tls_server} failed")
    assert len(result.stderr.splitlines()) == 1
    no_certificate = await headway("tasks", "--server", tls_server, "--ca", str(certs.ca))
    assert no_certificate.code == 1
    assert no_certificate.stderr.startswith(
        f"headway: the server at {tls_server} closed the connection (does it need TLS or a "
        "client certificate?"
    )
    assert len(no_certificate.stderr.splitlines()) == 1, no_certificate.stderr
