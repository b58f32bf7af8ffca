"""Exceptions raised by the client, one class per gRPC status code.

Every server error carries a `google.rpc.ErrorInfo` reason and, for invalid
arguments, field violations; they are parsed once here so callers can write
`except NotFoundError as e: if e.reason == "STEP_NOT_FOUND": ...`.

`TaskCancelled` is the one exception here that is not a failed call: it tells an
agent's code that a viewer asked to cancel its task, so the code can stop.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, cast

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

if TYPE_CHECKING:
    from headway.client.models import CancelRequest

_DETAILS_KEY = "grpc-status-details-bin"


class HeadwayError(Exception):
    """A failed call. `reason` and `metadata` come from the server's ErrorInfo."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
        field_violations: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.reason = reason
        self.metadata = dict(metadata or {})
        self.field_violations = dict(field_violations or {})

    def __str__(self) -> str:
        reason = f" {self.reason}" if self.reason else ""
        return f"{self.code.name}{reason}: {self.message}"


class InvalidArgumentError(HeadwayError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFoundError(HeadwayError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExistsError(HeadwayError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPreconditionError(HeadwayError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class AbortedError(HeadwayError):
    code = grpc.StatusCode.ABORTED


class OutOfRangeError(HeadwayError):
    code = grpc.StatusCode.OUT_OF_RANGE


class ResourceExhaustedError(HeadwayError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class UnauthenticatedError(HeadwayError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDeniedError(HeadwayError):
    code = grpc.StatusCode.PERMISSION_DENIED


class UnavailableError(HeadwayError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceededError(HeadwayError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class CancelledError(HeadwayError):
    code = grpc.StatusCode.CANCELLED


class InternalError(HeadwayError):
    code = grpc.StatusCode.INTERNAL


class TaskCancelled(Exception):  # noqa: N818 - a signal to stop, not an error
    """A viewer asked to cancel the task: stop the work.

    Raised by an agent's next report once the server has recorded a cancel request
    (or cancelled the task at once, with `force`). The task's context manager
    catches it and confirms the cancellation; code that stops some other way can
    confirm with `TaskReporter.confirm_cancel()`.
    """

    def __init__(self, task_id: str, cancel_request: CancelRequest | None = None) -> None:
        self.task_id = task_id
        self.cancel_request = cancel_request
        self.reason = cancel_request.reason if cancel_request else ""
        self.requested_by = cancel_request.requested_by if cancel_request else ""
        by = f" by {self.requested_by}" if self.requested_by else ""
        why = f": {self.reason}" if self.reason else ""
        super().__init__(f"task {task_id!r} was cancelled{by}{why}")


_BY_CODE: dict[grpc.StatusCode, type[HeadwayError]] = {
    cls.code: cls
    for cls in (
        InvalidArgumentError,
        NotFoundError,
        AlreadyExistsError,
        FailedPreconditionError,
        AbortedError,
        OutOfRangeError,
        ResourceExhaustedError,
        UnauthenticatedError,
        PermissionDeniedError,
        UnavailableError,
        DeadlineExceededError,
        CancelledError,
        InternalError,
    )
}


def from_rpc_error(error: grpc.aio.AioRpcError) -> HeadwayError:
    """The typed exception for a failed call, with ErrorInfo and BadRequest unpacked."""
    code = error.code()
    message = error.details() or ""
    reason = ""
    metadata: dict[str, str] = {}
    violations: dict[str, str] = {}
    for detail in _status_details(error):
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
            metadata = dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations = {v.field: v.description for v in bad.field_violations}
    cls = _BY_CODE.get(code, HeadwayError)
    return cls(message, code=code, reason=reason, metadata=metadata, field_violations=violations)


def _status_details(error: grpc.aio.AioRpcError) -> list[any_pb2.Any]:
    """The `google.rpc.Status` details the server attached, from the trailing metadata."""
    trailing = cast("Iterable[tuple[str, str | bytes]]", error.trailing_metadata() or ())
    for key, value in trailing:
        if key == _DETAILS_KEY and isinstance(value, bytes):
            return list(status_pb2.Status.FromString(value).details)
    return []
