"""Shared fixtures: a real server on a real socket over a real SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path

import pytest

from headway.client import HeadwayClient
from headway.server.app import RunningServer, create_server
from headway.server.config import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings for a test server: any free port, a fresh database, fast heartbeats."""
    return Settings(
        address="127.0.0.1:0",
        database=tmp_path / "headway.db",
        heartbeat_min=timedelta(milliseconds=50),
        shutdown_grace=timedelta(seconds=1),
    )


class ServerHarness:
    """Starts, stops and restarts a server on one database, as an operator would."""

    def __init__(self, settings: Settings, clock: Callable[[], int] | None = None) -> None:
        self.settings = settings
        self.clock = clock
        self.running: RunningServer | None = None
        self._clients: list[HeadwayClient] = []

    @property
    def target(self) -> str:
        assert self.running is not None, "server is not running"
        return f"127.0.0.1:{self.running.port}"

    async def start(self) -> RunningServer:
        if self.running is not None:
            # Restart on the same port, so clients that resume reach it again.
            self.settings = self.settings.model_copy(
                update={"address": f"127.0.0.1:{self.running.port}"}
            )
        self.running = await create_server(self.settings, clock=self.clock)
        return self.running

    async def stop(self) -> None:
        if self.running is not None:
            await self.running.stop()

    async def restart(self) -> RunningServer:
        await self.stop()
        return await self.start()

    def client(self) -> HeadwayClient:
        # A private subchannel pool makes each client behave like a separate process:
        # it does not inherit the connection backoff of clients that saw a restart.
        client = HeadwayClient(self.target, options=[("grpc.use_local_subchannel_pool", 1)])
        self._clients.append(client)
        return client

    async def close(self) -> None:
        for client in self._clients:
            await client.close()
        await self.stop()


@pytest.fixture
async def harness(settings: Settings) -> AsyncIterator[ServerHarness]:
    harness = ServerHarness(settings)
    await harness.start()
    try:
        yield harness
    finally:
        await harness.close()


@pytest.fixture
async def client(harness: ServerHarness) -> HeadwayClient:
    return harness.client()


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings with overrides, for tests that need other limits or retention."""

    def make(**overrides: object) -> Settings:
        base = {
            "address": "127.0.0.1:0",
            "database": tmp_path / "headway.db",
            "heartbeat_min": timedelta(milliseconds=50),
            "shutdown_grace": timedelta(seconds=1),
        }
        base.update(overrides)
        return Settings(**base)  # type: ignore[arg-type]

    return make
