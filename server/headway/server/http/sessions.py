"""Who an HTTP request comes from: a bearer token, or a browser's session cookie.

`Authorization: Bearer <token>` works as over gRPC. A browser signs in once
(`POST /v1/session` with the token): the server keeps the token in memory under
a random session id, set as the HttpOnly cookie `headway_session`, and
authenticates the stored token again on every request, so a token revoked in
the token file stops its sessions at once. A request authenticated by the
cookie that changes anything must also send the session's CSRF token in the
`X-CSRF-Token` header (a page of another site cannot read it). Tokens are never
taken from URLs.
"""

from __future__ import annotations

import hmac
import secrets
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from headway.server.auth.credentials import Credentials
from headway.server.auth.principal import Principal
from headway.server.errors import HeadwayError, Kind

COOKIE = "headway_session"
CSRF_HEADER = "X-CSRF-Token"
TENANT_HEADER = "X-Headway-Tenant"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_SESSIONS = 100_000
# Sessions one tenant may hold; beyond it the tenant's own oldest session goes, so
# signing in again and again never signs out anybody of another tenant.
MAX_SESSIONS_PER_TENANT = 1_000


@dataclass(slots=True)
class Session:
    id: str
    token: str
    csrf_token: str
    expires_at: float
    tenant: str = ""


class SessionStore:
    """Session id → token, in memory, each for `ttl` seconds; the oldest go first beyond the cap."""

    def __init__(
        self,
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
        capacity: int = MAX_SESSIONS,
        per_tenant: int = MAX_SESSIONS_PER_TENANT,
    ) -> None:
        self._ttl = ttl
        self._clock = clock
        self._capacity = capacity
        self._per_tenant = per_tenant
        self._sessions: dict[str, Session] = {}
        self._by_tenant: dict[str, dict[str, None]] = {}  # tenant: session ids, oldest first

    @property
    def ttl(self) -> float:
        return self._ttl

    def create(self, token: str, tenant: str) -> Session:
        """A new session for `token`, whose principal acts in `tenant`."""
        mine = self._by_tenant.get(tenant, {})
        while len(mine) >= self._per_tenant:
            self.delete(next(iter(mine)))
        while len(self._sessions) >= self._capacity:
            self.delete(next(iter(self._sessions)))
        session = Session(
            secrets.token_urlsafe(32),
            token,
            secrets.token_urlsafe(32),
            self._clock() + self._ttl,
            tenant,
        )
        self._sessions[session.id] = session
        self._by_tenant.setdefault(tenant, {})[session.id] = None
        return session

    def get(self, session_id: str) -> Session | None:
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if self._clock() >= session.expires_at:
            self.delete(session_id)
            return None
        return session

    def delete(self, session_id: str) -> None:
        session = self._sessions.pop(session_id, None)
        if session is None:
            return
        mine = self._by_tenant.get(session.tenant)
        if mine is not None:
            mine.pop(session_id, None)
            if not mine:
                del self._by_tenant[session.tenant]


@dataclass(frozen=True, slots=True)
class Caller:
    """What a request presents, and the session it came with (when the cookie authenticated it)."""

    credentials: Credentials
    session: Session | None


def caller_of(request: web.Request, sessions: SessionStore) -> Caller:
    """The request's credentials: its Authorization header, else its session cookie, else none.

    A request authenticated by the cookie that is not a read must carry the
    session's CSRF token (PERMISSION_DENIED `CSRF_TOKEN_INVALID` otherwise).
    """
    peer = peer_of(request)
    tenant = request.headers.get(TENANT_HEADER)
    header = request.headers.get("Authorization")
    if header is not None:
        return Caller(Credentials(header, peer, tenant), None)
    cookie = request.cookies.get(COOKIE)
    session = sessions.get(cookie) if cookie else None
    if session is None:
        return Caller(Credentials(None, peer, tenant), None)
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        # `surrogatepass`: a header with non-ASCII bytes is a wrong token, not an error.
        if not hmac.compare_digest(
            sent.encode("utf-8", "surrogatepass"), session.csrf_token.encode()
        ):
            raise HeadwayError(
                Kind.PERMISSION_DENIED,
                "CSRF_TOKEN_INVALID",
                f"a request signed in by cookie must send the session's csrfToken in {CSRF_HEADER}",
            )
    return Caller(Credentials(f"Bearer {session.token}", peer, tenant), session)


def peer_of(request: web.Request) -> str | None:
    """The client certificate's common name under mutual TLS, as the gRPC port reports it."""
    transport = request.transport
    if transport is None or transport.get_extra_info("ssl_object") is None:
        return None
    certificate: Any = transport.get_extra_info("peercert")
    if not certificate:
        return None
    for rdn in certificate.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def principal_json(principal: Principal) -> dict[str, Any]:
    return {
        "name": principal.name,
        "tenant": principal.tenant,
        "role": principal.role.value,
        "permissions": sorted(p.value for p in principal.permissions),
        "scoped": principal.scope is not None,
    }


def is_https(request: web.Request) -> bool:
    transport = request.transport
    return transport is not None and isinstance(
        transport.get_extra_info("ssl_object"), ssl.SSLObject | ssl.SSLSocket
    )
