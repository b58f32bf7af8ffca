"""`--log-format json`: every line the server logs is one JSON object.

The server runs as its own process, logging at DEBUG with authentication on,
so a refused call logs inside the call and its line carries the request id:
the caller's `x-request-id`, or one the server made up.
"""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from headway.v1 import task_service_pb2, task_service_pb2_grpc
from tests.processes import ServerProcess


async def test_every_log_line_is_json_with_the_request_id(tmp_path: Path) -> None:
    secret = tmp_path / "jwt-secret"
    secret.write_bytes(b"s" * 32)
    server = ServerProcess(
        tmp_path / "json.db",
        "--log-format",
        "json",
        "--log-level",
        "DEBUG",
        "--auth-jwt-secret-file",
        str(secret),
    ).start()
    try:
        async with grpc.aio.insecure_channel(server.target) as channel:
            stub = task_service_pb2_grpc.TaskServiceStub(channel)
            request = task_service_pb2.GetTaskRequest(task_id="t")
            with pytest.raises(grpc.aio.AioRpcError) as given:
                await stub.GetTask(request, metadata=[("x-request-id", "req-from-caller")])
            assert given.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.aio.AioRpcError) as made_up:
                await stub.GetTask(request)
            assert made_up.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        assert server.stop() == 0
    lines = [line for line in server.log.read_text().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line, or this fails
    assert entries
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= entry.keys(), entry
    assert any("headway serving on port" in e["message"] for e in entries)
    refused = [e for e in entries if e["message"].startswith("authentication refused")]
    assert len(refused) == 2, entries
    assert refused[0]["request_id"] == "req-from-caller"
    assert len(refused[1]["request_id"]) == 32  # uuid4, hex
    assert refused[1]["level"] == "DEBUG"
    assert refused[1]["logger"] == "headway.server.auth.authenticator"
    # Lines outside any call have no request id.
    assert all("request_id" not in e for e in entries if "serving on port" in e["message"])
