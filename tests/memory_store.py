"""An in-memory `Store` with fault injection, for engine tests that must break the store.

It passes the same contract suite as the real backends (tests/contract), so
what the engine tests prove with it holds for them. Faults are injected by
the test: `refuse` decides per batch whether a commit fails and how,
`gate_commit` holds every commit in flight until the test lets it go, and
`gate_compaction` holds a compaction step until the test lets it go.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from dataclasses import dataclass, field

from headway.server.store.base import (
    CommitBatch,
    DurationRecord,
    EventRecord,
    HistoryCompactedError,
    LoadedState,
    LogQuery,
    LogRecord,
    RequestRecord,
)


@dataclass
class _Data:
    heads: dict[str, int] = field(default_factory=dict)
    compacted: dict[str, int] = field(default_factory=dict)
    tasks: dict[tuple[str, str], tuple[int, bytes, int]] = field(default_factory=dict)
    events: dict[tuple[str, int], EventRecord] = field(default_factory=dict)
    logs: dict[tuple[str, str, int, int], LogRecord] = field(default_factory=dict)
    requests: dict[tuple[str, str], RequestRecord] = field(default_factory=dict)
    durations: list[DurationRecord] = field(default_factory=list)


class MemoryStore:
    """A `Store` whose data lives in a dict; survives "restarts" while the object lives."""

    def __init__(self) -> None:
        self._data = _Data()
        self.commits = 0
        self.refuse: Callable[[CommitBatch], Exception | None] = lambda batch: None
        self.gate_compaction: asyncio.Event | None = None
        # Set: every commit waits for it (after `commit_waiting` is set), holding a group in flight.
        self.gate_commit: asyncio.Event | None = None
        self.commit_waiting = asyncio.Event()
        self.compaction_waiting = asyncio.Event()

    async def open(self, *, requests_since_ns: int, max_requests: int) -> LoadedState:
        data = self._data
        requests = sorted(
            (r for r in data.requests.values() if r.create_ns >= requests_since_ns),
            key=lambda r: r.create_ns,
        )[-max_requests:]
        tasks = sorted(data.tasks.values(), key=lambda row: row[0])
        return LoadedState(
            heads=dict(data.heads),
            compacted=dict(data.compacted),
            tasks=[(blob, lease) for _, blob, lease in tasks],
            requests=requests,
            durations=sorted(data.durations, key=lambda d: d.finish_ns),
        )

    async def commit(self, batch: CommitBatch) -> None:
        await asyncio.sleep(0)  # a real store answers on a later turn of the loop
        if self.gate_commit is not None:
            self.commit_waiting.set()
            await self.gate_commit.wait()
        refused = self.refuse(batch)
        if refused is not None:
            raise refused
        _check_int64(batch)
        # Apply to a copy and swap it in: all or nothing.
        data = copy.deepcopy(self._data)
        for row in batch.upserts:
            data.tasks[(row.tenant, row.task_id)] = (
                row.create_revision,
                row.data,
                row.lease_expire_ns,
            )
        for lease in batch.leases:
            key = (lease.tenant, lease.task_id)
            if key in data.tasks:
                revision, blob, _ = data.tasks[key]
                data.tasks[key] = (revision, blob, lease.lease_expire_ns)
        data.durations.extend(batch.durations)
        for key in batch.deletes:
            data.tasks.pop(key, None)
            for log_key in [k for k in data.logs if k[:2] == key]:
                del data.logs[log_key]
        for event in batch.events:
            key = (event.facts.tenant, event.revision)
            if key in data.events:
                raise ValueError(f"revision {event.revision} of {key[0]} is already stored")
            data.events[key] = event
        for log in batch.logs:
            data.logs[(log.tenant, log.task_id, log.revision, log.index)] = log
        for request in batch.requests:
            data.requests[(request.tenant, request.request_id)] = request
        data.heads.update(batch.heads)
        self._data = data
        self.commits += 1

    async def read_events(
        self, tenant: str, after: int, upto: int, limit: int
    ) -> list[EventRecord]:
        data = self._data
        compacted = data.compacted.get(tenant, 0)
        if after < compacted:
            raise HistoryCompactedError(compacted)
        found = [
            event
            for (owner, revision), event in sorted(data.events.items())
            if owner == tenant and after < revision <= upto
        ]
        return found[:limit]

    async def read_event(self, tenant: str, revision: int) -> EventRecord | None:
        return self._data.events.get((tenant, revision))

    async def list_logs(self, query: LogQuery) -> list[bytes]:
        found = []
        for key in sorted(self._data.logs, reverse=query.newest_first):
            log = self._data.logs[key]
            if (log.tenant, log.task_id) != (query.tenant, query.task_id):
                continue
            if query.min_level and log.level < query.min_level:
                continue
            if query.step_key and log.step_key != query.step_key:
                continue
            if query.text and query.text.casefold() not in log.message.casefold():
                continue
            if query.start_ns is not None and log.time_ns < query.start_ns:
                continue
            if query.end_ns is not None and log.time_ns >= query.end_ns:
                continue
            if query.after is not None:
                position = (log.revision, log.index)
                if position >= query.after if query.newest_first else position <= query.after:
                    continue
            found.append(log.data)
        return found[: query.limit]

    async def compact(self, tenant: str, upto: int) -> None:
        if self.gate_compaction is not None:
            self.compaction_waiting.set()
            await self.gate_compaction.wait()
        data = self._data
        for key in [k for k in data.events if k[0] == tenant and k[1] <= upto]:
            del data.events[key]
        data.compacted[tenant] = max(data.compacted.get(tenant, 0), upto)

    async def prune_requests(self, before_ns: int) -> None:
        data = self._data
        for key in [k for k, r in data.requests.items() if r.create_ns < before_ns]:
            del data.requests[key]

    async def prune_durations(self, keep: int) -> None:
        kept: list[DurationRecord] = []
        counts: dict[tuple[str, str, str], int] = {}
        for run in sorted(self._data.durations, key=lambda d: d.finish_ns, reverse=True):
            key = (run.tenant, run.kind, run.step_key)
            counts[key] = counts.get(key, 0) + 1
            if counts[key] <= keep:
                kept.append(run)
        self._data.durations = sorted(kept, key=lambda d: d.finish_ns)

    async def revision_before(self, tenant: str, commit_ns: int) -> int:
        older = [
            revision
            for (owner, revision), event in self._data.events.items()
            if owner == tenant and event.commit_ns < commit_ns
        ]
        return max(older, default=0)

    async def close(self) -> None:
        return None


_INT64 = range(-(2**63), 2**63)


def _check_int64(batch: CommitBatch) -> None:
    """Refuse what a SQL backend could not store either: integers beyond 64 bits."""
    values = [
        *(row.lease_expire_ns for row in batch.upserts),
        *(lease.lease_expire_ns for lease in batch.leases),
        *(log.time_ns for log in batch.logs),
        *(event.commit_ns for event in batch.events),
        *(request.create_ns for request in batch.requests),
    ]
    for value in values:
        if value not in _INT64:
            raise OverflowError(f"{value} does not fit in 64 bits")
