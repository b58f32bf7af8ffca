"""Server-Sent Events and long polls: the change feed's guarantees, over plain HTTP."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from headway.client import HeadwayClient
from headway.server.config import Settings
from headway.v1 import log_pb2
from tests.harness import ServerHarness
from tests.http_helpers import SseReader, reason


@asynccontextmanager
async def events(url: str, **headers: str) -> AsyncIterator[SseReader]:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as response:
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert response.headers["Cache-Control"] == "no-cache"
        assert response.headers["X-Accel-Buffering"] == "no"
        yield SseReader(response)


async def get_json(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.json()


async def test_snapshot_then_synced_then_live(
    harness: ServerHarness, client: HeadwayClient
) -> None:
    await client.create_task("a", start=True)
    await client.create_task("b")
    async with events(f"{harness.http_url}/v1/events") as stream:
        first = await stream.until("synced")
        assert stream.retry == 2000
        assert [e.event for e in first] == ["snapshot", "snapshot", "synced"]
        assert [e.data["snapshot"]["id"] for e in first[:2]] == ["a", "b"]
        assert all(e.id is None for e in first[:2])
        assert first[-1].id == "2"
        await client.update_task("a", message="hello")
        await client.append_logs("a", [log_pb2.LogEntry(message="not asked for")])
        await client.succeed_task("b")
        await client.delete_task("b")
        updated = await stream.next()
        succeeded = await stream.next()
        deleted = await stream.next()
        assert succeeded is not None
        assert succeeded.id == "5"
        assert updated is not None
        assert deleted is not None
        assert (updated.event, updated.id, updated.data["updated"]["message"]) == (
            "updated",
            "3",
            "hello",
        )
        assert (deleted.event, deleted.id) == ("deleted", "6")


async def test_resume_with_last_event_id_across_a_restart(
    harness: ServerHarness, client: HeadwayClient
) -> None:
    await client.create_task("a", start=True)
    async with events(f"{harness.http_url}/v1/events?includeLogs=true") as stream:
        synced = (await stream.until("synced"))[-1]
        await client.update_task("a", message="one")
        seen = await stream.next()
        assert seen is not None
        assert seen.id == "2"
    await client.update_task("a", message="two")
    await client.append_logs("a", [log_pb2.LogEntry(message="three")])
    await harness.restart()
    client = harness.client()
    await client.update_task("a", message="four")
    async with events(f"{harness.http_url}/v1/events?includeLogs=1", **{"Last-Event-ID": "2"}) as s:
        resumed = [await s.next() for _ in range(3)]
    assert [(e.id, e.event) for e in resumed if e] == [
        ("3", "updated"),
        ("4", "logs"),
        ("5", "updated"),
    ]
    assert synced.id == "1"
    # The first connection of a poller names its resume point in the URL instead.
    async with events(f"{harness.http_url}/v1/events?lastEventId=4") as again:
        after = await again.next()
    assert after is not None
    assert (after.id, after.data["updated"]["message"]) == ("5", "four")


async def test_heartbeats_carry_the_tenants_revision(
    harness: ServerHarness, client: HeadwayClient
) -> None:
    await client.create_task("a")
    async with events(f"{harness.http_url}/v1/events?heartbeat=0.1s") as stream:
        await stream.until("synced")
        beat = await stream.next(timeout=5)
        assert beat is not None
        assert (beat.event, beat.id, beat.data["revision"]) == ("heartbeat", "1", "1")
        await client.update_task("a", message="m")
        await stream.until("updated")
        beat = await stream.next(timeout=5)
        assert beat is not None
        assert (beat.event, beat.id) == ("heartbeat", "2")


async def test_refusals_before_the_stream_starts(harness: ServerHarness) -> None:
    status, body = await get_json(f"{harness.http_url}/v1/events?lastEventId=99")
    assert (status, reason(body)) == (400, "REVISION_IN_FUTURE")
    status, body = await get_json(f"{harness.http_url}/v1/events?endAtRest=true")
    assert (status, reason(body)) == (400, "FIELD_VIOLATION")
    status, body = await get_json(f"{harness.http_url}/v1/events?onCompacted=sometimes")
    assert (status, reason(body)) == (400, "MALFORMED_REQUEST")
    status, body = await get_json(f"{harness.http_url}/v1/events?slowConsumer=sometimes")
    assert (status, reason(body)) == (400, "MALFORMED_REQUEST")


async def test_compaction_means_resync_then_snapshot(
    make_settings: Callable[..., Settings],
) -> None:
    harness = ServerHarness(make_settings(history_retention_events=3))
    await harness.start()
    try:
        client = harness.client()
        await client.create_task("a", start=True)
        for n in range(8):
            await client.update_task("a", message=f"m{n}")
        assert harness.running is not None
        await harness.running.janitor.compact()
        url = f"{harness.http_url}/v1/events"
        async with events(url, **{"Last-Event-ID": "1"}) as stream:
            got = await stream.until("synced")
        assert [e.event for e in got] == ["resync", "snapshot", "synced"]
        assert got[0].id is None
        assert got[0].data["resync"]["reason"] == "RESYNC_REASON_REVISION_COMPACTED"
        assert got[1].data["snapshot"]["message"] == "m7"
        assert got[2].id == "9"
        status, body = await get_json(f"{url}?lastEventId=1&onCompacted=fail")
        assert (status, reason(body)) == (400, "REVISION_COMPACTED")

        status, polled = await get_json(f"{harness.http_url}/v1/changes?after=1&wait=0s")
        assert status == 200
        kinds = [
            next(k for k in e if k not in ("revision", "commitTime")) for e in polled["events"]
        ]
        assert kinds == ["resync", "snapshot", "synced"]
        assert polled["revision"] == 9
    finally:
        await harness.close()


async def test_end_at_rest_ends_the_stream(harness: ServerHarness, client: HeadwayClient) -> None:
    await client.create_task("a", start=True)
    await client.create_task("b", start=True)
    url = f"{harness.http_url}/v1/events?taskId=a&endAtRest=true"
    async with events(url) as stream:
        await stream.until("synced")
        await client.update_task("b", message="other")
        await client.fail_task("a", message="boom")
        last = await stream.next()
        assert last is not None
        assert last.data["updated"]["state"] == "TASK_STATE_FAILED"
        assert await stream.next() is None
    # Already at rest: the snapshot, synced, and the end.
    async with events(url) as stream:
        got = [e.event for e in [await stream.next(), await stream.next()] if e]
        assert got == ["snapshot", "synced"]
        assert await stream.next() is None


async def test_shutdown_ends_streams_with_an_error_event(
    harness: ServerHarness,
) -> None:
    async with events(f"{harness.http_url}/v1/events") as stream:
        await stream.until("synced")
        stopping = asyncio.create_task(harness.stop())
        last = await stream.next()
        assert last is not None
        assert last.event == "error"
        assert reason(last.data) == "SHUTTING_DOWN"
        assert await stream.next() is None
        await stopping


async def test_long_poll_returns_exactly_the_later_changes(
    harness: ServerHarness, client: HeadwayClient
) -> None:
    base = f"{harness.http_url}/v1/changes"
    await client.create_task("a", start=True)
    await client.update_task("a", message="one")
    await client.update_task("a", message="two")
    status, body = await get_json(f"{base}?after=2&wait=0s")
    assert status == 200
    assert [(e["revision"], e["updated"]["message"]) for e in body["events"]] == [("3", "two")]
    assert body["revision"] == 3

    status, body = await get_json(f"{base}?wait=0s")
    assert [next(iter(set(e) - {"revision"})) for e in body["events"]] == ["snapshot", "synced"]
    assert body["revision"] == 3

    status, body = await get_json(f"{base}?after=3&wait=0.2s")
    assert (status, body) == (200, {"events": [], "revision": 3})

    started = time.monotonic()
    poll = asyncio.create_task(get_json(f"{base}?after=3&wait=20s&taskId=a"))
    await asyncio.sleep(0.3)
    assert not poll.done()
    await client.update_task("a", message="three")
    status, body = await poll
    assert time.monotonic() - started < 10
    assert [e["updated"]["message"] for e in body["events"]] == ["three"]
    assert body["revision"] == 4

    status, body = await get_json(f"{base}?after=99")
    assert (status, reason(body)) == (400, "REVISION_IN_FUTURE")


@pytest.mark.parametrize("queue", [16])
async def test_a_stuck_reader_is_evicted_and_writers_continue(
    make_settings: Callable[..., Settings], queue: int
) -> None:
    harness = ServerHarness(make_settings(subscriber_queue_events=queue))
    await harness.start()
    try:
        client = harness.client()
        await client.create_task("a", start=True)
        assert harness.running is not None
        port = harness.running.http_port
        # A reader with a tiny receive window that stops reading after the request.
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(("127.0.0.1", port))
        stuck.sendall(
            b"GET /v1/events?includeLogs=true HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        hub = harness.running.hub
        for _ in range(500):
            if hub.subscriber_count:
                break
            await asyncio.sleep(0.01)
        assert hub.subscriber_count == 1
        entry = "x" * 2000
        for _ in range(400):
            await client.append_logs("a", [log_pb2.LogEntry(message=entry)] * 5)
            if hub.subscriber_count == 0:
                break
        assert hub.subscriber_count == 0, "the stuck reader was never evicted"
        # Writers were not held up: another change commits at once.
        await asyncio.wait_for(client.update_task("a", message="still going"), 5)
        # The reader, reading at last, finds everything it had and then the error.
        stuck.setblocking(False)
        loop = asyncio.get_running_loop()
        received = bytearray()
        while True:
            chunk = await asyncio.wait_for(loop.sock_recv(stuck, 65536), 20)
            if not chunk:
                break
            received += chunk
        stuck.close()
        text = received.decode(errors="replace")
        assert "event: error" in text
        assert "SUBSCRIBER_TOO_SLOW" in text.rsplit("event: error", 1)[1]
    finally:
        await harness.close()
