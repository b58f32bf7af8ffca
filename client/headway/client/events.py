"""Typed events of a subscription, one class per kind, each keeping its raw proto.

`from_proto` turns a wire `Event` into one of these; kinds added to the contract
later come back as None so that old clients skip them, as the contract asks.
`Reconnecting` never comes from the server: the resumable subscription emits it
while it waits to resume, so that a display can say so.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from headway.client.errors import HeadwayError
from headway.client.models import LogEntry, Task, time_or_none
from headway.v1 import event_pb2


class ResyncReason(enum.Enum):
    """Why a stream starts over from a snapshot."""

    REVISION_COMPACTED = "REVISION_COMPACTED"
    """The server no longer holds the history after the resume revision."""
    SNAPSHOT_INTERRUPTED = "SNAPSHOT_INTERRUPTED"
    """The connection broke in the middle of a snapshot, which cannot be resumed."""
    REVISION_IN_FUTURE = "REVISION_IN_FUTURE"
    """The server's store is behind the revision already delivered (it lost history)."""


@dataclass(frozen=True, slots=True)
class Conflation:
    """What a conflated batch covers: the subscriber fell behind and asked to conflate.

    The batch stands for every matching change in (`after_revision`,
    `through_revision`]: one event per task, its latest change there. The other
    changes were collapsed; `logs_dropped` of them were log appends, which
    ListLogs still returns. Resuming from any event's revision misses no task's
    latest state.
    """

    after_revision: int
    through_revision: int
    collapsed_events: int
    logs_dropped: int

    @staticmethod
    def of(raw: event_pb2.Event) -> Conflation | None:
        if not raw.HasField("conflation"):
            return None
        c = raw.conflation
        return Conflation(c.after_revision, c.through_revision, c.collapsed_events, c.logs_dropped)


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """A change that carries a whole task: `Snapshot`, `Created`, `Updated` or `Deleted`.

    `conflation` is set when the change came in a conflated batch: then it is
    the task's latest state, and earlier changes of it may not have been sent.
    """

    revision: int
    task: Task
    commit_time: datetime | None
    raw: event_pb2.Event = field(repr=False)
    conflation: Conflation | None = None


@dataclass(frozen=True, slots=True)
class Snapshot(TaskEvent):
    """A task as it stood when the snapshot was taken."""


@dataclass(frozen=True, slots=True)
class Created(TaskEvent):
    """A task was created."""


@dataclass(frozen=True, slots=True)
class Updated(TaskEvent):
    """A task changed; `task` is the task after the change, whole."""


@dataclass(frozen=True, slots=True)
class Deleted(TaskEvent):
    """A task was deleted; `task` is the task as it was when deleted."""


@dataclass(frozen=True, slots=True)
class LogsAppended:
    """Log lines appended to a task by one AppendLogs call."""

    revision: int
    task_id: str
    entries: tuple[LogEntry, ...]
    commit_time: datetime | None
    raw: event_pb2.Event = field(repr=False)


@dataclass(frozen=True, slots=True)
class Synced:
    """The snapshot is complete: every matching task as of `revision` has been sent."""

    revision: int
    raw: event_pb2.Event = field(repr=False)


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A keep-alive carrying the store's current revision."""

    revision: int
    raw: event_pb2.Event = field(repr=False)


@dataclass(frozen=True, slots=True)
class Resync:
    """The stream starts over: drop what was built from earlier events; a snapshot follows."""

    revision: int
    reason: ResyncReason
    oldest_revision: int
    raw: event_pb2.Event | None = field(repr=False)


@dataclass(frozen=True, slots=True)
class Reconnecting:
    """The stream broke for a passing reason; it resumes after `delay` seconds.

    Emitted by the client, never by the server. Resuming delivers exactly the
    changes after `revision`, so a consumer keeps everything it has.
    """

    error: HeadwayError
    attempt: int
    delay: float
    revision: int | None


Event = (
    Snapshot
    | Created
    | Updated
    | Deleted
    | LogsAppended
    | Synced
    | Heartbeat
    | Resync
    | Reconnecting
)

_TASK_EVENTS: dict[str, type[Snapshot | Created | Updated | Deleted]] = {
    "snapshot": Snapshot,
    "created": Created,
    "updated": Updated,
    "deleted": Deleted,
}


def from_proto(raw: event_pb2.Event) -> Event | None:
    """The typed event for a wire event; None for a kind this client does not know."""
    which = raw.WhichOneof("kind")
    commit_time = time_or_none(raw, "commit_time")
    if which in _TASK_EVENTS:
        task = Task.from_proto(getattr(raw, which))
        return _TASK_EVENTS[which](raw.revision, task, commit_time, raw, Conflation.of(raw))
    if which == "logs_appended":
        appended = raw.logs_appended
        entries = tuple(
            LogEntry.from_proto(entry, task_id=appended.task_id) for entry in appended.entries
        )
        return LogsAppended(raw.revision, appended.task_id, entries, commit_time, raw)
    if which == "synced":
        return Synced(raw.revision, raw)
    if which == "heartbeat":
        return Heartbeat(raw.revision, raw)
    if which == "resync":
        return Resync(
            raw.revision, ResyncReason.REVISION_COMPACTED, raw.resync.oldest_revision, raw
        )
    return None


__all__ = [
    "Conflation",
    "Created",
    "Deleted",
    "Event",
    "Heartbeat",
    "LogsAppended",
    "Reconnecting",
    "Resync",
    "ResyncReason",
    "Snapshot",
    "Synced",
    "TaskEvent",
    "Updated",
    "from_proto",
]
