"""A load-generator process of agents that report progress with UpdateStep.

Each agent owns one task with one step and has at most one call in flight, so
its progress counter only grows and no update is ever rejected as a
regression. Paced: agent i of W sends at start + (i + kW)/R, so the process
sends R updates/s spread evenly; an agent whose previous call has not been
acknowledged by its next slot sends as soon as it is (the lag is reported).
Unpaced: every agent sends again as soon as its previous call is acknowledged.
Requests and responses are raw bytes, to keep the generator's CPU low.
"""

from __future__ import annotations

import array
import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

import grpc

from bench.children import Window, receive, run_child
from bench.identity import bearer
from bench.wire import CREATE_TASK, UPDATE_STEP, create_request, task_id, update_request


@dataclass(frozen=True)
class WriterPlan:
    target: str
    index: int
    agents: int
    rate: float | None  # updates/s for the whole process; None: as fast as acks allow
    token: str | None = None  # the bearer token of this process's principal, if any


@dataclass
class WriterReport:
    """Acknowledged writes, by send time; ack latencies in nanoseconds as array('q') bytes."""

    agents: int
    sent: int = 0
    acked: int = 0
    acked_in_window: int = 0
    max_lag_ms: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    ack_latencies: bytes = b""


class _Agent:
    def __init__(
        self,
        task: str,
        update: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes],
        metadata: tuple[tuple[str, str], ...] | None,
    ) -> None:
        self.task = task
        self.update = update
        self.metadata = metadata
        self.seq = 0

    async def send(self, sent_ns: int) -> None:
        self.seq += 1
        await self.update(update_request(self.task, self.seq, sent_ns), metadata=self.metadata)


async def write_on_schedule(
    send: Callable[[int], Awaitable[None]],
    name_of: Callable[[Exception], str | None],
    window: Window,
    report: WriterReport,
    latencies: array.array[int],
    errors: Counter[str],
    first_due: float,
    period: float | None,
) -> None:
    """One agent's writes: on schedule (every `period` s from `first_due`) or, with no
    period, each as soon as the last one was acknowledged; until the window ends.

    `send(sent_ns)` makes one write and returns once it is acknowledged. A failure
    that `name_of` names is counted under that name; any other is raised. Every load
    generator (Headway, the baseline, the peers) writes through this one loop, so
    their figures mean the same.
    """
    t0, t1 = window.t0_ns, window.t1_ns
    due = first_due
    await asyncio.sleep(max(0.0, due - time.monotonic()))
    while True:
        if period is not None:
            if due * 1e9 >= t1:
                return
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        sent = time.monotonic_ns()
        if sent >= t1:
            return
        if period is not None:
            report.max_lag_ms = max(report.max_lag_ms, (sent / 1e9 - due) * 1e3)
            due += period
        report.sent += 1
        try:
            await send(sent)
        except Exception as error:
            name = name_of(error)
            if name is None:
                raise
            errors[name] += 1
            continue
        acked = time.monotonic_ns()
        report.acked += 1
        if t0 <= sent:
            report.acked_in_window += 1
            latencies.append(acked - sent)


def _status_name(error: Exception) -> str | None:
    """A failed call's status code; None for anything that is not a gRPC error."""
    return error.code().name if isinstance(error, grpc.aio.AioRpcError) else None


async def _main(conn: Connection, plan: WriterPlan) -> None:
    channel = grpc.aio.insecure_channel(plan.target)
    create = channel.unary_unary(CREATE_TASK)
    update = channel.unary_unary(UPDATE_STEP)
    metadata = bearer(plan.token)
    agents = [_Agent(task_id(plan.index, i), update, metadata) for i in range(plan.agents)]
    for agent in agents:
        await create(create_request(agent.task), timeout=30, metadata=metadata)
    conn.send(("ready", plan.agents))

    _, window = await receive(conn)
    report = WriterReport(plan.agents)
    latencies: array.array[int] = array.array("q")
    errors: Counter[str] = Counter()
    start = window.start_ns / 1e9
    period = None if plan.rate is None else plan.agents / plan.rate
    runs = [
        write_on_schedule(
            agent.send,
            _status_name,
            window,
            report,
            latencies,
            errors,
            start + (0 if plan.rate is None else i / plan.rate),
            period,
        )
        for i, agent in enumerate(agents)
    ]
    await asyncio.gather(*runs)
    await channel.close(None)
    report.errors = dict(errors)
    report.ack_latencies = latencies.tobytes()
    conn.send(("report", report))


def writer_process(conn: Connection, plan: WriterPlan) -> None:
    """Child entry point: create the agents' tasks, report ready, write on schedule, report."""
    run_child(conn, lambda: _main(conn, plan))
