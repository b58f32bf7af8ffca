"""What the engine needs from durable storage, and the records that cross that line.

The engine owns the state machine and the revision counter; a store only
makes batches of changes durable and reads history back. Keeping the store
this narrow is what lets the same engine run on another backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from headway.server.filtering import TaskFacts


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One committed change, as the history keeps it and the fan-out sends it.

    `data` is the serialized `headway.v1.Event`; it is encoded once, at commit,
    and every subscriber shares the same bytes.
    """

    revision: int
    facts: TaskFacts
    is_log: bool
    at_rest: bool
    commit_ns: int
    data: bytes


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One log line, with the columns ListLogs filters on."""

    tenant: str
    task_id: str
    revision: int
    index: int
    level: int
    step_key: str
    time_ns: int
    message: str
    data: bytes


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """An applied mutation's request_id, so that a retry is recognised (AIP-155)."""

    tenant: str
    request_id: str
    method: str
    fingerprint: bytes
    revision: int
    create_ns: int


@dataclass(frozen=True, slots=True)
class TaskRow:
    tenant: str
    task_id: str
    create_revision: int
    data: bytes


@dataclass(slots=True)
class CommitBatch:
    """Everything one group commit makes durable, atomically."""

    head: int
    upserts: list[TaskRow] = field(default_factory=list)
    deletes: list[tuple[str, str]] = field(default_factory=list)
    events: list[EventRecord] = field(default_factory=list)
    logs: list[LogRecord] = field(default_factory=list)
    requests: list[RequestRecord] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class LogQuery:
    """ListLogs' filters, already validated."""

    tenant: str
    task_id: str
    min_level: int
    step_key: str
    text: str
    start_ns: int | None
    end_ns: int | None
    after: tuple[int, int] | None
    limit: int


@dataclass(frozen=True, slots=True)
class LoadedState:
    """What a store holds at start-up: enough to rebuild the engine's memory."""

    head: int
    compacted: int
    tasks: Sequence[bytes]
    requests: Sequence[RequestRecord]


class Store(Protocol):
    """Durable storage for the engine. Every method may be awaited from the event loop."""

    async def open(self, *, requests_since_ns: int, max_requests: int) -> LoadedState:
        """Create the schema if needed and load the current state."""
        ...

    async def commit(self, batch: CommitBatch) -> None:
        """Make the batch durable in one transaction, or raise and change nothing."""
        ...

    async def read_events(
        self, tenant: str, after: int, upto: int, limit: int
    ) -> list[EventRecord]:
        """A tenant's changes with after < revision <= upto, in order, at most `limit`."""
        ...

    async def read_event(self, revision: int) -> EventRecord | None:
        """The change with this revision, or None if it was compacted."""
        ...

    async def list_logs(self, query: LogQuery) -> list[bytes]:
        """Serialized LogEntry messages matching the query, in (revision, index) order."""
        ...

    async def compact(self, upto: int) -> None:
        """Forget changes with revision <= upto; remember `upto` as compacted."""
        ...

    async def prune_requests(self, before_ns: int) -> None:
        """Forget request ids recorded before this time."""
        ...

    async def close(self) -> None:
        """Finish pending work and release the database."""
        ...
