"""The client's token and TLS options, their environment fallbacks, and refusals not retried."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from headway.client import (
    HeadwayClient,
    LiveView,
    PermissionDeniedError,
    SyncTracker,
    Tracker,
    UnauthenticatedError,
    subscribe,
)
from headway.client.retry import RetryPolicy
from headway.client.security import Security
from headway.server.app import RunningServer, create_server
from headway.server.auth.principal import Role
from headway.server.config import Settings
from tests.client.conftest import CallCounter
from tests.security import CLIENT_NAME, Certificates, RecordingAuthenticator, make_certificates

TOKENS = {"admin-token": Role.ADMIN, "viewer-token": Role.VIEWER}
SECURITY_VARIABLES = (
    "HEADWAY_TOKEN",
    "HEADWAY_TOKEN_FILE",
    "HEADWAY_TLS",
    "HEADWAY_CA",
    "HEADWAY_CERT",
    "HEADWAY_KEY",
)

Serve = Callable[..., Awaitable[tuple[RunningServer, RecordingAuthenticator, CallCounter]]]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SECURITY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def certs(tmp_path: Path) -> Certificates:
    return make_certificates(tmp_path / "certs")


@pytest.fixture
async def serve(make_settings: Callable[..., Settings]) -> AsyncIterator[Serve]:
    """A server that knows TOKENS (and CLIENT_NAME's certificate), counting calls server-side."""
    started: list[RunningServer] = []

    async def start(
        **overrides: object,
    ) -> tuple[RunningServer, RecordingAuthenticator, CallCounter]:
        authenticator = RecordingAuthenticator(tokens=TOKENS, peers={CLIENT_NAME: Role.AGENT})
        counter = CallCounter()
        running = await create_server(
            make_settings(**overrides), interceptors=[counter], authenticator=authenticator
        )
        started.append(running)
        return running, authenticator, counter

    yield start
    for running in started:
        await running.stop(0.5)


async def test_the_token_goes_with_every_call_on_a_plaintext_channel(serve: Serve) -> None:
    running, authenticator, _ = await serve()
    async with HeadwayClient(f"127.0.0.1:{running.port}", token="admin-token") as client:
        await client.create_task("t")
        await client.get_task("t")
        async for _ in client.subscribe():  # the stream's first event: the snapshot
            break
    assert {seen.authorization for seen in authenticator.seen} == {"Bearer admin-token"}


async def test_refusals_are_typed_and_carry_the_reason(serve: Serve) -> None:
    running, _, _ = await serve()
    target = f"127.0.0.1:{running.port}"
    async with HeadwayClient(target) as client:
        with pytest.raises(UnauthenticatedError) as missing:
            await client.list_tasks()
    assert missing.value.reason == "TOKEN_MISSING"
    async with HeadwayClient(target, token="viewer-token") as client:
        await client.list_tasks()  # a viewer reads
        with pytest.raises(PermissionDeniedError) as denied:
            await client.create_task("not-yours")
    assert denied.value.reason == "PERMISSION_DENIED"
    assert denied.value.metadata["role"] == "viewer"


async def test_the_agents_retry_policy_does_not_retry_refusals(serve: Serve) -> None:
    running, authenticator, counter = await serve()
    target = f"127.0.0.1:{running.port}"
    async with Tracker(target, token="expired") as tracker:
        with pytest.raises(UnauthenticatedError):
            async with tracker.task("refused"):
                pass
    assert counter.calls["CreateTask"] == 1
    async with Tracker(target, token="viewer-token") as tracker:
        with pytest.raises(PermissionDeniedError):
            async with tracker.task("refused"):
                pass
    assert counter.calls["CreateTask"] == 2
    assert authenticator.calls == 2


async def test_no_policy_retries_refusals_even_when_asked_to(serve: Serve) -> None:
    running, _, counter = await serve()
    greedy = RetryPolicy(
        codes=frozenset({UnauthenticatedError.code, PermissionDeniedError.code}), deadline=5
    )
    async with HeadwayClient(f"127.0.0.1:{running.port}", token="nope", retry=greedy) as client:
        with pytest.raises(UnauthenticatedError):
            await client.list_tasks()
    assert counter.calls["ListTasks"] == 1


async def test_a_refused_subscription_does_not_reconnect(serve: Serve) -> None:
    running, authenticator, _ = await serve()
    async with HeadwayClient(f"127.0.0.1:{running.port}", token="nope") as client:
        with pytest.raises(UnauthenticatedError):
            async for _ in subscribe(client):
                pass
        with pytest.raises(UnauthenticatedError):
            async with LiveView(client):
                pass
    assert authenticator.calls == 2


async def test_sync_tracker_passes_the_token(serve: Serve) -> None:
    running, authenticator, _ = await serve()

    def agent() -> None:
        with (
            SyncTracker(f"127.0.0.1:{running.port}", token="admin-token") as tracker,
            tracker.task("sync-agent"),
        ):
            pass

    await asyncio.to_thread(agent)
    assert authenticator.seen
    assert {seen.authorization for seen in authenticator.seen} == {"Bearer admin-token"}


async def test_token_from_the_environment_or_a_token_file(
    serve: Serve, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    running, authenticator, _ = await serve()
    target = f"127.0.0.1:{running.port}"
    monkeypatch.setenv("HEADWAY_TOKEN", "admin-token")
    async with HeadwayClient(target) as client:
        await client.list_tasks()
    assert authenticator.seen[-1].authorization == "Bearer admin-token"

    monkeypatch.delenv("HEADWAY_TOKEN")
    token_file = tmp_path / "token"
    token_file.write_text("viewer-token\nthe rest is ignored\n")
    monkeypatch.setenv("HEADWAY_TOKEN_FILE", str(token_file))
    async with Tracker(target) as tracker:
        await tracker.client.list_tasks()
    assert authenticator.seen[-1].authorization == "Bearer viewer-token"

    # An argument wins over the environment.
    async with HeadwayClient(target, token="admin-token") as client:
        await client.list_tasks()
    assert authenticator.seen[-1].authorization == "Bearer admin-token"


async def test_tls_and_client_certificate_from_the_environment(
    serve: Serve, certs: Certificates, monkeypatch: pytest.MonkeyPatch
) -> None:
    running, authenticator, _ = await serve(
        tls_cert=certs.server_cert, tls_key=certs.server_key, tls_client_ca=certs.ca
    )
    monkeypatch.setenv("HEADWAY_CA", str(certs.ca))
    monkeypatch.setenv("HEADWAY_CERT", str(certs.client_cert))
    monkeypatch.setenv("HEADWAY_KEY", str(certs.client_key))
    async with HeadwayClient(f"localhost:{running.port}", timeout=5) as client:
        await client.create_task("from-env")
    assert authenticator.seen[-1].peer == CLIENT_NAME


async def test_headway_tls_turns_tls_on(
    serve: Serve, certs: Certificates, monkeypatch: pytest.MonkeyPatch
) -> None:
    running, authenticator, _ = await serve(tls_cert=certs.server_cert, tls_key=certs.server_key)
    monkeypatch.setenv("HEADWAY_TLS", "1")
    monkeypatch.setenv("HEADWAY_TOKEN", "admin-token")
    async with HeadwayClient(f"localhost:{running.port}", ca=certs.ca, timeout=5) as client:
        await client.list_tasks()
    assert authenticator.seen[-1].authorization == "Bearer admin-token"


def test_resolution_rules(tmp_path: Path) -> None:
    assert Security.resolve(environ={}) == Security()
    assert Security.resolve(environ={"HEADWAY_TLS": "1"}) == Security(tls=True)
    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"PEM")
    assert Security.resolve(environ={"HEADWAY_CA": str(ca)}) == Security(tls=True, ca=b"PEM")
    # tls=False is plaintext whatever the environment says; the token still goes.
    plain = Security.resolve(tls=False, environ={"HEADWAY_CA": str(ca), "HEADWAY_TOKEN": "t"})
    assert plain == Security(token="t")
    assert plain.metadata() == (("authorization", "Bearer t"),)
    assert Security(token="t", tls=True).metadata() == ()
    with pytest.raises(ValueError, match="needs its key"):
        Security.resolve(cert=ca, environ={})
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        Security.resolve(environ={"HEADWAY_TOKEN_FILE": str(empty)})
    with pytest.raises(ValueError, match="cannot read the CA certificate"):
        Security.resolve(ca=tmp_path / "missing.pem", environ={})
