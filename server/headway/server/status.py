"""The one table from `HeadwayError` to a gRPC status.

Every error a client receives goes through `to_rpc_status`: a status code, the
message, a `google.rpc.ErrorInfo` (domain "headway.v1") and, for invalid
arguments, a `google.rpc.BadRequest` naming each offending field. Keeping this
apart from `errors` lets the domain and validation stay free of grpc.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from headway.server.errors import HeadwayError, Kind

ERROR_DOMAIN = "headway.v1"


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
