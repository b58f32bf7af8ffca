"""The JSON log formatter and the request ids of calls."""

from __future__ import annotations

import json
import logging
import sys

import grpc

from headway.server.observe import JsonFormatter, request_id, status_name


def record(message: str, *, exc_info: bool = False) -> logging.LogRecord:
    info = sys.exc_info() if exc_info else None
    return logging.LogRecord("headway.test", logging.ERROR, __file__, 1, message, (), info)


def test_a_line_has_time_level_logger_and_message() -> None:
    entry = json.loads(JsonFormatter().format(record('héllo "quoted"\nnext')))
    assert entry["level"] == "ERROR"
    assert entry["logger"] == "headway.test"
    assert entry["message"] == 'héllo "quoted"\nnext'
    assert entry["time"].endswith("+00:00")
    assert "request_id" not in entry
    assert "exception" not in entry


def test_a_line_inside_a_call_has_its_request_id() -> None:
    token = request_id.set("abc123")
    try:
        entry = json.loads(JsonFormatter().format(record("inside")))
    finally:
        request_id.reset(token)
    assert entry["request_id"] == "abc123"


def test_an_exception_is_one_field_of_the_same_line() -> None:
    try:
        raise ValueError("broken")
    except ValueError:
        line = JsonFormatter().format(record("failed", exc_info=True))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["exception"].startswith("Traceback")
    assert "ValueError: broken" in entry["exception"]


def test_status_names() -> None:
    assert status_name(grpc.StatusCode.NOT_FOUND) == "NOT_FOUND"
    assert status_name(5) == "NOT_FOUND"
    assert status_name(None) == "OK"
