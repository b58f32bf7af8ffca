"""One Subscribe stream: snapshot or catch-up from history, then live changes.

The subscriber joins the hub *before* it reads the snapshot or the history, so
live changes queue up while it catches up; everything up to the hub's revision
at that moment comes from memory or the store, everything after from the
queue. That is what makes the stream gapless and duplicate-free.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import grpc

from headway.server.config import Settings
from headway.server.domain import RESTING_STATES
from headway.server.engine import Engine
from headway.server.errors import HeadwayError, Kind
from headway.server.filtering import CompiledFilter
from headway.server.hub import Hub, Subscriber, frame
from headway.server.validation import Violations, check_filter
from headway.v1 import event_pb2, task_service_pb2

logger = logging.getLogger(__name__)

# A response is flushed once it holds this many bytes, well under the 4 MiB
# that clients accept by default.
MAX_RESPONSE_BYTES = 1 << 20
HISTORY_PAGE = 2000


class _Writer:
    """Joins frames into responses of bounded size and writes them."""

    def __init__(self, context: grpc.aio.ServicerContext[object, bytes]) -> None:
        self._context = context

    async def write(self, frames: Iterable[bytes]) -> None:
        chunk: list[bytes] = []
        size = 0
        for encoded in frames:
            if chunk and size + len(encoded) > MAX_RESPONSE_BYTES:
                await self._context.write(b"".join(chunk))
                chunk, size = [], 0
            chunk.append(encoded)
            size += len(encoded)
        if chunk:
            await self._context.write(b"".join(chunk))


class Subscription:
    """Serves one Subscribe call from its request to its end."""

    def __init__(
        self,
        engine: Engine,
        hub: Hub,
        settings: Settings,
        tenant: str,
        request: task_service_pb2.SubscribeRequest,
    ) -> None:
        self._engine = engine
        self._hub = hub
        self._settings = settings
        self._tenant = tenant
        self._request = request
        self._filter = CompiledFilter.compile(request.filter)
        self._heartbeat = self._check(request)

    def _check(self, request: task_service_pb2.SubscribeRequest) -> float:
        v = Violations()
        check_filter(v, "filter", request.filter, self._settings.limits)
        if request.HasField("start_revision") and request.start_revision < 0:
            v.add("start_revision", "must not be negative")
        if request.end_at_rest and len(request.filter.task_ids) != 1:
            v.add("end_at_rest", "requires filter.task_ids to name exactly one task")
        if request.on_compacted not in task_service_pb2.CompactedPolicy.values():
            v.add("on_compacted", f"unknown policy {request.on_compacted}")
        interval = request.heartbeat_interval
        if interval.seconds < 0 or interval.nanos < 0:
            v.add("heartbeat_interval", "must not be negative")
        v.raise_if_any()
        settings = self._settings
        if (
            not request.HasField("heartbeat_interval")
            or interval.ToTimedelta().total_seconds() == 0
        ):
            return settings.heartbeat_default.total_seconds()
        seconds = interval.ToTimedelta().total_seconds()
        return min(
            max(seconds, settings.heartbeat_min.total_seconds()),
            settings.heartbeat_max.total_seconds(),
        )

    async def serve(self, context: grpc.aio.ServicerContext[object, bytes]) -> None:
        await context.send_initial_metadata(())
        subscriber = self._hub.register(
            self._tenant,
            self._filter,
            include_logs=self._request.include_logs,
            stop_at_rest=self._request.end_at_rest,
        )
        writer = _Writer(context)
        try:
            head = self._hub.revision
            at_rest = await self._catch_up(subscriber, writer, head)
            if not at_rest:
                await self._follow(subscriber, writer)
        finally:
            self._hub.unregister(subscriber)

    async def _catch_up(self, subscriber: Subscriber, writer: _Writer, head: int) -> bool:
        """Deliver everything up to `head`; True if the watched task already rests."""
        request = self._request
        if not request.HasField("start_revision"):
            return await self._snapshot(writer, head)
        start = request.start_revision
        if start > head:
            raise HeadwayError(
                Kind.OUT_OF_RANGE,
                "REVISION_IN_FUTURE",
                f"start_revision {start} is newer than the store's revision {head}",
                {"revision": str(head)},
            )
        if start < self._engine.compacted:
            oldest = self._engine.compacted
            if request.on_compacted == task_service_pb2.COMPACTED_POLICY_FAIL:
                raise HeadwayError(
                    Kind.OUT_OF_RANGE,
                    "REVISION_COMPACTED",
                    f"history before revision {oldest} has been compacted; "
                    "subscribe without start_revision to start from a snapshot",
                    {"oldest_revision": str(oldest)},
                )
            notice = event_pb2.Event(
                revision=head,
                resync=event_pb2.Resync(
                    reason=event_pb2.RESYNC_REASON_REVISION_COMPACTED, oldest_revision=oldest
                ),
            )
            await writer.write([frame(notice.SerializeToString())])
            return await self._snapshot(writer, head)
        return await self._replay_history(subscriber, writer, start, head)

    async def _snapshot(self, writer: _Writer, head: int) -> bool:
        tasks = sorted(
            (t for t in self._engine.tasks_of(self._tenant) if self._filter.matches_task(t)),
            key=lambda task: task.revision,
        )
        frames = [
            frame(event_pb2.Event(revision=task.revision, snapshot=task).SerializeToString())
            for task in tasks
        ]
        frames.append(
            frame(event_pb2.Event(revision=head, synced=event_pb2.Synced()).SerializeToString())
        )
        await writer.write(frames)
        return self._request.end_at_rest and any(task.state in RESTING_STATES for task in tasks)

    async def _replay_history(
        self, subscriber: Subscriber, writer: _Writer, start: int, head: int
    ) -> bool:
        pin = self._engine.pin(start)
        at_rest = False
        try:
            after = start
            while after < head and not at_rest:
                records = await self._engine.read_events(self._tenant, after, head, HISTORY_PAGE)
                if not records:
                    break
                frames = []
                for record in records:
                    if subscriber.accepts(record):
                        frames.append(frame(record.data))
                        at_rest = at_rest or (
                            self._request.end_at_rest and record.at_rest and not record.is_log
                        )
                        if at_rest:
                            break
                await writer.write(frames)
                after = records[-1].revision
                self._engine.move_pin(pin, after)
                _raise_if_ended(subscriber)
        finally:
            self._engine.unpin(pin)
        return at_rest

    async def _follow(self, subscriber: Subscriber, writer: _Writer) -> None:
        # One timer per subscriber, re-armed only when it fires: a busy stream pays
        # nothing per write for its heartbeats.
        loop = asyncio.get_running_loop()
        last_write = loop.time()
        timer: asyncio.TimerHandle | None = None

        def beat() -> None:
            nonlocal timer
            idle = loop.time() - last_write
            if idle >= self._heartbeat * 0.999:
                subscriber.heartbeat_due = True
                subscriber.wakeup.set()
                timer = loop.call_later(self._heartbeat, beat)
            else:
                timer = loop.call_later(self._heartbeat - idle, beat)

        timer = loop.call_later(self._heartbeat, beat)
        try:
            while True:
                _raise_if_ended(subscriber)
                if not subscriber.frames and not subscriber.heartbeat_due:
                    await subscriber.wakeup.wait()
                    subscriber.wakeup.clear()
                    _raise_if_ended(subscriber)
                frames = subscriber.take()
                if not frames:
                    if not subscriber.heartbeat_due:
                        continue
                    beat_event = event_pb2.Event(
                        revision=self._hub.revision, heartbeat=event_pb2.Heartbeat()
                    )
                    frames = [frame(beat_event.SerializeToString())]
                subscriber.heartbeat_due = False
                await writer.write(frames)
                last_write = loop.time()
                if subscriber.rest_reached:
                    return
        finally:
            if timer is not None:
                timer.cancel()


def _raise_if_ended(subscriber: Subscriber) -> None:
    if subscriber.ended is not None:
        raise subscriber.ended
