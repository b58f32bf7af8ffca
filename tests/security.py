"""Real certificates (made with trustme) and small authenticators, for the TLS and auth tests."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import trustme

from headway.server.auth.credentials import Credentials, unauthenticated
from headway.server.auth.principal import Principal, Role

CLIENT_NAME = "agent-7"


@dataclass(frozen=True)
class Certificates:
    """PEM files in one folder: a CA, a server certificate it signed, and client certificates."""

    folder: Path
    ca: Path  # signed the server's certificate and the good client's
    server_cert: Path
    server_key: Path
    client_cert: Path  # CN = CLIENT_NAME, signed by `ca`
    client_key: Path
    other_ca: Path  # a CA nobody here trusts
    stranger_cert: Path  # CN = CLIENT_NAME too, but signed by `other_ca`
    stranger_key: Path


def make_certificates(folder: Path) -> Certificates:
    folder.mkdir(parents=True, exist_ok=True)
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1", "::1")
    client = ca.issue_cert(f"{CLIENT_NAME}.clients.test", common_name=CLIENT_NAME)
    stranger = other.issue_cert(f"{CLIENT_NAME}.clients.test", common_name=CLIENT_NAME)
    paths = {
        "ca": folder / "ca.pem",
        "server_cert": folder / "server.pem",
        "server_key": folder / "server-key.pem",
        "client_cert": folder / "client.pem",
        "client_key": folder / "client-key.pem",
        "other_ca": folder / "other-ca.pem",
        "stranger_cert": folder / "stranger.pem",
        "stranger_key": folder / "stranger-key.pem",
    }
    ca.cert_pem.write_to_path(paths["ca"])
    other.cert_pem.write_to_path(paths["other_ca"])
    for name, issued in (("server", server), ("client", client), ("stranger", stranger)):
        chain = paths[f"{name}_cert"]
        chain.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
        issued.private_key_pem.write_to_path(paths[f"{name}_key"])
    return Certificates(folder, **paths)


@dataclass
class RecordingAuthenticator:
    """Knows a few bearer tokens and certificate names; records every call it sees.

    A known client certificate (its common name in `peers`) or a known token
    (`tokens`) makes a principal of the default tenant with that role; a call
    with neither is TOKEN_MISSING, one with an unknown token TOKEN_INVALID.
    """

    tokens: Mapping[str, Role] = field(default_factory=dict)
    peers: Mapping[str, Role] = field(default_factory=dict)
    seen: list[Credentials] = field(default_factory=list)

    def authenticate(self, credentials: Credentials) -> Principal:
        self.seen.append(credentials)
        if credentials.peer is not None and credentials.peer in self.peers:
            return Principal(credentials.peer, "default", self.peers[credentials.peer])
        if credentials.authorization is None:
            raise unauthenticated("TOKEN_MISSING", "this server needs a bearer token")
        scheme, _, token = credentials.authorization.partition(" ")
        if scheme != "Bearer" or token not in self.tokens:
            raise unauthenticated("TOKEN_INVALID", "the token is not valid")
        return Principal(f"token:{token[:4]}", "default", self.tokens[token])

    @property
    def calls(self) -> int:
        return len(self.seen)
