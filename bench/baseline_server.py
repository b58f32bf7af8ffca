"""The practical limit of this stack: TaskService's wire with nothing behind it.

Same proto, same methods, same runtime as Headway (grpc.aio on uvloop, the
same channel options), but UpdateStep validates nothing, stores nothing and
numbers nothing durably: it encodes the update as an `updated` event once and
appends the frame to every subscriber's queue, exactly like Headway's hub, and
each subscriber's sender joins whatever queued up into one SubscribeResponse
per wakeup. Whatever Headway costs beyond this server is the price of its
state machine, durability and bookkeeping; what this server costs is gRPC's.

    python -m bench.baseline_server --address 127.0.0.1:0
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

import grpc
import uvloop

from bench.wire import frame
from headway.v1 import event_pb2, task_pb2, task_service_pb2

SERVICE_NAME = "headway.v1.TaskService"
READY_LINE = "baseline serving on port {port}"
Context = grpc.aio.ServicerContext[Any, Any]


class _Subscriber:
    """A queue of pre-encoded frames and the event its sender sleeps on."""

    __slots__ = ("frames", "wakeup")

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.wakeup = asyncio.Event()


class Baseline:
    """CreateTask, UpdateStep and Subscribe, with a revision counter and nothing else."""

    def __init__(self) -> None:
        self.revision = 0
        self._subscribers: dict[_Subscriber, None] = {}

    async def create_task(
        self, request: task_service_pb2.CreateTaskRequest, context: Context
    ) -> task_service_pb2.CreateTaskResponse:
        self.revision += 1
        task = task_pb2.Task(
            id=request.task_id, state=task_pb2.TASK_STATE_RUNNING, revision=self.revision
        )
        return task_service_pb2.CreateTaskResponse(task=task)

    async def update_step(
        self, request: task_service_pb2.UpdateStepRequest, context: Context
    ) -> task_service_pb2.UpdateStepResponse:
        self.revision += 1
        step = task_pb2.Step(
            key=request.step_key,
            state=request.state,
            progress=request.progress,
            message=request.message,
        )
        task = task_pb2.Task(
            id=request.task_id,
            state=task_pb2.TASK_STATE_RUNNING,
            revision=self.revision,
            steps=[step],
        )
        encoded = frame(event_pb2.Event(revision=self.revision, updated=task).SerializeToString())
        for subscriber in self._subscribers:
            subscriber.frames.append(encoded)
            subscriber.wakeup.set()
        return task_service_pb2.UpdateStepResponse(task=task)

    async def subscribe(self, request: task_service_pb2.SubscribeRequest, context: Context) -> None:
        subscriber = _Subscriber()
        self._subscribers[subscriber] = None
        try:
            synced = event_pb2.Event(revision=self.revision, synced=event_pb2.Synced())
            await context.write(frame(synced.SerializeToString()))
            while True:
                await subscriber.wakeup.wait()
                subscriber.wakeup.clear()
                frames, subscriber.frames = subscriber.frames, []
                if frames:
                    await context.write(b"".join(frames))
        finally:
            del self._subscribers[subscriber]


def _identity(data: bytes) -> bytes:
    return data


def handlers(service: Baseline) -> grpc.GenericRpcHandler[Any, Any]:
    methods: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "CreateTask": grpc.unary_unary_rpc_method_handler(
            service.create_task,
            request_deserializer=task_service_pb2.CreateTaskRequest.FromString,
            response_serializer=task_service_pb2.CreateTaskResponse.SerializeToString,
        ),
        "UpdateStep": grpc.unary_unary_rpc_method_handler(
            service.update_step,
            request_deserializer=task_service_pb2.UpdateStepRequest.FromString,
            response_serializer=task_service_pb2.UpdateStepResponse.SerializeToString,
        ),
        "Subscribe": grpc.unary_stream_rpc_method_handler(
            service.subscribe,
            request_deserializer=task_service_pb2.SubscribeRequest.FromString,
            response_serializer=_identity,
        ),
    }
    return grpc.method_handlers_generic_handler(SERVICE_NAME, methods)


async def serve(address: str) -> None:
    # The same options Headway's create_server passes, so only the handlers differ.
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", 4 * 1024 * 1024),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
            ("grpc.so_reuseport", 0),
        ]
    )
    server.add_generic_rpc_handlers((handlers(Baseline()),))
    port = server.add_insecure_port(address)
    await server.start()
    print(READY_LINE.format(port=port), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="127.0.0.1:0", help="host:port (port 0: any)")
    uvloop.run(serve(parser.parse_args().address))


if __name__ == "__main__":
    main()
