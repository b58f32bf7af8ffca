"""Opaque page tokens (AIP-158) bound to the query that issued them.

A token carries the position after which the next page starts and a digest of
the query, so a token replayed with other filters is refused instead of
silently returning the wrong page.
"""

from __future__ import annotations

import base64
import hashlib
import json

from google.protobuf.message import Message

from headway.server.errors import FieldViolation, HeadwayError, invalid_argument

# Tokens this server issues are well under this; longer ones are refused unread.
MAX_TOKEN_LENGTH = 512
# Positions are revisions and indexes: never negative, and stored as SQLite's
# int64. An edited token with anything else must not reach a query.
MAX_POSITION = 2**63 - 1


def query_digest(*parts: Message | str) -> str:
    digest = hashlib.blake2b(digest_size=8)
    for part in parts:
        data = (
            part.encode() if isinstance(part, str) else part.SerializeToString(deterministic=True)
        )
        digest.update(len(data).to_bytes(4, "big") + data)
    return digest.hexdigest()


def encode(position: list[int], digest: str) -> str:
    payload = json.dumps({"p": position, "q": digest}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


def decode(token: str, digest: str, width: int) -> list[int] | None:
    """The position in `token`, None for the first page; INVALID_ARGUMENT if it is not ours."""
    if not token:
        return None
    if len(token) > MAX_TOKEN_LENGTH:
        raise _invalid()
    try:
        padded = token + "=" * (-len(token) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode()))
        position = payload["p"]
        valid = (
            payload["q"] == digest
            and isinstance(position, list)
            and len(position) == width
            and all(_is_position(value) for value in position)
        )
    except (ValueError, KeyError, TypeError, RecursionError):
        valid = False
    if not valid:
        raise _invalid()
    return list(position)


def _is_position(value: object) -> bool:
    # bool is an int to Python, but `true` is no position this server wrote.
    return type(value) is int and 0 <= value <= MAX_POSITION


def _invalid() -> HeadwayError:
    return invalid_argument(
        [FieldViolation("page_token", "is not a token this query issued")],
        reason="INVALID_PAGE_TOKEN",
    )
