"""The aiohttp application: routes, error middleware, health, static files; start and stop.

It runs on the event loop of the gRPC server. `HttpServer.start()` binds
`settings.http_address` (HTTPS with the gRPC port's certificate when TLS is
configured, and client certificates required under mutual TLS);
`begin_shutdown()` turns `/healthz` to 503, and `stop()` closes the site once
the event streams have ended (the hub ends them at shutdown).
"""

from __future__ import annotations

import json
import logging
import ssl
from pathlib import Path
from typing import Any

from aiohttp import web

from headway.server.auth.credentials import Authenticator, Credentials
from headway.server.config import Settings
from headway.server.errors import FieldViolation, HeadwayError, internal_error, invalid_argument
from headway.server.http.changes import LongPoll
from headway.server.http.codec import refuse_secrets_in_url, to_json
from headway.server.http.counting import ROUTE_LABEL, metrics_middleware
from headway.server.http.errors import (
    error_response,
    json_response,
    malformed,
    method_not_allowed,
    route_not_found,
    too_large,
)
from headway.server.http.events import EventStream
from headway.server.http.gateway import Gateway
from headway.server.http.routes import MethodNotAllowedError, RouteTable
from headway.server.http.sessions import (
    COOKIE,
    SessionStore,
    is_https,
    peer_of,
    principal_json,
)
from headway.server.metrics import Metrics
from headway.server.protected import host_of
from headway.server.service import TaskService

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"


def split_address(address: str) -> tuple[str | None, int]:
    """`host:port`, `[v6]:port` or `:port` (every interface) as aiohttp's host and port."""
    host = host_of(address)
    _, colon, port = address.rpartition(":")
    if not colon or not port.isdigit():
        raise ValueError(f"invalid HTTP address {address!r}: use host:port")
    return (host or None), int(port)


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """HTTPS with the gRPC port's certificate; client certificates too under mutual TLS."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    if settings.tls_client_ca is not None:
        context.load_verify_locations(settings.tls_client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


# Every answer: the dashboard loads only its own files and talks only to this
# origin, may not be framed (clickjacking), and leaks no URL to other sites.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


class HttpServer:
    """The HTTP face of `service`, bound to `settings.http_address`."""

    def __init__(
        self,
        service: TaskService,
        authenticator: Authenticator,
        settings: Settings,
        metrics: Metrics | None = None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        sessions = SessionStore(settings.http_session_ttl.total_seconds())
        self._gateway = Gateway(service, authenticator, sessions)
        self._table = RouteTable()
        self._events = EventStream(self._gateway)
        self._changes = LongPoll(self._gateway)
        self._serving = True
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.url = ""

    def application(self) -> web.Application:
        counting = [metrics_middleware(self._metrics)] if self._metrics is not None else []
        app = web.Application(
            middlewares=[*counting, self._errors],
            client_max_size=self._settings.limits.max_message_bytes,
        )
        router = app.router
        router.add_get("/healthz", self._health)
        router.add_route("*", "/v1/session", self._session)
        router.add_get("/v1/events", self._events.handle)
        router.add_get("/v1/changes", self._changes.handle)
        router.add_route("*", "/v1/{tail:.*}", self._rpc)
        router.add_get("/", self._index)
        router.add_get("/{path:.*}", self._static)
        return app

    async def start(self) -> int:
        """Bind and serve; returns the port (a free one for port 0)."""
        host, port = split_address(self._settings.http_address)
        context = ssl_context(self._settings)
        self._runner = web.AppRunner(
            self.application(),
            handle_signals=False,
            access_log=None,
            shutdown_timeout=self._settings.shutdown_grace.total_seconds(),
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=context, reuse_address=True)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            raise
        bound = self._runner.addresses[0]
        self.port = int(bound[1])
        scheme = "https" if context is not None else "http"
        shown = host or "0.0.0.0"
        shown = f"[{shown}]" if ":" in shown else shown
        self.url = f"{scheme}://{shown}:{self.port}"
        return self.port

    def begin_shutdown(self) -> None:
        """From now on /healthz answers 503, so balancers stop sending traffic."""
        self._serving = False

    async def stop(self) -> None:
        self._serving = False
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- middleware and handlers ---------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            refuse_secrets_in_url(request.query)
            response: web.StreamResponse = await handler(request)
        except HeadwayError as error:
            response = error_response(error)
        except MethodNotAllowedError as refused:
            response = error_response(refused.error, 405)
            response.headers["Allow"] = ", ".join(refused.allowed)
        except web.HTTPRequestEntityTooLarge:
            response = error_response(too_large(self._settings.limits.max_message_bytes), 413)
        except web.HTTPException as exception:
            if exception.status < 400:
                raise
            if exception.status == 405:
                allowed = sorted(getattr(exception, "allowed_methods", set()))
                refusal = method_not_allowed(request.method, request.path, allowed)
                response = error_response(refusal, 405)
                response.headers["Allow"] = ", ".join(allowed)
            else:
                response = error_response(route_not_found(request.method, request.path))
        except Exception:
            logger.exception("HTTP %s %s failed unexpectedly", request.method, request.path)
            response = error_response(internal_error())
        for header, value in SECURITY_HEADERS.items():
            response.headers.setdefault(header, value)
        return response

    async def _health(self, request: web.Request) -> web.Response:
        status = "SERVING" if self._serving else "NOT_SERVING"
        return json_response({"status": status}, status=200 if self._serving else 503)

    async def _rpc(self, request: web.Request) -> web.Response:
        route, params = self._table.match(request.method, request.raw_path.split("?", 1)[0])
        request[ROUTE_LABEL] = f"{route.method} {route.template}"
        body = await request.read() if route.body else b""
        response = await self._gateway.call(request, route, params, body)
        return json_response(to_json(response))

    async def _session(self, request: web.Request) -> web.Response:
        """Sign in (POST, with `{"token": …}`), who am I (GET), sign out (DELETE)."""
        sessions = self._gateway.sessions
        authenticator = self._gateway.authenticator
        if request.method == "POST":
            token = await _token_of(request)
            credentials = Credentials(
                f"Bearer {token}", peer_of(request), request.headers.get("X-Headway-Tenant")
            )
            principal = authenticator.authenticate(credentials)
            session = sessions.create(token, principal.tenant)
            response = json_response(
                {"principal": principal_json(principal), "csrfToken": session.csrf_token}
            )
            response.set_cookie(
                COOKIE,
                session.id,
                max_age=int(sessions.ttl),
                path="/",
                httponly=True,
                secure=is_https(request),
                samesite="Strict",
            )
            return response
        if request.method in ("GET", "HEAD"):
            caller = self._gateway.caller(request)
            principal = authenticator.authenticate(caller.credentials)
            body: dict[str, Any] = {"principal": principal_json(principal)}
            if caller.session is not None:
                body["csrfToken"] = caller.session.csrf_token
            return json_response(body)
        if request.method == "DELETE":
            caller = self._gateway.caller(request)  # CSRF-checked when signed in by cookie
            if caller.session is not None:
                sessions.delete(caller.session.id)
            response = json_response({})
            response.del_cookie(COOKIE, path="/")
            return response
        allowed = ["GET", "POST", "DELETE"]
        error = method_not_allowed(request.method, request.path, allowed)
        raise MethodNotAllowedError(error, allowed)

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html")

    async def _static(self, request: web.Request) -> web.StreamResponse:
        root = STATIC.resolve()
        try:
            wanted = (root / request.match_info["path"]).resolve()
            found = wanted.is_relative_to(root) and wanted.is_file()
        except (ValueError, OSError):  # a NUL byte, a name too long: no such file
            found = False
        if not found:
            raise route_not_found(request.method, request.path)
        return web.FileResponse(wanted)


async def _token_of(request: web.Request) -> str:
    # A page of another site can post a form or text/plain anywhere, but not
    # application/json without the browser asking first: requiring it keeps such
    # a page from signing a visitor into the attacker's account (login CSRF).
    if request.content_type != "application/json":
        raise malformed("session request", "send the token as application/json")
    try:
        data = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise malformed("session request", "the body is not JSON") from None
    token = data.get("token") if isinstance(data, dict) else None
    if not isinstance(token, str) or not token:
        raise invalid_argument([FieldViolation("token", "is required")])
    return token


__all__ = ["HttpServer", "split_address"]
