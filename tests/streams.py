"""Helpers for stream tests: collect events, and the guarantee checks named after them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from headway.client import HeadwayClient, HeadwayError
from headway.v1 import event_pb2, task_pb2

CHANGE_KINDS = frozenset({"snapshot", "created", "updated", "deleted", "logs_appended"})


def kind(event: event_pb2.Event) -> str:
    return str(event.WhichOneof("kind"))


def changes(events: Sequence[event_pb2.Event]) -> list[event_pb2.Event]:
    return [e for e in events if kind(e) in CHANGE_KINDS]


def validate_ordered(events: Sequence[event_pb2.Event]) -> None:
    """Change events come in strictly increasing revision order; markers never go back."""
    last_change = 0
    last_any = 0
    for event in events:
        if kind(event) in CHANGE_KINDS:
            assert event.revision > last_change, f"revision {event.revision} after {last_change}"
            last_change = event.revision
        assert event.revision >= last_any or kind(event) == "snapshot", (
            f"{kind(event)} at {event.revision} after {last_any}"
        )
        if kind(event) != "snapshot":
            last_any = event.revision


def validate_unique(events: Sequence[event_pb2.Event]) -> None:
    """No change is delivered twice."""
    revisions = [e.revision for e in changes(events)]
    assert len(revisions) == len(set(revisions)), "a change was delivered twice"


def validate_reliable(events: Sequence[event_pb2.Event], expected: Sequence[int]) -> None:
    """Every expected change revision is delivered (none skipped)."""
    delivered = {e.revision for e in changes(events)}
    missing = sorted(set(expected) - delivered)
    assert not missing, f"changes never delivered: {missing[:20]}"


@dataclass
class Collector:
    """Consumes one subscription in the background and keeps every event."""

    events: list[event_pb2.Event] = field(default_factory=list)
    error: HeadwayError | None = None
    task: asyncio.Task[None] | None = None
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def start(self, client: HeadwayClient, **options: object) -> Collector:
        self.task = asyncio.create_task(self._run(client, options))
        return self

    async def _run(self, client: HeadwayClient, options: dict[str, object]) -> None:
        try:
            async for event in client.subscribe(**options):  # type: ignore[arg-type]
                self.events.append(event)
                async with self._changed:
                    self._changed.notify_all()
        except HeadwayError as error:
            self.error = error
        finally:
            async with self._changed:
                self._changed.notify_all()

    async def wait_for(
        self, predicate: Callable[[list[event_pb2.Event]], bool], timeout: float = 10.0
    ) -> list[event_pb2.Event]:
        async def until() -> None:
            async with self._changed:
                await self._changed.wait_for(
                    lambda: predicate(self.events) or (self.task is not None and self.task.done())
                )

        await asyncio.wait_for(until(), timeout)
        assert predicate(self.events), f"stream ended first ({self.error}); got {len(self.events)}"
        return self.events

    async def wait_revision(self, revision: int, timeout: float = 10.0) -> list[event_pb2.Event]:
        """Wait until an event (change or heartbeat) at `revision` or later arrived."""
        return await self.wait_for(
            lambda events: any(e.revision >= revision and kind(e) != "snapshot" for e in events),
            timeout,
        )

    async def wait_done(self, timeout: float = 10.0) -> None:
        assert self.task is not None
        await asyncio.wait_for(asyncio.shield(self.task), timeout)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


def rebuild(events: Sequence[event_pb2.Event]) -> dict[str, task_pb2.Task]:
    """The task state a watcher reconstructs from a stream."""
    state: dict[str, task_pb2.Task] = {}
    for event in events:
        which = kind(event)
        if which == "resync":
            state.clear()
        elif which in ("snapshot", "created", "updated"):
            task = getattr(event, which)
            state[task.id] = task
        elif which == "deleted":
            state.pop(event.deleted.id, None)
    return state
