"""Bearer tokens for the benchmark's principals, in the server's token-file format.

The benchmark acts as an operator would: it writes a token file (hashes only)
for the server and hands each load-generator process its own secret.
"""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path


def write_token_file(path: Path, principals: list[tuple[str, str, str]]) -> dict[str, str]:
    """Write `sha256:<hash> name tenant role` lines; the secret of each principal, by name."""
    tokens: dict[str, str] = {}
    lines = []
    for name, tenant, role in principals:
        secret = "hw_" + secrets.token_urlsafe(32)
        tokens[name] = secret
        lines.append(f"sha256:{hashlib.sha256(secret.encode()).hexdigest()} {name} {tenant} {role}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return tokens


def bearer(token: str | None) -> tuple[tuple[str, str], ...] | None:
    """Call metadata carrying `token`, or None when the server needs no authentication."""
    return (("authorization", f"Bearer {token}"),) if token else None
