"""The authenticator: which credential wins, certificates, and what the settings build."""

from __future__ import annotations

from pathlib import Path

import pytest

from headway.server.auth.authenticator import TokenAuthenticator
from headway.server.auth.credentials import Credentials, OpenAuthenticator
from headway.server.auth.factory import (
    AuthenticationSetupError,
    build_authenticator,
    describe,
    signing_key_path,
)
from headway.server.auth.principal import Principal, Role
from headway.server.auth.tokens import append_token
from headway.server.config import Settings
from headway.server.errors import HeadwayError, Kind


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text("cert:gateway.acme acme viewer\n")
    return path


def settings(tmp_path: Path, **overrides: object) -> Settings:
    return Settings(database=tmp_path / "h.db", **overrides)  # type: ignore[arg-type]


def reason(authenticator: TokenAuthenticator, credentials: Credentials) -> str:
    with pytest.raises(HeadwayError) as refused:
        authenticator.authenticate(credentials)
    return refused.value.reason


def test_without_an_identity_source_every_caller_is_the_admin(tmp_path: Path) -> None:
    built = build_authenticator(settings(tmp_path))
    assert isinstance(built, OpenAuthenticator)
    assert built.authenticate(Credentials()) == Principal("anonymous", "default", Role.ADMIN)
    assert describe(built) == "authentication: off (every caller is admin of tenant 'default')"
    assert not signing_key_path(settings(tmp_path)).exists()


def test_a_mapped_certificate_authenticates_and_a_bearer_token_wins(
    tmp_path: Path, token_file: Path
) -> None:
    secret = append_token(token_file, "bot", "acme", "agent")
    built = build_authenticator(settings(tmp_path, auth_token_file=token_file))
    assert isinstance(built, TokenAuthenticator)
    by_certificate = built.authenticate(Credentials(peer="gateway.acme"))
    assert by_certificate == Principal("gateway.acme", "acme", Role.VIEWER)
    both = Credentials(authorization=f"Bearer {secret}", peer="gateway.acme")
    assert built.authenticate(both).name == "bot"
    assert reason(built, Credentials(peer="stranger")) == "TOKEN_MISSING"
    assert reason(built, Credentials(authorization="  ")) == "TOKEN_MISSING"
    assert built.authenticate(Credentials(authorization=f"bearer   {secret} ")).name == "bot"
    assert reason(built, Credentials(authorization="Bearer " + "x" * 9000)) == "TOKEN_MALFORMED"
    assert describe(built) == (
        f"authentication: token file {token_file} (1 token, 1 certificate), read tokens"
    )
    assert signing_key_path(settings(tmp_path)) == tmp_path / "h.db.signing-key"
    assert (tmp_path / "h.db.signing-key").exists()


def test_another_tenant_asked_for_is_refused_not_ignored(tmp_path: Path, token_file: Path) -> None:
    secret = append_token(token_file, "bot", "acme", "agent")
    built = build_authenticator(settings(tmp_path, auth_token_file=token_file))
    assert isinstance(built, TokenAuthenticator)
    same = Credentials(authorization=f"Bearer {secret}", tenant="acme")
    assert built.authenticate(same).tenant == "acme"
    with pytest.raises(HeadwayError) as refused:
        built.authenticate(Credentials(authorization=f"Bearer {secret}", tenant="beta"))
    assert (refused.value.kind, refused.value.reason) == (
        Kind.PERMISSION_DENIED,
        "TENANT_NOT_ALLOWED",
    )


def test_a_jwt_needs_a_configured_key(tmp_path: Path, token_file: Path) -> None:
    built = build_authenticator(settings(tmp_path, auth_token_file=token_file))
    assert isinstance(built, TokenAuthenticator)
    assert reason(built, Credentials(authorization="Bearer e30.e30.x")) == "TOKEN_INVALID"


def test_unusable_files_stop_the_build(tmp_path: Path) -> None:
    with pytest.raises(AuthenticationSetupError, match="cannot read token file"):
        build_authenticator(settings(tmp_path, auth_token_file=tmp_path / "absent"))
    with pytest.raises(AuthenticationSetupError, match="cannot read the JWT secret"):
        build_authenticator(settings(tmp_path, auth_jwt_secret_file=tmp_path / "absent"))
    with pytest.raises(ValueError, match="at most one of"):
        settings(tmp_path, auth_jwt_secret_file="a", auth_jwt_jwks_file="b")
