"""Filters, page tokens and the fan-out hub, without a server."""

from __future__ import annotations

import base64
import json

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from headway.server import paging
from headway.server.errors import HeadwayError, Kind
from headway.server.filtering import CompiledFilter, TaskFacts
from headway.server.hub import FanoutObserver, Hub, SharedBatch, Subscriber
from headway.server.pacing import FanoutTick
from headway.server.records import encode_varint, frame
from headway.server.store.base import EventRecord
from headway.v1 import event_pb2, log_pb2, task_pb2, task_service_pb2

RUNNING = task_pb2.TASK_STATE_RUNNING
PENDING = task_pb2.TASK_STATE_PENDING
SUCCEEDED = task_pb2.TASK_STATE_SUCCEEDED
FAILED = task_pb2.TASK_STATE_FAILED


def make_task(
    task_id: str = "t1",
    *,
    tenant: str = "acme",
    kind: str = "ci.build",
    labels: dict[str, str] | None = None,
    state: int = RUNNING,
    parent_id: str = "",
) -> task_pb2.Task:
    return task_pb2.Task(
        id=task_id,
        tenant=tenant,
        kind=kind,
        labels=labels if labels is not None else {"env": "prod", "team": "core"},
        state=state,
        parent_id=parent_id,
    )


def compile_filter(**fields: object) -> CompiledFilter:
    return CompiledFilter.compile(task_service_pb2.TaskFilter(**fields))


# -- filtering --------------------------------------------------------------------------


def test_facts_of_a_task() -> None:
    task = make_task(parent_id="p", state=SUCCEEDED)
    facts = TaskFacts.of(task, RUNNING)
    assert facts == TaskFacts(
        tenant="acme",
        task_id="t1",
        kind="ci.build",
        parent_id="p",
        labels={"env": "prod", "team": "core"},
        state=SUCCEEDED,
        previous_state=RUNNING,
    )
    assert TaskFacts.of(task).previous_state == SUCCEEDED, "no previous state: the current one"


def test_empty_filter_selects_everything() -> None:
    empty = compile_filter()
    assert empty.selects_all
    assert empty.matches(TaskFacts.of(make_task(labels={})))
    assert empty.matches_task(make_task(state=FAILED))
    assert not compile_filter(kinds=["x"]).selects_all
    assert not compile_filter(labels={"a": "b"}).selects_all
    assert not compile_filter(parent_id="p").selects_all


@pytest.mark.parametrize(
    ("fields", "selected"),
    [
        ({"task_ids": ["t1", "t2"]}, True),
        ({"task_ids": ["t2", "t3"]}, False),
        ({"kinds": ["ci.test", "ci.build"]}, True),
        ({"kinds": ["ci.test"]}, False),
        ({"states": [PENDING, RUNNING]}, True),
        ({"states": [SUCCEEDED]}, False),
        ({"parent_id": "p"}, True),
        ({"parent_id": "q"}, False),
        ({"labels": {"env": "prod"}}, True),
        ({"labels": {"env": "prod", "team": "core"}}, True),
        ({"labels": {"env": "prod", "team": "ml"}}, False),
        ({"labels": {"env": "prod", "region": "eu"}}, False),
        ({"labels": {"region": ""}}, False),
        ({"kinds": ["ci.build"], "states": [RUNNING], "labels": {"team": "core"}}, True),
        ({"kinds": ["ci.build"], "states": [RUNNING], "labels": {"team": "ml"}}, False),
        ({"kinds": ["ci.build"], "task_ids": ["t9"]}, False),
        ({"kinds": ["ci.test"], "task_ids": ["t1"]}, False),
        ({"task_ids": ["t1"], "parent_id": "q"}, False),
    ],
    ids=[
        "id-in",
        "id-out",
        "kind-or",
        "kind-out",
        "state-or",
        "state-out",
        "parent-in",
        "parent-out",
        "label-subset",
        "labels-all",
        "label-value-differs",
        "label-missing",
        "empty-value-is-not-absent",
        "and-all-hold",
        "and-one-fails",
        "and-id-fails",
        "and-kind-fails",
        "and-parent-fails",
    ],
)
def test_filter_semantics(fields: dict[str, object], selected: bool) -> None:
    task = make_task(parent_id="p")
    task_filter = compile_filter(**fields)
    assert task_filter.matches(TaskFacts.of(task)) is selected
    assert task_filter.matches_task(task) is selected, "listing and streaming agree"


def test_previous_state_keeps_a_task_that_leaves_the_selection() -> None:
    running_only = compile_filter(states=[RUNNING])
    done = make_task(state=SUCCEEDED)
    # The change that moved the task out of RUNNING is still delivered...
    assert running_only.matches(TaskFacts.of(done, RUNNING))
    # ...but the task as it now stands is no longer listed, nor are later changes.
    assert not running_only.matches_task(done)
    assert not running_only.matches(TaskFacts.of(done, SUCCEEDED))
    # A task entering the selection matches by its new state.
    assert running_only.matches(TaskFacts.of(make_task(state=RUNNING), PENDING))


def test_previous_state_does_not_bypass_other_criteria() -> None:
    task_filter = compile_filter(states=[RUNNING], kinds=["ci.test"])
    assert not task_filter.matches(TaskFacts.of(make_task(state=SUCCEEDED), RUNNING))


# -- paging -----------------------------------------------------------------------------


def test_first_page_has_no_position() -> None:
    assert paging.decode("", "any", 1) is None


@pytest.mark.parametrize("position", [[0], [42], [2**53], [7, 3], [123456789, 0], [2**63 - 1]])
def test_page_token_round_trip(position: list[int]) -> None:
    digest = paging.query_digest("ListLogs", task_service_pb2.TaskFilter(kinds=["k"]))
    token = paging.encode(position, digest)
    assert "=" not in token, "tokens carry no padding"
    assert token.isascii()
    assert token == token.strip()
    assert paging.decode(token, digest, len(position)) == position


def test_query_digest_depends_on_every_part() -> None:
    a = task_service_pb2.TaskFilter(kinds=["a"])
    b = task_service_pb2.TaskFilter(kinds=["b"])
    assert paging.query_digest("ListTasks", a) == paging.query_digest("ListTasks", a)
    assert paging.query_digest("ListTasks", a) != paging.query_digest("ListTasks", b)
    assert paging.query_digest("ListTasks", a) != paging.query_digest("ListLogs", a)
    # Parts are length-prefixed, so moving bytes between parts changes the digest.
    assert paging.query_digest("ab", "c") != paging.query_digest("a", "bc")


def expect_invalid_token(token: str, digest: str, width: int) -> None:
    with pytest.raises(HeadwayError) as caught:
        paging.decode(token, digest, width)
    assert caught.value.kind is Kind.INVALID_ARGUMENT
    assert caught.value.reason == "INVALID_PAGE_TOKEN"
    assert [v.field for v in caught.value.violations] == ["page_token"]


def test_token_from_another_query_is_refused() -> None:
    mine = paging.query_digest("ListTasks", task_service_pb2.TaskFilter(kinds=["a"]))
    other = paging.query_digest("ListTasks", task_service_pb2.TaskFilter(kinds=["b"]))
    expect_invalid_token(paging.encode([5], other), mine, 1)


def test_token_of_another_width_is_refused() -> None:
    digest = paging.query_digest("ListLogs", "t")
    expect_invalid_token(paging.encode([5], digest), digest, 2)
    expect_invalid_token(paging.encode([5, 1], digest), digest, 1)


@pytest.mark.parametrize(
    "position",
    [[-1], [2**63], [2**70], [True], [1.0], [None], ["1"]],
    ids=["negative", "2^63", "2^70", "bool", "float", "null", "string"],
)
def test_token_with_a_position_out_of_int64_is_refused(position: list[object]) -> None:
    """An edited token must never reach a query (SQLite integers are int64)."""
    digest = paging.query_digest("ListLogs", "t")
    payload = json.dumps({"p": position, "q": digest}).encode()
    expect_invalid_token(b64(payload), digest, 1)


def b64(payload: bytes) -> str:
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


GARBAGE = [
    "not-a-token",
    "!!!!",
    "%%%",
    "é",
    "====",
    b64(b"\xff\xfe\x00"),
    b64(b"{}"),
    b64(b"[]"),
    b64(b"null"),
    b64(b'"p"'),
    b64(b"42"),
    b64(json.dumps({"p": [1]}).encode()),
    b64(json.dumps({"q": "d"}).encode()),
    b64(json.dumps({"p": "1", "q": "d"}).encode()),
    b64(json.dumps({"p": [1.5], "q": "d"}).encode()),
    b64(json.dumps({"p": ["1"], "q": "d"}).encode()),
    b64(json.dumps({"p": {"0": 1}, "q": "d"}).encode()),
    b64(json.dumps({"p": [1], "q": ["d"]}).encode()),
]


@pytest.mark.parametrize("token", GARBAGE)
def test_garbage_token_is_invalid_page_token(token: str) -> None:
    expect_invalid_token(token, "d", 1)


def test_deeply_nested_garbage_token_is_invalid_page_token() -> None:
    expect_invalid_token(b64(b"[" * 100_000), "d", 1)
    expect_invalid_token(b64(b"[" * 300), "d", 1)


# -- hub: frames ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoded"),
    [(0, b"\x00"), (1, b"\x01"), (127, b"\x7f"), (128, b"\x80\x01"), (300, b"\xac\x02")],
)
def test_encode_varint(value: int, encoded: bytes) -> None:
    assert encode_varint(value) == encoded


def make_event(
    revision: int,
    task: task_pb2.Task | None = None,
    *,
    previous_state: int = 0,
    is_log: bool = False,
    message: str = "",
) -> EventRecord:
    task = task if task is not None else make_task()
    if message:
        task.message = message
    event = event_pb2.Event(revision=revision, commit_time=Timestamp(seconds=revision))
    if is_log:
        event.logs_appended.task_id = task.id
        event.logs_appended.entries.add(message=f"line {revision}", level=log_pb2.LOG_LEVEL_INFO)
    else:
        event.updated.CopyFrom(task)
    resting = task.state in (SUCCEEDED, FAILED, task_pb2.TASK_STATE_CANCELLED)
    return EventRecord(
        revision=revision,
        facts=TaskFacts.of(task, previous_state),
        is_log=is_log,
        at_rest=resting and not is_log,
        commit_ns=revision,
        data=event.SerializeToString(),
    )


def parse(frames: list[bytes]) -> list[event_pb2.Event]:
    response = task_service_pb2.SubscribeResponse()
    response.ParseFromString(b"".join(frames))
    return list(response.events)


def test_frames_concatenate_into_a_subscribe_response() -> None:
    small = make_event(1)
    large = make_event(2, message="x" * 200)  # length needs a two-byte varint
    huge = make_event(3, message="y" * 20_000)  # and a three-byte one
    log = make_event(4, is_log=True)
    records = [small, large, huge, log]
    frames = [frame(r.data) for r in records]
    assert len(large.data) > 127
    assert len(huge.data) > 16_383
    events = parse(frames)
    assert [e.revision for e in events] == [1, 2, 3, 4]
    # Compare messages, not bytes: map fields (labels) have no fixed serialized order.
    assert events == [event_pb2.Event.FromString(r.data) for r in records]
    assert events[2].updated.message == "y" * 20_000
    assert events[3].logs_appended.entries[0].message == "line 4"


def test_a_single_frame_is_a_one_event_response() -> None:
    record = make_event(9)
    (event,) = parse([frame(record.data)])
    assert event.updated.id == "t1"
    assert event.commit_time.seconds == 9


# -- hub: fan-out -----------------------------------------------------------------------


def make_hub(capacity: int = 8, max_subscribers: int = 100) -> Hub:
    return Hub(capacity=capacity, max_subscribers=max_subscribers)


def register(
    hub: Hub,
    tenant: str = "acme",
    *,
    include_logs: bool = False,
    stop_at_rest: bool = False,
    **filter_fields: object,
) -> Subscriber:
    return hub.register(
        tenant,
        compile_filter(**filter_fields),
        include_logs=include_logs,
        stop_at_rest=stop_at_rest,
    )


def revisions(subscriber: Subscriber) -> list[int]:
    return [event.revision for event in parse([frame(e.data) for e in subscriber.take()])]


async def test_publish_queues_frames_and_wakes_subscribers() -> None:
    hub = make_hub()
    subscriber = register(hub)
    assert not subscriber.wakeup.is_set()
    hub.publish([make_event(1), make_event(2)])
    assert subscriber.wakeup.is_set()
    assert hub.head("acme") == 2
    assert revisions(subscriber) == [1, 2]
    assert subscriber.take() == [], "take empties the queue"
    assert subscriber.ended is None


async def test_subscribers_share_the_encoded_event() -> None:
    hub = make_hub()
    first, second = register(hub), register(hub)
    hub.publish([make_event(1)])
    assert first.events[0].data is second.events[0].data


async def test_filter_selects_what_a_subscriber_receives() -> None:
    hub = make_hub()
    builds = register(hub, kinds=["ci.build"])
    tests = register(hub, kinds=["ci.test"])
    hub.publish([make_event(1), make_event(2, make_task("t2", kind="ci.test"))])
    assert revisions(builds) == [1]
    assert revisions(tests) == [2]


async def test_a_task_leaving_a_state_filter_is_delivered_once_more() -> None:
    hub = make_hub()
    running = register(hub, states=[RUNNING])
    hub.publish(
        [
            make_event(1, make_task(state=RUNNING), previous_state=PENDING),
            make_event(2, make_task(state=SUCCEEDED), previous_state=RUNNING),
            make_event(3, make_task(state=SUCCEEDED), previous_state=SUCCEEDED),
        ]
    )
    assert revisions(running) == [1, 2]


async def test_tenants_are_isolated() -> None:
    hub = make_hub()
    acme = register(hub, "acme")
    globex = register(hub, "globex")
    hub.publish(
        [make_event(1, make_task(tenant="acme")), make_event(2, make_task(tenant="globex"))]
    )
    assert revisions(acme) == [1]
    assert revisions(globex) == [2]
    hub.publish([make_event(3, make_task(tenant="initech"))])
    assert hub.head("initech") == 3, "the revision advances even when nobody listens"
    assert (hub.head("acme"), hub.head("globex")) == (1, 2), "each tenant has its own"
    assert acme.events == []
    assert globex.events == []


async def test_include_logs() -> None:
    hub = make_hub()
    with_logs = register(hub, include_logs=True)
    without = register(hub)
    hub.publish([make_event(1), make_event(2, is_log=True), make_event(3)])
    assert revisions(with_logs) == [1, 2, 3]
    assert revisions(without) == [1, 3]


async def test_log_events_still_obey_the_filter() -> None:
    hub = make_hub()
    other_task = register(hub, include_logs=True, task_ids=["t2"])
    hub.publish([make_event(1, is_log=True)])
    assert other_task.events == []


async def test_stop_at_rest_notes_when_the_task_comes_to_rest() -> None:
    hub = make_hub()
    watcher = register(hub, stop_at_rest=True, include_logs=True, task_ids=["t1"])
    hub.publish([make_event(1), make_event(2, is_log=True)])
    assert not watcher.rest_reached
    hub.publish([make_event(3, make_task(state=SUCCEEDED), previous_state=RUNNING)])
    assert watcher.rest_reached
    other = register(hub, task_ids=["t1"])
    hub.publish([make_event(4, make_task(state=FAILED))])
    assert not other.rest_reached, "only subscribers that asked note it"


async def test_a_subscriber_that_falls_behind_is_ended_and_the_others_go_on() -> None:
    hub = make_hub(capacity=3)
    slow = register(hub)
    fast = register(hub)
    assert hub.subscriber_count == 2
    hub.publish([make_event(1), make_event(2), make_event(3)])
    assert slow.ended is None, "a full queue is still fine"
    assert revisions(fast) == [1, 2, 3]
    hub.publish([make_event(4)])  # the fourth frame overflows slow's queue

    assert slow.ended is not None
    assert slow.ended.kind is Kind.RESOURCE_EXHAUSTED
    assert slow.ended.reason == "SUBSCRIBER_TOO_SLOW"
    assert slow.ended.metadata == {"capacity": "3"}
    assert slow.events == [], "an ended subscriber's frames are freed"
    assert slow.wakeup.is_set(), "its sender wakes up to end the stream"
    assert hub.subscriber_count == 1

    hub.publish([make_event(5), make_event(6)])
    assert slow.events == []
    late = [make_event(7)]
    assert slow.offer(late, late) is False
    assert revisions(fast) == [4, 5, 6]


async def test_overflow_within_one_batch() -> None:
    hub = make_hub(capacity=2)
    first = register(hub)
    second = register(hub)
    hub.publish([make_event(r) for r in range(1, 6)])  # five events, room for two
    for subscriber in (first, second):
        assert subscriber.ended is not None
        assert subscriber.ended.reason == "SUBSCRIBER_TOO_SLOW"
        assert subscriber.events == []
    assert hub.subscriber_count == 0, "each evicted subscriber is counted out once"
    reader = register(hub)
    for revision in range(6, 11):
        hub.publish([make_event(revision)])
        assert revisions(reader) == [revision], "a reader that keeps up is never ended"
    assert reader.ended is None


async def test_an_ended_subscriber_keeps_its_first_error() -> None:
    hub = make_hub(capacity=1)
    subscriber = register(hub)
    first = HeadwayError(Kind.UNAVAILABLE, "SHUTTING_DOWN", "bye")
    subscriber.end(first)
    subscriber.end(HeadwayError(Kind.INTERNAL, "OTHER", "later"))
    assert subscriber.ended is first
    hub.publish([make_event(1)])
    assert hub.subscriber_count == 0, "publishing drops an already ended subscriber"


async def test_unregister_stops_delivery_and_is_idempotent() -> None:
    hub = make_hub()
    subscriber = register(hub)
    hub.unregister(subscriber)
    hub.unregister(subscriber)
    assert hub.subscriber_count == 0
    hub.publish([make_event(1)])
    assert subscriber.events == []


async def test_register_beyond_the_limit_is_too_many_subscribers() -> None:
    hub = make_hub(max_subscribers=2)
    first = register(hub)
    register(hub, "globex")
    with pytest.raises(HeadwayError) as caught:
        register(hub)
    assert caught.value.kind is Kind.RESOURCE_EXHAUSTED
    assert caught.value.reason == "TOO_MANY_SUBSCRIBERS"
    hub.unregister(first)
    register(hub)
    assert hub.subscriber_count == 2


async def test_close_ends_everyone_and_refuses_new_subscribers() -> None:
    hub = make_hub()
    subscribers = [register(hub), register(hub, kinds=["x"]), register(hub, "globex")]
    hub.publish([make_event(1)])
    shutdown = HeadwayError(Kind.UNAVAILABLE, "SERVER_SHUTTING_DOWN", "the server is stopping")
    hub.close(shutdown)
    for subscriber in subscribers:
        assert subscriber.ended is shutdown
        assert subscriber.events == []
        assert subscriber.wakeup.is_set()
    assert hub.subscriber_count == 0
    with pytest.raises(HeadwayError) as caught:
        register(hub)
    assert caught.value is shutdown
    hub.publish([make_event(2)])
    assert all(s.events == [] for s in subscribers)


def test_advance_never_moves_the_revision_back() -> None:
    hub = make_hub()
    hub.advance({"acme": 10})
    assert hub.head("acme") == 10
    hub.advance({"acme": 4, "globex": 4})
    assert hub.head("acme") == 10
    assert hub.head("globex") == 4


# -- hub: the fan-out tick ------------------------------------------------------------


async def test_many_subscribers_are_woken_a_chunk_at_a_time_with_every_publish_queued() -> None:
    import asyncio

    hub = Hub(capacity=100, max_subscribers=100, tick=FanoutTick(max_period=0.25, chunk=4))
    subscribers = [register(hub) for _ in range(10)]
    hub.publish([make_event(1)])
    hub.publish([make_event(2)])
    assert not any(s.wakeup.is_set() for s in subscribers), "publish itself wakes no one"
    for _ in range(3):
        await asyncio.sleep(0)
    assert sum(s.wakeup.is_set() for s in subscribers) == 4, "one chunk at a time"
    assert all(revisions(s) == [1, 2] for s in subscribers), "one write carries both"


async def test_few_subscribers_are_woken_at_once() -> None:
    hub = make_hub()
    subscriber = register(hub)
    hub.publish([make_event(1)])
    assert subscriber.wakeup.is_set()
    assert hub.tick.rounds == 0


async def test_an_overflowing_subscriber_is_evicted_and_counted_once() -> None:
    counted: list[int] = []

    class Counting(FanoutObserver):
        def evicted(self, count: int) -> None:
            counted.append(count)

    hub = make_hub(capacity=2)
    hub.observer = Counting()
    register(hub)
    hub.publish([make_event(r) for r in range(1, 7)])  # overflows at 3, then 4, 5, 6 bounce
    assert counted == [1]
    assert hub.subscriber_count == 0


# -- hub: the shared log of unfiltered subscribers ------------------------------------


async def test_a_subscriber_still_writing_is_not_woken_again_and_takes_everything_at_once() -> None:
    hub = make_hub(capacity=100)
    busy, parked = register(hub), register(hub)
    hub.publish([make_event(1)])
    assert busy.wakeup.is_set()
    assert parked.wakeup.is_set()
    assert revisions(busy) == [1]
    assert revisions(parked) == [1]
    busy.wakeup.clear()
    parked.wakeup.clear()
    hub.returned(parked)  # back for more; `busy` is still writing its batch
    for revision in (2, 3, 4):
        hub.publish([make_event(revision)])
        assert not busy.wakeup.is_set(), "a subscriber writing is not woken per publish"
    assert parked.wakeup.is_set()
    hub.returned(busy)
    assert busy.wakeup.is_set(), "back from its write with changes waiting: due at once"
    assert revisions(busy) == [2, 3, 4], "one batch carries everything since its last take"
    assert revisions(parked) == [2, 3, 4]


async def test_subscribers_taking_the_same_range_share_one_batch_and_its_encodings() -> None:
    hub = make_hub(capacity=100)
    first, second, behind = register(hub), register(hub), register(hub)
    hub.publish([make_event(1)])
    assert revisions(behind) == [1]
    hub.publish([make_event(2), make_event(3)])
    one, two, three = first.take(), second.take(), behind.take()
    assert one is two, "the same range: the same batch, so an encoding of it is made once"
    assert isinstance(one, SharedBatch)
    assert isinstance(three, SharedBatch)
    one.memo["grpc"] = b"encoded"
    assert two.memo["grpc"] == b"encoded"
    assert [e.revision for e in three] == [2, 3]
    assert three.memo == {}


async def test_the_shared_log_keeps_only_what_someone_has_yet_to_take() -> None:
    hub = make_hub(capacity=1000)
    reader, lagging = register(hub), register(hub)
    for revision in range(1, 101):
        hub.publish([make_event(revision)])
        reader.take()
    log = reader.log
    assert log is not None
    assert len(log.events) == 100, "the lagging one has taken nothing"
    assert lagging.backlog == 100
    assert reader.backlog == 0
    assert len(lagging.take()) == 100
    hub.publish([make_event(101)])
    assert [e.revision for e in log.events] == [101], "taken by everyone: freed"
    hub.unregister(lagging)
    hub.unregister(reader)
    assert hub.subscriber_count == 0


async def test_a_shared_log_subscriber_is_ended_once_too_far_behind_and_its_range_freed() -> None:
    hub = make_hub(capacity=3)
    stalled, reader = register(hub), register(hub)
    for revision in range(1, 5):
        hub.publish([make_event(revision)])
        assert revisions(reader) == [revision]
    assert stalled.ended is not None
    assert stalled.ended.reason == "SUBSCRIBER_TOO_SLOW"
    assert hub.subscriber_count == 1
    hub.publish([make_event(5)])
    log = reader.log
    assert log is not None
    assert [e.revision for e in log.events] == [5]
