"""JWT verification: keys decide the algorithms, the server's clock decides the times."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from headway.server.auth.jwt_tokens import (
    JwtVerifier,
    KeyFileError,
    VerificationKey,
    load_jwks,
    load_public_key,
    load_secret,
)
from headway.server.auth.principal import Permission, Principal, Role, Scope
from headway.server.auth.read_tokens import ReadTokens, load_or_create_key, scope_from_claim
from headway.server.errors import HeadwayError, Kind
from tests.clock import FakeClock

SECRET = b"s" * 32


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def claims(clock: FakeClock, **extra: Any) -> dict[str, Any]:
    now = clock() // 1_000_000_000
    return {"sub": "alice", "tenant": "acme", "role": "operator", "exp": now + 60, **extra}


def refused(verify: Callable[[], object], reason: str) -> HeadwayError:
    with pytest.raises(HeadwayError) as caught:
        verify()
    assert caught.value.kind is Kind.UNAUTHENTICATED
    assert caught.value.reason == reason, caught.value
    return caught.value


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def verifier(key: VerificationKey, clock: FakeClock, **options: Any) -> JwtVerifier:
    return JwtVerifier(key, clock=clock, **options)


def test_hs256_names_the_principal_from_sub_tenant_and_role(
    tmp_path: Path, clock: FakeClock
) -> None:
    (tmp_path / "secret").write_bytes(SECRET + b"\n")
    check = verifier(load_secret(tmp_path / "secret"), clock)
    token = jwt.encode(claims(clock), SECRET, algorithm="HS256")
    assert check.verify(token, None) == Principal("alice", "acme", Role.OPERATOR)
    assert check.describe() == "JWT (HS256)"


def test_the_claim_names_are_configurable(tmp_path: Path, clock: FakeClock) -> None:
    (tmp_path / "secret").write_bytes(SECRET)
    check = verifier(load_secret(tmp_path / "secret"), clock, tenant_claim="org", role_claim="r")
    body = {"sub": "bob", "org": "acme", "r": "viewer", "exp": clock() // 10**9 + 9}
    assert check.verify(jwt.encode(body, SECRET), None).role is Role.VIEWER


def test_rs256_and_es256_verify_with_their_public_keys(
    tmp_path: Path, clock: FakeClock, rsa_key: rsa.RSAPrivateKey
) -> None:
    (tmp_path / "rsa.pem").write_bytes(pem(rsa_key))
    check = verifier(load_public_key(tmp_path / "rsa.pem"), clock, issuer="idp", audience="hw")
    token = jwt.encode(claims(clock, iss="idp", aud="hw"), rsa_key, algorithm="RS256")
    assert check.verify(token, None).name == "alice"
    assert check.describe() == "JWT (RS256, issuer idp, audience hw)"

    ec_key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "ec.pem").write_bytes(pem(ec_key))
    check = verifier(load_public_key(tmp_path / "ec.pem"), clock)
    assert check.verify(jwt.encode(claims(clock), ec_key, algorithm="ES256"), None).name == "alice"


def test_a_jwks_picks_the_key_by_kid(
    tmp_path: Path, clock: FakeClock, rsa_key: rsa.RSAPrivateKey
) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    keys = [
        {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key())), "kid": "r1"},
        {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(other.public_key())), "kid": "e1"},
    ]
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": keys}))
    check = verifier(load_jwks(tmp_path / "jwks.json"), clock)
    good = jwt.encode(claims(clock), rsa_key, algorithm="RS256", headers={"kid": "r1"})
    assert check.verify(good, None).name == "alice"
    wrong_kid = jwt.encode(claims(clock), rsa_key, algorithm="RS256", headers={"kid": "e1"})
    refused(lambda: check.verify(wrong_kid, None), "TOKEN_INVALID")
    no_kid = jwt.encode(claims(clock), rsa_key, algorithm="RS256")
    refused(lambda: check.verify(no_kid, None), "TOKEN_INVALID")


def test_expired_and_not_yet_valid_follow_the_server_clock_with_leeway(
    tmp_path: Path, clock: FakeClock
) -> None:
    (tmp_path / "secret").write_bytes(SECRET)
    check = verifier(load_secret(tmp_path / "secret"), clock, leeway=30)
    now = clock() // 10**9
    token = jwt.encode(claims(clock, exp=now + 10, nbf=now + 20), SECRET)
    assert check.verify(token, None)  # nbf within the leeway
    clock.advance(39)
    assert check.verify(token, None)  # exp within the leeway
    clock.advance(2)
    error = refused(lambda: check.verify(token, None), "TOKEN_EXPIRED")
    assert token not in error.message
    early = jwt.encode(claims(clock, nbf=clock() // 10**9 + 31), SECRET)
    refused(lambda: check.verify(early, None), "TOKEN_NOT_YET_VALID")


def test_a_token_without_exp_is_refused(tmp_path: Path, clock: FakeClock) -> None:
    (tmp_path / "secret").write_bytes(SECRET)
    check = verifier(load_secret(tmp_path / "secret"), clock)
    body = claims(clock)
    del body["exp"]
    error = refused(lambda: check.verify(jwt.encode(body, SECRET), None), "TOKEN_INVALID")
    assert "'exp'" in error.message


def test_bad_signature_alg_none_and_algorithm_confusion_are_invalid(
    tmp_path: Path, clock: FakeClock, rsa_key: rsa.RSAPrivateKey
) -> None:
    (tmp_path / "rsa.pem").write_bytes(pem(rsa_key))
    check = verifier(load_public_key(tmp_path / "rsa.pem"), clock)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(claims(clock), other, algorithm="RS256")
    unsigned = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims(clock))}."
    # HS256 with the public key's PEM as the secret: the classic confusion attack.
    signing_input = f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{b64(claims(clock))}"
    mac = hmac.new(pem(rsa_key), signing_input.encode(), hashlib.sha256).digest()
    confused = f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    messages = {
        refused(lambda token=token: check.verify(token, None), "TOKEN_INVALID").message  # type: ignore[misc]
        for token in (forged, unsigned, confused, "a.b.c")
    }
    assert len(messages) == 1  # the same answer, whatever was wrong


def test_audience_issuer_role_and_tenant_claims_are_checked(
    tmp_path: Path, clock: FakeClock
) -> None:
    (tmp_path / "secret").write_bytes(SECRET)
    check = verifier(load_secret(tmp_path / "secret"), clock, issuer="idp", audience="hw")
    base = claims(clock, iss="idp", aud="hw")
    for change, words in [
        ({"aud": "other"}, "audience"),
        ({"iss": "evil"}, "issuer"),
        ({"role": "root"}, "'role' claim"),
        ({"tenant": "a/b"}, "'tenant' claim"),
        ({"tenant": "*", "role": "admin"}, "cross-tenant"),
        ({"sub": ""}, "'sub'"),
    ]:
        token = jwt.encode({**base, **change}, SECRET)
        assert (
            words in refused(lambda token=token: check.verify(token, None), "TOKEN_INVALID").message
        )  # type: ignore[misc]
    unaudienced = verifier(load_secret(tmp_path / "secret"), clock)
    token = jwt.encode(claims(clock, aud="someone-else"), SECRET)
    refused(lambda: unaudienced.verify(token, None), "TOKEN_INVALID")


def test_a_cross_tenant_admin_acts_in_the_tenant_it_names(tmp_path: Path, clock: FakeClock) -> None:
    (tmp_path / "secret").write_bytes(SECRET)
    check = verifier(load_secret(tmp_path / "secret"), clock, allow_cross_tenant=True)
    token = jwt.encode(claims(clock, tenant="*", role="admin"), SECRET)
    assert check.verify(token, "beta") == Principal("alice", "beta", Role.ADMIN, cross_tenant=True)
    refused(lambda: check.verify(token, None), "TENANT_REQUIRED")
    refused(lambda: check.verify(token, "no/such"), "TENANT_INVALID")


def test_unusable_key_files_are_refused_at_load(tmp_path: Path) -> None:
    (tmp_path / "short").write_bytes(b"x" * 31)
    with pytest.raises(KeyFileError, match="at least 32"):
        load_secret(tmp_path / "short")
    (tmp_path / "junk.pem").write_text("not a key")
    with pytest.raises(KeyFileError, match="cannot load the JWT public key"):
        load_public_key(tmp_path / "junk.pem")
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    (tmp_path / "small.pem").write_bytes(pem(small))
    with pytest.raises(KeyFileError, match="1024 bits"):
        load_public_key(tmp_path / "small.pem")
    (tmp_path / "jwks.json").write_text('{"keys": []}')
    with pytest.raises(KeyFileError, match="cannot load the JWKS"):
        load_jwks(tmp_path / "jwks.json")
    with pytest.raises(KeyFileError, match="cannot read"):
        load_secret(tmp_path / "absent")


# -- read tokens -------------------------------------------------------------------


def test_the_signing_key_is_made_once_private(tmp_path: Path) -> None:
    path = tmp_path / "db.signing-key"
    key = load_or_create_key(path)
    assert len(key) == 32
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_key(path) == key
    path.write_bytes(b"short")
    with pytest.raises(KeyFileError, match="at least 32"):
        load_or_create_key(path)


def test_read_tokens_are_scoped_viewers_until_they_expire(clock: FakeClock) -> None:
    tokens = ReadTokens(SECRET, clock=clock)
    minter = Principal("alice", "acme", Role.ADMIN)
    minted = tokens.mint(minter, Scope(task_ids=frozenset({"t1"})), timedelta(seconds=60))
    assert minted.expire_ns == -(-(clock() + 60 * 10**9) // 10**9) * 10**9
    principal = tokens.verify(minted.token)
    assert principal == Principal(
        "alice", "acme", Role.VIEWER, scope=Scope(task_ids=frozenset({"t1"}))
    )
    assert principal.permissions == {Permission.READ}
    labelled = tokens.mint(minter, Scope(labels=(("team", "web"),)), timedelta(seconds=60))
    assert tokens.verify(labelled.token).scope == Scope(labels=(("team", "web"),))
    clock.advance(60)
    assert tokens.verify(minted.token)
    clock.advance(1)
    refused(lambda: tokens.verify(minted.token), "TOKEN_EXPIRED")


def test_a_read_token_of_another_key_or_audience_is_invalid(clock: FakeClock) -> None:
    tokens = ReadTokens(SECRET, clock=clock)
    other = ReadTokens(b"o" * 32, clock=clock)
    minted = other.mint(
        Principal("a", "acme", Role.ADMIN), Scope(task_ids=frozenset({"t"})), timedelta(minutes=1)
    )
    refused(lambda: tokens.verify(minted.token), "TOKEN_INVALID")
    wrong_audience = jwt.encode({**claims(clock), "aud": "elsewhere"}, SECRET)
    refused(lambda: tokens.verify(wrong_audience), "TOKEN_INVALID")


@pytest.mark.parametrize(
    "claim",
    [
        None,
        {},
        {"task_ids": []},
        {"task_ids": [1]},
        {"labels": {}},
        {"labels": {"a": 1}},
        {"task_ids": ["t"], "labels": {"a": "b"}},
        ["t"],
    ],
)
def test_only_scopes_the_server_issues_are_accepted(claim: object) -> None:
    with pytest.raises(HeadwayError, match="scope"):
        scope_from_claim(claim)
