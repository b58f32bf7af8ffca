"""Server reflection: both protocol versions, with the protos' comments.

grpcurl is the real binary from the venv. grpcurl v1.8.6 speaks only
v1alpha, so the v1 client here is a plain gRPC call on the v1 method with the
v1alpha message classes, which are identical on the wire.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

from headway.server.app import create_server
from headway.server.config import Settings
from tests.processes import ServerProcess

GRPCURL = Path(sys.executable).parent / "grpcurl"
# Sentences from the protos' comments, which the generated _pb2 modules do not carry.
SUBSCRIBE_REQUEST_COMMENT = "Resume after this revision: the stream delivers every matching change"
SUBSCRIBE_METHOD_COMMENT = "Streams the tasks matching a filter and every change to them."
COMMIT_TIME_COMMENT = "Unset for `snapshot` events"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    running = ServerProcess(tmp_path_factory.mktemp("reflection") / "headway.db").start()
    try:
        yield running
    finally:
        assert running.stop() == 0, running.log.read_text()


def grpcurl(server: ServerProcess, *args: str) -> str:
    finished = subprocess.run(
        [str(GRPCURL), "-plaintext", server.target, *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert finished.returncode == 0, finished.stderr
    return finished.stdout


@pytest.mark.grpcurl
def test_grpcurl_describe_shows_the_comments_of_a_message(server: ServerProcess) -> None:
    described = grpcurl(server, "describe", "headway.v1.SubscribeRequest")
    assert f"// {SUBSCRIBE_REQUEST_COMMENT}" in described
    assert "optional int64 start_revision = 2;" in described
    assert COMMIT_TIME_COMMENT in grpcurl(server, "describe", "headway.v1.Event")


@pytest.mark.grpcurl
def test_grpcurl_describes_a_method_with_its_comment(server: ServerProcess) -> None:
    described = grpcurl(server, "describe", "headway.v1.TaskService.Subscribe")
    assert "headway.v1.TaskService.Subscribe is a method" in described
    assert f"// {SUBSCRIBE_METHOD_COMMENT}" in described
    assert "returns ( stream .headway.v1.SubscribeResponse )" in described


@pytest.mark.grpcurl
def test_grpcurl_lists_and_describes_every_service(server: ServerProcess) -> None:
    services = grpcurl(server, "list").split()
    assert services == [
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "headway.v1.TaskService",
    ]
    assert "service TaskService {" in grpcurl(server, "describe")


class ReflectionClient:
    """Raw ServerReflectionInfo calls on one protocol version."""

    def __init__(self, channel: grpc.aio.Channel, version: str) -> None:
        self.call = channel.stream_stream(
            f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )

    async def ask(self, **request: Any) -> Any:
        responses = [
            response
            async for response in self.call(
                iter([reflection_pb2.ServerReflectionRequest(**request)]), timeout=10
            )
        ]
        assert len(responses) == 1
        return responses[0]

    async def files(self, symbol: str) -> dict[str, descriptor_pb2.FileDescriptorProto]:
        response = await self.ask(file_containing_symbol=symbol)
        assert response.WhichOneof("message_response") == "file_descriptor_response", response
        protos = [
            descriptor_pb2.FileDescriptorProto.FromString(data)
            for data in response.file_descriptor_response.file_descriptor_proto
        ]
        return {proto.name: proto for proto in protos}


def comments(file: descriptor_pb2.FileDescriptorProto) -> str:
    return "\n".join(location.leading_comments for location in file.source_code_info.location)


@pytest.fixture
async def channel(server: ServerProcess) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(server.target) as opened:
        yield opened


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
async def test_a_client_of_either_version_gets_documented_files(
    channel: grpc.aio.Channel, version: str
) -> None:
    client = ReflectionClient(channel, version)

    listed = await client.ask(list_services="")
    names = [service.name for service in listed.list_services_response.service]
    assert "headway.v1.TaskService" in names

    files = await client.files("headway.v1.SubscribeRequest")
    service_file = files["headway/v1/task_service.proto"]
    assert SUBSCRIBE_REQUEST_COMMENT in comments(service_file)
    # Its imports come along, so a client can build the whole file.
    assert {"headway/v1/task.proto", "google/protobuf/duration.proto"} <= set(files)
    assert "SubscribeRequest" in [message.name for message in service_file.message_type]

    by_method = await client.files("headway.v1.TaskService.Subscribe")
    assert SUBSCRIBE_METHOD_COMMENT in comments(by_method["headway/v1/task_service.proto"])

    by_name = await client.ask(file_by_filename="headway/v1/event.proto")
    event_file = descriptor_pb2.FileDescriptorProto.FromString(
        by_name.file_descriptor_response.file_descriptor_proto[0]
    )
    assert COMMIT_TIME_COMMENT in comments(event_file)

    missing = await client.ask(file_containing_symbol="headway.v1.NoSuchThing")
    assert missing.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


async def test_an_open_reflection_stream_does_not_hold_up_shutdown(
    make_settings: Callable[..., Settings],
) -> None:
    running = await create_server(make_settings(shutdown_grace=timedelta(seconds=5)))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as opened:
        client = ReflectionClient(opened, "v1")
        requests: asyncio.Queue[Any] = asyncio.Queue()
        await requests.put(reflection_pb2.ServerReflectionRequest(list_services=""))

        async def request_stream() -> AsyncIterator[Any]:
            while True:
                yield await requests.get()

        call = client.call(request_stream())
        assert (await call.read()).list_services_response.service  # the stream is open
        started = time.monotonic()
        await running.stop()
        took = time.monotonic() - started
        assert took < 2.0, f"shutdown took {took:.2f}s with a reflection stream open"
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await call.read()
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
