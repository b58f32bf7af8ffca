"""The CONFLATE slow-consumer policy in the hub, without a server.

A conflating subscriber's queue is filled past its capacity by publishing
directly to the hub, so each interleaving of publishes and takes is exactly
the one written here.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from headway.server.conflation import Conflation
from headway.server.filtering import CompiledFilter, TaskFacts
from headway.server.hub import Hub, Subscriber
from headway.server.records import frame
from headway.server.store.base import EventRecord
from headway.v1 import event_pb2, log_pb2, task_pb2, task_service_pb2

RUNNING = task_pb2.TASK_STATE_RUNNING
SUCCEEDED = task_pb2.TASK_STATE_SUCCEEDED


def make_event(
    revision: int,
    task_id: str,
    *,
    tenant: str = "acme",
    kind: str = "updated",
    state: int = RUNNING,
    task_kind: str = "build",
) -> EventRecord:
    """A committed change: `kind` is created, updated, deleted, or logs."""
    task = task_pb2.Task(
        id=task_id, tenant=tenant, kind=task_kind, state=state, message=f"at {revision}"
    )
    event = event_pb2.Event(revision=revision, commit_time=Timestamp(seconds=revision))
    if kind == "logs":
        event.logs_appended.task_id = task_id
        event.logs_appended.entries.add(message=f"line {revision}", level=log_pb2.LOG_LEVEL_INFO)
    else:
        getattr(event, kind).CopyFrom(task)
    return EventRecord(
        revision=revision,
        facts=TaskFacts.of(task),
        is_log=kind == "logs",
        at_rest=state == SUCCEEDED or kind == "deleted",
        commit_ns=revision,
        data=event.SerializeToString(),
    )


def register(
    hub: Hub, *, conflate: bool, include_logs: bool = True, **fields: object
) -> Subscriber:
    return hub.register(
        "acme",
        CompiledFilter.compile(task_service_pb2.TaskFilter(**fields)),
        include_logs=include_logs,
        stop_at_rest=False,
        conflate=conflate,
    )


def decode(records: Sequence[EventRecord]) -> list[event_pb2.Event]:
    """What a client parses from one response carrying these records."""
    response = task_service_pb2.SubscribeResponse.FromString(
        b"".join(frame(r.data) for r in records)
    )
    return list(response.events)


def round_robin(first: int, count: int, tasks: Sequence[str]) -> list[EventRecord]:
    return [make_event(r, tasks[r % len(tasks)]) for r in range(first, first + count)]


class Client:
    """A client's fold of a stream: each task's latest event, and its resume revision."""

    def __init__(self) -> None:
        self.tasks: dict[str, event_pb2.Event] = {}
        self.revision = 0

    def apply(self, event: event_pb2.Event) -> None:
        assert event.revision > self.revision, "revisions strictly increase"
        self.revision = event.revision
        which = event.WhichOneof("kind")
        if which == "deleted":
            self.tasks.pop(event.deleted.id, None)
        elif which in ("created", "updated"):
            self.tasks[getattr(event, which).id] = event


def final_state(records: Sequence[EventRecord]) -> dict[str, int]:
    """Each live task's revision after every record: what a client must end with."""
    client = Client()
    for event in decode(records):
        client.apply(event)
    return {task_id: event.revision for task_id, event in client.tasks.items()}


async def test_a_conflating_subscriber_is_kept_with_one_change_per_task() -> None:
    hub = Hub(capacity=4, max_subscribers=10)
    conflating = register(hub, conflate=True)
    ending = register(hub, conflate=False)
    published = round_robin(1, 100, ["a", "b", "c"])
    hub.publish(published)

    assert ending.ended is not None, "the default policy still ends the subscriber"
    assert ending.ended.reason == "SUBSCRIBER_TOO_SLOW"
    assert conflating.ended is None
    assert conflating.wakeup.is_set()
    assert conflating.events == [], "the queue was folded"
    assert conflating.conflation is not None
    assert conflating.conflation.pending == 3, "at most one pending change per task"
    assert hub.subscriber_count == 1

    batch = decode(conflating.take())
    # Each task's latest change, in revision order, with its own revision and contents.
    assert [(e.revision, e.updated.id) for e in batch] == [(98, "c"), (99, "a"), (100, "b")]
    assert [e.updated.message for e in batch] == ["at 98", "at 99", "at 100"]
    assert [e.commit_time.seconds for e in batch] == [98, 99, 100]
    for event in batch:
        assert event.conflation == event_pb2.Conflation(
            after_revision=0, through_revision=100, collapsed_events=100, logs_dropped=0
        )
    assert not conflating.pending, "the batch was taken whole"


async def test_a_subscriber_with_room_is_not_conflated() -> None:
    hub = Hub(capacity=4, max_subscribers=10)
    subscriber = register(hub, conflate=True)
    hub.publish(round_robin(1, 4, ["a", "b"]))
    events = decode(subscriber.take())
    assert [e.revision for e in events] == [1, 2, 3, 4], "every change while it keeps up"
    assert not any(e.HasField("conflation") for e in events)


async def test_each_range_starts_after_what_was_delivered() -> None:
    hub = Hub(capacity=3, max_subscribers=10)
    hub.publish([make_event(1, "a"), make_event(2, "a")])  # before the subscriber joins
    subscriber = register(hub, conflate=True)
    hub.publish(round_robin(3, 2, ["a", "b"]))
    assert [e.revision for e in decode(subscriber.take())] == [3, 4]

    hub.publish(round_robin(5, 6, ["a", "b"]))  # overflows: 5..10
    first = decode(subscriber.take())
    assert [e.revision for e in first] == [9, 10]
    assert (first[0].conflation.after_revision, first[0].conflation.through_revision) == (4, 10)

    hub.publish([make_event(11, "a")])  # room again: delivered as it is
    assert [(e.revision, e.HasField("conflation")) for e in decode(subscriber.take())] == [
        (11, False)
    ]
    hub.publish(round_robin(12, 5, ["a", "b"]))
    second = decode(subscriber.take())
    assert (second[0].conflation.after_revision, second[0].conflation.through_revision) == (11, 16)


async def test_a_task_deleted_in_the_range_is_reported_deleted() -> None:
    hub = Hub(capacity=2, max_subscribers=10)
    subscriber = register(hub, conflate=True)
    hub.publish(
        [
            make_event(1, "gone", kind="created"),
            make_event(2, "kept", kind="created"),
            make_event(3, "gone", state=SUCCEEDED),
            make_event(4, "gone", kind="deleted", state=SUCCEEDED),
            make_event(5, "kept"),
        ]
    )
    batch = decode(subscriber.take())
    assert [(e.revision, e.WhichOneof("kind")) for e in batch] == [(4, "deleted"), (5, "updated")]
    assert batch[0].deleted.id == "gone"


async def test_log_events_in_the_range_are_dropped_and_counted() -> None:
    hub = Hub(capacity=2, max_subscribers=10)
    subscriber = register(hub, conflate=True)
    hub.publish(
        [
            make_event(1, "a"),
            make_event(2, "a", kind="logs"),
            make_event(3, "b"),
            make_event(4, "b", kind="logs"),
            make_event(5, "a", kind="logs"),
        ]
    )
    batch = decode(subscriber.take())
    assert [e.revision for e in batch] == [1, 3]
    assert batch[-1].conflation == event_pb2.Conflation(
        after_revision=0, through_revision=5, collapsed_events=5, logs_dropped=3
    ), "the range ends with log lines, past the last event sent"


async def test_filters_and_tenants_still_apply_to_what_is_folded() -> None:
    hub = Hub(capacity=2, max_subscribers=10)
    builds = register(hub, conflate=True, kinds=["build"])
    hub.publish(
        [
            make_event(1, "a"),
            make_event(2, "t", task_kind="test"),
            make_event(3, "x", tenant="globex"),
            make_event(4, "a"),
            make_event(5, "b"),
            make_event(6, "t", task_kind="test"),
        ]
    )
    batch = decode(builds.take())
    assert [(e.revision, e.updated.id) for e in batch] == [(4, "a"), (5, "b")]
    assert batch[0].conflation.collapsed_events == 3, "only the changes it may see"


async def test_a_resync_forgets_what_was_folded() -> None:
    hub = Hub(capacity=2, max_subscribers=10)
    subscriber = register(hub, conflate=True)
    hub.publish(round_robin(1, 6, ["a", "b"]))
    subscriber.discard_through(hub.head("acme"))  # a fresh snapshot at 6 covers it
    assert not subscriber.pending
    hub.publish(round_robin(7, 3, ["a", "b"]))
    batch = decode(subscriber.take())
    assert batch[0].conflation.after_revision == 6, "the next range starts after the snapshot"


def test_a_resync_below_what_was_folded_is_refused() -> None:
    conflation = Conflation(0)
    assert conflation.absorb([], make_event(5, "a"), capacity=0)
    with pytest.raises(ValueError, match="newer"):
        conflation.discard_through(4)


@pytest.mark.parametrize("received", range(0, 5))
async def test_resuming_inside_a_conflated_batch_reaches_every_final_state(received: int) -> None:
    """A client that got `received` events of a batch resumes from the last; history follows."""
    hub = Hub(capacity=3, max_subscribers=10)
    subscriber = register(hub, conflate=True)
    history = [
        make_event(1, "a", kind="created"),
        make_event(2, "b", kind="created"),
        make_event(3, "c", kind="created"),
        make_event(4, "d", kind="created"),
        make_event(5, "a"),
        make_event(6, "d", kind="deleted", state=SUCCEEDED),
        make_event(7, "b", kind="logs"),
        make_event(8, "e", kind="created"),
        make_event(9, "b"),
        make_event(10, "a"),
    ]
    hub.publish(history)
    batch = decode(subscriber.take())
    assert [e.revision for e in batch] == [3, 6, 8, 9, 10]

    client = Client()
    for event in batch[:received]:
        client.apply(event)
    # The resumed stream: every stored change after the client's revision, complete.
    resumed = [r for r in history if r.revision > client.revision]
    for event in decode(resumed):
        client.apply(event)  # asserts no revision is seen twice
    assert {k: e.revision for k, e in client.tasks.items()} == final_state(history)
