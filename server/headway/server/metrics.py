"""Prometheus metrics: what the server counts, and `/metrics` on its own address.

Everything is counted on the event loop's thread, so the counters are plain
integers and the histograms plain lists (`_Histogram`): no lock and no label
lookup in prometheus-client's objects on the hot paths (every call, every
commit, every live batch of every subscriber). One collector turns them into
metric families when Prometheus scrapes, and reads what the server already
keeps in memory (tasks by state, subscribers, queues) at that moment, so those
cost nothing per change. Each server has its own `CollectorRegistry`.

The figures add up across tenants (the global write rate, every tenant's
tasks), so they are served on `--metrics-address`, apart from the API, for an
internal network only. They never carry task data: no ids, names or labels.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence

import h11
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from headway.server.engine import CommitObserver, Engine
from headway.server.hub import FanoutObserver, Hub
from headway.server.store.base import EventRecord, StorageUnavailableError
from headway.v1 import task_pb2

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
COMMIT_BUCKETS = (0.0001, 0.00025, *LATENCY_BUCKETS[:-2])
GROUP_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
STATES = {
    value: name.removeprefix("TASK_STATE_").lower()
    for name, value in task_pb2.TaskState.items()
    if value != task_pb2.TASK_STATE_UNSPECIFIED
}


class _Histogram:
    """Counts per bucket (`le` bounds, then +Inf) and the sum; for the loop's thread only."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        cumulative = 0
        out: list[tuple[str, float]] = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            cumulative += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        return out


def _add_histograms(
    family: HistogramMetricFamily, histograms: dict[tuple[str, ...], _Histogram]
) -> HistogramMetricFamily:
    for labels, histogram in sorted(histograms.items()):
        family.add_metric(list(labels), histogram.buckets(), histogram.total)
    return family


class Metrics(CommitObserver, FanoutObserver, Collector):
    """Every `headway_` metric of one server; the engine, hub and calls report to it."""

    def __init__(self, engine: Engine | None = None, hub: Hub | None = None) -> None:
        self._engine = engine
        self._hub = hub
        self._rpc_requests: dict[tuple[str, str], int] = {}
        self._rpc_duration: dict[tuple[str, ...], _Histogram] = {}
        self._http_requests: dict[tuple[str, str], int] = {}
        self._http_duration: dict[tuple[str, ...], _Histogram] = {}
        self._group_size = _Histogram(GROUP_BUCKETS)
        self._commit_duration = _Histogram(COMMIT_BUCKETS)
        self._commit_failures: dict[str, int] = {}
        self._changes = 0
        self._evicted = 0
        self._delivery_lag = _Histogram(LATENCY_BUCKETS)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        ProcessCollector(registry=self.registry)

    def attach(self, engine: Engine, hub: Hub) -> None:
        """Report the engine's commits and the hub's fan-out here, and read both at scrape time."""
        self._engine, self._hub = engine, hub
        engine.observer = self
        hub.observer = self

    # -- what the server reports ---------------------------------------------------

    def rpc_finished(self, method: str, code: str, seconds: float) -> None:
        key = (method, code)
        self._rpc_requests[key] = self._rpc_requests.get(key, 0) + 1
        histogram = self._rpc_duration.get((method,))
        if histogram is None:
            histogram = self._rpc_duration[(method,)] = _Histogram(LATENCY_BUCKETS)
        histogram.observe(seconds)

    def http_finished(self, route: str, status: int, seconds: float) -> None:
        key = (route, str(status))
        self._http_requests[key] = self._http_requests.get(key, 0) + 1
        histogram = self._http_duration.get((route,))
        if histogram is None:
            histogram = self._http_duration[(route,)] = _Histogram(LATENCY_BUCKETS)
        histogram.observe(seconds)

    def committed(self, mutations: int, changes: int, seconds: float) -> None:
        self._group_size.observe(mutations)
        self._commit_duration.observe(seconds)
        self._changes += changes

    def commit_failed(self, error: Exception) -> None:
        kind = "unavailable" if isinstance(error, StorageUnavailableError) else "refused"
        self._commit_failures[kind] = self._commit_failures.get(kind, 0) + 1

    def evicted(self, count: int) -> None:
        self._evicted += count

    def live_batch(self, batch: Sequence[object]) -> None:
        # The oldest change of the batch (the first) has waited longest.
        first = batch[0] if batch else None
        if isinstance(first, EventRecord):
            self._delivery_lag.observe(max(0.0, (time.time_ns() - first.commit_ns) / 1e9))

    # -- what Prometheus reads -----------------------------------------------------

    def collect(self) -> Iterable[Metric]:
        requests = CounterMetricFamily(
            "headway_rpc_requests",
            "TaskService calls finished, by method and status code (streams when they end).",
            labels=["method", "code"],
        )
        for (method, code), count in sorted(self._rpc_requests.items()):
            requests.add_metric([method, code], count)
        yield requests
        yield _add_histograms(
            HistogramMetricFamily(
                "headway_rpc_duration_seconds",
                "Time from a TaskService call's start to its answer (a stream: to its end).",
                labels=["method"],
            ),
            self._rpc_duration,
        )
        http = CounterMetricFamily(
            "headway_http_requests",
            "HTTP gateway requests finished, by route and status.",
            labels=["route", "status"],
        )
        for (route, status), count in sorted(self._http_requests.items()):
            http.add_metric([route, status], count)
        yield http
        yield _add_histograms(
            HistogramMetricFamily(
                "headway_http_duration_seconds",
                "Time from an HTTP request to its response's end (an event stream: to its end).",
                labels=["route"],
            ),
            self._http_duration,
        )
        yield _add_histograms(
            HistogramMetricFamily(
                "headway_commit_group_size",
                "Mutations committed together in one transaction.",
            ),
            {(): self._group_size},
        )
        yield _add_histograms(
            HistogramMetricFamily(
                "headway_commit_duration_seconds",
                "Time the store takes to commit one group (with SQLite FULL: the fsync).",
            ),
            {(): self._commit_duration},
        )
        failures = CounterMetricFamily(
            "headway_commit_failures",
            "Group commits that failed: unavailable (storage, retryable) or refused.",
            labels=["kind"],
        )
        for kind in ("unavailable", "refused"):
            failures.add_metric([kind], self._commit_failures.get(kind, 0))
        yield failures
        yield CounterMetricFamily(
            "headway_changes",
            "Changes committed (each is one revision of its tenant), all tenants together.",
            value=self._changes,
        )
        yield CounterMetricFamily(
            "headway_subscribers_evicted",
            "Subscriptions ended because they fell too far behind (SUBSCRIBER_TOO_SLOW).",
            value=self._evicted,
        )
        yield _add_histograms(
            HistogramMetricFamily(
                "headway_delivery_lag_seconds",
                "Time from a change's commit to its feed handing it to the transport, "
                "per live batch (its oldest change).",
            ),
            {(): self._delivery_lag},
        )
        yield from self._engine_now()
        yield from self._hub_now()

    def _engine_now(self) -> Iterator[Metric]:
        if self._engine is None:
            return
        by_state = dict.fromkeys(STATES.values(), 0)
        stalled = 0
        for task in self._engine.all_tasks():
            name = STATES.get(task.state)
            if name is not None:
                by_state[name] += 1
            stalled += task.stalled
        tasks = GaugeMetricFamily(
            "headway_tasks", "Tasks in memory now, by state.", labels=["state"]
        )
        for state, count in by_state.items():
            tasks.add_metric([state], count)
        yield tasks
        yield GaugeMetricFamily(
            "headway_tasks_stalled",
            "Running tasks whose agent missed its lease (stalled) now.",
            value=stalled,
        )
        yield GaugeMetricFamily(
            "headway_tenants",
            "Tenants that have changed anything.",
            value=len(self._engine.tenants()),
        )

    def _hub_now(self) -> Iterator[Metric]:
        if self._hub is None:
            return
        by_transport = {"grpc": 0, "http": 0}
        deepest = 0
        for subscriber in self._hub.subscribers():
            by_transport[subscriber.transport] = by_transport.get(subscriber.transport, 0) + 1
            deepest = max(deepest, subscriber.backlog)
        subscribers = GaugeMetricFamily(
            "headway_subscribers", "Live subscriptions now, by transport.", labels=["transport"]
        )
        for transport, count in sorted(by_transport.items()):
            subscribers.add_metric([transport], count)
        yield subscribers
        yield GaugeMetricFamily(
            "headway_subscriber_queue_depth",
            "Events queued for the most backlogged subscriber now.",
            value=deepest,
        )

    def exposition(self) -> bytes:
        """Every metric in the Prometheus text format."""
        return generate_latest(self.registry)


# A scrape connection that sends nothing for this long is closed (aiohttp's keep-alive
# timeout, which served /metrics before); Prometheus scrapes far more often than that.
IDLE_SECONDS = 75.0


class MetricsServer:
    """`GET /metrics` on its own address, served on the server's event loop.

    The figures are read where they are counted, on the loop's thread, so the
    scrape needs no lock. The HTTP/1.1 exchange is h11's; the server speaks it
    over asyncio's own streams rather than aiohttp's, because aiohttp costs
    about 10 MiB of memory once imported, and a server without the HTTP
    gateway (`--http-address ''`) then never imports it. A connection is kept
    alive between scrapes, as Prometheus expects, and closed at `stop`.
    """

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self, address: str) -> int:
        """Listen on `address` (host:port; port 0: any); the port it got. OSError if it cannot."""
        host, _, port = address.rpartition(":")
        self._server = await asyncio.start_server(self._serve, host.strip("[]") or None, int(port))
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._connections):
            writer.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        connection = h11.Connection(h11.SERVER)
        try:
            while await self._answer(connection, reader, writer):
                connection.start_next_cycle()
        except (h11.ProtocolError, OSError, TimeoutError):
            pass  # a broken request, a peer gone or idle too long: nothing to answer
        finally:
            self._connections.discard(writer)
            writer.close()

    async def _answer(
        self, connection: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Read one request and answer it; whether the connection may carry another."""
        request = await _next(connection, reader)
        if not isinstance(request, h11.Request):
            return False
        while not isinstance(await _next(connection, reader), h11.EndOfMessage | None):
            pass  # a body, which no route takes
        target = request.target.split(b"?", 1)[0]
        content_type = "text/plain; charset=utf-8"
        if target != b"/metrics":
            status, body = 404, b"404: Not Found"
        elif request.method not in (b"GET", b"HEAD"):
            status, body = 405, b"405: Method Not Allowed"
        else:
            status, body, content_type = 200, self._metrics.exposition(), CONTENT_TYPE_LATEST
        headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
        if status == 405:
            headers.append(("Allow", "GET, HEAD"))
        writer.write(connection.send(h11.Response(status_code=status, headers=headers)))
        if request.method != b"HEAD":
            writer.write(connection.send(h11.Data(data=body)) or b"")
        writer.write(connection.send(h11.EndOfMessage()) or b"")
        await writer.drain()
        return connection.our_state is h11.DONE and connection.their_state is h11.DONE


async def _next(connection: h11.Connection, reader: asyncio.StreamReader) -> h11.Event | None:
    """The next event of the request, reading as needed; None once the peer closed.

    TimeoutError when the peer sends nothing for `IDLE_SECONDS`: a connection
    kept alive between scrapes is not kept forever.
    """
    while True:
        event = connection.next_event()
        if event is not h11.NEED_DATA:
            return None if isinstance(event, h11.ConnectionClosed) else event  # type: ignore[return-value]
        async with asyncio.timeout(IDLE_SECONDS):
            data = await reader.read(65536)
        connection.receive_data(data)
