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

import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any

from aiohttp import web
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


# -- HTTP ------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def metrics_middleware(metrics: Metrics) -> Any:
    """An aiohttp middleware that counts every request of the app it is added to.

    The route label is the matched resource's pattern (`/v1/tasks/{task_id}`),
    never the raw path, so ids do not become labels; requests no route matched
    count as `unmatched`. An event stream counts when it ends.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as error:
            status = error.status
            raise
        finally:
            # Read after the handler: the RPC table names its route while it runs.
            metrics.http_finished(_route_of(request), status, time.perf_counter() - started)

    return middleware


# Set by a handler that serves several routes behind one resource (the RPC table).
ROUTE_LABEL = web.RequestKey("headway_route", str)


def _route_of(request: web.Request) -> str:
    if ROUTE_LABEL in request:
        return request[ROUTE_LABEL]
    route = request.match_info.route
    resource = route.resource if route is not None else None
    if resource is None:
        return "unmatched"
    return resource.canonical


class MetricsServer:
    """`GET /metrics` on its own address, served by aiohttp on the server's event loop."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        app = web.Application()
        app.router.add_get("/metrics", self._scrape)
        self._runner = web.AppRunner(app, access_log=None)
        self.port = 0

    async def _scrape(self, request: web.Request) -> web.Response:
        del request
        return web.Response(
            body=self._metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def start(self, address: str) -> int:
        """Listen on `address` (host:port; port 0: any); the port it got. OSError if it cannot."""
        host, _, port = address.rpartition(":")
        await self._runner.setup()
        site = web.TCPSite(self._runner, host.strip("[]") or None, int(port))
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            raise
        self.port = int(self._runner.addresses[0][1])
        return self.port

    async def stop(self) -> None:
        await self._runner.cleanup()
