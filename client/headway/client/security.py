"""How a client proves who it is and trusts the server: a token, TLS, a client certificate.

Each option is taken from the caller, else from the environment, so an agent
deployed with `HEADWAY_TOKEN` (or `HEADWAY_TOKEN_FILE`) and `HEADWAY_CA` needs
no code change:

    HEADWAY_TOKEN       the bearer token
    HEADWAY_TOKEN_FILE  a file whose first line is the token (when HEADWAY_TOKEN is unset)
    HEADWAY_TLS=1       speak TLS, trusting the system's CAs (implied by any of the three below)
    HEADWAY_CA          PEM file of the CAs that signed the server's certificate
    HEADWAY_CERT        PEM client certificate, for mutual TLS
    HEADWAY_KEY         PEM private key of HEADWAY_CERT

On a TLS channel the token travels as call credentials composed with the
channel's; on a plaintext channel (a server on loopback) gRPC refuses call
credentials, so it travels as `authorization: Bearer …` metadata instead.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

TOKEN_ENV = "HEADWAY_TOKEN"
TOKEN_FILE_ENV = "HEADWAY_TOKEN_FILE"
TLS_ENV = "HEADWAY_TLS"
CA_ENV = "HEADWAY_CA"
CERT_ENV = "HEADWAY_CERT"
KEY_ENV = "HEADWAY_KEY"

PemSource = str | os.PathLike[str] | bytes
"""PEM data as bytes, or the path of a file holding it."""

_TRUE = {"1", "true", "yes", "on"}


def read_token_file(path: str | os.PathLike[str]) -> str:
    """The token in a file: its first line, without surrounding blanks."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as error:
        raise ValueError(f"cannot read the token file {path}: {error.strerror}") from error
    token = lines[0].strip() if lines else ""
    if not token:
        raise ValueError(f"the token file {path} is empty: its first line is the token")
    return token


def _pem(source: PemSource, what: str) -> bytes:
    if isinstance(source, bytes):
        return source
    try:
        return Path(source).read_bytes()
    except OSError as error:
        raise ValueError(f"cannot read the {what} {source}: {error.strerror}") from error


@dataclass(frozen=True)
class Security:
    """What a client sends and trusts, resolved from arguments and the environment."""

    token: str | None = None
    tls: bool = False
    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None

    @classmethod
    def resolve(
        cls,
        *,
        token: str | None = None,
        tls: bool | None = None,
        ca: PemSource | None = None,
        cert: PemSource | None = None,
        key: PemSource | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Security:
        """Arguments first, then the environment; `tls=False` turns TLS off whatever is set.

        Raises ValueError for a file that cannot be read, an empty token file, or a
        certificate without its key (or the other way round).
        """
        env = os.environ if environ is None else environ
        if token is None:
            token = env.get(TOKEN_ENV) or None
            if token is None and env.get(TOKEN_FILE_ENV):
                token = read_token_file(env[TOKEN_FILE_ENV])
        if tls is False:
            return cls(token=token)
        ca = ca if ca is not None else env.get(CA_ENV) or None
        cert = cert if cert is not None else env.get(CERT_ENV) or None
        key = key if key is not None else env.get(KEY_ENV) or None
        if (cert is None) != (key is None):
            raise ValueError("a client certificate needs its key: give both cert and key")
        if tls is None:
            tls = env.get(TLS_ENV, "").lower() in _TRUE or any(
                item is not None for item in (ca, cert, key)
            )
        if not tls:
            return cls(token=token)
        return cls(
            token=token,
            tls=True,
            ca=None if ca is None else _pem(ca, "CA certificate"),
            cert=None if cert is None else _pem(cert, "client certificate"),
            key=None if key is None else _pem(key, "client key"),
        )

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """The credentials of a TLS channel (with the token composed in), or None: plaintext."""
        if not self.tls:
            return None
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )
        if self.token is not None:
            credentials = grpc.composite_channel_credentials(
                credentials, grpc.access_token_call_credentials(self.token)
            )
        return credentials

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Metadata for every call: the token, on a plaintext channel only."""
        if self.token is None or self.tls:
            return ()
        return (("authorization", f"Bearer {self.token}"),)

    def open_channel(
        self, target: str, options: Sequence[tuple[str, Any]] = ()
    ) -> grpc.aio.Channel:
        credentials = self.channel_credentials()
        if credentials is None:
            return grpc.aio.insecure_channel(target, options=options)
        return grpc.aio.secure_channel(target, credentials, options=options)


__all__ = [
    "CA_ENV",
    "CERT_ENV",
    "KEY_ENV",
    "TLS_ENV",
    "TOKEN_ENV",
    "TOKEN_FILE_ENV",
    "PemSource",
    "Security",
    "read_token_file",
]
