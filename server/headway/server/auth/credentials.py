"""What a call presents, and the authenticator that turns it into a principal."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from headway.server.auth.principal import Principal, Role
from headway.server.errors import HeadwayError, Kind

DEFAULT_TENANT = "default"


@dataclass(frozen=True, slots=True)
class Credentials:
    """A call's proof of identity, as any transport can collect it.

    `authorization` is the raw header value (`Bearer …`) or None; `peer` the
    client certificate's subject common name under mutual TLS, or None;
    `tenant` the tenant a cross-tenant admin asks to act in, or None.
    """

    authorization: str | None = None
    peer: str | None = None
    tenant: str | None = None


class Authenticator(Protocol):
    def authenticate(self, credentials: Credentials) -> Principal:
        """The caller, or HeadwayError UNAUTHENTICATED with a reason."""
        ...


class OpenAuthenticator:
    """No authentication configured: every caller is the one admin of the default tenant.

    This is the laptop mode, which the server accepts only on a loopback
    address unless told otherwise (see the protected mode in app.py).
    """

    PRINCIPAL = Principal("anonymous", DEFAULT_TENANT, Role.ADMIN)

    def authenticate(self, credentials: Credentials) -> Principal:
        del credentials
        return self.PRINCIPAL


def unauthenticated(reason: str, message: str) -> HeadwayError:
    """UNAUTHENTICATED with a reason, saying no more than the caller needs to fix it."""
    return HeadwayError(Kind.UNAUTHENTICATED, reason, message)
