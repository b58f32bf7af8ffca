"""`HeadwayError` to an HTTP answer: a status code and a JSON `google.rpc.Status`.

The body is the same Status a gRPC client finds in its trailers (built by
`status.to_status`), in proto3 JSON: `code`, `message` and `details`, each
detail with its `@type` (`google.rpc.ErrorInfo` with the reason, and for
invalid arguments `google.rpc.BadRequest` with the field violations).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from google.protobuf import json_format

from headway.server.errors import HeadwayError, Kind
from headway.server.status import to_status

HTTP_STATUS: dict[Kind, int] = {
    Kind.INVALID_ARGUMENT: 400,
    Kind.OUT_OF_RANGE: 400,
    Kind.UNAUTHENTICATED: 401,
    Kind.PERMISSION_DENIED: 403,
    Kind.NOT_FOUND: 404,
    Kind.ALREADY_EXISTS: 409,
    Kind.ABORTED: 409,
    Kind.FAILED_PRECONDITION: 412,
    Kind.RESOURCE_EXHAUSTED: 429,
    Kind.INTERNAL: 500,
    Kind.UNAVAILABLE: 503,
}


def status_json(error: HeadwayError) -> dict[str, Any]:
    """The error's google.rpc.Status as a JSON object."""
    return json_format.MessageToDict(to_status(error))


def dumps(data: object) -> str:
    """Compact JSON on one line (also what each Server-Sent Event's `data:` holds)."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def json_response(data: object, status: int = 200) -> web.Response:
    """A JSON answer on one line, ending with a newline (kind to terminals and `curl`)."""
    return web.Response(text=dumps(data) + "\n", status=status, content_type="application/json")


def error_response(error: HeadwayError, http_status: int | None = None) -> web.Response:
    """The answer to a refused request; `http_status` overrides the one of its kind (405, 413)."""
    response = json_response(status_json(error), http_status or HTTP_STATUS[error.kind])
    if error.kind is Kind.UNAUTHENTICATED:
        response.headers["WWW-Authenticate"] = 'Bearer realm="headway"'
    retry_ms = error.metadata.get("retry_after_ms")
    if retry_ms is not None and retry_ms.isdigit():
        response.headers["Retry-After"] = str(max(1, -(-int(retry_ms) // 1000)))
    return response


def malformed(message_type: str, detail: str) -> HeadwayError:
    """A body or query that is not JSON of `message_type`: what the parser found, clipped."""
    return HeadwayError(
        Kind.INVALID_ARGUMENT,
        "MALFORMED_REQUEST",
        f"malformed request: not a valid {message_type} in JSON: {detail[:300]}",
        {"message_type": message_type},
    )


def route_not_found(method: str, path: str) -> HeadwayError:
    return HeadwayError(
        Kind.NOT_FOUND, "ROUTE_NOT_FOUND", f"no route {method} {path[:200]}", {"path": path[:200]}
    )


def method_not_allowed(method: str, path: str, allowed: list[str]) -> HeadwayError:
    return HeadwayError(
        Kind.INVALID_ARGUMENT,
        "METHOD_NOT_ALLOWED",
        f"{method} is not allowed on {path[:200]}; allowed: {', '.join(allowed)}",
        {"allowed": ", ".join(allowed)},
    )


def too_large(limit: int) -> HeadwayError:
    return HeadwayError(
        Kind.RESOURCE_EXHAUSTED,
        "MESSAGE_TOO_LARGE",
        f"the request body is larger than {limit} bytes, the largest message the server accepts",
        {"limit": str(limit)},
    )
