"""Server reflection, v1 and v1alpha, serving the protos with their comments.

Three things the stock `grpc_reflection` servicer does not do:

* It serves only `grpc.reflection.v1alpha`, so a client that speaks only
  `grpc.reflection.v1` gets UNIMPLEMENTED. No published package ships Python
  code for the v1 protos, but v1 is v1alpha under a new package name: the
  messages are identical on the wire. So one servicer, built on the v1alpha
  message classes, is registered under both service names.
* It builds each file from the generated `_pb2` modules, which carry no
  comments, so `grpcurl describe` showed no documentation. `make gen` writes
  the protos as a FileDescriptorSet with source info
  (`headway/v1/descriptor_set.binpb`); files found there are served from it.
* `grpcurl describe headway.v1.TaskService.Subscribe` asks for the file
  containing a *method* symbol; the C++-backed (upb) descriptor pool only
  knows messages, enums, services and fields by that lookup, so
  `MethodAwarePool` adds the method case.

Its streams also end at shutdown (`close`), so a tool that keeps a reflection
stream open does not hold the server for the whole grace period.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from importlib import resources
from typing import Any

import grpc
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection_pb2

V1 = "grpc.reflection.v1.ServerReflection"
V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"
DESCRIPTOR_SET = "descriptor_set.binpb"

Context = grpc.aio.ServicerContext[Any, Any]


class MethodAwarePool:
    """A descriptor pool whose symbol lookup also finds `package.Service.Method`."""

    def __init__(self, pool: descriptor_pool.DescriptorPool) -> None:
        self._pool = pool

    def FindFileContainingSymbol(self, symbol: str) -> descriptor.FileDescriptor:  # noqa: N802
        try:
            return self._pool.FindFileContainingSymbol(symbol)
        except KeyError:
            service_name, _, method_name = symbol.rpartition(".")
            try:
                service = self._pool.FindServiceByName(service_name)
            except KeyError:
                raise KeyError(symbol) from None
            if method_name not in service.methods_by_name:
                raise
            return service.file

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


def documented_files() -> dict[str, bytes]:
    """File name to serialized FileDescriptorProto, with comments, as `make gen` wrote them."""
    data = resources.files("headway.v1").joinpath(DESCRIPTOR_SET).read_bytes()
    found = descriptor_pb2.FileDescriptorSet.FromString(data)
    return {file.name: file.SerializeToString() for file in found.file}


def _error(request: Any, code: grpc.StatusCode, message: str) -> Any:
    return reflection_pb2.ServerReflectionResponse(
        error_response=reflection_pb2.ErrorResponse(
            error_code=code.value[0], error_message=message
        ),
        original_request=request,
    )


class ReflectionServicer:
    """ServerReflectionInfo for both protocol versions, from one pool and the documented files."""

    def __init__(
        self,
        service_names: Iterable[str],
        pool: descriptor_pool.DescriptorPool,
        documented: dict[str, bytes],
    ) -> None:
        self._service_names = tuple(sorted(service_names))
        self._pool = MethodAwarePool(pool)
        self._documented = documented
        self._closed = asyncio.Event()

    def close(self) -> None:
        """End every open stream with UNAVAILABLE, and any opened later, for shutdown."""
        self._closed.set()

    async def ServerReflectionInfo(  # noqa: N802 - the RPC's name
        self, requests: AsyncIterator[Any], context: Context
    ) -> AsyncIterator[Any]:
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            while True:
                reading = asyncio.ensure_future(anext(requests))
                await asyncio.wait((reading, closed), return_when=asyncio.FIRST_COMPLETED)
                if not reading.done():
                    reading.cancel()
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
                try:
                    request = reading.result()
                except StopAsyncIteration:
                    return
                yield self.answer(request)
        finally:
            closed.cancel()

    def answer(self, request: Any) -> Any:
        """The response to one reflection request."""
        which = request.WhichOneof("message_request")
        try:
            if which == "file_by_filename":
                return self._files(request, self._pool.FindFileByName(request.file_by_filename))
            if which == "file_containing_symbol":
                found = self._pool.FindFileContainingSymbol(request.file_containing_symbol)
                return self._files(request, found)
            if which == "file_containing_extension":
                asked = request.file_containing_extension
                message = self._pool.FindMessageTypeByName(asked.containing_type)
                extension = self._pool.FindExtensionByNumber(message, asked.extension_number)
                return self._files(request, extension.file)
            if which == "all_extension_numbers_of_type":
                message = self._pool.FindMessageTypeByName(request.all_extension_numbers_of_type)
                numbers = sorted(e.number for e in self._pool.FindAllExtensions(message))
                return reflection_pb2.ServerReflectionResponse(
                    all_extension_numbers_response=reflection_pb2.ExtensionNumberResponse(
                        base_type_name=message.full_name, extension_number=numbers
                    ),
                    original_request=request,
                )
            if which == "list_services":
                return reflection_pb2.ServerReflectionResponse(
                    list_services_response=reflection_pb2.ListServiceResponse(
                        service=[
                            reflection_pb2.ServiceResponse(name=n) for n in self._service_names
                        ]
                    ),
                    original_request=request,
                )
        except KeyError:
            return _error(request, grpc.StatusCode.NOT_FOUND, "not found")
        return _error(request, grpc.StatusCode.INVALID_ARGUMENT, "no request set")

    def _files(self, request: Any, file: descriptor.FileDescriptor) -> Any:
        """`file` and everything it imports, with comments wherever the documented set has them."""
        seen: dict[str, bytes] = {}
        pending = [file]
        while pending:
            current = pending.pop()
            if current.name in seen:
                continue
            serialized = self._documented.get(current.name)
            if serialized is None:
                proto = descriptor_pb2.FileDescriptorProto()
                current.CopyToProto(proto)
                serialized = proto.SerializeToString()
            seen[current.name] = serialized
            pending.extend(current.dependencies)
        return reflection_pb2.ServerReflectionResponse(
            file_descriptor_response=reflection_pb2.FileDescriptorResponse(
                file_descriptor_proto=list(seen.values())
            ),
            original_request=request,
        )


def enable(service_names: Sequence[str], server: grpc.aio.Server) -> ReflectionServicer:
    """Serve reflection (v1 and v1alpha) for `service_names` on `server`.

    Only v1alpha is listed among the services: its descriptor ships with
    grpcio-reflection, while v1's does not, and a listed service whose
    descriptor cannot be served would break `grpcurl describe`.
    """
    servicer = ReflectionServicer(
        (*service_names, V1ALPHA), descriptor_pool.Default(), documented_files()
    )
    method = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        tuple(
            grpc.method_handlers_generic_handler(name, {"ServerReflectionInfo": method})
            for name in (V1, V1ALPHA)
        )
    )
    return servicer
