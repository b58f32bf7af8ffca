"""A server loads the token libraries and aiohttp only when it is configured to use them.

PyJWT with cryptography (authentication) and aiohttp (the HTTP gateway) cost
about 10 MiB of memory each once imported. Each case runs in a fresh
interpreter, because this test process has long imported them all.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from headway.server.auth.tokens import append_token

OPTIONAL = ("jwt", "cryptography", "aiohttp")

# Starts a real server with the given settings, serves one health check, stops,
# and prints which of the optional libraries the interpreter has loaded.
_SCRIPT = """
import asyncio, json, sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from headway.server.app import create_server
from headway.server.config import Settings


async def main() -> None:
    settings = Settings(**json.loads(sys.argv[1]))
    running = await create_server(settings)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    await running.stop(0)
    print(json.dumps(sorted({name.split(".")[0] for name in sys.modules} & set(sys.argv[2:]))))


asyncio.run(main())
"""


def _loaded_after_serving(tmp_path: Path, **settings: str) -> list[str]:
    base = {
        "address": "127.0.0.1:0",
        "http_address": "",
        "metrics_address": "127.0.0.1:0",
        "database": str(tmp_path / "headway.db"),
    }
    finished = subprocess.run(
        [sys.executable, "-c", _SCRIPT, json.dumps({**base, **settings}), *OPTIONAL],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    loaded: list[str] = json.loads(finished.stdout.splitlines()[-1])
    return loaded


def test_a_server_without_authentication_or_gateway_imports_none_of_them(
    tmp_path: Path,
) -> None:
    assert _loaded_after_serving(tmp_path) == []


def test_a_server_with_a_token_file_imports_the_token_libraries(tmp_path: Path) -> None:
    token_file = tmp_path / "tokens"
    append_token(token_file, "bot", "acme", "agent")
    loaded = _loaded_after_serving(tmp_path, auth_token_file=str(token_file))
    assert loaded == ["cryptography", "jwt"]


def test_a_server_with_the_gateway_imports_aiohttp(tmp_path: Path) -> None:
    assert _loaded_after_serving(tmp_path, http_address="127.0.0.1:0") == ["aiohttp"]
