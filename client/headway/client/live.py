"""A live view of tasks: the snapshot, then every change, applied as it arrives.

A viewer (a dashboard, the `headway watch` command, a service waiting for its
jobs) usually wants the current state of some tasks, not the events themselves.
`LiveView` folds a resumable subscription into a dict of tasks (and the latest
log lines of each), and lets callers wait until a condition holds, such as a
task coming to rest.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from datetime import timedelta
from types import TracebackType

from headway.client import events
from headway.client.client import HeadwayClient
from headway.client.errors import HeadwayError, NotFoundError
from headway.client.models import LogEntry, Task
from headway.client.retry import RetryPolicy
from headway.client.watch import RECONNECT_POLICY, subscribe
from headway.v1 import task_service_pb2


class LiveView:
    """The tasks matching a filter, kept current from a resumable subscription.

    Use as `async with LiveView(client, filter) as view:`; entering returns once
    the snapshot is in. A task that stops matching a state filter stays in the view
    with the state it left with; a deleted task leaves it.

    A view needs each task's latest state, not every step on the way, so it
    subscribes with `slow_consumer` CONFLATE by default: a view that falls behind
    (a busy display, a stalled event loop) is brought up to date in one batch
    instead of being cut off and replaying every change. The final state of every
    task is never lost, but a state that lasted only while the view was behind
    may be skipped (and with `include_logs`, the log lines of that stretch, which
    ListLogs still has); pass SLOW_CONSUMER_POLICY_END to see every change.

    Attributes:
        tasks: The tasks by id, in the order they were first seen.
        logs: The latest log lines of each task (only with `include_logs`).
        synced: True once the snapshot is complete (again false during a resync).
        revision: The revision the view reflects.
        reconnecting: The pending reconnect while the stream is down, else None.
    """

    def __init__(
        self,
        client: HeadwayClient,
        filter: task_service_pb2.TaskFilter | None = None,
        *,
        include_logs: bool = False,
        log_lines: int = 50,
        heartbeat_interval: timedelta | None = None,
        slow_consumer: task_service_pb2.SlowConsumerPolicy.ValueType = (
            task_service_pb2.SLOW_CONSUMER_POLICY_CONFLATE
        ),
        retry: RetryPolicy = RECONNECT_POLICY,
    ) -> None:
        self._client = client
        self._filter = filter
        self._slow_consumer = slow_consumer
        self._include_logs = include_logs
        self._log_lines = log_lines
        self._heartbeat_interval = heartbeat_interval
        self._retry = retry
        self.tasks: dict[str, Task] = {}
        self.logs: dict[str, deque[LogEntry]] = {}
        self.synced = False
        self.revision = 0
        self._synced_revision = 0
        self.reconnecting: events.Reconnecting | None = None
        self.last_event: events.Event | None = None
        # Conditions are checked right after each event is applied, before the next
        # one, so a waiter never misses a state that lasted a single event.
        self._waiters: list[tuple[Callable[[LiveView], bool], asyncio.Future[None]]] = []
        self._runner: asyncio.Task[None] | None = None
        self._ended: BaseException | None = None

    def apply(self, event: events.Event) -> None:
        """Fold one event into the view. Pure bookkeeping; the stream is read by `run()`."""
        self.last_event = event
        if not isinstance(event, events.Reconnecting):
            self.reconnecting = None
        match event:
            case events.Resync():
                self.tasks.clear()
                self.logs.clear()
                self.synced = False
            case events.Snapshot(task=task) | events.Created(task=task) | events.Updated(task=task):
                self.tasks[task.id] = task
            case events.Deleted(task=task):
                self.tasks.pop(task.id, None)
                self.logs.pop(task.id, None)
            case events.LogsAppended(task_id=task_id, entries=entries):
                lines = self.logs.setdefault(task_id, deque(maxlen=self._log_lines))
                lines.extend(entries)
            case events.Synced(revision=revision):
                self.synced = True
                self._synced_revision = revision
            case events.Reconnecting():
                self.reconnecting = event
        if not isinstance(event, events.Reconnecting | events.Resync) and event.revision:
            self.revision = max(self.revision, event.revision)

    async def backfill_logs(self, task_id: str, *, max_pages: int = 3) -> None:
        """Fill in a task's latest log lines from before the view started watching.

        The stream carries only lines appended after the snapshot; the ones before
        come from ListLogs (oldest first). A log too long to read in `max_pages`
        pages is left alone rather than shown with its oldest lines as the latest.
        """
        if not self.synced:
            raise RuntimeError("backfill after the snapshot: the stream has the lines after it")
        cutoff = self._synced_revision
        found: list[LogEntry] = []
        token = ""
        for _ in range(max_pages):
            page = await self._client.list_logs(task_id, page_size=1000, page_token=token)
            found.extend(LogEntry.from_proto(e) for e in page.entries if e.revision <= cutoff)
            token = page.next_page_token
            if not token:
                break
        if token:
            return
        lines = self.logs.setdefault(task_id, deque(maxlen=self._log_lines))
        live = list(lines)
        lines.clear()
        lines.extend(found[-self._log_lines :])
        lines.extend(live)

    async def run(self, on_change: Callable[[events.Event], None] | None = None) -> None:
        """Read the stream and apply every event until it ends or fails for good.

        Args:
            on_change: Called after each event is applied (to redraw a display, say).
        """
        try:
            async for event in subscribe(
                self._client,
                self._filter,
                include_logs=self._include_logs,
                heartbeat_interval=self._heartbeat_interval,
                slow_consumer=self._slow_consumer,
                retry=self._retry,
            ):
                self.apply(event)
                if on_change is not None:
                    on_change(event)
                self._check_waiters()
        except BaseException as error:
            self._end(error)
            raise
        self._end(RuntimeError("the stream ended"))

    def _check_waiters(self) -> None:
        for predicate, future in list(self._waiters):
            if not future.done() and predicate(self):
                future.set_result(None)

    def _end(self, error: BaseException) -> None:
        """Wake every waiter with the reason the view stopped."""
        self._ended = error
        if isinstance(error, asyncio.CancelledError):
            error = RuntimeError("the live view was closed")
        for _, future in self._waiters:
            if not future.done():
                future.set_exception(error)

    async def __aenter__(self) -> LiveView:
        self.start()
        await self.wait_until(lambda view: view.synced)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def start(self) -> None:
        """Start reading the stream in the background (what `async with` does)."""
        if self._runner is None:
            self._runner = asyncio.create_task(self.run(), name="headway-live-view")

    async def close(self) -> None:
        """Stop reading the stream."""
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, HeadwayError):
                await self._runner
            self._runner = None

    async def wait_until(
        self, predicate: Callable[[LiveView], bool], timeout: float | None = None
    ) -> None:
        """Wait until `predicate(view)` holds; it is checked after every event.

        Raises:
            TimeoutError: It did not hold within `timeout` seconds.
            HeadwayError: The stream failed for good first.
        """
        if predicate(self):
            return
        if self._ended is not None:
            raise RuntimeError("the live view is not running") from self._ended
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter = (predicate, future)
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await future
        finally:
            self._waiters.remove(waiter)

    async def wait_at_rest(self, task_id: str, timeout: float | None = None) -> Task:
        """Wait until the task comes to rest (SUCCEEDED, FAILED or CANCELLED) and return it.

        Raises:
            NotFoundError: The snapshot is complete and the task is not in it.
            TimeoutError: It did not come to rest within `timeout` seconds.
        """
        found: Task | None = None

        def resting_or_absent(view: LiveView) -> bool:
            nonlocal found
            task = view.tasks.get(task_id)
            last = view.last_event
            if task is None and isinstance(last, events.Deleted) and last.task.id == task_id:
                task = last.task  # deleted, so at rest: the waiter still learns how it ended
            if task is not None and task.at_rest:
                found = task
                return True
            return view.synced and task is None

        await self.wait_until(resting_or_absent, timeout)
        if found is None:
            raise NotFoundError(
                f"task {task_id!r} is not among the watched tasks", reason="TASK_NOT_FOUND"
            )
        return found


__all__ = ["LiveView"]
