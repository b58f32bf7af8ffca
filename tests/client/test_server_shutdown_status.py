"""A mutation racing a graceful shutdown gets a retryable answer, never CANCELLED.

gRPC core cancels calls that arrived but were not yet matched to a handler when
the server's port closes. So the server first drains: for `shutdown_drain` it
answers new mutations UNAVAILABLE (`SHUTTING_DOWN`) while accepted ones commit,
and only then closes the port. A call sent as shutdown begins must therefore be
either applied or refused with UNAVAILABLE, which every client retries.
"""

from __future__ import annotations

import asyncio

import grpc

from headway.client import HeadwayError
from headway.v1 import task_pb2
from tests.harness import ServerHarness


async def test_a_mutation_racing_a_graceful_shutdown_is_never_cancelled(
    harness: ServerHarness,
) -> None:
    codes: list[grpc.StatusCode] = []
    for attempt in range(15):
        client = harness.client()
        await client.create_task(f"race-{attempt}", steps=["s"], start=True)
        restart = asyncio.create_task(harness.restart())
        try:
            await client.update_step(
                f"race-{attempt}", "s", progress=task_pb2.Progress(fraction=0.5), timeout=3
            )
            applied = True
        except HeadwayError as error:
            codes.append(error.code)
            applied = False
        await restart
        stored = await harness.client().get_task(f"race-{attempt}")
        assert (stored.steps[0].fraction == 0.5) == applied  # acknowledged means stored
    assert set(codes) <= {grpc.StatusCode.UNAVAILABLE}
