"""A stream lasts only as long as the credentials that opened it.

Revoking a token, or a read token or JWT reaching its expiry, ends the streams
it holds open — gRPC Subscribe and Server-Sent Events alike — not only its
next call. Real server, real token file, real read tokens.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from headway.server import stream
from headway.server.auth.tokens import append_token, remove_name
from headway.server.config import Settings
from headway.v1 import task_service_pb2
from tests.clock import FakeClock
from tests.harness import QUIET, ServerHarness


@pytest.fixture(autouse=True)
def quick_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream, "CREDENTIAL_CHECK_SECONDS", 0.1)


class Server:
    def __init__(self, harness: ServerHarness, token_file: Path, secrets: dict[str, str]) -> None:
        self.harness = harness
        self.token_file = token_file
        self.secrets = secrets


@pytest.fixture
async def server(
    make_settings: Callable[..., Settings], tmp_path: Path, clock: FakeClock
) -> AsyncIterator[Server]:
    token_file = tmp_path / "tokens"
    secrets = {
        name: append_token(token_file, name, "acme", role)
        for name, role in (("alice", "viewer"), ("bot", "agent"), ("carol", "viewer"))
    }
    harness = ServerHarness(make_settings(auth_token_file=token_file, **QUIET), clock=clock)
    await harness.start()
    try:
        yield Server(harness, token_file, secrets)
    finally:
        await harness.close()


async def drain(call: grpc.aio.UnaryStreamCall[object, object]) -> None:
    async with asyncio.timeout(5):
        async for _ in call:
            pass


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


async def test_revoking_a_token_ends_its_open_grpc_stream(server: Server) -> None:
    secret = server.secrets["alice"]
    client = server.harness.client()
    call = client.stub.Subscribe(task_service_pb2.SubscribeRequest(), metadata=bearer(secret))
    async for response in call:
        if any(e.WhichOneof("kind") == "synced" for e in response.events):
            break
    await asyncio.sleep(1.1)  # the token file is looked at again at most once a second
    remove_name(server.token_file, "alice")
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await drain(call)
    assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "TOKEN_INVALID" in str(ended.value.trailing_metadata())


async def test_an_expiring_read_token_ends_its_event_stream(
    server: Server, clock: FakeClock
) -> None:
    harness = server.harness
    agent = server.secrets["bot"]
    client = harness.client()
    await client.stub.CreateTask(
        task_service_pb2.CreateTaskRequest(task_id="shown"), metadata=bearer(agent)
    )
    minted = await client.stub.CreateReadToken(
        task_service_pb2.CreateReadTokenRequest(task_id="shown", ttl=Duration(seconds=60)),
        metadata=bearer(agent),
    )
    headers = {"Authorization": f"Bearer {minted.token}"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{harness.http_url}/v1/events", headers=headers) as response,
    ):
        assert response.status == 200
        await response.content.readuntil(b"event: synced")
        clock.advance(61)
        async with asyncio.timeout(5):
            rest = await response.content.read()
    assert b"event: error" in rest
    assert b"TOKEN_EXPIRED" in rest


async def test_a_stream_with_valid_credentials_goes_on(server: Server) -> None:
    secret = server.secrets["carol"]
    client = server.harness.client()
    call = client.stub.Subscribe(
        task_service_pb2.SubscribeRequest(heartbeat_interval=Duration(nanos=100_000_000)),
        metadata=bearer(secret),
    )
    kinds: list[str] = []
    async with asyncio.timeout(5):
        async for response in call:
            kinds += [str(e.WhichOneof("kind")) for e in response.events]
            if kinds.count("heartbeat") >= 5:  # several credential checks have passed
                break
    call.cancel()
    assert kinds[0] == "synced"
