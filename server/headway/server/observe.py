"""What every call leaves behind for operators: its request id in the logs, its metrics.

Each TaskService call runs inside `observed` (wrapped around the error guard
in `service.handlers`): it takes the caller's `x-request-id` metadata, or makes
one up, and keeps it in a context variable for the call's log lines
(`JsonFormatter` writes it as `request_id`); when the call ends, however it
ends, its method, status code and duration go to the `CallRecorder` (the
Prometheus metrics), streaming calls included.

`JsonFormatter` writes one JSON object per line (`--log-format json`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Protocol

import grpc

REQUEST_ID_HEADER = "x-request-id"
# Longer ids are cut: a log line should not carry whatever a caller sends.
MAX_REQUEST_ID = 128

request_id: ContextVar[str | None] = ContextVar("headway_request_id", default=None)
"""The id of the call the current task serves, if it serves one."""

_CODES = {code.value[0]: code.name for code in grpc.StatusCode}


class CallRecorder(Protocol):
    """Where a finished call goes (see metrics.Metrics)."""

    def rpc_finished(self, method: str, code: str, seconds: float) -> None: ...


Handler = Callable[[Any, Any], Awaitable[Any]]


def incoming_request_id(context: Any) -> str:
    """The caller's `x-request-id`, if it sent one, else a fresh one (uuid4, hex)."""
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_HEADER and isinstance(value, str) and value:
            return value[:MAX_REQUEST_ID]
    return uuid.uuid4().hex


def status_name(code: object) -> str:
    """A status code's name (OK, NOT_FOUND, ...), whether gRPC gives an enum or a number."""
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):
        return _CODES.get(code, "UNKNOWN")
    return "OK" if code is None else "UNKNOWN"


def observed(method: str, handler: Handler, recorder: CallRecorder | None) -> Handler:
    """`handler` with its call's request id bound and, with a recorder, its outcome recorded."""

    async def call(request: Any, context: Any) -> Any:
        token = request_id.set(incoming_request_id(context))
        started = time.perf_counter()
        code = "OK"
        try:
            return await handler(request, context)
        except grpc.aio.AbortError:
            code = status_name(context.code())
            raise
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except BaseException:
            code = "UNKNOWN"
            raise
        finally:
            if recorder is not None:
                recorder.rpc_finished(method, code, time.perf_counter() - started)
            request_id.reset(token)

    call.__name__ = method
    return call


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        current = request_id.get()
        if current is not None:
            entry["request_id"] = current
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(level: str, log_format: str) -> None:
    """The root logger at `level`, writing text lines or JSON lines to stderr."""
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler])
