"""TLS and mutual TLS on the gRPC port, with real certificates, against a real server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from headway.client import HeadwayClient, UnauthenticatedError, UnavailableError
from headway.server.app import RunningServer, create_server
from headway.server.auth.credentials import Authenticator
from headway.server.auth.principal import Role
from headway.server.config import Settings
from tests.security import CLIENT_NAME, Certificates, RecordingAuthenticator, make_certificates

Serve = Callable[..., Awaitable[RunningServer]]


@pytest.fixture
def certs(tmp_path: Path) -> Certificates:
    return make_certificates(tmp_path / "certs")


@pytest.fixture
async def serve(make_settings: Callable[..., Settings]) -> AsyncIterator[Serve]:
    """Starts a server with these settings (and authenticator); stops it at teardown."""
    started: list[RunningServer] = []

    async def start(
        authenticator: Authenticator | None = None, **overrides: object
    ) -> RunningServer:
        running = await create_server(make_settings(**overrides), authenticator=authenticator)
        started.append(running)
        return running

    yield start
    for running in started:
        await running.stop(0.5)


def tls_settings(certs: Certificates, *, mutual: bool = False) -> dict[str, object]:
    settings: dict[str, object] = {"tls_cert": certs.server_cert, "tls_key": certs.server_key}
    if mutual:
        settings["tls_client_ca"] = certs.ca
    return settings


async def test_a_client_trusting_the_ca_works(serve: Serve, certs: Certificates) -> None:
    running = await serve(**tls_settings(certs))
    async with HeadwayClient(f"localhost:{running.port}", ca=certs.ca, timeout=5) as client:
        created = await client.create_task("over-tls", kind="tls")
        assert (await client.get_task(created.id)).kind == "tls"
    # The CA as bytes, and an IP address the certificate names, work the same.
    async with HeadwayClient(
        f"127.0.0.1:{running.port}", ca=certs.ca.read_bytes(), timeout=5
    ) as client:
        assert (await client.get_task("over-tls")).id == "over-tls"


async def test_a_client_that_does_not_trust_the_certificate_is_refused(
    serve: Serve, certs: Certificates
) -> None:
    running = await serve(**tls_settings(certs))
    for ca in (None, certs.other_ca):  # the system's CAs, then a CA that did not sign it
        async with HeadwayClient(f"localhost:{running.port}", tls=True, ca=ca, timeout=5) as client:
            with pytest.raises(UnavailableError) as caught:
                await client.list_tasks()
            assert not caught.value.reason  # the transport failed; the server never answered
            assert "handshake" in caught.value.message.lower(), caught.value.message


async def test_a_plaintext_client_cannot_talk_to_a_tls_port(
    serve: Serve, certs: Certificates
) -> None:
    running = await serve(**tls_settings(certs))
    async with HeadwayClient(f"localhost:{running.port}", tls=False, timeout=5) as client:
        with pytest.raises(UnavailableError):
            await client.list_tasks()


async def test_the_token_rides_the_tls_channel_as_call_credentials(
    serve: Serve, certs: Certificates
) -> None:
    authenticator = RecordingAuthenticator(tokens={"s3cret": Role.ADMIN})
    running = await serve(authenticator, **tls_settings(certs))
    target = f"localhost:{running.port}"
    async with HeadwayClient(target, ca=certs.ca, token="s3cret", timeout=5) as client:
        assert client.metadata == ()  # not as plain metadata: in the channel's credentials
        await client.create_task("tokened")
    assert authenticator.seen[-1].authorization == "Bearer s3cret"
    async with HeadwayClient(target, ca=certs.ca, token="wrong", timeout=5) as client:
        with pytest.raises(UnauthenticatedError) as caught:
            await client.get_task("tokened")
    assert caught.value.reason == "TOKEN_INVALID"


async def test_mutual_tls_accepts_a_client_certificate_from_the_ca_and_names_its_holder(
    serve: Serve, certs: Certificates
) -> None:
    authenticator = RecordingAuthenticator(peers={CLIENT_NAME: Role.AGENT})
    running = await serve(authenticator, **tls_settings(certs, mutual=True))
    async with HeadwayClient(
        f"localhost:{running.port}",
        ca=certs.ca,
        cert=certs.client_cert,
        key=certs.client_key,
        timeout=5,
    ) as client:
        await client.create_task("by-certificate")
    assert [seen.peer for seen in authenticator.seen] == [CLIENT_NAME]
    assert authenticator.seen[0].authorization is None


@pytest.mark.parametrize("client_certificate", ["from another CA", "none"])
async def test_mutual_tls_refuses_other_clients(
    serve: Serve, certs: Certificates, client_certificate: str
) -> None:
    authenticator = RecordingAuthenticator(peers={CLIENT_NAME: Role.ADMIN})
    running = await serve(authenticator, **tls_settings(certs, mutual=True))
    pair = (
        {"cert": certs.stranger_cert, "key": certs.stranger_key}
        if client_certificate == "from another CA"
        else {}
    )
    async with HeadwayClient(f"localhost:{running.port}", ca=certs.ca, timeout=5, **pair) as client:
        with pytest.raises(UnavailableError):
            await client.list_tasks()
    assert authenticator.calls == 0  # refused in the handshake, before any call


async def test_a_certificate_named_in_the_token_file_is_its_principal(
    serve: Serve, certs: Certificates, tmp_path: Path
) -> None:
    """Mutual TLS with the real authenticator: the `cert:` line decides tenant and role."""
    token_file = tmp_path / "tokens"
    token_file.write_text(f"cert:{CLIENT_NAME} acme agent\n")
    running = await serve(auth_token_file=token_file, **tls_settings(certs, mutual=True))
    async with HeadwayClient(
        f"localhost:{running.port}",
        ca=certs.ca,
        cert=certs.client_cert,
        key=certs.client_key,
        timeout=5,
    ) as client:
        task = await client.create_task("by-certificate")
    assert (task.tenant, task.creator) == ("acme", CLIENT_NAME)

    token_file.write_text("# nobody\n")
    running.reload_credentials()
    async with HeadwayClient(
        f"localhost:{running.port}",
        ca=certs.ca,
        cert=certs.client_cert,
        key=certs.client_key,
        timeout=5,
    ) as client:
        with pytest.raises(UnauthenticatedError) as raised:
            await client.list_tasks()
    assert raised.value.reason == "TOKEN_MISSING", "a certificate the file does not name"
