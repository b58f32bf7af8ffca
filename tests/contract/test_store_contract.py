"""The Store contract: what every backend must do, run against each of them.

The engine relies on exactly these behaviours (store/base.py): atomic
batches, history in revision order per tenant, compaction that refuses reads
below it instead of returning a range with a hole, and state that survives a
reopen. The in-memory store the engine tests use runs here too, so the
engine tests prove nothing a real backend would not do.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from headway.server.filtering import TaskFacts
from headway.server.store.base import (
    CommitBatch,
    DurationRecord,
    EventRecord,
    HistoryCompactedError,
    LeaseRow,
    LoadedState,
    LogQuery,
    LogRecord,
    RequestRecord,
    StorageUnavailableError,
    Store,
    TaskRow,
)
from headway.server.store.sqlite import SqliteStore
from tests.memory_store import MemoryStore

BACKENDS = ["sqlite", "memory"]


class Backend:
    """Opens one backend on the same data again and again, as server restarts do."""

    def __init__(self, kind: str, path: Path) -> None:
        self._kind = kind
        self._path = path
        self._memory = MemoryStore()
        self.store: Store | None = None

    async def reopen(
        self, *, requests_since_ns: int = 0, max_requests: int = 1000
    ) -> tuple[Store, LoadedState]:
        """Close the open store (if any) and open a new one: what a restart would load."""
        await self.close()
        store: Store = SqliteStore(self._path) if self._kind == "sqlite" else self._memory
        loaded = await store.open(requests_since_ns=requests_since_ns, max_requests=max_requests)
        self.store = store
        return store, loaded

    async def close(self) -> None:
        if self.store is not None:
            await self.store.close()
            self.store = None


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    backend = Backend(request.param, tmp_path / "contract.db")
    yield backend
    await backend.close()


@pytest.fixture
async def store(backend: Backend) -> Store:
    store, _ = await backend.reopen()
    return store


async def reload(backend: Backend, **options: int) -> tuple[Store, LoadedState]:
    """Reopen the backend (a restart) and return the new store and what it loaded."""
    return await backend.reopen(**options)


def event(revision: int, tenant: str = "acme", task_id: str = "t1", **kw: object) -> EventRecord:
    facts = TaskFacts(tenant, task_id, "kind", "", {"team": "a"}, 2, 1)
    return EventRecord(
        revision=revision,
        facts=facts,
        is_log=bool(kw.get("is_log", False)),
        at_rest=bool(kw.get("at_rest", False)),
        commit_ns=int(kw.get("commit_ns", revision * 1000)),  # type: ignore[call-overload]
        data=f"event {revision}".encode(),
    )


def task_row(task_id: str, revision: int, tenant: str = "acme", lease: int = 0) -> TaskRow:
    return TaskRow(tenant, task_id, revision, f"task {task_id}@{revision}".encode(), lease)


def log(revision: int, index: int, message: str, **kw: object) -> LogRecord:
    return LogRecord(
        tenant=str(kw.get("tenant", "acme")),
        task_id=str(kw.get("task_id", "t1")),
        revision=revision,
        index=index,
        level=int(kw.get("level", 2)),  # type: ignore[call-overload]
        step_key=str(kw.get("step_key", "")),
        time_ns=int(kw.get("time_ns", revision * 1000 + index)),  # type: ignore[call-overload]
        message=message,
        data=f"log {revision}.{index}".encode(),
    )


def request_record(request_id: str, revision: int, create_ns: int) -> RequestRecord:
    return RequestRecord("acme", request_id, "UpdateTask", b"f" * 16, revision, create_ns)


async def commit_events(store: Store, first: int, last: int, **kw: object) -> None:
    batch = CommitBatch(
        heads={"acme": last}, events=[event(r, **kw) for r in range(first, last + 1)]
    )  # type: ignore[arg-type]
    await store.commit(batch)


async def test_a_new_store_is_empty(backend: Backend) -> None:
    store, loaded = await reload(backend)
    assert (dict(loaded.heads), dict(loaded.compacted)) == ({}, {})
    assert (list(loaded.tasks), list(loaded.requests), list(loaded.durations)) == ([], [], [])
    assert await store.read_events("acme", 0, 100, 100) == []


async def test_committed_state_survives_a_reopen(backend: Backend) -> None:
    store, _ = await reload(backend)
    await store.commit(
        CommitBatch(
            heads={"acme": 2},
            upserts=[task_row("t1", 1, lease=111), task_row("t2", 2)],
            events=[event(1), event(2, task_id="t2")],
            requests=[request_record("r1", 1, 5_000)],
            durations=[DurationRecord("acme", "kind", "", 7, 1.5)],
        )
    )
    store, loaded = await reload(backend)
    assert dict(loaded.heads) == {"acme": 2}
    assert list(loaded.tasks) == [(b"task t1@1", 111), (b"task t2@2", 0)], "in creation order"
    assert list(loaded.requests) == [request_record("r1", 1, 5_000)]
    assert list(loaded.durations) == [DurationRecord("acme", "kind", "", 7, 1.5)]
    assert [e.revision for e in await store.read_events("acme", 0, 2, 10)] == [1, 2]


async def test_a_failed_batch_stores_nothing_of_itself(backend: Backend, store: Store) -> None:
    await commit_events(store, 1, 1)
    poisoned = CommitBatch(
        heads={"acme": 3},
        upserts=[task_row("t9", 2)],
        events=[event(2), event(1)],  # revision 1 of acme is already stored
        requests=[request_record("r9", 2, 1)],
    )
    with pytest.raises(Exception) as raised:  # noqa: PT011 - any error but "unavailable"
        await store.commit(poisoned)
    assert not isinstance(raised.value, StorageUnavailableError), "the batch's own fault"
    store, loaded = await reload(backend)
    assert dict(loaded.heads) == {"acme": 1}
    assert list(loaded.tasks) == []
    assert list(loaded.requests) == []
    assert [e.revision for e in await store.read_events("acme", 0, 10, 10)] == [1]


async def test_a_value_beyond_64_bits_is_refused_as_the_batch_s_fault(store: Store) -> None:
    batch = CommitBatch(heads={"acme": 1}, events=[event(1)], logs=[log(1, 0, "x", time_ns=2**70)])
    with pytest.raises(Exception) as raised:  # noqa: PT011 - any error but "unavailable"
        await store.commit(batch)
    assert not isinstance(raised.value, StorageUnavailableError)
    assert await store.read_events("acme", 0, 10, 10) == []


async def test_history_is_in_order_per_tenant_within_bounds(store: Store) -> None:
    # Revisions count per tenant: both tenants have a revision 1, 2, 3.
    await store.commit(
        CommitBatch(
            heads={"acme": 3, "globex": 3},
            events=[event(r, tenant=t) for r in (1, 2, 3) for t in ("acme", "globex")],
        )
    )
    assert [e.revision for e in await store.read_events("acme", 0, 3, 10)] == [1, 2, 3]
    assert {e.facts.tenant for e in await store.read_events("globex", 0, 3, 10)} == {"globex"}
    assert [e.revision for e in await store.read_events("acme", 1, 3, 10)] == [2, 3]
    assert [e.revision for e in await store.read_events("acme", 1, 2, 10)] == [2]
    assert [e.revision for e in await store.read_events("acme", 0, 3, 2)] == [1, 2]
    first = (await store.read_events("acme", 0, 3, 1))[0]
    assert first == event(1), "every field round-trips"
    assert await store.read_event("globex", 2) == event(2, tenant="globex")
    assert await store.read_event("acme", 99) is None
    assert await store.read_events("initech", 0, 3, 10) == []


async def test_reading_below_the_compacted_revision_is_refused(backend: Backend) -> None:
    store, _ = await reload(backend)
    await commit_events(store, 1, 10)
    await store.commit(
        CommitBatch(heads={"globex": 10}, events=[event(r, "globex") for r in range(1, 11)])
    )
    await store.compact("acme", 4)
    with pytest.raises(HistoryCompactedError) as raised:
        await store.read_events("acme", 3, 10, 100)
    assert raised.value.oldest == 4
    with pytest.raises(HistoryCompactedError):
        await store.read_events("acme", 0, 10, 100)
    assert [e.revision for e in await store.read_events("acme", 4, 10, 100)] == list(range(5, 11))
    assert await store.read_event("acme", 4) is None
    assert await store.read_event("acme", 5) == event(5)
    globex = await store.read_events("globex", 0, 10, 100)
    assert [e.revision for e in globex] == list(range(1, 11)), "other tenants keep theirs"
    store, loaded = await reload(backend)
    assert dict(loaded.compacted) == {"acme": 4}, "the compacted mark is durable"
    await store.compact("acme", 2)
    store, loaded = await reload(backend)
    assert dict(loaded.compacted) == {"acme": 4}, "it never moves back"


async def test_leases_deletes_and_logs(backend: Backend, store: Store) -> None:
    await store.commit(
        CommitBatch(
            heads={"acme": 2},
            upserts=[task_row("t1", 1), task_row("t2", 2)],
            events=[event(1), event(2, task_id="t2", is_log=True)],
            logs=[log(2, 0, "one", task_id="t2"), log(2, 1, "two", task_id="t2")],
        )
    )
    await store.commit(
        CommitBatch(
            heads={"acme": 2}, leases=[LeaseRow("acme", "t1", 999), LeaseRow("acme", "gone", 5)]
        )
    )
    store, loaded = await reload(backend)
    assert dict((data, lease) for data, lease in loaded.tasks)[b"task t1@1"] == 999
    assert len(loaded.tasks) == 2, "a lease for a task that does not exist adds nothing"
    await store.commit(
        CommitBatch(heads={"acme": 3}, deletes=[("acme", "t2")], events=[event(3, "acme", "t2")])
    )
    store, loaded = await reload(backend)
    assert [data for data, _ in loaded.tasks] == [b"task t1@1"]
    query = LogQuery("acme", "t2", 0, "", "", None, None, None, 10)
    assert await store.list_logs(query) == [], "a deleted task's logs go with it"


async def list_logs(store: Store, **kw: object) -> list[bytes]:
    """`store.list_logs` for task t1 of acme, everything else unfiltered unless given."""
    base: dict[str, object] = {
        "tenant": "acme",
        "task_id": "t1",
        "min_level": 0,
        "step_key": "",
        "text": "",
        "start_ns": None,
        "end_ns": None,
        "after": None,
        "limit": 100,
    }
    base.update(kw)
    return await store.list_logs(LogQuery(**base))  # type: ignore[arg-type]


async def test_log_queries(store: Store) -> None:
    logs = [
        log(1, 0, "Fetching ÄRGER.txt", level=2, step_key="fetch", time_ns=100),
        log(1, 1, "retrying", level=3, step_key="fetch", time_ns=200),
        log(2, 0, "parsed", level=2, step_key="parse", time_ns=300),
        log(2, 1, "failed hard", level=4, step_key="parse", time_ns=400),
        log(3, 0, "other tenant", tenant="globex", time_ns=500),
    ]
    await store.commit(
        CommitBatch(heads={"acme": 3}, events=[event(1), event(2), event(3)], logs=logs)
    )

    async def query(**kw: object) -> list[bytes]:
        return await list_logs(store, **kw)

    assert await query() == [b"log 1.0", b"log 1.1", b"log 2.0", b"log 2.1"]
    assert await query(min_level=3) == [b"log 1.1", b"log 2.1"]
    assert await query(step_key="parse") == [b"log 2.0", b"log 2.1"]
    assert await query(text="ärger") == [b"log 1.0"], "search ignores case beyond ASCII"
    assert await query(start_ns=200, end_ns=400) == [b"log 1.1", b"log 2.0"]
    assert await query(after=(1, 1)) == [b"log 2.0", b"log 2.1"]
    assert await query(limit=1) == [b"log 1.0"]
    assert await query(tenant="globex", task_id="t1") == [b"log 3.0"]


async def test_log_queries_newest_first(store: Store) -> None:
    logs = [
        log(1, 0, "one", level=2, step_key="fetch", time_ns=100),
        log(1, 1, "two", level=3, step_key="fetch", time_ns=200),
        log(2, 0, "three", level=2, step_key="parse", time_ns=300),
        log(2, 1, "four", level=4, step_key="parse", time_ns=400),
        log(3, 0, "other task", task_id="t2", time_ns=500),
    ]
    await store.commit(
        CommitBatch(heads={"acme": 3}, events=[event(1), event(2), event(3)], logs=logs)
    )

    async def query(**kw: object) -> list[bytes]:
        return await list_logs(store, **{"newest_first": True, **kw})

    assert await query() == [b"log 2.1", b"log 2.0", b"log 1.1", b"log 1.0"]
    assert await query(limit=2) == [b"log 2.1", b"log 2.0"], "the last lines"
    assert await query(after=(2, 0), limit=2) == [b"log 1.1", b"log 1.0"], "then older ones"
    assert await query(after=(1, 0)) == []
    assert await query(min_level=3) == [b"log 2.1", b"log 1.1"]
    assert await query(step_key="fetch", limit=1) == [b"log 1.1"]
    assert await query(start_ns=200, end_ns=400) == [b"log 2.0", b"log 1.1"]
    assert await query(newest_first=False, after=(1, 1)) == [b"log 2.0", b"log 2.1"]


async def test_pruning_requests_and_durations(backend: Backend, store: Store) -> None:
    await store.commit(
        CommitBatch(
            heads={"acme": 1},
            events=[event(1)],
            requests=[request_record("old", 1, 100), request_record("new", 1, 300)],
            durations=[
                DurationRecord("acme", "k", "s", finish, float(finish)) for finish in (1, 2, 3)
            ]
            + [DurationRecord("acme", "k", "other", 9, 9.0)],
        )
    )
    await store.prune_requests(200)
    await store.prune_durations(2)
    store, loaded = await reload(backend)
    assert [r.request_id for r in loaded.requests] == ["new"]
    assert sorted((d.step_key, d.finish_ns) for d in loaded.durations) == [
        ("other", 9),
        ("s", 2),
        ("s", 3),
    ]


async def test_requests_loaded_at_open_respect_time_and_count(
    backend: Backend, store: Store
) -> None:
    records = [request_record(f"r{i}", 1, 100 * i) for i in range(1, 6)]
    await store.commit(CommitBatch(heads={"acme": 1}, events=[event(1)], requests=records))
    store, loaded = await reload(backend, requests_since_ns=200, max_requests=3)
    assert [r.request_id for r in loaded.requests] == ["r3", "r4", "r5"], "newest, oldest first"


async def test_revision_before_a_time(store: Store) -> None:
    await store.commit(
        CommitBatch(heads={"acme": 3}, events=[event(r, commit_ns=r * 1000) for r in (1, 2, 3)])
    )
    assert await store.revision_before("acme", 1000) == 0
    assert await store.revision_before("acme", 2500) == 2
    assert await store.revision_before("acme", 10**12) == 3
    assert await store.revision_before("globex", 10**12) == 0


V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE events (
    revision INTEGER PRIMARY KEY, tenant TEXT NOT NULL, task_id TEXT NOT NULL,
    kind TEXT NOT NULL, parent_id TEXT NOT NULL, labels TEXT NOT NULL, state INTEGER NOT NULL,
    previous_state INTEGER NOT NULL, is_log INTEGER NOT NULL, at_rest INTEGER NOT NULL,
    commit_ns INTEGER NOT NULL, data BLOB NOT NULL
);
CREATE INDEX events_by_time ON events (commit_ns);
"""


async def test_a_database_numbered_for_all_tenants_at_once_is_migrated(tmp_path: Path) -> None:
    """Version 1 kept one sequence for all tenants, and held only tenant "default"."""
    path = tmp_path / "v1.db"
    connection = sqlite3.connect(path)
    connection.executescript(V1_SCHEMA)
    connection.executemany(
        "INSERT INTO events VALUES (?, 'default', 't1', 'k', '', '{}', 2, 1, 0, 0, ?, ?)",
        [(r, r * 1000, f"event {r}".encode()) for r in range(3, 8)],
    )
    connection.executemany("INSERT INTO meta VALUES (?, ?)", [("head", 7), ("compacted", 2)])
    connection.commit()
    connection.close()

    store = SqliteStore(path)
    loaded = await store.open(requests_since_ns=0, max_requests=10)
    try:
        assert dict(loaded.heads) == {"default": 7}
        assert dict(loaded.compacted) == {"default": 2}
        history = await store.read_events("default", 2, 7, 100)
        assert [e.revision for e in history] == [3, 4, 5, 6, 7]
        with pytest.raises(HistoryCompactedError):
            await store.read_events("default", 1, 7, 100)
        await store.commit(CommitBatch(heads={"other": 1}, events=[event(1, "other")]))
        assert [e.revision for e in await store.read_events("other", 0, 1, 10)] == [1]
    finally:
        await store.close()
