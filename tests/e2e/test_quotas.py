"""Per-tenant quotas: the tenant at its limit is refused with a reason, the others go on.

Functional, not timed: the rate limiter runs on the server's clock, which these
tests move by hand.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest

from headway.client import HeadwayClient, HeadwayError
from headway.server.config import Settings
from tests.auth_helpers import TokenNamesPrincipal
from tests.clock import FakeClock
from tests.harness import QUIET, ServerHarness
from tests.streams import Collector, kind

A, B = "admin-a@acme", "admin-b@globex"
MakeServer = Callable[..., Any]


@pytest.fixture
async def start(
    make_settings: Callable[..., Settings], clock: FakeClock
) -> AsyncIterator[MakeServer]:
    """Starts a server with these settings on the test's clock, callers named by token."""
    started: list[ServerHarness] = []

    async def make(**overrides: object) -> ServerHarness:
        harness = ServerHarness(
            make_settings(**QUIET, **overrides), clock=clock, authenticator=TokenNamesPrincipal()
        )
        started.append(harness)
        await harness.start()
        return harness

    try:
        yield make
    finally:
        for harness in started:
            await harness.close()


async def refused(call: Any, reason: str) -> HeadwayError:
    with pytest.raises(HeadwayError) as info:
        await call
    assert (info.value.code, info.value.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, reason)
    return info.value


async def settled(stream: Collector) -> Collector:
    """The stream once it is synced, or once it ended (with its error)."""
    task = stream.task
    await stream.wait_for(
        lambda events: any(kind(e) == "synced" for e in events) or bool(task and task.done())
    )
    return stream


async def state(client: HeadwayClient) -> tuple[int, list[bytes]]:
    listing = await client.list_tasks(page_size=1000)
    return listing.revision, [t.SerializeToString(deterministic=True) for t in listing.tasks]


async def test_active_tasks(start: MakeServer) -> None:
    server = await start(quota_active_tasks=2, quota_stored_tasks=0)
    a, b = server.client(A), server.client(B)
    await a.create_task("one")
    await a.create_task("two")
    before = await state(a)
    error = await refused(a.create_task("three"), "TOO_MANY_ACTIVE_TASKS")
    assert error.metadata == {"limit": "2"}
    assert await state(a) == before
    # Another tenant is not affected: it has a quota of its own.
    await b.create_task("b0")
    await b.create_task("b1")
    await refused(b.create_task("b2"), "TOO_MANY_ACTIVE_TASKS")
    # A task at rest no longer counts.
    await a.succeed_task("one")
    await a.create_task("three")
    await refused(a.create_task("four"), "TOO_MANY_ACTIVE_TASKS")


async def test_stored_tasks(start: MakeServer) -> None:
    server = await start(quota_stored_tasks=2, quota_active_tasks=0)
    a, b = server.client(A), server.client(B)
    for task_id in ("one", "two"):
        await a.create_task(task_id)
        await a.succeed_task(task_id)
    before = await state(a)
    error = await refused(a.create_task("three"), "TOO_MANY_TASKS")
    assert error.metadata == {"limit": "2"}
    assert await state(a) == before
    await b.create_task("b0")
    await b.create_task("b1")
    await a.delete_task("one")
    await a.create_task("three")


async def test_concurrent_creates_never_exceed_the_quota(start: MakeServer) -> None:
    """Counted inside the commit: creates committed in one group see each other."""
    server = await start(quota_active_tasks=3)
    a = server.client(A)
    results = await asyncio.gather(
        *(a.create_task(f"t{i}") for i in range(12)), return_exceptions=True
    )
    created = [r for r in results if not isinstance(r, BaseException)]
    assert len(created) == 3
    assert all(
        isinstance(r, HeadwayError) and r.reason == "TOO_MANY_ACTIVE_TASKS"
        for r in results
        if isinstance(r, BaseException)
    )
    assert len((await a.list_tasks()).tasks) == 3


async def test_mutation_rate(start: MakeServer, clock: FakeClock) -> None:
    server = await start(quota_mutation_rate=2, quota_mutation_burst=3)
    a, b = server.client(A), server.client(B)
    await a.create_task("t", steps=["s"])
    await a.update_task("t", message="1")
    await a.update_task("t", message="2")
    before = await state(a)
    error = await refused(a.update_task("t", message="3"), "RATE_LIMITED")
    assert error.metadata == {"limit": "2", "burst": "3", "retry_after_ms": "500"}
    assert await state(a) == before
    # Reads are not limited, and another tenant has its own bucket.
    assert (await a.get_task("t")).message == "2"
    await b.create_task("t")
    await b.update_task("t", message="b")
    # Half a second later, one more token.
    clock.advance(0.5)
    await a.update_task("t", message="3")
    await refused(a.update_task("t", message="4"), "RATE_LIMITED")
    # The bucket holds at most the burst, however long the tenant was quiet.
    clock.advance(3600)
    for i in range(3):
        await a.append_logs("t", [f"line {i}"])
    await refused(a.append_logs("t", ["one too many"]), "RATE_LIMITED")


async def test_subscriptions(start: MakeServer) -> None:
    server = await start(quota_subscriptions=2)
    a, b = server.client(A), server.client(B)
    open_streams = [Collector().start(a), Collector().start(a)]
    others: list[Collector] = []
    try:
        for stream in open_streams:
            await stream.wait_for(lambda events: any(kind(e) == "synced" for e in events))
        third = Collector().start(a)
        await third.wait_done()
        assert third.error is not None
        assert (third.error.code, third.error.reason) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "TOO_MANY_SUBSCRIPTIONS",
        )
        assert third.error.metadata == {"limit": "2"}
        # Another tenant has its own places.
        others = [Collector().start(b) for _ in range(2)]
        for stream in others:
            await stream.wait_for(lambda events: any(kind(e) == "synced" for e in events))
        # A stream that ends gives its place back.
        await open_streams.pop().stop()
        for _ in range(200):
            retry = await settled(Collector().start(a))
            if retry.error is None:
                open_streams.append(retry)
                break
            assert retry.error.reason == "TOO_MANY_SUBSCRIPTIONS"
            await asyncio.sleep(0.01)
        else:
            pytest.fail("the closed stream never released its place")
    finally:
        for stream in open_streams + others:
            await stream.stop()


async def test_zero_means_unlimited(start: MakeServer) -> None:
    server = await start(
        quota_active_tasks=0,
        quota_stored_tasks=0,
        quota_subscriptions=0,
        quota_mutation_rate=0,
        quota_mutation_burst=1,
    )
    a = server.client(A)
    for i in range(20):
        await a.create_task(f"t{i}")
    streams = [Collector().start(a) for _ in range(5)]
    try:
        for stream in streams:
            await stream.wait_for(lambda events: any(kind(e) == "synced" for e in events))
    finally:
        for stream in streams:
            await stream.stop()
