"""A load-generator process that resumes from a revision and times the replay.

It subscribes with `start_revision` (every change after it comes from the
store's history) and stops once it has the event with the head revision. The
responses are decoded (they are few and large: up to 1 MiB each), to count the
events and check they arrive in strictly increasing revision order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from multiprocessing.connection import Connection

import grpc

from bench.children import receive, run_child
from bench.wire import SUBSCRIBE
from headway.v1 import task_service_pb2


@dataclass(frozen=True)
class CatchUpPlan:
    target: str
    start_revision: int
    head: int


@dataclass
class CatchUpReport:
    events: int
    responses: int
    bytes: int
    seconds: float
    first_response_seconds: float
    last_revision: int


async def _main(conn: Connection, plan: CatchUpPlan) -> None:
    channel = grpc.aio.insecure_channel(plan.target)
    await channel.channel_ready()
    subscribe = channel.unary_stream(SUBSCRIBE)
    request = task_service_pb2.SubscribeRequest(start_revision=plan.start_revision)
    conn.send(("ready", None))
    await receive(conn)
    report = CatchUpReport(0, 0, 0, 0.0, 0.0, plan.start_revision)
    began = time.monotonic()
    call = subscribe(request.SerializeToString())
    async for data in call:
        if not report.responses:
            report.first_response_seconds = time.monotonic() - began
        report.responses += 1
        report.bytes += len(data)
        for event in task_service_pb2.SubscribeResponse.FromString(data).events:
            if event.revision <= report.last_revision:
                raise RuntimeError(f"revision {event.revision} after {report.last_revision}")
            report.last_revision = event.revision
            report.events += 1
        if report.last_revision >= plan.head:
            break
    report.seconds = time.monotonic() - began
    call.cancel()
    await channel.close(None)
    conn.send(("report", report))


def catchup_process(conn: Connection, plan: CatchUpPlan) -> None:
    """Child entry point: connect, report ready, replay on "go", report."""
    run_child(conn, lambda: _main(conn, plan))
