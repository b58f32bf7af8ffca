"""Which slow-consumer policy each client face asks for, and how a conflated event reads."""

from __future__ import annotations

import contextlib

from headway.client import LiveView, Updated, subscribe, task_filter
from headway.client.events import Conflation, from_proto
from headway.v1 import event_pb2, task_pb2
from tests.harness import ServerHarness


async def test_a_live_view_conflates_and_subscribe_does_not(harness: ServerHarness) -> None:
    client = harness.client()
    await client.create_task("a")
    assert harness.running is not None
    hub = harness.running.hub
    async with LiveView(client, task_filter(task_ids=["a"])):
        (view,) = hub.subscribers()
        assert view.conflation is not None, "a view needs only the latest state"
    stream = aiter(subscribe(client, task_filter(task_ids=["a"])))
    async with contextlib.aclosing(stream):  # type: ignore[type-var]
        await anext(stream)
        (every_change,) = hub.subscribers()
        assert every_change.conflation is None, "subscribe() delivers every change by default"


def test_a_conflated_event_says_what_it_covers() -> None:
    raw = event_pb2.Event(
        revision=9,
        updated=task_pb2.Task(id="a"),
        conflation=event_pb2.Conflation(
            after_revision=4, through_revision=10, collapsed_events=6, logs_dropped=1
        ),
    )
    event = from_proto(raw)
    assert isinstance(event, Updated)
    assert event.conflation == Conflation(4, 10, 6, 1)
    plain = from_proto(event_pb2.Event(revision=9, updated=task_pb2.Task(id="a")))
    assert isinstance(plain, Updated)
    assert plain.conflation is None
