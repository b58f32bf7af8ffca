"""A reader that falls behind with `slow_consumer` CONFLATE is caught up, never ended.

The reader here takes one response for every ten changes written, and each
response holds one change (`max_response_bytes` fits one task), so it reads
ten times slower than the writers write, by construction rather than by the
clock: writer and reader take turns. Every task event is about 50 kB, so the
transport's buffers fill after a while and the server's queue for the reader
overflows; each loop waits on what the reader has seen (a conflated event),
never on time.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import grpc
import pytest

from headway.client import HeadwayClient, task_filter
from headway.client.errors import ResourceExhaustedError, from_rpc_error
from headway.server.config import Limits, Settings
from headway.v1 import event_pb2, task_pb2, task_service_pb2, task_service_pb2_grpc
from tests.harness import ServerHarness
from tests.streams import changes, kind

TASKS = [f"t{n}" for n in range(6)]
STEPS = 48
RATIO = 10  # changes written per response read
QUEUE = 16
# How many turns the reader may take before it must have seen a conflated batch: the
# buffers between server and reader (a few MB) fill, then drain at one change a turn.
MAX_TURNS = 1000
TURNS_AFTER_CONFLATION = 30
CONFLATE = task_service_pb2.SLOW_CONSUMER_POLICY_CONFLATE


@pytest.fixture
async def harness(make_settings: Callable[..., Settings]) -> AsyncIterator[ServerHarness]:
    harness = ServerHarness(
        make_settings(
            subscriber_queue_events=QUEUE,
            quota_mutation_rate=0,
            limits=Limits(max_task_bytes=64 * 1024, max_response_bytes=64 * 1024),
        )
    )
    await harness.start()
    try:
        yield harness
    finally:
        await harness.close()


@dataclass
class Writer:
    """Writes ~50 kB changes round-robin over the tasks and keeps each acknowledged revision."""

    client: HeadwayClient
    written: list[int] = field(default_factory=list)
    count: int = 0

    async def setup(self) -> None:
        for task_id in TASKS:
            steps = [f"s{n}" for n in range(STEPS)]
            task = await self.client.create_task(task_id, steps=steps, start=True)
            self.written.append(task.revision)
            for step in steps:
                task = await self.client.update_step(task_id, step, message="x" * 1000)
                self.written.append(task.revision)
        # Changes nobody here watches: the filter must keep them out, conflated or not.
        await self.client.create_task("other", kind="other", start=True)

    async def write(self, n: int) -> None:
        for _ in range(n):
            self.count += 1
            task = await self.client.update_task(
                TASKS[self.count % len(TASKS)], message=f"change {self.count}"
            )
            self.written.append(task.revision)
            if self.count % 7 == 0:
                await self.client.update_task("other", message=f"change {self.count}")


def watched() -> task_service_pb2.TaskFilter:
    return task_filter(task_ids=TASKS)


@dataclass
class Reader:
    """One raw Subscribe call read a response at a time, folded as a viewer would."""

    call: grpc.aio.UnaryStreamCall  # type: ignore[type-arg]
    received: list[event_pb2.Event] = field(default_factory=list)
    tasks: dict[str, task_pb2.Task] = field(default_factory=dict)

    @staticmethod
    def open(channel: grpc.aio.Channel, **options: object) -> Reader:
        request = task_service_pb2.SubscribeRequest(filter=watched(), **options)  # type: ignore[arg-type]
        return Reader(task_service_pb2_grpc.TaskServiceStub(channel).Subscribe(request))

    async def read(self) -> list[event_pb2.Event]:
        response = await self.call.read()
        assert response is not grpc.aio.EOF, "the stream ended"
        events = list(response.events)
        for event in events:
            self.apply(event)
        return events

    def apply(self, event: event_pb2.Event) -> None:
        self.received.append(event)
        which = kind(event)
        if which in ("snapshot", "created", "updated"):
            task = getattr(event, which)
            self.tasks[task.id] = task
        elif which == "deleted":
            self.tasks.pop(event.deleted.id, None)

    async def until_synced(self) -> None:
        while not any(kind(e) == "synced" for e in self.received):
            await self.read()

    async def until_revision(self, revision: int) -> None:
        while not self.received or self.received[-1].revision < revision:
            await self.read()

    @property
    def last_change(self) -> int:
        return max((e.revision for e in changes(self.received) if kind(e) != "snapshot"), default=0)


def conflated(events: Sequence[event_pb2.Event]) -> list[event_pb2.Event]:
    return [e for e in events if e.HasField("conflation")]


async def server_tasks(client: HeadwayClient) -> dict[str, task_pb2.Task]:
    return {task_id: await client.get_task(task_id) for task_id in TASKS}


async def fall_behind(writer: Writer, reader: Reader, *, turns_after: int) -> None:
    """Take turns, RATIO changes per response read, until `turns_after` turns past the overflow."""
    for _ in range(MAX_TURNS):
        if conflated(reader.received):
            break
        await writer.write(RATIO)
        await reader.read()
    assert conflated(reader.received), f"no overflow after {writer.count} changes"
    for _ in range(turns_after):
        await writer.write(RATIO)
        await reader.read()


async def keep_falling_behind(writer: Writer, reader: Reader) -> None:
    """Take turns as `fall_behind` does, then read what is in flight; expected to be ended."""
    for _ in range(MAX_TURNS):
        await writer.write(RATIO)
        await reader.read()
    while True:
        await reader.read()


async def test_a_reader_ten_times_slower_is_caught_up_never_ended(harness: ServerHarness) -> None:
    client = harness.client()
    writer = Writer(client)
    await writer.setup()
    channel = grpc.aio.insecure_channel(harness.target)
    reader = Reader.open(channel, slow_consumer=CONFLATE)
    await reader.until_synced()
    synced = reader.received[-1].revision

    await fall_behind(writer, reader, turns_after=TURNS_AFTER_CONFLATION)
    head = writer.written[-1]
    await reader.until_revision(head)  # the last change is its task's latest: it arrives

    # Never ended: a change written now still arrives, on the same stream.
    await writer.write(1)
    await reader.until_revision(writer.written[-1])

    # Exactly the server's final state of every task.
    assert reader.tasks == await server_tasks(client)
    received = changes(reader.received)
    assert all(e.updated.id in TASKS for e in received if kind(e) == "updated"), "filter kept"
    # Strictly increasing revisions, each one a change that was written.
    live = [e.revision for e in received if kind(e) != "snapshot"]
    assert live == sorted(set(live))
    assert set(live) <= set(writer.written)
    assert len(live) < len(writer.written) // 2, "the backlog was collapsed"

    # Each conflated batch starts right after the change delivered before it, and
    # every event lies inside its batch's range: the bookkeeping is exact.
    previous, previous_span, batches = synced, None, 0
    for event in received:
        if kind(event) == "snapshot":
            continue
        assert event.revision > previous
        if event.HasField("conflation"):
            span = event.conflation
            if span != previous_span:
                assert span.after_revision == previous, "a batch starts after the last change"
                batches += 1
            assert span.after_revision < event.revision <= span.through_revision
            assert span.collapsed_events >= 1
            previous_span = span
        else:
            previous_span = None
        previous = event.revision
    assert batches >= 1

    await channel.close()


async def test_the_same_reader_with_the_default_policy_is_ended(harness: ServerHarness) -> None:
    client = harness.client()
    writer = Writer(client)
    await writer.setup()
    channel = grpc.aio.insecure_channel(harness.target)
    reader = Reader.open(channel)  # slow_consumer unset: END
    await reader.until_synced()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await keep_falling_behind(writer, reader)
    error = from_rpc_error(raised.value)
    assert isinstance(error, ResourceExhaustedError)
    assert error.reason == "SUBSCRIBER_TOO_SLOW"
    assert not conflated(reader.received)
    # What it got is every change in order, with no gap: it resumes from the last one.
    synced = next(e.revision for e in reader.received if kind(e) == "synced")
    live = [e.revision for e in changes(reader.received) if kind(e) != "snapshot"]
    assert live == [r for r in writer.written if synced < r <= live[-1]]
    await channel.close()


async def test_resuming_from_inside_a_conflated_batch_has_no_gap_and_no_duplicate(
    harness: ServerHarness,
) -> None:
    client = harness.client()
    writer = Writer(client)
    await writer.setup()
    channel = grpc.aio.insecure_channel(harness.target)
    reader = Reader.open(channel, slow_consumer=CONFLATE)
    await reader.until_synced()
    await fall_behind(writer, reader, turns_after=0)
    # The connection breaks right after the first event of a conflated batch.
    first = conflated(reader.received)[0]
    assert reader.received[-1] is first
    reader.call.cancel()
    resume_from = first.revision
    await writer.write(RATIO)  # while it is away

    # Resumed (a fast reader now): exactly the changes after its revision, complete.
    resumed = Reader.open(channel, start_revision=resume_from, slow_consumer=CONFLATE)
    resumed.tasks = dict(reader.tasks)
    await resumed.until_revision(writer.written[-1])
    revisions = [e.revision for e in changes(resumed.received)]
    assert revisions == [r for r in writer.written if r > resume_from], "no gap, no duplicate"
    assert not conflated(resumed.received)
    assert resumed.tasks == await server_tasks(client), "every task's final state"
    await channel.close()


async def test_an_unknown_policy_is_invalid_argument(harness: ServerHarness) -> None:
    channel = grpc.aio.insecure_channel(harness.target)
    stub = task_service_pb2_grpc.TaskServiceStub(channel)
    request = task_service_pb2.SubscribeRequest(slow_consumer=7)  # type: ignore[arg-type]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in stub.Subscribe(request):
            pass
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    error = from_rpc_error(raised.value)
    assert error.reason == "FIELD_VIOLATION"
    assert error.field_violations == {"slow_consumer": "unknown policy 7"}
    await channel.close()


async def test_an_event_stream_reader_that_stops_reading_is_conflated(
    harness: ServerHarness,
) -> None:
    """`GET /v1/events?slowConsumer=conflate`: the same policy over Server-Sent Events."""
    client = harness.client()
    writer = Writer(client)
    await writer.setup()
    assert harness.running is not None
    hub = harness.running.hub
    # A reader with a tiny receive window that stops reading after the request.
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(("127.0.0.1", harness.running.http_port))
    ids = "".join(f"&taskId={t}" for t in TASKS)
    stuck.sendall(f"GET /v1/events?slowConsumer=conflate{ids} HTTP/1.0\r\n\r\n".encode())
    for _ in range(500):  # until the server has registered it
        if hub.subscriber_count:
            break
        await asyncio.sleep(0.01)
    (subscriber,) = hub.subscribers()
    assert subscriber.conflation is not None
    for _ in range(MAX_TURNS):
        await writer.write(RATIO)
        if subscriber.conflation.folding:
            break
    assert subscriber.conflation.folding, "the stuck reader's queue never overflowed"
    await writer.write(RATIO)
    head = writer.written[-1]

    # Reading at last: everything up to the last change, never an error.
    stuck.setblocking(False)
    loop = asyncio.get_running_loop()
    received = bytearray()
    last = f"id: {head}\n".encode()
    while last not in received or b"\n\n" not in received[received.index(last) :]:
        chunk = await asyncio.wait_for(loop.sock_recv(stuck, 1 << 20), 20)
        assert chunk, "the stream ended"
        received += chunk
    stuck.close()
    blocks = received.decode().split("\r\n\r\n", 1)[1].split("\n\n")
    events = [json.loads(b.rsplit("data: ", 1)[1]) for b in blocks if "\ndata: " in b]
    assert not any("event: error" in b for b in blocks)
    live = [e for e in events if "updated" in e]
    revisions = [int(e["revision"]) for e in live]
    assert revisions == sorted(set(revisions)), "strictly increasing"
    assert any("conflation" in e for e in live)
    final = {e["updated"]["id"]: e["updated"]["message"] for e in live}
    assert final == {t: task.message for t, task in (await server_tasks(client)).items()}
