"""Protected mode as a pure function of the settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from headway.server.config import Settings
from headway.server.protected import ExposureError, check_exposure, is_loopback, unprotected


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1:50051",
        "127.8.9.10:0",
        "localhost:50051",
        "LOCALHOST:1",
        "[::1]:50051",
        "unix:/tmp/headway.sock",
    ],
)
def test_loopback_addresses(address: str) -> None:
    assert is_loopback(address)


@pytest.mark.parametrize(
    "address",
    ["0.0.0.0:50051", "[::]:50051", ":50051", "10.0.0.5:50051", "example.com:443", "[fe80::1]:1"],
)
def test_network_addresses(address: str) -> None:
    assert not is_loopback(address)


def settings(**values: object) -> Settings:
    return Settings(**values)  # type: ignore[arg-type]


def test_the_default_address_is_loopback_and_starts_with_no_configuration() -> None:
    default = Settings()
    assert default.address == "127.0.0.1:50051"
    assert "loopback only" in check_exposure(default)
    assert not unprotected(default)


def test_the_network_without_authentication_is_refused_with_the_ways_out() -> None:
    with pytest.raises(ExposureError) as caught:
        check_exposure(settings(address="0.0.0.0:50051"))
    message = str(caught.value)
    for way_out in ("--auth-token-file", "--tls-client-ca", "127.0.0.1", "--insecure"):
        assert way_out in message


def test_insecure_lets_it_start_and_says_so() -> None:
    exposed = settings(address="0.0.0.0:50051", insecure=True)
    assert check_exposure(exposed).startswith("UNPROTECTED")
    assert unprotected(exposed)


@pytest.mark.parametrize(
    "auth",
    [
        {"auth_token_file": Path("tokens.txt")},
        {"auth_jwt_secret_file": Path("secret")},
        {"auth_jwt_public_key_file": Path("key.pem")},
        {"auth_jwt_jwks_file": Path("jwks.json")},
    ],
)
def test_any_authentication_lets_the_network_in(auth: dict[str, object]) -> None:
    exposed = settings(address="0.0.0.0:50051", **auth)
    assert "authentication:" in check_exposure(exposed)
    assert not unprotected(exposed)


def test_tls_files_go_in_pairs(tmp_path: Path) -> None:
    pem = tmp_path / "x.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(ValueError, match="--tls-cert and --tls-key go together"):
        settings(tls_cert=pem)
    with pytest.raises(ValueError, match="--tls-client-ca needs TLS"):
        settings(tls_client_ca=pem)
