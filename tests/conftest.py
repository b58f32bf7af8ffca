"""Shared fixtures: a real server on a real socket over a real SQLite file."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path

import pytest

from headway.client import HeadwayClient
from headway.server.config import Settings
from tests.clock import FakeClock
from tests.harness import QUIET, ServerHarness, StartClocked

# Servers started by tests, in this process or as subprocesses, never take the fixed
# HTTP port (8080): a free one each, unless a test names one (flags win over this).
os.environ.setdefault("HEADWAY_HTTP_ADDRESS", "127.0.0.1:0")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings for a test server: any free port, a fresh database, fast heartbeats."""
    return Settings(
        address="127.0.0.1:0",
        http_address="127.0.0.1:0",
        database=tmp_path / "headway.db",
        heartbeat_min=timedelta(milliseconds=50),
        shutdown_grace=timedelta(seconds=1),
    )


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
            "http_address": "127.0.0.1:0",
            "database": tmp_path / "headway.db",
            "heartbeat_min": timedelta(milliseconds=50),
            "shutdown_grace": timedelta(seconds=1),
        }
        base.update(overrides)
        return Settings(**base)  # type: ignore[arg-type]

    return make


@pytest.fixture
def clock() -> FakeClock:
    """The server's clock in the clocked fixtures; a module overrides it to start elsewhere."""
    return FakeClock()


@pytest.fixture
async def make_clocked(clock: FakeClock) -> AsyncIterator[StartClocked]:
    """Starts servers on `clock` with the given settings; closes them all at teardown."""
    started: list[ServerHarness] = []

    async def start(settings: Settings) -> ServerHarness:
        harness = ServerHarness(settings, clock=clock)
        started.append(harness)
        await harness.start()
        return harness

    try:
        yield start
    finally:
        for harness in reversed(started):
            await harness.close()


@pytest.fixture
def clocked_settings(make_settings: Callable[..., Settings]) -> Settings:
    """What `clocked_harness` starts with: background checks only when a test runs them.

    A module that needs other settings overrides this fixture.
    """
    return make_settings(**QUIET)


@pytest.fixture
async def clocked_harness(make_clocked: StartClocked, clocked_settings: Settings) -> ServerHarness:
    """A running server whose clock is `clock`, moved only by the test."""
    return await make_clocked(clocked_settings)
