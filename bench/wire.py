"""The bytes both servers and the load generator agree on, kept in one place.

The load generator embeds its send time in every step message as ``@T`` and
19 digits (``time.monotonic_ns()``, a system-wide clock on Linux, so it is
comparable across processes). Each streamed event carries its task whole, and
the benchmark tasks have exactly one step, so every event holds the marker
exactly once: a subscriber can find every send time in a response with one
regex scan of the raw bytes, without decoding protobuf. That keeps the
receiving side cheap, which matters because it shares two cores with the server.
"""

from __future__ import annotations

import re
import uuid

from headway.v1 import task_pb2, task_service_pb2

SERVICE = "/headway.v1.TaskService/"
CREATE_TASK = SERVICE + "CreateTask"
UPDATE_STEP = SERVICE + "UpdateStep"
SUBSCRIBE = SERVICE + "Subscribe"

STEP_KEY = "work"
PROGRESS_TOTAL = 1_000_000
MARKER = re.compile(rb"@T(\d{19})")

# Pads the step message so that a whole UpdateStepRequest is about 200 bytes.
_FILLER = "processed a chunk of input; stage 2 of 3, writing partial results to the cache"


def task_id(writer: int, agent: int) -> str:
    return f"bench-w{writer}-a{agent:03d}"


def create_request(task: str) -> bytes:
    """A running task with the single step every update reports on."""
    return task_service_pb2.CreateTaskRequest(
        task_id=task,
        display_name=f"benchmark agent {task}",
        kind="bench.agent",
        steps=[task_service_pb2.StepSpec(key=STEP_KEY)],
        start=True,
        request_id=str(uuid.uuid4()),
    ).SerializeToString()


def update_request(task: str, seq: int, send_ns: int) -> bytes:
    """One progress report: state, sub-progress, message with the send time, request_id."""
    return task_service_pb2.UpdateStepRequest(
        task_id=task,
        step_key=STEP_KEY,
        state=task_pb2.STEP_STATE_RUNNING,
        progress=task_pb2.Progress(
            units=task_pb2.Progress.Units(current=seq, total=PROGRESS_TOTAL, unit="items")
        ),
        message=f"{_FILLER} #{seq} @T{send_ns:019d}",
        request_id=str(uuid.uuid4()),
    ).SerializeToString()


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def frame(event: bytes) -> bytes:
    """One element of ``SubscribeResponse.events``; concatenated frames form a response."""
    return b"\x0a" + encode_varint(len(event)) + event
