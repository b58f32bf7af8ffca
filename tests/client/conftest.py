"""Fixtures for client tests: a real server with fault injection and call counting.

The faults are injected on the server, around the real handlers, so that the
client is tested against exactly what a network would do to it: a mutation that
was committed but whose answer never arrived.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc
import pytest

from headway.server.app import RunningServer, create_server
from headway.server.config import Settings
from tests.harness import ServerHarness

Handler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]


def _wrap_unary(
    handler: grpc.RpcMethodHandler[Any, Any] | None,
    wrap: Callable[[Handler], Handler],
) -> grpc.RpcMethodHandler[Any, Any] | None:
    if handler is None or handler.unary_unary is None:
        return handler
    return grpc.unary_unary_rpc_method_handler(
        wrap(handler.unary_unary),
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class CallCounter(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Counts the calls the server received, by method name (such as "UpdateStep")."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        self.calls[details.method.rsplit("/", 1)[-1]] += 1
        return await continuation(details)


class LoseFirstAnswer(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Lets every mutation run and commit, then fails its answer with UNAVAILABLE, once.

    "Once" is per request_id: the client's retry (same request_id) gets through, so
    a change applied twice would show up as a duplicate on the server.
    """

    def __init__(self) -> None:
        self.lost: list[tuple[str, str]] = []  # (method, request_id)
        self._seen: set[str] = set()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        method = details.method.rsplit("/", 1)[-1]

        def wrap(inner: Handler) -> Handler:
            async def commit_then_lose_answer(
                request: Any, context: grpc.aio.ServicerContext[Any, Any]
            ) -> Any:
                response = await inner(request, context)
                request_id = getattr(request, "request_id", "")
                if request_id and request_id not in self._seen:
                    self._seen.add(request_id)
                    self.lost.append((method, request_id))
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "injected: answer lost")
                return response

            return commit_then_lose_answer

        return _wrap_unary(await continuation(details), wrap)


class FailHeartbeats(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Answers the next Heartbeat calls with the given codes, one each, then lets them through."""

    def __init__(self, *codes: grpc.StatusCode) -> None:
        self.codes = list(codes)
        self.recovered = asyncio.Event()  # a heartbeat got through after every failure

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(details)
        if not details.method.endswith("/Heartbeat"):
            return handler

        def wrap(inner: Handler) -> Handler:
            async def maybe_fail(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                if self.codes:
                    await context.abort(self.codes.pop(0), "injected: heartbeat failed")
                response = await inner(request, context)
                self.recovered.set()
                return response

            return maybe_fail

        return _wrap_unary(handler, wrap)


class InterceptedHarness(ServerHarness):
    """A ServerHarness whose server runs the given interceptors around its handlers."""

    def __init__(
        self, settings: Settings, interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]]
    ) -> None:
        super().__init__(settings)
        self.interceptors = tuple(interceptors)

    async def start(self) -> RunningServer:
        if self.running is not None:
            self.settings = self.settings.model_copy(
                update={"address": f"127.0.0.1:{self.running.port}"}
            )
        self.running = await create_server(self.settings, interceptors=self.interceptors)
        return self.running


@pytest.fixture
def lose_first_answer() -> LoseFirstAnswer:
    return LoseFirstAnswer()


@pytest.fixture
def counter() -> CallCounter:
    return CallCounter()


@pytest.fixture
async def faulty(
    settings: Settings, lose_first_answer: LoseFirstAnswer, counter: CallCounter
) -> AsyncIterator[InterceptedHarness]:
    """A server that loses the first answer of every mutation (and counts the calls)."""
    harness = InterceptedHarness(settings, [counter, lose_first_answer])
    await harness.start()
    try:
        yield harness
    finally:
        await harness.close()


@pytest.fixture
async def counted(settings: Settings, counter: CallCounter) -> AsyncIterator[InterceptedHarness]:
    """A server that counts the calls it receives."""
    harness = InterceptedHarness(settings, [counter])
    await harness.start()
    try:
        yield harness
    finally:
        await harness.close()
