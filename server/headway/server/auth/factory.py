"""The authenticator the settings ask for, and the line the startup log says about it.

The token authenticator needs PyJWT and cryptography, about 10 MiB of memory
once imported. A server without authentication (the default) never uses them,
so they are imported here only when the settings configure authentication, or
when an authenticator from elsewhere might be a token authenticator.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from headway.server.auth.credentials import DEFAULT_TENANT, Authenticator, OpenAuthenticator
from headway.server.config import Settings

if TYPE_CHECKING:
    from headway.server.auth.authenticator import TokenAuthenticator
    from headway.server.auth.jwt_tokens import VerificationKey


class AuthenticationSetupError(ValueError):
    """The authentication settings name a file that cannot be used; the server must not start."""


def authentication_configured(settings: Settings) -> bool:
    """Whether any source of identity is set; without one, every caller is the admin."""
    return any(
        path is not None
        for path in (
            settings.auth_token_file,
            settings.auth_jwt_secret_file,
            settings.auth_jwt_public_key_file,
            settings.auth_jwt_jwks_file,
        )
    )


def signing_key_path(settings: Settings) -> Path:
    """The read-token signing key: as set, or `<database>.signing-key` beside the database."""
    if settings.auth_signing_key_file is not None:
        return settings.auth_signing_key_file
    return settings.database.with_name(settings.database.name + ".signing-key")


def build_authenticator(
    settings: Settings, *, clock: Callable[[], int] = time.time_ns
) -> Authenticator:
    """OpenAuthenticator without any identity source, else a TokenAuthenticator.

    Reads every configured file now (and creates the signing key if missing),
    so that a broken one stops the server at start: AuthenticationSetupError.
    `clock` (nanoseconds since the epoch) is the server's, for token times.
    """
    if not authentication_configured(settings):
        return OpenAuthenticator()
    from headway.server.auth.authenticator import TokenAuthenticator
    from headway.server.auth.jwt_tokens import JwtVerifier, KeyFileError
    from headway.server.auth.read_tokens import ReadTokens, load_or_create_key
    from headway.server.auth.tokens import TokenFile, TokenFileError

    try:
        token_file = None
        if settings.auth_token_file is not None:
            token_file = TokenFile(
                settings.auth_token_file,
                allow_cross_tenant=settings.auth_allow_cross_tenant_admin,
            )
        jwt_verifier = None
        key = _verification_key(settings)
        if key is not None:
            jwt_verifier = JwtVerifier(
                key,
                clock=clock,
                issuer=settings.auth_jwt_issuer,
                audience=settings.auth_jwt_audience,
                tenant_claim=settings.auth_jwt_tenant_claim,
                role_claim=settings.auth_jwt_role_claim,
                leeway=settings.auth_jwt_leeway.total_seconds(),
                allow_cross_tenant=settings.auth_allow_cross_tenant_admin,
            )
        path = signing_key_path(settings)
        read_tokens = ReadTokens(load_or_create_key(path), clock=clock, path=path)
    except (TokenFileError, KeyFileError) as error:
        raise AuthenticationSetupError(str(error)) from None
    return TokenAuthenticator(
        read_tokens=read_tokens, token_file=token_file, jwt_verifier=jwt_verifier
    )


def _verification_key(settings: Settings) -> VerificationKey | None:
    from headway.server.auth.jwt_tokens import load_jwks, load_public_key, load_secret

    if settings.auth_jwt_secret_file is not None:
        return load_secret(settings.auth_jwt_secret_file)
    if settings.auth_jwt_public_key_file is not None:
        return load_public_key(settings.auth_jwt_public_key_file)
    if settings.auth_jwt_jwks_file is not None:
        return load_jwks(settings.auth_jwt_jwks_file)
    return None


def token_authenticator(authenticator: Authenticator) -> TokenAuthenticator | None:
    """The authenticator as a TokenAuthenticator (read tokens, reloads), or None if it is not one.

    An OpenAuthenticator is answered without importing the token modules.
    """
    if isinstance(authenticator, OpenAuthenticator):
        return None
    from headway.server.auth.authenticator import TokenAuthenticator

    return authenticator if isinstance(authenticator, TokenAuthenticator) else None


def describe(authenticator: Authenticator) -> str:
    """The startup log's line on authentication."""
    tokens = token_authenticator(authenticator)
    if tokens is not None:
        return f"authentication: {tokens.describe()}"
    return f"authentication: off (every caller is admin of tenant {DEFAULT_TENANT!r})"
