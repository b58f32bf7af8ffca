"""The token file: which bearer tokens and client certificates are which principals.

One entry per line; blank lines and lines starting with `#` are ignored:

    sha256:<64 hex digits> <name> <tenant> <role>
    cert:<common name> <tenant> <role>

A `sha256:` line holds the SHA-256 of a bearer token, never the token itself,
so the file reveals no secret. A `cert:` line maps the subject common name of a
client certificate (mutual TLS) to a principal named after it. Tenant `*` with
role `admin` is the service operator's cross-tenant admin, refused unless the
server allows it (`auth_allow_cross_tenant_admin`).

A malformed file is refused as a whole, naming the line: at start the server
does not start; on a reload the previous table stays in force and the error is
logged. `TokenFile` notices a changed file (its size, mtime or inode) at most
once per second when it is used, or at once when `reload` is called (SIGHUP).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from headway.server.auth.principal import Role

logger = logging.getLogger(__name__)

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")
NAME_RULE = "1 to 128 letters, digits, '.', '_', '@' or '-', starting with a letter or digit"
ANY_TENANT = "*"
TOKEN_PREFIX = "hw_"
_DIGEST = re.compile(r"[0-9a-f]{64}")
ROLES = ", ".join(role.value for role in Role)


class TokenFileError(ValueError):
    """The token file cannot be used; the message names the file and the line."""


@dataclass(frozen=True, slots=True)
class Entry:
    """What one line of the token file grants."""

    name: str
    tenant: str  # ANY_TENANT for the cross-tenant admin
    role: Role

    @property
    def cross_tenant(self) -> bool:
        return self.tenant == ANY_TENANT


@dataclass(frozen=True, slots=True)
class TokenTable:
    """The parsed file: token digests and certificate names to entries."""

    tokens: Mapping[str, Entry] = field(default_factory=dict)
    certificates: Mapping[str, Entry] = field(default_factory=dict)

    def describe(self) -> str:
        text = f"{len(self.tokens)} token{'' if len(self.tokens) == 1 else 's'}"
        if self.certificates:
            count = len(self.certificates)
            text += f", {count} certificate{'' if count == 1 else 's'}"
        return text


def hash_secret(secret: str) -> str:
    """The hex SHA-256 of a bearer token, as the token file stores it.

    A presented token may hold anything a header or a JSON string can carry,
    lone surrogates included; `surrogatepass` encodes every such string, so
    hostile bytes are just an unknown token, never an error.
    """
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def generate_secret() -> str:
    """A new bearer token: 256 random bits, prefixed so that it is recognisable."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def check_entry(name: str, tenant: str, role: str, *, allow_cross_tenant: bool) -> Entry:
    """The entry for these fields, or ValueError saying what is wrong with them."""
    if not NAME.fullmatch(name):
        raise ValueError(f"name {name[:40]!r} must be {NAME_RULE}")
    try:
        parsed_role = Role(role)
    except ValueError:
        raise ValueError(f"role {role[:40]!r} must be one of {ROLES}") from None
    if tenant == ANY_TENANT:
        if parsed_role is not Role.ADMIN:
            raise ValueError("tenant '*' (every tenant) is allowed only with role admin")
        if not allow_cross_tenant:
            raise ValueError(
                "tenant '*' makes a cross-tenant admin, which this server refuses "
                "unless --auth-allow-cross-tenant-admin is set"
            )
    elif not NAME.fullmatch(tenant):
        raise ValueError(f"tenant {tenant[:40]!r} must be {NAME_RULE}, or '*'")
    return Entry(name, tenant, parsed_role)


def parse(text: str, *, allow_cross_tenant: bool, source: str = "token file") -> TokenTable:
    """The table a token file's text describes; TokenFileError naming the first bad line."""
    tokens: dict[str, Entry] = {}
    certificates: dict[str, Entry] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            _parse_line(line, tokens, certificates, allow_cross_tenant)
        except ValueError as error:
            raise TokenFileError(f"{source}, line {number}: {error}") from None
    return TokenTable(tokens, certificates)


def _parse_line(
    line: str,
    tokens: dict[str, Entry],
    certificates: dict[str, Entry],
    allow_cross_tenant: bool,
) -> None:
    fields = line.split()
    kind, _, key = fields[0].partition(":")
    if kind == "sha256":
        if len(fields) != 4:
            raise ValueError("expected 'sha256:<64 hex digits> <name> <tenant> <role>'")
        if not _DIGEST.fullmatch(key):
            raise ValueError("the hash after 'sha256:' must be 64 lowercase hex digits")
        if key in tokens:
            raise ValueError("this token hash is already listed on an earlier line")
        tokens[key] = check_entry(*fields[1:], allow_cross_tenant=allow_cross_tenant)
    elif kind == "cert":
        if len(fields) != 3:
            raise ValueError("expected 'cert:<common name> <tenant> <role>'")
        if key in certificates:
            raise ValueError(f"certificate {key!r} is already listed on an earlier line")
        certificates[key] = check_entry(key, *fields[1:], allow_cross_tenant=allow_cross_tenant)
    else:
        raise ValueError("a line must start with 'sha256:' or 'cert:' (or '#' for a comment)")


def load(path: Path, *, allow_cross_tenant: bool) -> TokenTable:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise TokenFileError(f"cannot read token file {path}: {error}") from None
    return parse(text, allow_cross_tenant=allow_cross_tenant, source=f"token file {path}")


def _signature(path: Path) -> tuple[int, int, int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_ino, stat.st_dev, stat.st_size, stat.st_mtime_ns)


class TokenFile:
    """The token file in force, reloaded when it changes; the first load must succeed."""

    def __init__(
        self,
        path: Path,
        *,
        allow_cross_tenant: bool,
        check_interval: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self._allow_cross_tenant = allow_cross_tenant
        self._check_interval = check_interval
        self._monotonic = monotonic
        self._signature = _signature(path)
        self._table = load(path, allow_cross_tenant=allow_cross_tenant)
        self._checked = monotonic()

    @property
    def table(self) -> TokenTable:
        """The entries in force, after a reload if the file changed (checked once a second)."""
        now = self._monotonic()
        if now - self._checked >= self._check_interval:
            self._checked = now
            if _signature(self.path) != self._signature:
                self.reload()
        return self._table

    def reload(self) -> bool:
        """Read the file again now; on error keep the entries in force, log, and say False."""
        signature = _signature(self.path)
        try:
            table = load(self.path, allow_cross_tenant=self._allow_cross_tenant)
        except TokenFileError as error:
            # Remember the broken version, so it is not parsed (and logged) every second.
            self._signature = signature
            logger.error("%s; the previous entries stay in force", error)
            return False
        self._signature = signature
        self._table = table
        logger.info("reloaded token file %s (%s)", self.path, table.describe())
        return True

    def token(self, secret: str) -> Entry | None:
        # A dict lookup by the secret's hash: the lookup time says nothing about the secret.
        return self.table.tokens.get(hash_secret(secret))

    def certificate(self, common_name: str) -> Entry | None:
        return self.table.certificates.get(common_name)


# -- editing the file (`headway-server token create` and `token revoke`) ------------


def append_token(path: Path, name: str, tenant: str, role: str) -> str:
    """Add a new token for this principal to the file (created 0600) and return its secret."""
    check_entry(name, tenant, role, allow_cross_tenant=True)
    secret = generate_secret()
    line = f"sha256:{hash_secret(secret)} {name} {tenant} {role}\n"
    descriptor = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    with open(descriptor, "a+b") as file:
        file.seek(0, os.SEEK_END)
        if file.tell() > 0:
            file.seek(-1, os.SEEK_END)
            if file.read(1) != b"\n":
                line = "\n" + line
        file.write(line.encode())
        file.flush()
        os.fsync(file.fileno())
    return secret


def remove_name(path: Path, name: str) -> int:
    """Remove every line of the file for `name` (tokens and certificate); how many were."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [line for line in lines if not _names(line, name)]
    removed = len(lines) - len(kept)
    if removed:
        # Replace the file at once, so that the server never reads half of it.
        mode = path.stat().st_mode & 0o777
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                file.writelines(kept)
                file.flush()
                os.fsync(file.fileno())
            os.chmod(temporary, mode)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    return removed


def _names(line: str, name: str) -> bool:
    fields = line.split()
    if not fields or fields[0].startswith("#"):
        return False
    if fields[0].startswith("sha256:"):
        return len(fields) > 1 and fields[1] == name
    return fields[0] == f"cert:{name}"
