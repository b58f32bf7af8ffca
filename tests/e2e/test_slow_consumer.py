"""A subscriber that stops reading never slows writers or other subscribers.

The server runs as its own process so that its memory can be measured: the
burst written here is several times larger than what the stuck subscriber may
hold, so an unbounded queue would show in the server's resident size.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from headway.client import HeadwayClient
from headway.client.errors import ResourceExhaustedError, from_rpc_error
from headway.v1 import event_pb2, log_pb2, task_service_pb2, task_service_pb2_grpc
from tests.processes import ServerProcess
from tests.streams import Collector, changes, kind, validate_ordered, validate_reliable

QUEUE_EVENTS = 128
AGENTS = 4
BATCHES = 600
ENTRY = "x" * 2000  # five of these per event: ~10 kB, ~24 MB in all


async def drain(call: object, received: list[event_pb2.Event]) -> None:
    """Read a stream to its end; the test expects that end to be an error."""
    while True:
        response = await asyncio.wait_for(call.read(), 30)  # type: ignore[attr-defined]
        assert response is not grpc.aio.EOF, "stream ended without an error"
        received.extend(response.events)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(
        tmp_path / "slow.db", "--subscriber-queue-events", str(QUEUE_EVENTS)
    ).start()
    try:
        yield process
    finally:
        assert process.stop() == 0, process.log.read_text()


async def test_slow_subscriber_is_evicted_and_others_keep_up(server: ServerProcess) -> None:
    client = HeadwayClient(server.target)
    for n in range(AGENTS):
        await client.create_task(f"w{n}", start=True)
    fast = Collector().start(client, include_logs=True)
    await fast.wait_for(lambda es: any(kind(e) == "synced" for e in es))

    # The stuck subscriber: its own connection, one response read, then silence.
    stuck_channel = grpc.aio.insecure_channel(server.target)
    stuck = task_service_pb2.SubscribeRequest(include_logs=True)

    call = task_service_pb2_grpc.TaskServiceStub(stuck_channel).Subscribe(stuck)
    first = await call.read()
    assert first is not grpc.aio.EOF

    rss_before = server.rss_bytes()

    async def agent(n: int) -> None:
        entries = [log_pb2.LogEntry(message=ENTRY) for _ in range(5)]
        for _ in range(BATCHES):
            await client.append_logs(f"w{n}", entries)

    await asyncio.wait_for(asyncio.gather(*(agent(n) for n in range(AGENTS))), 120)
    head = (await client.list_tasks(page_size=1)).revision
    rss_after = server.rss_bytes()

    # The fast subscriber received every change, in order.
    events = await fast.wait_revision(head, timeout=60)
    validate_ordered(events)
    validate_reliable(events, range(1, head + 1))
    await fast.stop()

    # The stuck one drains what was already in flight, then learns it was evicted,
    # holding a gap-free prefix it can resume from.
    received = list(first.events)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await drain(call, received)
    error = from_rpc_error(raised.value)
    assert isinstance(error, ResourceExhaustedError)
    assert error.reason == "SUBSCRIBER_TOO_SLOW"
    delivered = [e.revision for e in changes(received)]
    assert delivered == list(range(1, len(delivered) + 1))
    assert len(delivered) < head

    # Writing ~24 MB past a stuck reader grew the server by far less than that.
    written = AGENTS * BATCHES * 5 * len(ENTRY)
    growth = rss_after - rss_before
    assert growth < written / 3, f"server grew {growth / 1e6:.1f} MB for {written / 1e6:.1f} MB"

    await stuck_channel.close()
    await client.close()
