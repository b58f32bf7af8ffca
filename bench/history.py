"""A large history on disk, built once and cached under bench/out/.

Driving the real server (even in-process, without gRPC) costs ~230 µs per
event, most of it the ETA estimator, so a million events would take minutes.
Instead the generator writes through the server's own store: `SqliteStore`
commits `CommitBatch`es of `TaskRow`s and `EventRecord`s, exactly what the
engine hands it, so the schema, the encoding and the facts columns are the
server's own. The tasks are built here the way the engine would build them
for CreateTask(start) followed by UpdateStep progress reports on three steps
(without the ETA and lease details, which start-up and catch-up do not need)
and a final SucceedTask: `events // tasks` events per task, tasks interleaved
chunk by chunk. Every task ends at rest on purpose: a running task's lease
would have expired by the time the cached database is opened, and the server's
janitor would then mark all of them stalled at once, a burst of 100k events
that is a scenario of its own, not start-up. The cache is rebuilt when it is
older than `MAX_AGE_DAYS`, well inside the server's 7-day retention. The cache
directory's name carries the sizes and a digest of the store's sources, so a
changed store builds a fresh database instead of reusing one it might not read.

    python -m bench.history --tasks 100000 --events 1000000
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import shutil
import time
from pathlib import Path
from typing import Any

import uvloop
from google.protobuf.timestamp_pb2 import Timestamp

import headway.server
from headway.server.filtering import TaskFacts
from headway.server.store.base import CommitBatch, EventRecord, TaskRow
from headway.server.store.sqlite import SqliteStore
from headway.v1 import event_pb2, task_pb2

TENANT = "default"
CHUNK_TASKS = 5000
STEPS = ("fetch", "analyze", "write")
EVENT_SPACING_NS = 1_000_000  # commit times 1 ms apart, ending now
MAX_AGE_DAYS = 3


def _store_digest() -> str:
    """A digest of the store's sources (schema, encoding): a changed store gets a fresh database."""
    digest = hashlib.blake2b(digest_size=6)
    for path in sorted((Path(headway.server.__file__).parent / "store").glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def history_dir(out: Path, tasks: int, events: int) -> Path:
    """The cache directory; the database is `headway.db` in it (with its WAL files, if any)."""
    return out / f"history-{tasks}t-{events}e-{_store_digest()}"


def _task_row(task: task_pb2.Task) -> TaskRow:
    known: dict[str, Any] = {
        "tenant": task.tenant,
        "task_id": task.id,
        "create_revision": task.create_revision,
        "data": task.SerializeToString(),
    }
    # Columns the generator knows nothing about (such as a lease) start empty.
    for extra in dataclasses.fields(TaskRow):
        known.setdefault(extra.name, 0)
    return TaskRow(**known)


def _new_task(task_id: str, revision: int, now: Timestamp) -> task_pb2.Task:
    return task_pb2.Task(
        id=task_id,
        tenant=TENANT,
        display_name=f"history task {task_id}",
        kind="bench.history",
        labels={"suite": "bench"},
        state=task_pb2.TASK_STATE_RUNNING,
        steps=[
            task_pb2.Step(
                key=key, index=i, display_name=key, weight=1.0, state=task_pb2.STEP_STATE_PENDING
            )
            for i, key in enumerate(STEPS)
        ],
        create_time=now,
        start_time=now,
        update_time=now,
        create_revision=revision,
        revision=revision,
    )


def _report(task: task_pb2.Task, report: int, reports: int, now: Timestamp) -> None:
    """Progress report `report` of `reports`: the steps run one after the other."""
    position = (report - 1) * len(STEPS) / reports
    index = int(position)
    for earlier in task.steps[:index]:
        if earlier.state != task_pb2.STEP_STATE_SUCCEEDED:
            earlier.state = task_pb2.STEP_STATE_SUCCEEDED
            earlier.fraction = 1.0
            earlier.finish_time.CopyFrom(now)
    step = task.steps[index]
    if step.state == task_pb2.STEP_STATE_PENDING:
        step.state = task_pb2.STEP_STATE_RUNNING
        step.start_time.CopyFrom(now)
    step.progress.units.current = round((position - index) * 100)
    step.progress.units.total = 100
    step.progress.units.unit = "items"
    step.fraction = step.progress.units.current / 100
    step.message = f"history report {report} on {step.key}"
    task.fraction = sum(s.fraction for s in task.steps) / len(task.steps)
    task.update_time.CopyFrom(now)


def _succeed(task: task_pb2.Task, now: Timestamp) -> None:
    """SucceedTask: running steps succeed, pending ones are skipped."""
    for step in task.steps:
        if step.state == task_pb2.STEP_STATE_RUNNING:
            step.state = task_pb2.STEP_STATE_SUCCEEDED
            step.fraction = 1.0
            step.finish_time.CopyFrom(now)
        elif step.state == task_pb2.STEP_STATE_PENDING:
            step.state = task_pb2.STEP_STATE_SKIPPED
            step.fraction = 1.0
    task.state = task_pb2.TASK_STATE_SUCCEEDED
    task.fraction = 1.0
    task.finish_time.CopyFrom(now)
    task.update_time.CopyFrom(now)


async def _build(path: Path, tasks: int, events_per_task: int) -> int:
    store = SqliteStore(path, synchronous="OFF")
    await store.open(requests_since_ns=0, max_requests=0)
    total = tasks * events_per_task
    clock = time.time_ns() - total * EVENT_SPACING_NS
    revision = 0
    try:
        for first in range(0, tasks, CHUNK_TASKS):
            chunk: dict[str, task_pb2.Task] = {}
            batch = CommitBatch()
            ids = [f"history-{n:07d}" for n in range(first, min(first + CHUNK_TASKS, tasks))]
            for report in range(events_per_task):
                for task_id in ids:
                    revision += 1
                    clock += EVENT_SPACING_NS
                    now = Timestamp()
                    now.FromNanoseconds(clock)
                    event = event_pb2.Event(revision=revision, commit_time=now)
                    if report == 0:
                        task = chunk[task_id] = _new_task(task_id, revision, now)
                        event.created.CopyFrom(task)
                    else:
                        task = chunk[task_id]
                        if report == events_per_task - 1:
                            _succeed(task, now)
                        else:
                            _report(task, report, events_per_task - 2, now)
                        task.revision = revision
                        event.updated.CopyFrom(task)
                    at_rest = task.state == task_pb2.TASK_STATE_SUCCEEDED
                    batch.events.append(
                        EventRecord(
                            revision=revision,
                            facts=TaskFacts.of(task, task_pb2.TASK_STATE_RUNNING),
                            is_log=False,
                            at_rest=at_rest,
                            commit_ns=clock,
                            data=event.SerializeToString(),
                        )
                    )
            batch.upserts.extend(_task_row(task) for task in chunk.values())
            batch.heads = {TENANT: revision}
            await store.commit(batch)
        return revision
    finally:
        await store.close()


def ensure_history(out: Path, tasks: int, events: int) -> tuple[Path, int, float]:
    """The cached database (built if missing), its head revision, build seconds (0: cached)."""
    if events % tasks or events // tasks < 3:
        raise ValueError("events must be a multiple of tasks, at least 3 per task")
    directory = history_dir(out, tasks, events)
    database = directory / "headway.db"
    if database.exists() and time.time() - database.stat().st_mtime < MAX_AGE_DAYS * 86400:
        return database, events, 0.0
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(f"history-{tasks}t-{events}e-*"):
        shutil.rmtree(stale)
    partial = directory.with_name(directory.name + ".partial")
    partial.mkdir()
    began = time.monotonic()
    head = uvloop.run(_build(partial / "headway.db", tasks, events // tasks))
    if head != events:
        raise RuntimeError(f"history has {head} events, expected {events}")
    partial.rename(directory)
    return directory / "headway.db", head, time.monotonic() - began


def main() -> None:
    parser = argparse.ArgumentParser(description="Build the cached history database.")
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    args = parser.parse_args()
    path, head, seconds = ensure_history(args.out, args.tasks, args.events)
    print(f"{path}: {head} events ({'cached' if not seconds else f'built in {seconds:.1f} s'})")


if __name__ == "__main__":
    main()
