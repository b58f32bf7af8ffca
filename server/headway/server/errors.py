"""Domain errors, and the one table that maps them to gRPC statuses.

The engine and the domain raise `HeadwayError`s that know nothing of gRPC;
the servicer turns them into a status with a `google.rpc.ErrorInfo` (and a
`google.rpc.BadRequest` for invalid arguments) in exactly one place,
`to_rpc_status`, so every error a client sees is shaped the same way.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

ERROR_DOMAIN = "headway.v1"


class Kind(enum.Enum):
    """The classes of failure a client can act on, one per gRPC status code we use."""

    INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT
    NOT_FOUND = grpc.StatusCode.NOT_FOUND
    ALREADY_EXISTS = grpc.StatusCode.ALREADY_EXISTS
    FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
    ABORTED = grpc.StatusCode.ABORTED
    OUT_OF_RANGE = grpc.StatusCode.OUT_OF_RANGE
    RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
    UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
    INTERNAL = grpc.StatusCode.INTERNAL


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
    violations: Iterable[FieldViolation], reason: str = "FIELD_VIOLATION"
) -> HeadwayError:
    """An INVALID_ARGUMENT naming every offending field at once, so one round trip fixes all."""
    found = tuple(violations)
    summary = "; ".join(f"{v.field}: {v.description}" for v in found[:5])
    if len(found) > 5:
        summary += f"; and {len(found) - 5} more"
    return HeadwayError(
        Kind.INVALID_ARGUMENT, reason, f"invalid request: {summary}", violations=found
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


def to_rpc_status(error: HeadwayError) -> grpc.Status:
    """The status a client receives for `error`: code, message, ErrorInfo, BadRequest."""
    info = error_details_pb2.ErrorInfo(
        reason=error.reason, domain=ERROR_DOMAIN, metadata=dict(error.metadata)
    )
    details = [_pack(info)]
    if error.violations:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in error.violations
            ]
        )
        details.append(_pack(bad_request))
    status = status_pb2.Status(
        code=_CODE_NUMBERS[error.kind], message=error.message, details=details
    )
    return rpc_status.to_status(status)


def _pack(message: error_details_pb2.ErrorInfo | error_details_pb2.BadRequest) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


_CODE_NUMBERS: dict[Kind, int] = {
    Kind.INVALID_ARGUMENT: code_pb2.INVALID_ARGUMENT,
    Kind.NOT_FOUND: code_pb2.NOT_FOUND,
    Kind.ALREADY_EXISTS: code_pb2.ALREADY_EXISTS,
    Kind.FAILED_PRECONDITION: code_pb2.FAILED_PRECONDITION,
    Kind.ABORTED: code_pb2.ABORTED,
    Kind.OUT_OF_RANGE: code_pb2.OUT_OF_RANGE,
    Kind.RESOURCE_EXHAUSTED: code_pb2.RESOURCE_EXHAUSTED,
    Kind.UNAVAILABLE: code_pb2.UNAVAILABLE,
    Kind.INTERNAL: code_pb2.INTERNAL,
}
