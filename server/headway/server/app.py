"""Assembles a running server: store, engine, hub, service, health, reflection.

`create_server` binds and starts everything and returns a handle whose
`stop()` shuts down in the order clients can cope with: health turns
NOT_SERVING and its Watch streams end, as do reflection streams; change
streams end with UNAVAILABLE (clients resume elsewhere); new mutations are
answered UNAVAILABLE while accepted ones commit; the port closes with a grace
period for calls still running; and only then the store closes. The HTTP site
(headway.server.http) turns /healthz to 503 with health, its event streams end
with the hub's, and it closes before the gRPC port. The server
itself ends every stream that would otherwise stay open, so the grace period
is spent only on calls that are really in flight.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from headway.server import reflection
from headway.server.auth.credentials import Authenticator, OpenAuthenticator
from headway.server.auth.factory import build_authenticator, describe, token_authenticator
from headway.server.config import Settings
from headway.server.engine import Engine
from headway.server.errors import HeadwayError, Kind
from headway.server.health import HealthServicer
from headway.server.hub import Hub
from headway.server.janitor import Janitor
from headway.server.memory import release_free_memory
from headway.server.metrics import Metrics, MetricsServer
from headway.server.pacing import FanoutTick
from headway.server.protected import check_exposure, unprotected
from headway.server.service import SERVICE_NAME, TaskService, handlers
from headway.server.store.sqlite import SqliteStore
from headway.server.tls import describe_transport, server_credentials

if TYPE_CHECKING:
    # Imported only when the gateway is on: aiohttp costs about 10 MiB (see metrics.py).
    from headway.server.http import HttpServer

logger = logging.getLogger(__name__)


@dataclass
class RunningServer:
    """A started server and the parts its shutdown must visit."""

    server: grpc.aio.Server
    port: int
    engine: Engine
    janitor: Janitor
    hub: Hub
    health: HealthServicer
    reflection: reflection.ReflectionServicer
    settings: Settings
    stopped: bool = False
    authenticator: Authenticator = field(default_factory=OpenAuthenticator)
    metrics: Metrics | None = None
    metrics_server: MetricsServer | None = None

    @property
    def metrics_port(self) -> int:
        """The port /metrics is served on; 0 when metrics are off."""
        return self.metrics_server.port if self.metrics_server is not None else 0

    http: HttpServer | None = None

    @property
    def http_port(self) -> int:
        """The HTTP port (a free one when `http_address` asked for port 0); 0 when HTTP is off."""
        return self.http.port if self.http is not None else 0

    def reload_credentials(self) -> None:
        """Read the token file again now (SIGHUP); a broken one keeps the entries in force."""
        tokens = token_authenticator(self.authenticator)
        if tokens is not None:
            tokens.reload()

    async def stop(self, grace: float | None = None) -> None:
        """Shut down gracefully; calling it again does nothing."""
        if self.stopped:
            return
        self.stopped = True
        if grace is None:
            grace = self.settings.shutdown_grace.total_seconds()
        await self.health.enter_graceful_shutdown()
        if self.http is not None:
            self.http.begin_shutdown()
        self.reflection.close()
        self.hub.close(
            HeadwayError(
                Kind.UNAVAILABLE,
                "SHUTTING_DOWN",
                "the server is shutting down; resume from the last revision received",
            )
        )
        await self.janitor.stop()
        drain = min(self.settings.shutdown_drain.total_seconds(), grace)
        await self.engine.drain(at_least=drain, at_most=grace)
        if self.http is not None:
            # Its event streams ended with the hub; calls still running get the grace period.
            await self.http.stop()
        await self.server.stop(grace)
        await self.engine.stop()
        if self.metrics_server is not None:
            await self.metrics_server.stop()
        logger.info("server stopped")

    async def wait(self) -> None:
        await self.server.wait_for_termination()


async def create_server(
    settings: Settings,
    *,
    clock: Callable[[], int] | None = None,
    interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]] = (),
    authenticator: Authenticator | None = None,
) -> RunningServer:
    """Open the store, bind `settings.address` and start serving; port 0 picks a free port.

    Raises `DatabaseInUseError` (headway.server.store.lock) when another server
    holds `settings.database`, before anything is bound or written; so are
    `ExposureError` (protected.py: a network address with no authentication)
    and `TlsConfigError` (tls.py: a certificate or key it cannot use).

    `clock` (nanoseconds since the epoch) and `interceptors` let tests control
    time and inject faults around real handlers. `authenticator` decides who
    each caller is; without one it is built from the settings (token file, JWT
    key, read tokens), or every caller is the admin of the default tenant.

    Raises `AuthenticationSetupError` (headway.server.auth.factory) when an
    authentication file cannot be used, also before anything is bound.
    """
    exposure = check_exposure(settings)
    credentials = server_credentials(settings)
    if authenticator is None:
        authenticator = build_authenticator(settings, clock=clock or time.time_ns)
    store = SqliteStore(settings.database, synchronous=settings.sqlite_synchronous)
    hub = Hub(
        capacity=settings.subscriber_queue_events,
        max_subscribers=settings.max_subscribers,
        tick=FanoutTick(
            max_period=settings.fanout_tick_max.total_seconds(), gain=settings.fanout_tick_gain
        ),
    )
    engine = Engine(store, hub, settings, **({"clock": clock} if clock else {}))
    metrics = Metrics() if settings.metrics_address else None
    if metrics is not None:
        metrics.attach(engine, hub)
    await engine.start()
    janitor = Janitor(engine)

    max_message = settings.limits.max_message_bytes
    # Calls the transport holds until the event loop takes them. Its default
    # cancels them past 1000, before the service sees them: every subscriber
    # reconnecting at once (after a restart) lost about one call in ten, a
    # writer's included. Room for every allowed subscriber, and as many others,
    # leaves the refusing to the service (TOO_MANY_SUBSCRIBERS, quotas).
    max_pending = 2 * settings.max_subscribers
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", max_message),
            ("grpc.max_send_message_length", max_message),
            ("grpc.so_reuseport", 0),
            ("grpc.server.max_pending_requests", max_pending),
            ("grpc.server.max_pending_requests_hard_limit", max_pending),
        ],
    )
    tokens = token_authenticator(authenticator)
    read_tokens = tokens.read_tokens if tokens is not None else None
    service = TaskService(engine, hub, settings, read_tokens=read_tokens)
    server.add_generic_rpc_handlers((handlers(service, authenticator, metrics),))

    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection_servicer = reflection.enable(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name), server
    )

    try:
        if credentials is None:
            port = server.add_insecure_port(settings.address)
        else:
            port = server.add_secure_port(settings.address, credentials)
    except RuntimeError as error:
        await engine.stop()
        raise OSError(f"cannot listen on {settings.address}: {error}") from error
    metrics_server = MetricsServer(metrics) if metrics is not None else None
    if metrics_server is not None:
        try:
            await metrics_server.start(settings.metrics_address)
        except (OSError, ValueError) as error:
            await server.stop(None)
            await engine.stop()
            raise OSError(f"cannot serve metrics on {settings.metrics_address}: {error}") from error
        logger.info("metrics on port %d (GET /metrics)", metrics_server.port)
    await server.start()
    http: HttpServer | None = None
    if settings.http_address:
        from headway.server.http import HttpServer

        http = HttpServer(service, authenticator, settings, metrics)
        try:
            await http.start()
        except (OSError, ValueError) as error:
            await server.stop(None)
            await engine.stop()
            raise OSError(f"cannot listen on {settings.http_address} (HTTP): {error}") from error
    janitor.start()
    # What loading the tasks left behind (see memory.py). Here, after the loop
    # has turned a few times: the store's answer is held until the callbacks of
    # the future that carried it have run.
    release_free_memory()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    logger.info("%s", describe(authenticator))
    logger.info(
        "headway serving on port %d (gRPC), %s (database %s)",
        port,
        f"HTTP on {http.url}" if http is not None else "HTTP off",
        settings.database,
    )
    logger.info("transport: %s", describe_transport(settings))
    if unprotected(settings):
        logger.warning("protection: %s", exposure)
    else:
        logger.info("protection: %s", exposure)
    return RunningServer(
        server,
        port,
        engine,
        janitor,
        hub,
        health_servicer,
        reflection_servicer,
        settings,
        authenticator=authenticator,
        metrics=metrics,
        metrics_server=metrics_server,
        http=http,
    )
