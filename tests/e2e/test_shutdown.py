"""Shutdown waits for work in flight, not for streams that would never end on their own.

`grpc.aio.Server.stop(grace)` waits for every open call, so a stream nobody
ends (a load balancer watching health, a tool holding a reflection stream)
made every shutdown last the whole grace period. These tests hold such
streams open and check that shutdown is quick, and that a mutation in flight
still gets its answer.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from headway.client import HeadwayClient, UnavailableError
from headway.server.app import create_server
from headway.server.config import Settings
from tests.processes import ServerProcess

GRACE = timedelta(seconds=5)
# Well under GRACE: the point is that shutdown does not wait it out.
QUICK = 2.0
ANSWER_DELAY = 0.5


class SlowAnswers(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Holds the answer of every UpdateTask for ANSWER_DELAY seconds after it committed."""

    def __init__(self) -> None:
        self.committed = asyncio.Event()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(details)
        if not details.method.endswith("/UpdateTask"):
            return handler
        inner = handler.unary_unary

        async def commit_then_wait(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> Any:
            response = await inner(request, context)
            self.committed.set()
            await asyncio.sleep(ANSWER_DELAY)
            return response

        return grpc.unary_unary_rpc_method_handler(
            commit_then_wait,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class Streams:
    """A health Watch and a Subscribe held open on one server, recording how they ended."""

    def __init__(self, target: str) -> None:
        self.channel = grpc.aio.insecure_channel(target)
        self.client = HeadwayClient(target)
        self.health: list[int] = []
        self.health_code: grpc.StatusCode | None = None
        self.subscribe_error: BaseException | None = None
        self.synced = asyncio.Event()
        self.watching = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def _watch_health(self) -> None:
        stub = health_pb2_grpc.HealthStub(self.channel)
        try:
            async for response in stub.Watch(health_pb2.HealthCheckRequest(service="")):
                self.health.append(response.status)
                self.watching.set()
        except grpc.aio.AioRpcError as error:
            self.health_code = error.code()

    async def _subscribe(self) -> None:
        try:
            async for event in self.client.subscribe():
                if event.WhichOneof("kind") == "synced":
                    self.synced.set()
        except Exception as error:
            self.subscribe_error = error

    async def open(self) -> None:
        self._tasks = [
            asyncio.create_task(self._watch_health()),
            asyncio.create_task(self._subscribe()),
        ]
        await asyncio.wait_for(self.synced.wait(), 10)
        await asyncio.wait_for(self.watching.wait(), 10)

    async def ended(self) -> None:
        await asyncio.wait_for(asyncio.gather(*self._tasks), 10)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.client.close()
        await self.channel.close(None)


async def test_stop_ends_open_streams_without_waiting_the_grace(
    make_settings: Callable[..., Settings],
) -> None:
    slow = SlowAnswers()
    running = await create_server(make_settings(shutdown_grace=GRACE), interceptors=[slow])
    target = f"127.0.0.1:{running.port}"
    streams = Streams(target)
    agent = HeadwayClient(target)
    try:
        await streams.open()
        await agent.create_task("t", steps=["work"], start=True)
        update = asyncio.create_task(agent.update_task("t", message="in flight", timeout=10))
        await asyncio.wait_for(slow.committed.wait(), 10)

        started = time.monotonic()
        await running.stop()
        took = time.monotonic() - started

        assert took < QUICK, f"shutdown took {took:.2f}s with a {GRACE} grace"
        assert took >= ANSWER_DELAY * 0.8, "shutdown did not wait for the call in flight"
        task = await update
        assert task.message == "in flight"
        await streams.ended()
        assert streams.health[-1] == health_pb2.HealthCheckResponse.NOT_SERVING
        assert streams.health_code == grpc.StatusCode.UNAVAILABLE
        assert isinstance(streams.subscribe_error, UnavailableError)
    finally:
        await streams.close()
        await agent.close()
        await running.stop()


async def test_sigterm_with_open_streams_exits_quickly(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "headway.db").start()
    streams = Streams(server.target)
    try:
        await streams.open()
        assert server.process is not None
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(server.process.wait, 15)
        took = time.monotonic() - started
        assert code == 0, server.log.read_text()
        assert took < QUICK, f"SIGTERM took {took:.2f}s to end the server"
        await streams.ended()
        assert streams.health_code == grpc.StatusCode.UNAVAILABLE
    finally:
        await streams.close()
        server.stop()
