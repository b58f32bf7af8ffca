"""The one table from `HeadwayError` to a gRPC status.

Every error a client receives goes through `to_status` (gRPC: `to_rpc_status`): a status code, the
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

# The status travels in trailing metadata, which gRPC clients refuse beyond
# 16 KiB (and may refuse beyond 8 KiB): an error too large to deliver would
# reach the client as RESOURCE_EXHAUSTED with no reason at all. The message is
# percent-encoded (up to 3 bytes per byte) and the details base64-encoded
# (4 per 3), so these budgets keep the whole trailer near 5 KiB at most.
MAX_MESSAGE_BYTES = 512
MAX_DETAILS_BYTES = 3072
MAX_TEXT_BYTES = 200  # one field path, description or metadata value


def to_rpc_status(error: HeadwayError) -> grpc.Status:
    """The gRPC status a client receives for `error` (see `to_status`)."""
    return rpc_status.to_status(to_status(error))


def to_status(error: HeadwayError) -> status_pb2.Status:
    """`error` as a google.rpc.Status: code, message, ErrorInfo, BadRequest; for any transport.

    Hostile input can make any part long (a field path names a 5,000-character
    map key); every part is clipped, and violations beyond the budget are
    counted in the ErrorInfo metadata (`violations_omitted`) instead of sent.
    """
    metadata = {key: _clip(value) for key, value in error.metadata.items()}
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=metadata)
    budget = MAX_DETAILS_BYTES - info.ByteSize() - 64
    bad_request = error_details_pb2.BadRequest()
    for number, violation in enumerate(error.violations):
        entry = error_details_pb2.BadRequest.FieldViolation(
            field=_clip(violation.field), description=_clip(violation.description)
        )
        budget -= entry.ByteSize() + 4
        if budget < 0:
            info.metadata["violations_omitted"] = str(len(error.violations) - number)
            break
        bad_request.field_violations.append(entry)
    details = [_pack(info)]
    if bad_request.field_violations:
        details.append(_pack(bad_request))
    return status_pb2.Status(
        code=_CODE_NUMBERS[error.kind],
        message=_clip(error.message, MAX_MESSAGE_BYTES),
        details=details,
    )


def _clip(text: str, limit: int = MAX_TEXT_BYTES) -> str:
    """`text` cut to at most `limit` UTF-8 bytes (on a character boundary), marked if cut."""
    encoded = text.encode()
    if len(encoded) <= limit:
        return text
    return encoded[: limit - 3].decode(errors="ignore") + "…"


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
    Kind.UNAUTHENTICATED: code_pb2.UNAUTHENTICATED,
    Kind.PERMISSION_DENIED: code_pb2.PERMISSION_DENIED,
}
