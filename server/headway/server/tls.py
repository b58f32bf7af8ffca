"""TLS on the gRPC port: the server's credentials from its PEM files, and how to describe them.

With `tls_cert` and `tls_key` the port speaks TLS; with `tls_client_ca` too, every
client must also present a certificate signed by one of those CAs (mutual TLS),
and the certificate's common name reaches the authenticator as the call's peer.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from headway.server.config import Settings


class TlsConfigError(ValueError):
    """A TLS file the server cannot use, said in the operator's terms."""


def _pem(path: Path, what: str, marker: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise TlsConfigError(f"cannot read the {what} {path}: {error.strerror}") from error
    if b"-----BEGIN " not in data or marker.encode() not in data:
        raise TlsConfigError(f"the {what} {path} is not PEM (no '-----BEGIN …{marker}' block)")
    return data


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """The port's credentials, or None for plaintext; TlsConfigError for unusable files."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    chain = _pem(settings.tls_cert, "TLS certificate (--tls-cert)", "CERTIFICATE-----")
    key = _pem(settings.tls_key, "TLS private key (--tls-key)", "PRIVATE KEY-----")
    client_ca = None
    if settings.tls_client_ca is not None:
        client_ca = _pem(settings.tls_client_ca, "client CA (--tls-client-ca)", "CERTIFICATE-----")
    return grpc.ssl_server_credentials(
        [(key, chain)],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def describe_transport(settings: Settings) -> str:
    """What the port speaks, for the startup log."""
    if settings.tls_cert is None:
        return "plaintext"
    if settings.tls_client_ca is None:
        return f"TLS (certificate {settings.tls_cert})"
    return (
        f"mutual TLS (certificate {settings.tls_cert}, client CA {settings.tls_client_ca}: "
        "client certificates required)"
    )


__all__ = ["TlsConfigError", "describe_transport", "server_credentials"]
