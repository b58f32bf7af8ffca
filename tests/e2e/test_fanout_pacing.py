"""Writers first: a writer's answer never waits behind the fan-out of its own change.

Counted, not timed: the server runs in this process, so the test sees, at the
moment the engine hands a writer its outcome, how many subscriber streams have
already taken their queue to write it. Woken all at once on publish, every one
of them would have (their wakes are queued before the writer's); paced by the
fan-out tick, none has, and every subscriber still receives the change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from headway.client import HeadwayClient
from headway.server.config import Settings
from headway.server.engine import Engine
from headway.server.hub import Subscriber
from headway.server.pacing import WAKE_CHUNK
from headway.v1 import event_pb2, task_service_pb2, task_service_pb2_grpc
from tests.harness import ServerHarness

SUBSCRIBERS = 6 * WAKE_CHUNK


async def read_until(call: Any, wanted: str) -> event_pb2.Event:
    """The first event of kind `wanted` on the stream."""
    while True:
        response = await asyncio.wait_for(call.read(), 30)
        assert response is not grpc.aio.EOF
        for event in response.events:
            if event.WhichOneof("kind") == wanted:
                return event  # type: ignore[no-any-return]


async def test_a_writers_answer_does_not_wait_for_hundreds_of_subscribers(
    harness: ServerHarness, client: HeadwayClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    await client.create_task("job", steps=["work"], start=True)
    channel = grpc.aio.insecure_channel(harness.target)
    stub = task_service_pb2_grpc.TaskServiceStub(channel)
    calls = [stub.Subscribe(task_service_pb2.SubscribeRequest()) for _ in range(SUBSCRIBERS)]
    await asyncio.gather(*(read_until(call, "synced") for call in calls))

    takes = 0
    taken_at_answer: list[int] = []
    take, mutate = Subscriber.take, Engine.mutate

    def counting_take(self: Subscriber) -> Any:
        nonlocal takes
        events = take(self)
        takes += bool(events)
        return events

    async def observed_mutate(self: Engine, **kwargs: Any) -> Any:
        outcome = await mutate(self, **kwargs)
        taken_at_answer.append(takes)
        return outcome

    monkeypatch.setattr(Subscriber, "take", counting_take)
    monkeypatch.setattr(Engine, "mutate", observed_mutate)

    task = await client.update_step("job", "work", message="half way")
    updates = await asyncio.gather(*(read_until(call, "updated") for call in calls))

    assert taken_at_answer == [0], "the writer was answered before any fan-out write"
    assert takes == SUBSCRIBERS, "then every subscriber took the change, once"
    assert {u.revision for u in updates} == {task.revision}
    running = harness.running
    assert running is not None
    assert running.hub.tick.rounds >= 1, "the fan-out went in paced rounds"
    for call in calls:
        call.cancel()
    await channel.close()


BURST = 2000


async def test_a_burst_of_two_thousand_subscribers_and_a_writer_are_all_served(
    make_settings: Callable[..., Settings],
) -> None:
    """All subscribers reconnecting at once (as after a restart) are each served, not cancelled.

    The transport queues calls the server has not yet taken, and by default
    cancels them once that queue passes 1000: with the event loop busy
    starting streams, a burst lost about one call in ten, a writer's included,
    before the service ever saw it.
    """
    harness = ServerHarness(make_settings(quota_subscriptions=0))
    await harness.start()
    channels = [grpc.aio.insecure_channel(harness.target) for _ in range(20)]
    try:
        stubs = [task_service_pb2_grpc.TaskServiceStub(channel) for channel in channels]
        calls = [
            stubs[n % len(stubs)].Subscribe(task_service_pb2.SubscribeRequest())
            for n in range(BURST)
        ]
        created = stubs[0].CreateTask(task_service_pb2.CreateTaskRequest(task_id="burst"))
        synced = await asyncio.gather(
            *(read_until(call, "synced") for call in calls), return_exceptions=True
        )

        failures = [repr(outcome)[:120] for outcome in synced if isinstance(outcome, Exception)]
        assert failures == [], f"{len(failures)} of {BURST} subscribers were not served"
        assert (await created).task.id == "burst"
        for call in calls:
            call.cancel()
    finally:
        for channel in channels:
            await channel.close()
        await harness.close()
