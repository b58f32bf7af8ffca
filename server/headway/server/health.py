"""grpc.health.v1.Health whose Watch streams end when the server shuts down.

The stock async servicer (`grpc_health.v1._async.HealthServicer`) keeps every
Watch stream open until the client leaves, even after
`enter_graceful_shutdown`: it only writes NOT_SERVING. `grpc.aio.Server.stop`
waits for every open call, so one load balancer or kubelet watching health
made each shutdown last the whole grace period. Here a Watch writes the final
NOT_SERVING and then ends with UNAVAILABLE, like Subscribe streams do, so
shutdown waits only for work that is actually in flight.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeAlias

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# A HealthCheckResponse.ServingStatus value (grpc_health ships no type stubs).
ServingStatus: TypeAlias = int
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN

Context = grpc.aio.ServicerContext[Any, Any]


class HealthServicer(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    """Check, List and Watch over a status per service name ("" is the whole server)."""

    def __init__(self) -> None:
        self._status: dict[str, ServingStatus] = {"": SERVING}
        self._changed = asyncio.Condition()
        self._shutting_down = False

    async def Check(  # noqa: N802 - the RPC's name
        self, request: health_pb2.HealthCheckRequest, context: Context
    ) -> health_pb2.HealthCheckResponse:
        status = self._status.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def List(  # noqa: N802 - the RPC's name
        self, request: health_pb2.HealthListRequest, context: Context
    ) -> health_pb2.HealthListResponse:
        del request, context
        return health_pb2.HealthListResponse(
            statuses={
                name: health_pb2.HealthCheckResponse(status=status)
                for name, status in self._status.items()
            }
        )

    async def Watch(  # noqa: N802 - the RPC's name
        self, request: health_pb2.HealthCheckRequest, context: Context
    ) -> None:
        """Write the status now and on every change; end after the shutdown's NOT_SERVING."""
        last: ServingStatus | None = None
        while True:
            async with self._changed:
                status = self._status.get(request.service, SERVICE_UNKNOWN)
                while status == last and not self._shutting_down:
                    await self._changed.wait()
                    status = self._status.get(request.service, SERVICE_UNKNOWN)
                ending = self._shutting_down
            # Written outside the lock: a slow watcher must not hold up `set`.
            if status != last:
                await context.write(health_pb2.HealthCheckResponse(status=status))
                last = status
            if ending:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")

    async def set(self, service: str, status: ServingStatus) -> None:
        """Set the status of `service`; ignored once shutdown has begun (it stays NOT_SERVING)."""
        async with self._changed:
            if self._shutting_down:
                return
            self._status[service] = status
            self._changed.notify_all()

    async def enter_graceful_shutdown(self) -> None:
        """Every service becomes NOT_SERVING for good, and every Watch stream ends."""
        async with self._changed:
            self._shutting_down = True
            for service in self._status:
                self._status[service] = NOT_SERVING
            self._changed.notify_all()
