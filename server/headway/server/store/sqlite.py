"""The embedded store: one SQLite file in WAL mode.

One writer thread (`writer`) owns the only writing connection, so transactions never
contend; the engine hands it whole batches (group commit), so one fsync serves
many mutations. Readers use their own connections on other threads, which WAL
lets run beside the writer without blocking it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

from headway.server.filtering import TaskFacts
from headway.server.store.base import (
    CommitBatch,
    DurationRecord,
    EventRecord,
    HistoryCompactedError,
    LoadedState,
    LogQuery,
    RequestRecord,
    StorageUnavailableError,
)
from headway.server.store.lock import DatabaseLock
from headway.server.store.writer import WriterThread

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tasks (
    tenant TEXT NOT NULL,
    task_id TEXT NOT NULL,
    create_revision INTEGER NOT NULL,
    data BLOB NOT NULL,
    lease_expire_ns INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, task_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tenants (
    tenant TEXT PRIMARY KEY,
    head INTEGER NOT NULL DEFAULT 0,
    compacted INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    revision INTEGER NOT NULL,
    tenant TEXT NOT NULL,
    task_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    parent_id TEXT NOT NULL,
    labels TEXT NOT NULL,
    state INTEGER NOT NULL,
    previous_state INTEGER NOT NULL,
    is_log INTEGER NOT NULL,
    at_rest INTEGER NOT NULL,
    commit_ns INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (tenant, revision)
);
CREATE TABLE IF NOT EXISTS logs (
    tenant TEXT NOT NULL,
    task_id TEXT NOT NULL,
    revision INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    level INTEGER NOT NULL,
    step_key TEXT NOT NULL,
    time_ns INTEGER NOT NULL,
    message TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (tenant, task_id, revision, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS requests (
    tenant TEXT NOT NULL,
    request_id TEXT NOT NULL,
    method TEXT NOT NULL,
    fingerprint BLOB NOT NULL,
    revision INTEGER NOT NULL,
    create_ns INTEGER NOT NULL,
    PRIMARY KEY (tenant, request_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS requests_by_time ON requests (create_ns);
CREATE TABLE IF NOT EXISTS durations (
    tenant TEXT NOT NULL,
    kind TEXT NOT NULL,
    step_key TEXT NOT NULL,
    finish_ns INTEGER NOT NULL,
    seconds REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS durations_by_key ON durations (tenant, kind, step_key, finish_ns);
CREATE INDEX IF NOT EXISTS events_by_time ON events (tenant, commit_ns);
"""

SCHEMA_VERSION = 2

# Version 1 numbered every change in one sequence for all tenants; it only ever
# held tenant "default", whose revisions therefore stay as they are.
MIGRATE_FROM_1 = """
ALTER TABLE events RENAME TO events_v1;
DROP INDEX IF EXISTS events_by_time;
"""
COPY_FROM_1 = """
INSERT INTO events SELECT * FROM events_v1;
DROP TABLE events_v1;
INSERT INTO tenants (tenant, head, compacted)
    SELECT 'default', COALESCE((SELECT value FROM meta WHERE key = 'head'), 0),
           COALESCE((SELECT value FROM meta WHERE key = 'compacted'), 0)
    WHERE EXISTS (SELECT 1 FROM meta WHERE key = 'head');
DELETE FROM meta WHERE key IN ('head', 'compacted');
"""

_EVENT_COLUMNS = (
    "revision, tenant, task_id, kind, parent_id, labels, state, previous_state, "
    "is_log, at_rest, commit_ns, data"
)


class SqliteStore:
    """A `Store` on one SQLite file."""

    def __init__(self, path: Path, *, synchronous: str = "FULL") -> None:
        self._path = path
        self._synchronous = synchronous
        self._writer_thread = WriterThread("headway-sqlite-writer")
        self._reader_pool = ThreadPoolExecutor(2, thread_name_prefix="headway-sqlite-reader")
        self._writer: sqlite3.Connection | None = None
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._lock = DatabaseLock(path)

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA busy_timeout = 5000")
        connection.execute(f"PRAGMA synchronous = {self._synchronous}")
        # SQLite's lower() folds ASCII only; log search must ignore case in any script.
        connection.create_function("contains_folded", 2, _contains_folded, deterministic=True)
        return connection

    async def _on_writer_thread(self, work: Callable[[], T]) -> T:
        return await self._writer_thread.run(work)

    async def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def run() -> T:
            if self._writer is None:
                raise RuntimeError("the store is not open")
            return work(self._writer)

        return await self._on_writer_thread(run)

    async def _read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def run() -> T:
            connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
            if connection is None:
                connection = self._connect()
                self._local.connection = connection
                with self._readers_lock:
                    self._readers.append(connection)
            return work(connection)

        return await asyncio.get_running_loop().run_in_executor(self._reader_pool, run)

    async def open(self, *, requests_since_ns: int, max_requests: int) -> LoadedState:
        """Lock the database for this process, then load what the engine keeps in memory.

        Raises DatabaseInUseError, before touching the database, if another
        server holds it.
        """
        self._lock.acquire()
        try:
            return await self._on_writer_thread(self._load(requests_since_ns, max_requests))
        except BaseException:
            await self.close()
            raise

    def _load(self, requests_since_ns: int, max_requests: int) -> Callable[[], LoadedState]:
        def load() -> LoadedState:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = self._connect()
            self._writer.execute("PRAGMA journal_mode = WAL")
            _migrate(self._writer)
            tenants = self._writer.execute("SELECT tenant, head, compacted FROM tenants").fetchall()
            tasks = self._writer.execute(
                "SELECT data, lease_expire_ns FROM tasks ORDER BY create_revision"
            ).fetchall()
            durations = [
                DurationRecord(*row)
                for row in self._writer.execute(
                    "SELECT tenant, kind, step_key, finish_ns, seconds FROM durations "
                    "ORDER BY finish_ns"
                )
            ]
            requests = [
                RequestRecord(*row)
                for row in self._writer.execute(
                    "SELECT tenant, request_id, method, fingerprint, revision, create_ns "
                    "FROM requests WHERE create_ns >= ? ORDER BY create_ns DESC LIMIT ?",
                    (requests_since_ns, max_requests),
                )
            ]
            requests.reverse()
            return LoadedState(
                heads={tenant: head for tenant, head, _ in tenants},
                compacted={tenant: compacted for tenant, _, compacted in tenants if compacted},
                tasks=tasks,
                requests=requests,
                durations=durations,
            )

        return load

    async def commit(self, batch: CommitBatch) -> None:
        try:
            await self._write(lambda connection: _commit(connection, batch))
        except sqlite3.OperationalError as error:
            # I/O errors, a full disk, a lock held too long: conditions that pass.
            # Anything else (a constraint, a value SQLite cannot hold) is the
            # batch's own fault and would fail the same way again.
            raise StorageUnavailableError(str(error)) from error

    async def read_events(
        self, tenant: str, after: int, upto: int, limit: int
    ) -> list[EventRecord]:
        def read(connection: sqlite3.Connection) -> list[EventRecord]:
            # One read transaction: the compaction mark and the rows come from the
            # same snapshot of the database, so a range is either whole or refused.
            connection.execute("BEGIN")
            try:
                row = connection.execute(
                    "SELECT compacted FROM tenants WHERE tenant = ?", (tenant,)
                ).fetchone()
                compacted = int(row[0]) if row else 0
                if after < compacted:
                    raise HistoryCompactedError(compacted)
                rows = connection.execute(
                    f"SELECT {_EVENT_COLUMNS} FROM events "
                    "WHERE tenant = ? AND revision > ? AND revision <= ? ORDER BY revision LIMIT ?",
                    (tenant, after, upto, limit),
                ).fetchall()
            finally:
                connection.execute("COMMIT")
            return [_event_from_row(row) for row in rows]

        return await self._read(read)

    async def read_event(self, tenant: str, revision: int) -> EventRecord | None:
        def read(connection: sqlite3.Connection) -> EventRecord | None:
            row = connection.execute(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE tenant = ? AND revision = ?",
                (tenant, revision),
            ).fetchone()
            return None if row is None else _event_from_row(row)

        return await self._read(read)

    async def list_logs(self, query: LogQuery) -> list[bytes]:
        clauses = ["tenant = ?", "task_id = ?"]
        params: list[object] = [query.tenant, query.task_id]
        if query.min_level:
            clauses.append("level >= ?")
            params.append(query.min_level)
        if query.step_key:
            clauses.append("step_key = ?")
            params.append(query.step_key)
        if query.text:
            clauses.append("contains_folded(message, ?)")
            params.append(query.text)
        if query.start_ns is not None:
            clauses.append("time_ns >= ?")
            params.append(query.start_ns)
        if query.end_ns is not None:
            clauses.append("time_ns < ?")
            params.append(query.end_ns)
        if query.after is not None:
            clauses.append(
                "(revision, idx) < (?, ?)" if query.newest_first else "(revision, idx) > (?, ?)"
            )
            params.extend(query.after)
        order = "revision DESC, idx DESC" if query.newest_first else "revision, idx"
        sql = f"SELECT data FROM logs WHERE {' AND '.join(clauses)} ORDER BY {order} LIMIT ?"
        params.append(query.limit)

        def read(connection: sqlite3.Connection) -> list[bytes]:
            return [row[0] for row in connection.execute(sql, params)]

        return await self._read(read)

    async def compact(self, tenant: str, upto: int) -> None:
        def compact(connection: sqlite3.Connection) -> None:
            with _transaction(connection):
                connection.execute(
                    "DELETE FROM events WHERE tenant = ? AND revision <= ?", (tenant, upto)
                )
                connection.execute(
                    "INSERT INTO tenants (tenant, compacted) VALUES (?, ?) "
                    "ON CONFLICT (tenant) DO UPDATE SET "
                    "compacted = MAX(compacted, excluded.compacted)",
                    (tenant, upto),
                )

        await self._write(compact)

    async def prune_durations(self, keep: int) -> None:
        def prune(connection: sqlite3.Connection) -> None:
            with _transaction(connection):
                connection.execute(
                    "DELETE FROM durations WHERE rowid IN (SELECT rowid FROM (SELECT rowid, "
                    "ROW_NUMBER() OVER (PARTITION BY tenant, kind, step_key "
                    "ORDER BY finish_ns DESC) AS newest FROM durations) WHERE newest > ?)",
                    (keep,),
                )

        await self._write(prune)

    async def revision_before(self, tenant: str, commit_ns: int) -> int:
        def read(connection: sqlite3.Connection) -> int:
            row = connection.execute(
                "SELECT MAX(revision) FROM events WHERE tenant = ? AND commit_ns < ?",
                (tenant, commit_ns),
            ).fetchone()
            return int(row[0] or 0)

        return await self._read(read)

    async def prune_requests(self, before_ns: int) -> None:
        def prune(connection: sqlite3.Connection) -> None:
            with _transaction(connection):
                connection.execute("DELETE FROM requests WHERE create_ns < ?", (before_ns,))

        await self._write(prune)

    async def close(self) -> None:
        def close_writer() -> None:
            if self._writer is not None:
                self._writer.close()
                self._writer = None

        await self._on_writer_thread(close_writer)
        self._writer_thread.stop()
        self._reader_pool.shutdown(wait=True)
        with self._readers_lock:
            for connection in self._readers:
                connection.close()
            self._readers.clear()
        self._lock.release()


@contextlib.contextmanager
def _transaction(connection: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE … COMMIT, rolled back on any error so a failed batch leaves no trace."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def _commit(connection: sqlite3.Connection, batch: CommitBatch) -> None:
    with _transaction(connection):
        if batch.upserts:
            connection.executemany(
                "INSERT INTO tasks (tenant, task_id, create_revision, data, lease_expire_ns) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant, task_id) DO UPDATE SET "
                "data = excluded.data, lease_expire_ns = excluded.lease_expire_ns",
                [
                    (r.tenant, r.task_id, r.create_revision, r.data, r.lease_expire_ns)
                    for r in batch.upserts
                ],
            )
        if batch.leases:
            connection.executemany(
                "UPDATE tasks SET lease_expire_ns = ? WHERE tenant = ? AND task_id = ?",
                [(r.lease_expire_ns, r.tenant, r.task_id) for r in batch.leases],
            )
        if batch.durations:
            connection.executemany(
                "INSERT INTO durations (tenant, kind, step_key, finish_ns, seconds) "
                "VALUES (?, ?, ?, ?, ?)",
                [(r.tenant, r.kind, r.step_key, r.finish_ns, r.seconds) for r in batch.durations],
            )
        if batch.deletes:
            connection.executemany(
                "DELETE FROM tasks WHERE tenant = ? AND task_id = ?", batch.deletes
            )
            connection.executemany(
                "DELETE FROM logs WHERE tenant = ? AND task_id = ?", batch.deletes
            )
        if batch.events:
            connection.executemany(
                f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES ({', '.join('?' * 12)})",
                [_event_to_row(event) for event in batch.events],
            )
        if batch.logs:
            connection.executemany(
                "INSERT INTO logs (tenant, task_id, revision, idx, level, step_key, time_ns, "
                "message, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        r.tenant,
                        r.task_id,
                        r.revision,
                        r.index,
                        r.level,
                        r.step_key,
                        r.time_ns,
                        r.message,
                        r.data,
                    )
                    for r in batch.logs
                ],
            )
        if batch.requests:
            connection.executemany(
                "INSERT OR REPLACE INTO requests (tenant, request_id, method, fingerprint, "
                "revision, create_ns) VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (r.tenant, r.request_id, r.method, r.fingerprint, r.revision, r.create_ns)
                    for r in batch.requests
                ],
            )
        if batch.heads:
            connection.executemany(
                "INSERT INTO tenants (tenant, head) VALUES (?, ?) "
                "ON CONFLICT (tenant) DO UPDATE SET head = excluded.head",
                list(batch.heads.items()),
            )


def _migrate(connection: sqlite3.Connection) -> None:
    """Bring the schema to SCHEMA_VERSION, in one transaction."""
    with _transaction(connection):
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        had_events = connection.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'"
        ).fetchone()
        if version < 2 and had_events:
            _run(connection, MIGRATE_FROM_1)
            _run(connection, SCHEMA)
            _run(connection, COPY_FROM_1)
        else:
            _run(connection, SCHEMA)
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _run(connection: sqlite3.Connection, script: str) -> None:
    # Statement by statement: executescript() would commit the open transaction.
    for statement in script.split(";"):
        if statement.strip():
            connection.execute(statement)


def _contains_folded(text: str | None, needle: str | None) -> bool:
    return text is not None and needle is not None and needle.casefold() in text.casefold()


@lru_cache(maxsize=4096)
def _labels_json(labels: tuple[tuple[str, str], ...]) -> str:
    """The labels column: a task's labels never change, so each set is encoded once."""
    return json.dumps(dict(labels), sort_keys=True) if labels else "{}"


def _event_to_row(event: EventRecord) -> tuple[object, ...]:
    facts = event.facts
    return (
        event.revision,
        facts.tenant,
        facts.task_id,
        facts.kind,
        facts.parent_id,
        _labels_json(tuple(facts.labels.items())),
        facts.state,
        facts.previous_state,
        int(event.is_log),
        int(event.at_rest),
        event.commit_ns,
        event.data,
    )


def _event_from_row(row: tuple[object, ...]) -> EventRecord:
    (revision, tenant, task_id, kind, parent_id, labels, state, previous_state,
     is_log, at_rest, commit_ns, data) = row  # fmt: skip
    facts = TaskFacts(
        tenant=str(tenant),
        task_id=str(task_id),
        kind=str(kind),
        parent_id=str(parent_id),
        labels=json.loads(str(labels)),
        state=int(state),  # type: ignore[call-overload]
        previous_state=int(previous_state),  # type: ignore[call-overload]
    )
    return EventRecord(
        revision=int(revision),  # type: ignore[call-overload]
        facts=facts,
        is_log=bool(is_log),
        at_rest=bool(at_rest),
        commit_ns=int(commit_ns),  # type: ignore[call-overload]
        data=bytes(data),  # type: ignore[call-overload]
    )
