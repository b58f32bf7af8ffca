"""A tiny authenticator for tests: the bearer token names the principal.

`agent-a@acme` is the agent `agent-a` of the tenant `acme`; the part before the
first `-` is the role (agent, viewer, operator, admin). Scoped principals,
which no token grammar can express, are registered by token. It implements the
server's `Authenticator` protocol and is handed to the server like any other.
"""

from __future__ import annotations

from collections.abc import Mapping

from headway.server.auth.credentials import Authenticator, Credentials, unauthenticated
from headway.server.auth.principal import Principal, Role, Scope

PREFIX = "Bearer "


class TokenNamesPrincipal:
    """Reads the principal out of the token; unknown or missing tokens are UNAUTHENTICATED."""

    def __init__(self, registered: Mapping[str, Principal] | None = None) -> None:
        self._registered = dict(registered or {})

    def register(self, token: str, principal: Principal) -> str:
        self._registered[token] = principal
        return token

    def authenticate(self, credentials: Credentials) -> Principal:
        header = credentials.authorization
        if header is None or not header.startswith(PREFIX):
            raise unauthenticated("MISSING_CREDENTIALS", "send authorization: Bearer <token>")
        token = header.removeprefix(PREFIX)
        if token in self._registered:
            return self._registered[token]
        name, _, tenant = token.partition("@")
        role_name = name.partition("-")[0]
        try:
            role = Role(role_name)
        except ValueError:
            raise unauthenticated("INVALID_TOKEN", "unknown token") from None
        if not tenant:
            raise unauthenticated("INVALID_TOKEN", "unknown token")
        return Principal(name, tenant, role)


def scoped(
    name: str, tenant: str, *, task_ids: tuple[str, ...] = (), labels: Mapping[str, str] = {}
) -> Principal:
    """A read token's principal: a viewer that sees only the named tasks or labels."""
    return Principal(
        name,
        tenant,
        Role.VIEWER,
        scope=Scope(task_ids=frozenset(task_ids), labels=tuple(sorted(labels.items()))),
    )


def _conforms(authenticator: TokenNamesPrincipal) -> Authenticator:
    return authenticator  # mypy checks that the class implements the protocol
