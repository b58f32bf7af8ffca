"""Protected mode: a server reachable from the network must know who is calling.

Like Redis, the server refuses to listen beyond loopback when no authentication
is configured: with no token file, no JWT key and no client CA, every caller
would be the admin of the default tenant. `--insecure` overrides the refusal
(and the server logs a warning); loopback addresses need nothing, so a laptop
runs with no configuration at all.

Pure functions of the settings, checked before anything is bound.
"""

from __future__ import annotations

import ipaddress

from headway.server.config import Settings


class ExposureError(ValueError):
    """The server would be reachable from the network by anyone, as admin."""


def host_of(address: str) -> str:
    """The host part of a gRPC listening address: `host:port`, `[v6]:port` or `:port`."""
    if address.startswith("["):
        return address[1:].partition("]")[0]
    host, colon, port = address.rpartition(":")
    if not colon or not port.isdigit():
        return address  # no port: the whole address names the host
    return host


def is_loopback(address: str) -> bool:
    """True when only this machine can connect: 127.0.0.0/8, ::1, localhost or a Unix socket."""
    if address.startswith(("unix:", "unix-abstract:")):
        return True
    host = host_of(address)
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name or an empty host (every interface): the network


def authentication_sources(settings: Settings) -> list[str]:
    """The ways callers must prove who they are, as configured; empty: nobody is asked."""
    sources = []
    if settings.auth_token_file is not None:
        sources.append(f"token file {settings.auth_token_file}")
    jwt = (
        settings.auth_jwt_secret_file,
        settings.auth_jwt_public_key_file,
        settings.auth_jwt_jwks_file,
    )
    if any(path is not None for path in jwt):
        sources.append("JWT")
    if settings.tls_client_ca is not None:
        sources.append(f"client certificates signed by {settings.tls_client_ca}")
    return sources


def listening_addresses(settings: Settings) -> list[tuple[str, str]]:
    """Every address the server listens on, with the flag that sets it: gRPC, then HTTP."""
    addresses = [("--address", settings.address)]
    if settings.http_address:
        addresses.append(("--http-address", settings.http_address))
    return addresses


def _exposed(settings: Settings) -> list[tuple[str, str]]:
    return [(flag, a) for flag, a in listening_addresses(settings) if not is_loopback(a)]


def unprotected(settings: Settings) -> bool:
    """True when the server listens beyond loopback and asks nobody who they are."""
    return bool(_exposed(settings)) and not authentication_sources(settings)


def check_exposure(settings: Settings) -> str:
    """The server's protection mode, for the startup log; ExposureError if it must not start."""
    sources = authentication_sources(settings)
    exposed = _exposed(settings)
    where = "reachable from the network" if exposed else "loopback only"
    shown = ", ".join(address for _, address in listening_addresses(settings))
    if sources:
        return f"{where} ({shown}); authentication: {', '.join(sources)}"
    if not exposed:
        return (
            f"{where} ({shown}); no authentication: every caller is the admin of the default tenant"
        )
    if settings.insecure:
        return (
            f"UNPROTECTED: {where} ({shown}) with no authentication (--insecure): "
            "anyone who can connect is the admin of the default tenant"
        )
    flag, address = exposed[0]
    loopback = "127.0.0.1:50051" if flag == "--address" else "127.0.0.1:8080"
    raise ExposureError(
        f"refusing to listen on {address}: it is reachable from the network and no "
        "authentication is configured, so anyone could read, change and delete every task. "
        "Configure authentication (--auth-token-file, --auth-jwt-*, or mutual TLS with "
        f"--tls-client-ca), listen on loopback only ({flag} {loopback}), or, on a "
        "network you trust, pass --insecure"
    )


__all__ = [
    "ExposureError",
    "authentication_sources",
    "check_exposure",
    "is_loopback",
    "listening_addresses",
]
