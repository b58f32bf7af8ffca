"""The authenticator of a server with authentication on: bearer tokens and certificates.

A call presents `authorization: Bearer <token>`, or (under mutual TLS) a client
certificate whose common name the token file maps with a `cert:` line; when
both are present the bearer token wins. A token with two dots is a JWT: a read
token this server minted when its audience is `headway-read`, otherwise one
from the configured identity provider. Any other token is looked up, by its
SHA-256, in the token file.

A cross-tenant admin (tenant `*`) acts in the tenant its call names in the
`x-headway-tenant` metadata, which it must send (UNAUTHENTICATED
`TENANT_REQUIRED` otherwise). Any other principal acts in its own tenant; if
it names another one, the call is PERMISSION_DENIED (`TENANT_NOT_ALLOWED`)
rather than silently served in the wrong tenant.
"""

from __future__ import annotations

import logging
from typing import Any

import jwt

from headway.server.auth.credentials import Credentials, unauthenticated
from headway.server.auth.jwt_tokens import JwtVerifier, cross_tenant_admin, invalid_token
from headway.server.auth.principal import Principal
from headway.server.auth.read_tokens import AUDIENCE, ReadTokens
from headway.server.auth.tokens import Entry, TokenFile
from headway.server.errors import HeadwayError, Kind

logger = logging.getLogger(__name__)

MAX_TOKEN_CHARS = 8192


class TokenAuthenticator:
    """Token file (`sha256:` and `cert:` lines), identity-provider JWTs and read tokens."""

    def __init__(
        self,
        *,
        read_tokens: ReadTokens,
        token_file: TokenFile | None = None,
        jwt_verifier: JwtVerifier | None = None,
    ) -> None:
        self.read_tokens = read_tokens
        self.token_file = token_file
        self.jwt_verifier = jwt_verifier

    def describe(self) -> str:
        """What the startup log says: the sources of identity in force."""
        parts = []
        if self.token_file is not None:
            table = self.token_file.table
            parts.append(f"token file {self.token_file.path} ({table.describe()})")
        if self.jwt_verifier is not None:
            parts.append(self.jwt_verifier.describe())
        parts.append("read tokens")
        return ", ".join(parts)

    def reload(self) -> None:
        """Read the token file again now (SIGHUP); a broken file keeps the previous entries."""
        if self.token_file is not None:
            self.token_file.reload()

    def authenticate(self, credentials: Credentials) -> Principal:
        try:
            principal = self._authenticate(credentials)
        except HeadwayError as error:
            logger.debug("authentication refused: %s", error.reason)
            raise
        if not principal.cross_tenant and credentials.tenant not in (None, principal.tenant):
            raise HeadwayError(
                Kind.PERMISSION_DENIED,
                "TENANT_NOT_ALLOWED",
                "this credential acts in its own tenant only; do not send "
                "'x-headway-tenant' with another tenant",
            )
        return principal

    def _authenticate(self, credentials: Credentials) -> Principal:
        header = (credentials.authorization or "").strip()
        if not header:
            entry = self._certificate(credentials.peer)
            if entry is None:
                raise unauthenticated(
                    "TOKEN_MISSING",
                    "this server requires authentication: send 'authorization: Bearer <token>'",
                )
            return _principal(entry, credentials)
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or " " in token or len(token) > MAX_TOKEN_CHARS:
            raise unauthenticated(
                "TOKEN_MALFORMED", "the authorization metadata must be 'Bearer <token>'"
            )
        if token.count(".") == 2:
            return self._jwt(token, credentials)
        entry = self.token_file.token(token) if self.token_file is not None else None
        if entry is None:
            raise invalid_token()
        return _principal(entry, credentials)

    def _certificate(self, common_name: str | None) -> Entry | None:
        if common_name is None or self.token_file is None:
            return None
        return self.token_file.certificate(common_name)

    def _jwt(self, token: str, credentials: Credentials) -> Principal:
        # The unverified audience only picks the verifier; each verifies everything.
        if _audience(token) == AUDIENCE:
            return self.read_tokens.verify(token)
        if self.jwt_verifier is None:
            raise invalid_token()
        return self.jwt_verifier.verify(token, credentials.tenant)


def _audience(token: str) -> Any:
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    return claims.get("aud")


def _principal(entry: Entry, credentials: Credentials) -> Principal:
    if entry.cross_tenant:
        return cross_tenant_admin(entry.name, credentials.tenant)
    return Principal(entry.name, entry.tenant, entry.role)
