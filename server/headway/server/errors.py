"""Domain errors: what went wrong, in terms a client can act on, without gRPC.

The engine, the domain and validation raise `HeadwayError`s; `status.py` turns
them into gRPC statuses in exactly one place, so every error a client sees is
shaped the same way and the pure modules need not import grpc.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


class Kind(enum.Enum):
    """The classes of failure a client can act on, each named after the gRPC code it maps to."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    ABORTED = "ABORTED"
    OUT_OF_RANGE = "OUT_OF_RANGE"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAVAILABLE = "UNAVAILABLE"
    INTERNAL = "INTERNAL"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One invalid field, named by its path in the request (`steps[2].key`)."""

    field: str
    description: str


@dataclass(slots=True)
class HeadwayError(Exception):
    """A failure with a status class, a machine-readable reason and a human message."""

    kind: Kind
    reason: str
    message: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    violations: tuple[FieldViolation, ...] = ()

    def __str__(self) -> str:
        return f"{self.kind.name} {self.reason}: {self.message}"


def invalid_argument(
    violations: Iterable[FieldViolation],
    reason: str = "FIELD_VIOLATION",
    metadata: Mapping[str, str] | None = None,
) -> HeadwayError:
    """An INVALID_ARGUMENT naming every offending field at once, so one round trip fixes all."""
    found = tuple(violations)
    summary = "; ".join(f"{v.field}: {v.description}" for v in found[:5])
    if len(found) > 5:
        summary += f"; and {len(found) - 5} more"
    return HeadwayError(
        Kind.INVALID_ARGUMENT,
        reason,
        f"invalid request: {summary}",
        metadata or {},
        violations=found,
    )


def task_not_found(task_id: str) -> HeadwayError:
    # The same answer for "absent" and "another tenant's", so existence never leaks.
    return HeadwayError(
        Kind.NOT_FOUND, "TASK_NOT_FOUND", f"task {task_id!r} not found", {"task_id": task_id}
    )


def task_at_rest(task_id: str, state_name: str) -> HeadwayError:
    return HeadwayError(
        Kind.FAILED_PRECONDITION,
        "TASK_AT_REST",
        f"task {task_id!r} is {state_name}, a resting state; it can no longer change",
        {"task_id": task_id, "state": state_name},
    )


def malformed_request(message_type: str) -> HeadwayError:
    """The request's bytes do not parse (invalid UTF-8, a broken tag): nothing to name a field by.

    The parser's own words stay out of the answer: they describe protobuf
    internals, not something the client can fix beyond "send a valid message".
    """
    return HeadwayError(
        Kind.INVALID_ARGUMENT,
        "MALFORMED_REQUEST",
        f"malformed request: the bytes are not a valid {message_type}",
        {"message_type": message_type},
    )


def internal_error() -> HeadwayError:
    """A bug on the server. Its details go to the log, never to the client."""
    return HeadwayError(Kind.INTERNAL, "INTERNAL", "internal error; the server logged the cause")
