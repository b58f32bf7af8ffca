"""The authoritative state: tasks in memory, changes committed in groups, revisions.

All state changes happen on the event loop, one mutation at a time, in the
order they are committed; nothing here needs a lock. A mutation is queued, and
the commit loop takes every queued mutation at once, applies each to a private
copy of its task (so a rejected one changes nothing), gives each accepted
change the next revision, makes the whole group durable in one transaction,
and only then updates memory, publishes to the hub and answers the callers.
Invariant: memory, the hub's revision and the store's head move together,
after the commit, within one step of the loop; readers therefore never see a
change that could still be lost.
"""

from __future__ import annotations

import asyncio
import bisect
import enum
import hashlib
import heapq
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from headway.server import domain, eta
from headway.server.config import Settings
from headway.server.errors import FieldViolation, HeadwayError, Kind, task_not_found
from headway.server.eta import Estimator
from headway.server.filtering import TaskFacts
from headway.server.hub import Hub
from headway.server.store.base import (
    CommitBatch,
    DurationRecord,
    EventRecord,
    LeaseRow,
    LogRecord,
    RequestRecord,
    Store,
    TaskRow,
)
from headway.v1 import event_pb2, log_pb2, task_pb2

logger = logging.getLogger(__name__)

TaskKey = tuple[str, str]


class ChangeKind(enum.Enum):
    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"
    LOGS = "logs"
    LEASE = "lease"  # only the agent's lease was renewed: no revision, no event
    NONE = "none"


# The calls by which an agent reports: each renews the task's lease and clears
# `stalled`. A viewer's CancelTask and DeleteTask do not: they say nothing of
# whether the agent is alive.
AGENT_REPORTS = frozenset(
    {
        "CreateTask",
        "StartTask",
        "AddSteps",
        "UpdateStep",
        "UpdateTask",
        "AppendLogs",
        "AddArtifacts",
        "SucceedTask",
        "FailTask",
        "ConfirmCancel",
        "Heartbeat",
    }
)


@dataclass(slots=True)
class Change:
    """What a mutation did to its task: the new state, and any log lines it added."""

    kind: ChangeKind
    task: task_pb2.Task
    logs: Sequence[log_pb2.LogEntry] = ()


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a caller learns of its mutation: the revision and the task after it."""

    revision: int
    kind: ChangeKind
    task: task_pb2.Task
    lease_expire_ns: int = 0


@dataclass(frozen=True, slots=True)
class MutationContext:
    """What a mutation may consult besides its own task."""

    tenant: str
    revision: int
    now: Timestamp
    now_ns: int
    lookup: Callable[[str], task_pb2.Task | None]
    lease_expire_ns: int


# A mutation as a pure function: the task as it stands (a private copy, or None
# when it does not exist) to the change it makes, or a HeadwayError.
Apply = Callable[[task_pb2.Task | None, MutationContext], Change]


@dataclass(slots=True)
class _Command:
    tenant: str
    task_id: str
    method: str
    fingerprint: bytes
    request_id: str
    expected_revision: int
    apply: Apply
    future: asyncio.Future[Outcome | RequestRecord]


@dataclass(slots=True)
class _Staged:
    """A commit group being assembled: the batch for the store, and what follows it."""

    head: int
    batch: CommitBatch
    overlay: dict[TaskKey, task_pb2.Task | None] = field(default_factory=dict)
    requests: dict[TaskKey, tuple[_Command, RequestRecord]] = field(default_factory=dict)
    leases: dict[TaskKey, int] = field(default_factory=dict)
    answers: list[tuple[_Command, Outcome | RequestRecord | _Command]] = field(default_factory=list)


def fingerprint(method: str, request: Message) -> bytes:
    """A digest of a request without its request_id, to tell a retry from a reuse."""
    copy = type(request)()
    copy.CopyFrom(request)
    if "request_id" in copy.DESCRIPTOR.fields_by_name:
        copy.ClearField("request_id")
    digest = hashlib.blake2b(method.encode(), digest_size=16)
    digest.update(copy.SerializeToString(deterministic=True))
    return digest.digest()


def timestamp_of(ns: int) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(ns)
    return stamp


class Engine:
    """Owns the tasks, the revision counter, idempotency records and the commit loop."""

    def __init__(
        self,
        store: Store,
        hub: Hub,
        settings: Settings,
        *,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self._store = store
        self._hub = hub
        self._settings = settings
        self._clock = clock
        self._tasks: dict[TaskKey, task_pb2.Task] = {}
        self._order: dict[str, list[tuple[int, str]]] = {}
        self._requests: OrderedDict[TaskKey, RequestRecord] = OrderedDict()
        self._queue: list[_Command] = []
        self._wake = asyncio.Event()
        self._pins: dict[int, int] = {}
        self._next_pin = 0
        self._commit_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._refusing = False
        self._committing = False
        self.estimator = Estimator(settings.eta_smoothing.total_seconds())
        # Indexes for housekeeping, kept in step with `_tasks` by `_remember`:
        # the lease of every task not at rest, the deadline of every pending cancel
        # request, and a heap of (finish time, tenant, id) of tasks at rest.
        self.leases: dict[TaskKey, int] = {}
        self.cancel_deadlines: dict[TaskKey, int] = {}
        self.finished: list[tuple[int, str, str]] = []
        self.revision = 0
        self.compacted = 0

    # -- life cycle ---------------------------------------------------------------

    async def start(self) -> None:
        window_ns = int(self._settings.idempotency_window.total_seconds() * 1e9)
        loaded = await self._store.open(
            requests_since_ns=self._clock() - window_ns,
            max_requests=self._settings.idempotency_max_records,
        )
        for data, lease_expire_ns in loaded.tasks:
            task = task_pb2.Task.FromString(data)
            self._remember(task, lease_expire_ns)
        for record in loaded.requests:
            self._requests[(record.tenant, record.request_id)] = record
        for run in loaded.durations:
            self.estimator.history.record(run.tenant, run.kind, run.step_key, run.seconds)
        self.revision = loaded.head
        self.compacted = loaded.compacted
        self._hub.advance(self.revision)
        self._commit_task = asyncio.create_task(self._commit_loop(), name="headway-commit-loop")
        logger.info(
            "store open: %d tasks, revision %d, compacted %d",
            len(self._tasks),
            self.revision,
            self.compacted,
        )

    async def drain(self, *, at_least: float, at_most: float) -> None:
        """Refuse new mutations (UNAVAILABLE, retryable) and let accepted ones commit.

        Refusing for `at_least` seconds before the port closes gives a call that
        races the shutdown a clear, retryable answer instead of a cancelled call.
        """
        self._refusing = True
        loop = asyncio.get_running_loop()
        started = loop.time()
        while loop.time() - started < at_most:
            idle = not self._queue and not self._committing
            if idle and loop.time() - started >= at_least:
                return
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        """Commit what is queued, then stop the loops and close the store."""
        self._stopping = True
        self._wake.set()
        if self._commit_task is not None:
            await self._commit_task
        await self._store.close()

    # -- reads --------------------------------------------------------------------

    def get(self, tenant: str, task_id: str) -> task_pb2.Task:
        task = self._tasks.get((tenant, task_id))
        if task is None:
            raise task_not_found(task_id)
        return task

    def tasks_after(self, tenant: str, create_revision: int) -> Iterator[task_pb2.Task]:
        """The tenant's tasks created after `create_revision`, oldest first."""
        order = self._order.get(tenant, [])
        start = bisect.bisect_right(order, (create_revision, "\U0010ffff"))
        for _, task_id in order[start:]:
            yield self._tasks[(tenant, task_id)]

    def tasks_of(self, tenant: str) -> Iterator[task_pb2.Task]:
        return self.tasks_after(tenant, 0)

    async def read_events(
        self, tenant: str, after: int, upto: int, limit: int
    ) -> list[EventRecord]:
        return await self._store.read_events(tenant, after, upto, limit)

    @property
    def store(self) -> Store:
        return self._store

    @property
    def settings(self) -> Settings:
        return self._settings

    def now_ns(self) -> int:
        return self._clock()

    def find(self, key: TaskKey) -> task_pb2.Task | None:
        return self._tasks.get(key)

    def pin(self, revision: int) -> int:
        """Keep history after `revision` from compaction while a subscriber catches up."""
        self._next_pin += 1
        self._pins[self._next_pin] = revision
        return self._next_pin

    def move_pin(self, pin: int, revision: int) -> None:
        self._pins[pin] = revision

    def unpin(self, pin: int) -> None:
        self._pins.pop(pin, None)

    # -- mutations ----------------------------------------------------------------

    async def mutate(
        self,
        *,
        tenant: str,
        task_id: str,
        method: str,
        request: Message,
        apply: Apply,
        request_id: str = "",
        expected_revision: int = 0,
    ) -> Outcome:
        """Apply one mutation durably; a retry with the same request_id gets the first outcome."""
        print_ = fingerprint(method, request) if request_id else b""
        if request_id:
            record = self._requests.get((tenant, request_id))
            if record is not None:
                _check_same_request(record, method, print_)
                return await self._replay(record)
        future: asyncio.Future[Outcome | RequestRecord] = asyncio.get_running_loop().create_future()
        if self._refusing or self._stopping:
            raise HeadwayError(
                Kind.UNAVAILABLE,
                "SHUTTING_DOWN",
                "the server is shutting down; retry (with the same request_id) elsewhere or later",
            )
        self._queue.append(
            _Command(tenant, task_id, method, print_, request_id, expected_revision, apply, future)
        )
        self._wake.set()
        result = await future
        if isinstance(result, RequestRecord):
            return await self._replay(result)
        return result

    async def _replay(self, record: RequestRecord) -> Outcome:
        """The outcome of an already applied request, rebuilt from its recorded change."""
        event = await self._store.read_event(record.revision)
        if event is None:
            raise HeadwayError(
                Kind.FAILED_PRECONDITION,
                "REQUEST_EXPIRED",
                f"request {record.request_id!r} was applied at revision {record.revision}, "
                "whose history has been compacted; read the task instead",
                {"revision": str(record.revision)},
            )
        message = event_pb2.Event.FromString(event.data)
        which = message.WhichOneof("kind")
        if which == "logs_appended":
            # The first answer carried the cancel request pending at the time; one
            # recorded later (at a higher revision) was not part of it.
            task = task_pb2.Task(id=event.facts.task_id)
            current = self._tasks.get((record.tenant, event.facts.task_id))
            if current is not None and current.cancel_request.revision <= event.revision:
                task.cancel_request.CopyFrom(current.cancel_request)
            if not task.cancel_request.revision:
                task.ClearField("cancel_request")
            return Outcome(event.revision, ChangeKind.LOGS, task)
        task = getattr(message, str(which))
        return Outcome(event.revision, ChangeKind(str(which)), task)

    async def _commit_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                limit = self._settings.max_batch_mutations
                commands, self._queue = self._queue[:limit], self._queue[limit:]
                self._committing = True
                try:
                    await self._commit_group(commands)
                finally:
                    self._committing = False
            if self._stopping:
                return

    async def _commit_group(self, commands: list[_Command]) -> None:
        now_ns = self._clock()
        staged = _Staged(head=self.revision, batch=CommitBatch(head=self.revision))
        events: list[EventRecord] = []
        for command in commands:
            try:
                answer = self._stage(command, staged, now_ns, events)
            except HeadwayError as error:
                command.future.set_exception(error)
                continue
            except Exception:
                logger.exception("mutation %s of task %r failed", command.method, command.task_id)
                command.future.set_exception(
                    HeadwayError(Kind.INTERNAL, "INTERNAL", "the mutation failed unexpectedly")
                )
                continue
            staged.answers.append((command, answer))
        if staged.batch:
            staged.batch.head = staged.head
            try:
                await self._store.commit(staged.batch)
            except Exception:
                logger.exception("commit of %d changes failed", len(staged.answers))
                failure = HeadwayError(
                    Kind.UNAVAILABLE, "STORAGE_FAILURE", "the change could not be stored; retry"
                )
                for command, _ in staged.answers:
                    if not command.future.done():
                        command.future.set_exception(failure)
                return
            self._install(staged)
            self._hub.publish(events)
        outcomes: dict[int, Outcome | RequestRecord] = {}
        for command, answer in staged.answers:
            if isinstance(answer, _Command):
                answer = outcomes[id(answer)]
            outcomes[id(command)] = answer
            if not command.future.done():
                command.future.set_result(answer)

    def _stage(
        self, command: _Command, staged: _Staged, now_ns: int, events: list[EventRecord]
    ) -> Outcome | RequestRecord | _Command:
        key = (command.tenant, command.task_id)
        if command.request_id:
            request_key = (command.tenant, command.request_id)
            record = self._requests.get(request_key)
            if record is not None:
                _check_same_request(record, command.method, command.fingerprint)
                return record
            pending = staged.requests.get(request_key)
            if pending is not None:
                _check_same_request(pending[1], command.method, command.fingerprint)
                return pending[0]
        current = staged.overlay[key] if key in staged.overlay else self._tasks.get(key)
        stale = current is not None and current.revision != command.expected_revision
        if command.expected_revision and current is not None and stale:
            raise HeadwayError(
                Kind.ABORTED,
                "REVISION_MISMATCH",
                f"task {command.task_id!r} is at revision {current.revision}, not "
                f"{command.expected_revision}; read it again and retry",
                {"task_id": command.task_id, "revision": str(current.revision)},
            )
        working: task_pb2.Task | None = None
        if current is not None:
            working = task_pb2.Task()
            working.CopyFrom(current)
        revision = staged.head + 1
        ctx = MutationContext(
            tenant=command.tenant,
            revision=revision,
            now=timestamp_of(now_ns),
            now_ns=now_ns,
            lookup=lambda task_id: _lookup(self._tasks, staged.overlay, command.tenant, task_id),
            lease_expire_ns=staged.leases.get(key, self.leases.get(key, 0)),
        )
        change = command.apply(working, ctx)
        if change.kind is ChangeKind.NONE:
            # Nothing changed, but a retry must still get this answer: remember the
            # request at the task's revision, whose event holds the task as it is.
            outcome = Outcome(change.task.revision, ChangeKind.NONE, change.task)
            self._record_request(command, staged, change.task.revision, now_ns)
            return outcome
        task = change.task
        reports = command.method in AGENT_REPORTS
        if reports and not domain.is_resting(task.state):
            staged.leases[key] = now_ns + task.lease_duration.ToNanoseconds()
        lease_expire_ns = staged.leases.get(key, self.leases.get(key, 0))
        if change.kind is ChangeKind.LEASE:
            staged.batch.leases.append(LeaseRow(command.tenant, task.id, lease_expire_ns))
            return Outcome(task.revision, ChangeKind.LEASE, task, lease_expire_ns)
        staged.head = revision
        previous_state = current.state if current is not None else task.state
        event = event_pb2.Event(revision=revision, commit_time=ctx.now)
        batch = staged.batch
        if change.kind is ChangeKind.LOGS:
            entries = []
            for index, entry in enumerate(change.logs):
                stored = log_pb2.LogEntry()
                stored.CopyFrom(entry)
                stored.revision = revision
                stored.index = index
                stored.task_id = task.id
                if not stored.HasField("time"):
                    stored.time.CopyFrom(ctx.now)
                if stored.level == log_pb2.LOG_LEVEL_UNSPECIFIED:
                    stored.level = log_pb2.LOG_LEVEL_INFO
                entries.append(stored)
                batch.logs.append(
                    LogRecord(
                        tenant=command.tenant,
                        task_id=task.id,
                        revision=revision,
                        index=index,
                        level=stored.level,
                        step_key=stored.step_key,
                        time_ns=stored.time.ToNanoseconds(),
                        message=stored.message,
                        data=stored.SerializeToString(),
                    )
                )
            event.logs_appended.task_id = task.id
            event.logs_appended.entries.extend(entries)
        elif change.kind is ChangeKind.DELETED:
            event.deleted.CopyFrom(task)
            staged.overlay[key] = None
            batch.deletes.append(key)
        else:
            if reports:
                domain.record_report(task, ctx.now)
            self.estimator.refresh(task, now_ns)
            if task.state == task_pb2.TASK_STATE_SUCCEEDED and previous_state != task.state:
                batch.durations.extend(
                    DurationRecord(command.tenant, task.kind, step_key, now_ns, seconds)
                    for step_key, seconds in eta.durations(task)
                )
            task.revision = revision
            getattr(event, change.kind.value).CopyFrom(task)
            staged.overlay[key] = task
            batch.upserts.append(
                TaskRow(
                    command.tenant,
                    task.id,
                    task.create_revision,
                    task.SerializeToString(),
                    lease_expire_ns,
                )
            )
        events.append(
            EventRecord(
                revision=revision,
                facts=TaskFacts.of(task, previous_state),
                is_log=change.kind is ChangeKind.LOGS,
                at_rest=change.kind is ChangeKind.DELETED or domain.is_resting(task.state),
                commit_ns=now_ns,
                data=event.SerializeToString(),
            )
        )
        batch.events.append(events[-1])
        self._record_request(command, staged, revision, now_ns)
        return Outcome(revision, change.kind, task, lease_expire_ns)

    def _record_request(
        self, command: _Command, staged: _Staged, revision: int, now_ns: int
    ) -> None:
        if not command.request_id:
            return
        record = RequestRecord(
            tenant=command.tenant,
            request_id=command.request_id,
            method=command.method,
            fingerprint=command.fingerprint,
            revision=revision,
            create_ns=now_ns,
        )
        staged.requests[(command.tenant, command.request_id)] = (command, record)
        staged.batch.requests.append(record)

    def _install(self, staged: _Staged) -> None:
        """Make a committed group visible: memory, order index, request records, revision."""
        for key, lease_expire_ns in staged.leases.items():
            if key in self._tasks and key not in staged.overlay:
                self.leases[key] = lease_expire_ns
        for (tenant, task_id), task in staged.overlay.items():
            if task is None:
                self._forget(tenant, task_id)
            else:
                self._remember(task, staged.leases.get((tenant, task_id)))
        for run in staged.batch.durations:
            self.estimator.history.record(run.tenant, run.kind, run.step_key, run.seconds)
        for request_key, (_, record) in staged.requests.items():
            self._requests[request_key] = record
        while len(self._requests) > self._settings.idempotency_max_records:
            self._requests.popitem(last=False)
        self.revision = staged.head

    def _remember(self, task: task_pb2.Task, lease_expire_ns: int | None = None) -> None:
        key = (task.tenant, task.id)
        if key not in self._tasks:
            self._order.setdefault(task.tenant, []).append((task.create_revision, task.id))
        self._tasks[key] = task
        if domain.is_resting(task.state):
            self.leases.pop(key, None)
            self.cancel_deadlines.pop(key, None)
            heapq.heappush(self.finished, (task.finish_time.ToNanoseconds(), *key))
            return
        if lease_expire_ns is not None:
            self.leases[key] = lease_expire_ns
        elif key not in self.leases:
            self.leases[key] = domain.lease_expiry_ns(task, task.last_report_time.ToNanoseconds())
        if task.HasField("cancel_request"):
            self.cancel_deadlines[key] = task.cancel_request.deadline_time.ToNanoseconds()

    def _forget(self, tenant: str, task_id: str) -> None:
        self.leases.pop((tenant, task_id), None)
        self.cancel_deadlines.pop((tenant, task_id), None)
        task = self._tasks.pop((tenant, task_id), None)
        if task is None:
            return
        order = self._order[tenant]
        position = bisect.bisect_left(order, (task.create_revision, task.id))
        if position < len(order) and order[position] == (task.create_revision, task.id):
            del order[position]

    # -- housekeeping -------------------------------------------------------------

    def compaction_floor(self) -> int | None:
        """The oldest revision a catching-up subscriber still needs, if any."""
        return min(self._pins.values()) if self._pins else None

    def forget_requests_before(self, cutoff_ns: int) -> int:
        """Drop remembered request ids older than the cutoff; the oldest kept one's time."""
        while self._requests:
            oldest = next(iter(self._requests.values()))
            if oldest.create_ns >= cutoff_ns:
                return oldest.create_ns
            self._requests.popitem(last=False)
        return cutoff_ns


def _check_same_request(record: RequestRecord, method: str, print_: bytes) -> None:
    if record.method != method or record.fingerprint != print_:
        raise HeadwayError(
            Kind.INVALID_ARGUMENT,
            "REQUEST_ID_REUSED",
            f"request_id {record.request_id!r} was already used for a different request "
            f"({record.method})",
            {"request_id": record.request_id},
            violations=(FieldViolation("request_id", "was already used for a different request"),),
        )


def _lookup(
    tasks: dict[TaskKey, task_pb2.Task],
    overlay: dict[TaskKey, task_pb2.Task | None],
    tenant: str,
    task_id: str,
) -> task_pb2.Task | None:
    key = (tenant, task_id)
    return overlay[key] if key in overlay else tasks.get(key)
