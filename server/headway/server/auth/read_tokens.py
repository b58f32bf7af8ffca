"""Read tokens: short-lived, read-only bearer tokens for embedding one task's progress.

CreateReadToken mints them; the authenticator accepts them. Each is a JWT
signed HS256 with the server's own signing key (a file of 32 random bytes,
created 0600 at first start), audience `headway-read`, with the minter's name
(`sub`) and tenant, the scope (`{"task_ids": [...]}` or `{"labels": {...}}`),
`iat` and `exp`. Its holder is a VIEWER limited to that scope: read-only
whatever the minter's role.

Times come from the server's clock, so a test server on a fake clock sees its
tokens expire when the clock says so. No leeway: the server minted the token
on the same clock that checks it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt

from headway.server.auth.jwt_tokens import KeyFileError, check_times, decode, invalid_claims
from headway.server.auth.principal import Principal, Role, Scope
from headway.server.auth.tokens import NAME

AUDIENCE = "headway-read"
ALGORITHM = "HS256"
KEY_BYTES = 32
DEFAULT_TTL = timedelta(minutes=15)


def load_or_create_key(path: Path) -> bytes:
    """The signing key in `path`, created (32 random bytes, mode 0600) if there is none."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as error:
        raise KeyFileError(f"cannot create the signing key file {path}: {error}") from None
    else:
        with os.fdopen(descriptor, "wb") as file:
            file.write(secrets.token_bytes(KEY_BYTES))
            file.flush()
            os.fsync(file.fileno())
    try:
        key = path.read_bytes()
    except OSError as error:
        raise KeyFileError(f"cannot read the signing key file {path}: {error}") from None
    if len(key) < KEY_BYTES:
        raise KeyFileError(
            f"the signing key in {path} has {len(key)} bytes; it needs at least {KEY_BYTES} "
            "(delete it to have a new one made, which invalidates every read token)"
        )
    return key


@dataclass(frozen=True, slots=True)
class Minted:
    token: str
    expire_ns: int


class ReadTokens:
    """Mints and verifies read tokens with one signing key, on the server's clock."""

    def __init__(self, key: bytes, *, clock: Callable[[], int], path: Path | None = None) -> None:
        self._key = key
        self._clock = clock
        self.path = path

    def mint(self, minter: Principal, scope: Scope, ttl: timedelta) -> Minted:
        now_ns = self._clock()
        issued = now_ns // 1_000_000_000
        # Whole seconds, rounded up: the token lasts at least `ttl`.
        expires = -(-(now_ns + max(1, int(ttl.total_seconds())) * 1_000_000_000) // 1_000_000_000)
        claims: dict[str, Any] = {
            "sub": minter.name,
            "tenant": minter.tenant,
            "aud": AUDIENCE,
            "scope": scope_claim(scope),
            "iat": issued,
            "exp": expires,
        }
        token = jwt.encode(claims, self._key, algorithm=ALGORITHM)
        return Minted(token, expires * 1_000_000_000)

    def verify(self, token: str) -> Principal:
        claims = decode(token, self._key, (ALGORITHM,), audience=AUDIENCE, issuer=None)
        check_times(claims, self._clock() / 1e9, 0.0)
        subject, tenant = claims.get("sub"), claims.get("tenant")
        if (
            not isinstance(subject, str)
            or not isinstance(tenant, str)
            or not NAME.fullmatch(tenant)
        ):
            raise invalid_claims("it does not name its minter and tenant")
        return Principal(subject, tenant, Role.VIEWER, scope=scope_from_claim(claims.get("scope")))


def scope_claim(scope: Scope) -> dict[str, Any]:
    if scope.task_ids:
        return {"task_ids": sorted(scope.task_ids)}
    return {"labels": dict(scope.labels)}


def scope_from_claim(claim: object) -> Scope:
    """The scope a token's `scope` claim describes: exactly one of task_ids and labels."""
    if isinstance(claim, Mapping) and len(claim) == 1:
        task_ids, labels = claim.get("task_ids"), claim.get("labels")
        if (
            isinstance(task_ids, list)
            and task_ids
            and all(isinstance(task_id, str) for task_id in task_ids)
        ):
            return Scope(task_ids=frozenset(task_ids))
        if (
            isinstance(labels, Mapping)
            and labels
            and all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items())
        ):
            return Scope(labels=tuple(sorted(labels.items())))
    raise invalid_claims("its 'scope' claim is not a scope this server issues")
