"""JSON Web Tokens from an identity provider, verified with one configured key.

The key decides the algorithms: an HS256 shared secret only HMAC, an RSA public
key only RS*/PS*, an EC key only the ES* of its curve, a JWKS only each key's
own. A token's `alg` header is never trusted to pick the key, so `alg: none`
and an HS256 token "signed" with a public key's PEM (algorithm confusion) are
refused like any bad signature.

Times are checked against the server's clock (the one the engine uses), not by
PyJWT: `exp` is required, `nbf` honoured, both with the configured leeway.

Messages: a token whose signature does not verify gets one message, whatever
was wrong with it. Only a token that this server's key signed gets a specific
answer (expired, wrong audience, a missing claim), since its holder can read
the claims anyway.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from headway.server.auth.credentials import unauthenticated
from headway.server.auth.principal import Principal, Role
from headway.server.auth.tokens import ANY_TENANT, NAME, ROLES
from headway.server.errors import HeadwayError

MIN_SECRET_BYTES = 32
MIN_RSA_BITS = 2048
MAX_SUBJECT = 256
_PRINTABLE = re.compile(r"[^\x00-\x1f\x7f]+")

# PyJWT checks signature, issuer and audience; times are ours (see `check_times`).
_OPTIONS: Any = {
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "enforce_minimum_key_length": True,
}
_DECODER = jwt.PyJWT()


class KeyFileError(ValueError):
    """A configured key file cannot be used; the message names it."""


def invalid_token() -> HeadwayError:
    """The one answer for a token this server cannot verify, whatever was wrong with it."""
    return unauthenticated(
        "TOKEN_INVALID",
        "the bearer token is not valid here: unknown, revoked, malformed, or not signed "
        "by a key this server trusts",
    )


def invalid_claims(problem: str) -> HeadwayError:
    """A token with a good signature whose claims this server does not accept."""
    return unauthenticated("TOKEN_INVALID", f"the bearer token was refused: {problem}")


def check_times(claims: Mapping[str, Any], now: float, leeway: float) -> None:
    """`exp` (required) and `nbf` (optional) against `now`, in seconds since the epoch."""
    expires = _number(claims.get("exp"))
    if expires is None:
        raise invalid_claims("it has no numeric 'exp' (expiry) claim")
    if now > expires + leeway:
        raise unauthenticated("TOKEN_EXPIRED", "the bearer token has expired; get a new one")
    if claims.get("nbf") is not None:
        not_before = _number(claims["nbf"])
        if not_before is None:
            raise invalid_claims("its 'nbf' claim is not a number")
        if now + leeway < not_before:
            raise unauthenticated(
                "TOKEN_NOT_YET_VALID",
                "the bearer token is not valid yet (its 'nbf' is in the future); "
                "check the clocks of the issuer and the server",
            )


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def decode(
    token: str,
    key: Any,
    algorithms: Sequence[str],
    *,
    audience: str | None,
    issuer: str | None,
) -> dict[str, Any]:
    """The claims of a token signed by `key`; HeadwayError UNAUTHENTICATED TOKEN_INVALID if not."""
    try:
        claims: dict[str, Any] = _DECODER.decode(
            token,
            key,
            algorithms=list(algorithms),
            audience=audience,
            issuer=issuer,
            options=_OPTIONS,
        )
    except jwt.InvalidAudienceError:
        raise invalid_claims("it is not meant for this server (audience)") from None
    except jwt.InvalidIssuerError:
        raise invalid_claims("it was not issued by the issuer this server trusts") from None
    except jwt.MissingRequiredClaimError as error:
        raise invalid_claims(f"it lacks the {error.claim!r} claim") from None
    except jwt.PyJWTError:
        raise invalid_token() from None
    return claims


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A configured key and the only algorithms it may verify."""

    key: Any  # bytes, a cryptography public key, or a jwt.PyJWKSet
    algorithms: tuple[str, ...]
    source: str  # what the startup log says

    def resolve(self, token: str) -> tuple[Any, tuple[str, ...]]:
        """The key (and its algorithms) for this token: for a JWKS, the key its `kid` names."""
        if not isinstance(self.key, jwt.PyJWKSet):
            return self.key, self.algorithms
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            raise invalid_token() from None
        keys = list(self.key.keys)
        if kid is None and len(keys) == 1:
            chosen = keys[0]
        else:
            matching = [k for k in keys if isinstance(kid, str) and k.key_id == kid]
            if len(matching) != 1:
                raise invalid_token()
            chosen = matching[0]
        return chosen, (chosen.algorithm_name,)


def load_secret(path: Path) -> VerificationKey:
    """An HMAC shared secret: the file's bytes, without a trailing newline."""
    try:
        secret = path.read_bytes().rstrip(b"\r\n")
    except OSError as error:
        raise KeyFileError(f"cannot read the JWT secret file {path}: {error}") from None
    if len(secret) < MIN_SECRET_BYTES:
        raise KeyFileError(
            f"the JWT secret in {path} has {len(secret)} bytes; "
            f"HS256 needs at least {MIN_SECRET_BYTES}"
        )
    return VerificationKey(secret, ("HS256", "HS384", "HS512"), "HS256")


def load_public_key(path: Path) -> VerificationKey:
    """A PEM public key: RSA (RS256 and kin, PS256 and kin), EC (ES256/384/512) or Ed25519."""
    try:
        key = load_pem_public_key(path.read_bytes())
    except (OSError, ValueError, TypeError) as error:
        raise KeyFileError(f"cannot load the JWT public key from {path}: {error}") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise KeyFileError(f"the RSA key in {path} has {key.key_size} bits; need 2048")
        return VerificationKey(key, ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"), "RS256")
    if isinstance(key, ec.EllipticCurvePublicKey):
        algorithm = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}.get(
            key.curve.name
        )
        if algorithm is None:
            raise KeyFileError(f"the EC key in {path} is on an unsupported curve")
        return VerificationKey(key, (algorithm,), algorithm)
    if isinstance(key, ed25519.Ed25519PublicKey):
        return VerificationKey(key, ("EdDSA",), "EdDSA")
    raise KeyFileError(f"the key in {path} is not an RSA, EC or Ed25519 public key")


def load_jwks(path: Path) -> VerificationKey:
    """A JSON Web Key Set; each token names its key by `kid` (optional with one key)."""
    try:
        keys = jwt.PyJWKSet.from_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, jwt.PyJWTError) as error:
        raise KeyFileError(f"cannot load the JWKS from {path}: {error}") from None
    names = sorted({key.algorithm_name for key in keys.keys})
    return VerificationKey(keys, tuple(names), "JWKS " + "/".join(names))


class JwtVerifier:
    """Identity-provider tokens: the principal is `sub`, with tenant and role from claims."""

    def __init__(
        self,
        key: VerificationKey,
        *,
        clock: Callable[[], int],
        issuer: str | None = None,
        audience: str | None = None,
        tenant_claim: str = "tenant",
        role_claim: str = "role",
        leeway: float = 30.0,
        allow_cross_tenant: bool = False,
    ) -> None:
        self.key = key
        self._clock = clock
        self._issuer = issuer
        self._audience = audience
        self._tenant_claim = tenant_claim
        self._role_claim = role_claim
        self._leeway = leeway
        self._allow_cross_tenant = allow_cross_tenant

    def describe(self) -> str:
        parts = [self.key.source]
        if self._issuer:
            parts.append(f"issuer {self._issuer}")
        if self._audience:
            parts.append(f"audience {self._audience}")
        return f"JWT ({', '.join(parts)})"

    def verify(self, token: str, requested_tenant: str | None) -> Principal:
        key, algorithms = self.key.resolve(token)
        claims = decode(token, key, algorithms, audience=self._audience, issuer=self._issuer)
        check_times(claims, self._clock() / 1e9, self._leeway)
        subject = claims.get("sub")
        if not isinstance(subject, str) or not 0 < len(subject) <= MAX_SUBJECT:
            raise invalid_claims(f"its 'sub' claim must be a string of 1 to {MAX_SUBJECT} chars")
        if not _PRINTABLE.fullmatch(subject):
            raise invalid_claims("its 'sub' claim contains control characters")
        tenant = claims.get(self._tenant_claim)
        if not isinstance(tenant, str) or not (NAME.fullmatch(tenant) or tenant == ANY_TENANT):
            raise invalid_claims(f"its {self._tenant_claim!r} claim does not name a tenant")
        role_name = claims.get(self._role_claim)
        try:
            role = Role(role_name)
        except ValueError:
            raise invalid_claims(f"its {self._role_claim!r} claim must be one of {ROLES}") from None
        if tenant != ANY_TENANT:
            return Principal(subject, tenant, role)
        if role is not Role.ADMIN or not self._allow_cross_tenant:
            raise invalid_claims("this server accepts no cross-tenant ('*') tokens")
        return cross_tenant_admin(subject, requested_tenant)


def cross_tenant_admin(name: str, requested_tenant: str | None) -> Principal:
    """The cross-tenant admin acting in the tenant its call names (`x-headway-tenant`)."""
    if requested_tenant is None:
        raise unauthenticated(
            "TENANT_REQUIRED",
            "a cross-tenant admin must name the tenant it acts in with the "
            "'x-headway-tenant' metadata",
        )
    if not NAME.fullmatch(requested_tenant):
        raise unauthenticated(
            "TENANT_INVALID", "the 'x-headway-tenant' metadata does not name a valid tenant"
        )
    return Principal(name, requested_tenant, Role.ADMIN, cross_tenant=True)
