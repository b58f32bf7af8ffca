"""Counting the HTTP gateway's requests into the server's metrics, by route and status.

Apart from `metrics` so that only a server with the gateway imports aiohttp.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from headway.server.metrics import Metrics

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def metrics_middleware(metrics: Metrics) -> Any:
    """An aiohttp middleware that counts every request of the app it is added to.

    The route label is the matched resource's pattern (`/v1/tasks/{task_id}`),
    never the raw path, so ids do not become labels; requests no route matched
    count as `unmatched`. An event stream counts when it ends.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as error:
            status = error.status
            raise
        finally:
            # Read after the handler: the RPC table names its route while it runs.
            metrics.http_finished(_route_of(request), status, time.perf_counter() - started)

    return middleware


# Set by a handler that serves several routes behind one resource (the RPC table).
ROUTE_LABEL = web.RequestKey("headway_route", str)


def _route_of(request: web.Request) -> str:
    if ROUTE_LABEL in request:
        return request[ROUTE_LABEL]
    route = request.match_info.route
    resource = route.resource if route is not None else None
    if resource is None:
        return "unmatched"
    return resource.canonical
