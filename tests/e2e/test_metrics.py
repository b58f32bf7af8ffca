"""`GET /metrics`: a real server, scraped over HTTP, parsed as Prometheus text.

Each test reads the figures before and after calls it knows, so they hold
whatever the server did before (start-up, other calls).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import grpc
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from headway.client.errors import NotFoundError
from headway.server import metrics
from headway.server.config import Settings
from headway.server.http.counting import metrics_middleware
from headway.server.metrics import Metrics
from headway.v1 import task_service_pb2
from tests.harness import ServerHarness
from tests.streams import Collector, kind

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(port: int) -> Samples:
    """Every sample of the server's /metrics, by name and sorted labels."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
async def served(make_settings: Callable[..., Settings]) -> AsyncIterator[ServerHarness]:
    harness = ServerHarness(make_settings(metrics_address="127.0.0.1:0"))
    await harness.start()
    try:
        yield harness
    finally:
        await harness.close()


def metrics_port(harness: ServerHarness) -> int:
    assert harness.running is not None
    assert harness.running.metrics_port > 0
    return harness.running.metrics_port


async def test_calls_commits_and_tasks_are_counted(served: ServerHarness) -> None:
    port = metrics_port(served)
    client = served.client()
    before = await scrape(port)

    for n in range(3):
        await client.create_task(f"m{n}", start=n == 0)
    with pytest.raises(NotFoundError):
        await client.get_task("nowhere")
    after = await scrape(port)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("headway_rpc_requests_total", method="CreateTask", code="OK") == 3
    assert grew("headway_rpc_requests_total", method="GetTask", code="NOT_FOUND") == 1
    assert grew("headway_rpc_requests_total", method="GetTask", code="OK") == 0
    assert grew("headway_rpc_duration_seconds_count", method="CreateTask") == 3
    assert grew("headway_rpc_duration_seconds_bucket", method="CreateTask", le="+Inf") == 3
    assert grew("headway_rpc_duration_seconds_sum", method="CreateTask") > 0
    # Three mutations, in one to three groups; three changes; each commit timed.
    commits = grew("headway_commit_duration_seconds_count")
    assert 1 <= commits <= 3
    assert grew("headway_commit_group_size_count") == commits
    assert grew("headway_commit_group_size_sum") == 3
    assert grew("headway_changes_total") == 3
    assert value(after, "headway_commit_failures_total", kind="unavailable") == 0
    # Read from memory at scrape time.
    assert value(after, "headway_tasks", state="running") == 1
    assert value(after, "headway_tasks", state="pending") == 2
    assert value(after, "headway_tasks", state="succeeded") == 0
    assert value(after, "headway_tasks_stalled") == 0
    assert value(after, "headway_tenants") == 1
    # The standard process figures come along.
    assert value(after, "process_resident_memory_bytes") > 0


async def test_subscribers_are_counted_while_they_last(served: ServerHarness) -> None:
    port = metrics_port(served)
    client = served.client()
    before = await scrape(port)
    assert value(before, "headway_subscribers", transport="grpc") == 0
    assert value(before, "headway_subscribers", transport="http") == 0

    collector = Collector().start(client)
    await collector.wait_for(lambda events: any(kind(e) == "synced" for e in events))
    during = await scrape(port)
    assert value(during, "headway_subscribers", transport="grpc") == 1

    # A live change: its delivery lag is measured when the feed hands it over.
    created = await client.create_task("live")
    await collector.wait_revision(created.revision)
    lagged = await scrape(port)
    assert value(lagged, "headway_delivery_lag_seconds_count") >= 1
    assert value(lagged, "headway_delivery_lag_seconds_bucket", le="+Inf") >= 1

    await collector.stop()
    for _ in range(100):
        after = await scrape(port)
        if value(after, "headway_subscribers", transport="grpc") == 0:
            break
        await asyncio.sleep(0.05)
    assert value(after, "headway_subscribers", transport="grpc") == 0
    # A stream counts when it ends: here cancelled by the client.
    assert value(after, "headway_rpc_requests_total", method="Subscribe", code="CANCELLED") == 1
    assert value(after, "headway_rpc_duration_seconds_count", method="Subscribe") == 1


async def test_an_evicted_subscriber_is_counted(make_settings: Callable[..., Settings]) -> None:
    # A queue of one event: a group commit of several changes overflows it at once.
    harness = ServerHarness(make_settings(metrics_address="127.0.0.1:0", subscriber_queue_events=1))
    await harness.start()
    try:
        port = metrics_port(harness)
        client = harness.client()
        # A raw stream, which does not resume after it is ended (the client's would).
        stream = client.stub.Subscribe(task_service_pb2.SubscribeRequest())
        async for response in stream:
            if any(kind(e) == "synced" for e in response.events):
                break
        assert value(await scrape(port), "headway_subscribers_evicted_total") == 0

        for round_ in range(20):
            await asyncio.gather(*(client.create_task(f"e{round_}-{n}") for n in range(20)))
            if value(await scrape(port), "headway_subscribers_evicted_total"):
                break
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            async for _ in stream:
                pass
        assert ended.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "SUBSCRIBER_TOO_SLOW" in str(ended.value.trailing_metadata())
        after = await scrape(port)
        assert value(after, "headway_subscribers_evicted_total") == 1
        assert value(after, "headway_subscribers", transport="grpc") == 0
        code = "RESOURCE_EXHAUSTED"
        assert value(after, "headway_rpc_requests_total", method="Subscribe", code=code) == 1
        assert value(after, "headway_subscriber_queue_depth") == 0
    finally:
        await harness.close()


async def test_only_get_and_head_of_metrics_are_answered_on_one_connection(
    served: ServerHarness,
) -> None:
    port = metrics_port(served)
    answers = []
    async with aiohttp.ClientSession() as session:  # one kept-alive connection
        for method, path in (
            ("GET", "/metrics?debug=1"),
            ("HEAD", "/metrics"),
            ("POST", "/metrics"),
            ("GET", "/elsewhere"),
            ("GET", "/metrics"),
        ):
            async with session.request(method, f"http://127.0.0.1:{port}{path}") as response:
                body = await response.read()
                answers.append((method, path, response.status, b"headway_" in body))
    assert answers == [
        ("GET", "/metrics?debug=1", 200, True),
        ("HEAD", "/metrics", 200, False),
        ("POST", "/metrics", 405, False),
        ("GET", "/elsewhere", 404, False),
        ("GET", "/metrics", 200, True),
    ]


async def test_an_idle_scrape_connection_is_closed(
    served: ServerHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics, "IDLE_SECONDS", 0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", metrics_port(served))
    try:
        assert await asyncio.wait_for(reader.read(), 5) == b"", "closed without an answer"
    finally:
        writer.close()


async def test_metrics_can_be_turned_off(make_settings: Callable[..., Settings]) -> None:
    harness = ServerHarness(make_settings(metrics_address=""))
    running = await harness.start()
    try:
        assert running.metrics is None
        assert running.metrics_port == 0
        await harness.client().create_task("quiet")
    finally:
        await harness.close()


async def test_the_http_middleware_counts_requests_by_route() -> None:
    metrics = Metrics()

    async def task(request: web.Request) -> web.Response:
        if request.match_info["task_id"] == "missing":
            raise web.HTTPNotFound()
        return web.json_response({"id": request.match_info["task_id"]})

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("a bug")

    app = web.Application(middlewares=[metrics_middleware(metrics)])
    app.router.add_get("/v1/tasks/{task_id}", task)
    app.router.add_get("/broken", broken)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    statuses: list[int] = []
    try:
        async with aiohttp.ClientSession() as session:
            for path in ("/v1/tasks/a", "/v1/tasks/b", "/v1/tasks/missing", "/nope", "/broken"):
                async with session.get(f"http://127.0.0.1:{port}{path}") as response:
                    statuses.append(response.status)
    finally:
        await runner.cleanup()
    assert statuses == [200, 200, 404, 404, 500]

    samples: Samples = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    route = "/v1/tasks/{task_id}"
    counts: dict[str, Any] = {
        "ok": value(samples, "headway_http_requests_total", route=route, status="200"),
        "missing": value(samples, "headway_http_requests_total", route=route, status="404"),
        "unmatched": value(samples, "headway_http_requests_total", route="unmatched", status="404"),
        "broken": value(samples, "headway_http_requests_total", route="/broken", status="500"),
    }
    assert counts == {"ok": 2, "missing": 1, "unmatched": 1, "broken": 1}
    assert value(samples, "headway_http_duration_seconds_count", route=route) == 3
    # The raw path (the id) never becomes a label.
    assert not any("/v1/tasks/a" in str(labels) for _, labels in samples)


async def test_the_gateway_counts_its_calls_by_rpc_and_its_streams_as_http(
    served: ServerHarness,
) -> None:
    base = served.http_url
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base}/v1/tasks", json={"taskId": "via-http"}) as response:
            assert response.status == 200
        async with session.get(f"{base}/v1/tasks/nope") as response:
            assert response.status == 404
        stream = await session.get(f"{base}/v1/events")
        await stream.content.readuntil(b"event: synced")
        during = await scrape(metrics_port(served))
        stream.close()
    assert value(during, "headway_subscribers", transport="http") == 1
    assert value(during, "headway_subscribers", transport="grpc") == 0
    samples = await scrape(metrics_port(served))
    created = value(samples, "headway_http_requests_total", route="POST /v1/tasks", status="200")
    missing = value(
        samples, "headway_http_requests_total", route="GET /v1/tasks/{taskId}", status="404"
    )
    assert (created, missing) == (1, 1), "each RPC route has its own label, ids never do"
