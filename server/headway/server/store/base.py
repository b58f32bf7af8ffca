"""What the engine needs from durable storage, and the records that cross that line.

The engine owns the state machine and the revision counters; a store only
makes batches of changes durable and reads history back. Keeping the store
this narrow is what lets the same engine run on another backend.

Revisions count per tenant: each tenant's changes are numbered 1, 2, 3, …
with no gaps, whatever other tenants do, so a revision tells a tenant nothing
about anybody else's activity. History is kept, read and compacted per tenant.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
    """A task as stored, with its agent's lease (kept beside it, outside the revisioned state)."""

    tenant: str
    task_id: str
    create_revision: int
    data: bytes
    lease_expire_ns: int


@dataclass(frozen=True, slots=True)
class LeaseRow:
    """A lease renewed without any other change (a heartbeat, a log append)."""

    tenant: str
    task_id: str
    lease_expire_ns: int


@dataclass(frozen=True, slots=True)
class DurationRecord:
    """How long a successful task of a kind, or one of its steps, took; the ETA's history."""

    tenant: str
    kind: str
    step_key: str
    finish_ns: int
    seconds: float


@dataclass(slots=True)
class CommitBatch:
    """Everything one group commit makes durable, atomically."""

    heads: dict[str, int] = field(default_factory=dict)  # each changed tenant's new revision
    upserts: list[TaskRow] = field(default_factory=list)
    deletes: list[tuple[str, str]] = field(default_factory=list)
    events: list[EventRecord] = field(default_factory=list)
    logs: list[LogRecord] = field(default_factory=list)
    requests: list[RequestRecord] = field(default_factory=list)
    leases: list[LeaseRow] = field(default_factory=list)
    durations: list[DurationRecord] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.events or self.leases or self.requests)


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
    after: tuple[int, int] | None  # the (revision, index) the page continues past
    limit: int
    newest_first: bool = False  # descending (revision, index); `after` then bounds from above


@dataclass(frozen=True, slots=True)
class LoadedState:
    """What a store holds at start-up: enough to rebuild the engine's memory."""

    heads: Mapping[str, int]  # each tenant's revision
    compacted: Mapping[str, int]  # each tenant's compacted revision
    tasks: Sequence[tuple[bytes, int]]
    requests: Sequence[RequestRecord]
    durations: Sequence[DurationRecord]


class StorageUnavailableError(Exception):
    """A store failure that may pass on its own (I/O error, disk full, lock timeout).

    Any other exception from `commit` means the batch itself cannot be stored,
    and retrying it would fail the same way.
    """


class HistoryCompactedError(Exception):
    """A history read reached below the compacted revision: part of the range is gone."""

    def __init__(self, oldest: int) -> None:
        super().__init__(f"history up to revision {oldest} has been compacted")
        self.oldest = oldest


class Store(Protocol):
    """Durable storage for the engine. Every method may be awaited from the event loop."""

    async def open(self, *, requests_since_ns: int, max_requests: int) -> LoadedState:
        """Create the schema if needed and load the current state."""
        ...

    async def commit(self, batch: CommitBatch) -> None:
        """Make the batch durable in one transaction, or raise and change nothing.

        Raises `StorageUnavailableError` when the failure may pass on a retry.
        """
        ...

    async def read_events(
        self, tenant: str, after: int, upto: int, limit: int
    ) -> list[EventRecord]:
        """A tenant's changes with after < revision <= upto, in order, at most `limit`.

        Raises `HistoryCompactedError` when `after` is below the compacted revision,
        checked in the same read as the rows: a read never returns a range with
        a silent hole in it.
        """
        ...

    async def read_event(self, tenant: str, revision: int) -> EventRecord | None:
        """The tenant's change with this revision, or None if it was compacted."""
        ...

    async def list_logs(self, query: LogQuery) -> list[bytes]:
        """Serialized LogEntry messages matching the query, in (revision, index) order."""
        ...

    async def compact(self, tenant: str, upto: int) -> None:
        """Forget the tenant's changes with revision <= upto; remember `upto` as compacted.

        The engine calls it in bounded steps, so each transaction stays short.
        """
        ...

    async def prune_requests(self, before_ns: int) -> None:
        """Forget request ids recorded before this time."""
        ...

    async def prune_durations(self, keep: int) -> None:
        """Keep only the newest `keep` durations of each (tenant, kind, step key)."""
        ...

    async def revision_before(self, tenant: str, commit_ns: int) -> int:
        """The tenant's newest revision committed before this time, or 0."""
        ...

    async def close(self) -> None:
        """Finish pending work and release the database."""
        ...
