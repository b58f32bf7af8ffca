"""The authoritative state: tasks in memory, changes committed in groups, revisions.

All state changes happen on the event loop, one mutation at a time, in the
order they are committed; nothing here needs a lock. A mutation is queued, and
the commit loop takes every queued mutation at once, applies each to a private
copy of its task (so a rejected one changes nothing), gives each accepted
change the next revision of its tenant (revisions count per tenant, so they
reveal nothing of other tenants' activity), makes the whole group durable in
one transaction,
and only then updates memory, publishes to the hub and answers the callers.
Invariant: memory, the hub's revisions and the store's heads move together,
after the commit, within one step of the loop; readers therefore never see a
change that could still be lost.

A change of a child task is followed, in its group, by changes of its parents
that the server derives from their children (`_roll_up`, rules in `rollup`):
each with the next revision and its own event, prepared before the child's
change joins the group, so the child and its parents commit or fail together.

A group whose commit fails leaves no trace (memory, revision, request ids and
rate estimates are as before) and is retried one mutation at a time, so a
mutation that cannot be stored fails alone and never takes its neighbours with
it.

While one group is being made durable, the next is staged on top of it (it
sees the first group's changes, which memory does not show yet) and goes to
the store as soon as the first is durable: the writer thread need not wait for
the loop to stage. If the first group fails, the one staged on it is dropped
and staged again; nothing of it was answered or shown.
"""

from __future__ import annotations

import asyncio
import enum
import heapq
import logging
import sys
import time
from collections.abc import Callable, ItemsView, Iterator, Sequence, ValuesView
from dataclasses import dataclass, field

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from headway.server import domain, eta, records, rollup
from headway.server.config import Settings
from headway.server.creation import CreationOrder
from headway.server.errors import HeadwayError, Kind, task_not_found
from headway.server.eta import Estimator
from headway.server.filtering import TaskFacts
from headway.server.held import Held
from headway.server.hub import Hub
from headway.server.idempotency import RequestBook, RequestKey, check_same_request, fingerprint
from headway.server.store.base import (
    CommitBatch,
    DurationRecord,
    EventRecord,
    LeaseRow,
    RequestRecord,
    StorageUnavailableError,
    Store,
    TaskRow,
)
from headway.v1 import event_pb2, log_pb2, task_pb2

logger = logging.getLogger(__name__)

TaskKey = tuple[str, str]

# A report that only moves a task's fractions refreshes its estimates at most
# this often (see `Estimator.refresh`): an ETA lags the progress by at most this.
ETA_REFRESH_INTERVAL_NS = 500_000_000


class ChangeKind(enum.Enum):
    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"
    LOGS = "logs"
    LEASE = "lease"  # only the agent's lease was renewed: no revision, no event
    NONE = "none"


class Actor(enum.Enum):
    """Who makes a mutation, which decides what it says beyond its own change.

    An agent's report proves the agent alive: it renews the task's lease and
    clears `stalled`. A viewer's cancel or delete says nothing of the agent.
    The server's own housekeeping (stall, lost agent, forced cancel, expiry)
    is held to the hard size ceiling only, so that it can never be refused by
    a task that the agent filled to its budget.
    """

    AGENT = "agent"
    VIEWER = "viewer"
    SERVER = "server"


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
    # The tenant's tasks before this change: all stored, and those not at rest.
    stored_tasks: int = 0
    active_tasks: int = 0


# A mutation as a pure function: the task as it stands (a private copy, or None
# when it does not exist) to the change it makes, or a HeadwayError.
Apply = Callable[[task_pb2.Task | None, MutationContext], Change]


@dataclass(slots=True)
class _Command:
    tenant: str
    task_id: str
    method: str
    actor: Actor
    fingerprint: bytes
    request_id: str
    expected_revision: int
    apply: Apply
    future: asyncio.Future[Outcome | RequestRecord]


@dataclass(slots=True)
class _Staged:
    """A commit group being assembled: the batch for the store, and what follows it.

    A group staged while the one before it is still being committed (`base`)
    sees that group's changes as if they were memory: every lookup below
    falls through to it before memory.
    """

    batch: CommitBatch
    base: _Staged | None = None
    heads: dict[str, int] = field(default_factory=dict)  # tenants' revisions in the group
    overlay: dict[TaskKey, task_pb2.Task | None] = field(default_factory=dict)
    rows: dict[TaskKey, bytes] = field(default_factory=dict)  # the overlay's tasks, encoded
    requests: dict[RequestKey, tuple[_Command, RequestRecord]] = field(default_factory=dict)
    leases: dict[TaskKey, int] = field(default_factory=dict)
    stored: set[TaskKey] = field(default_factory=set)
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)  # tenant: (stored, active)
    born: dict[TaskKey, set[str]] = field(default_factory=dict)  # parent: children created
    events: list[EventRecord] = field(default_factory=list)
    answers: list[tuple[_Command, Outcome | RequestRecord | _Command]] = field(default_factory=list)
    refused: list[tuple[_Command, HeadwayError]] = field(default_factory=list)
    commands: list[_Command] = field(default_factory=list)  # every member, in order
    journal_end: int = 0  # the estimator's journal length once the group was sealed
    seconds: float = 0.0  # how long the store took to commit it

    def layers(self) -> Iterator[_Staged]:
        """This group, then the group below it (still being committed), if any."""
        staged: _Staged | None = self
        while staged is not None:
            yield staged
            staged = staged.base

    def task(self, key: TaskKey) -> tuple[bool, task_pb2.Task | None]:
        """Whether this group (or the one below it) changed the task, and how it left it."""
        for staged in self.layers():
            if key in staged.overlay:
                return True, staged.overlay[key]
        return False, None

    def head(self, tenant: str, committed: int) -> int:
        return next((s.heads[tenant] for s in self.layers() if tenant in s.heads), committed)

    def lease(self, key: TaskKey, committed: int) -> int:
        return next((s.leases[key] for s in self.layers() if key in s.leases), committed)

    def count(self, tenant: str) -> tuple[int, int] | None:
        return next((s.counts[tenant] for s in self.layers() if tenant in s.counts), None)

    def born_to(self, key: TaskKey) -> set[str]:
        born = self.born.get(key, set())
        if self.base is not None:
            born = born | self.base.born_to(key)
        return born


@dataclass(slots=True)
class _Flight:
    """A sealed group in the store's hands, and how its commit ended."""

    staged: _Staged
    landed: bool = False
    error: Exception | None = None
    started: float = 0.0


@dataclass(frozen=True, slots=True)
class _RollUp:
    """The server, moving a parent after a change of one of its children (see `rollup`)."""

    tenant: str
    task_id: str
    method: str = "server.RollUp"
    actor: Actor = Actor.SERVER


@dataclass(frozen=True, slots=True)
class _Encoded:
    """A change as bytes: its event, the task's row (task changes) and stamped log lines."""

    event: bytes
    task: bytes = b""
    logs: Sequence[log_pb2.LogEntry] = ()


@dataclass(frozen=True, slots=True)
class _FollowUp:
    """A parent's change prepared (and encoded) before the child's change joins the group."""

    source: _RollUp
    change: Change
    revision: int
    encoded: _Encoded
    previous_state: int
    lease_expire_ns: int


def timestamp_of(ns: int) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(ns)
    return stamp


class CommitObserver:
    """What the commit loop reports as it goes (the metrics replace it); does nothing."""

    def committed(self, mutations: int, changes: int, seconds: float) -> None:
        """A group of `mutations` made `changes` durable in `seconds` (the store's commit)."""

    def commit_failed(self, error: Exception) -> None:
        """A group's commit failed; its members are retried alone (see `_isolate`)."""


class Engine:
    """Owns the tasks, each tenant's revision counter, request ids and the commit loop."""

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
        self._tasks: dict[TaskKey, Held] = {}  # see `held` for why bytes
        self._order: dict[str, CreationOrder] = {}
        self._requests = RequestBook(settings.idempotency_max_records)
        self._queue: list[_Command] = []
        self._wake = asyncio.Event()
        self._pins: dict[int, tuple[str, int]] = {}
        self._next_pin = 0
        self._commit_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._refusing = False
        self._committing = False
        self.estimator = Estimator(
            settings.eta_smoothing.total_seconds(), min_interval_ns=ETA_REFRESH_INTERVAL_NS
        )
        self.observer = CommitObserver()
        # Indexes for housekeeping, kept in step with `_tasks` by `_remember`:
        # the lease of every task not at rest, the deadline of every pending cancel
        # request, and a heap of (finish time, tenant, id) of tasks at rest.
        self._leases: dict[TaskKey, int] = {}
        self._cancel_deadlines: dict[TaskKey, int] = {}
        self._finished: list[tuple[int, str, str]] = []
        # Each task's children, by the parent's key, as their ids (see `rollup.is_child`
        # for why an id listed here may belong to a task that is not a child).
        self._children: dict[TaskKey, set[str]] = {}
        self._counts: dict[str, tuple[int, int]] = {}  # tenant: (stored, active)
        self._heads: dict[str, int] = {}
        # Each tenant's compaction fence: history at or below it may be gone. It
        # moves before the store deletes anything, so no reader starts below it.
        self._compacted: dict[str, int] = {}

    # -- life cycle ---------------------------------------------------------------

    async def start(self) -> None:
        window_ns = int(self._settings.idempotency_window.total_seconds() * 1e9)
        loaded = await self._store.open(
            requests_since_ns=self._clock() - window_ns,
            max_requests=self._settings.idempotency_max_records,
        )
        for data, lease_expire_ns in loaded.tasks:
            task = task_pb2.Task.FromString(data)
            self._remember(task, data, lease_expire_ns)
            stored, active = self.counts(task.tenant)
            self._counts[task.tenant] = (stored + 1, active + (not domain.is_resting(task.state)))
        self._requests.remember(loaded.requests)
        for run in loaded.durations:
            self.estimator.history.record(run.tenant, run.kind, run.step_key, run.seconds)
        self._heads = dict(loaded.heads)
        self._compacted = dict(loaded.compacted)
        self._hub.advance(self._heads)
        self._commit_task = asyncio.create_task(self._commit_loop(), name="headway-commit-loop")
        logger.info(
            "store open: %d tasks in %d tenants, %d changes",
            len(self._tasks),
            len(self._heads),
            sum(self._heads.values()),
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
        held = self._tasks.get((tenant, task_id))
        if held is None:
            raise task_not_found(task_id)
        return held.task()

    def tasks_after(self, tenant: str, create_revision: int) -> Iterator[task_pb2.Task]:
        """The tenant's tasks created after `create_revision`, oldest first."""
        order = self._order.get(tenant)
        for task_id in order.after(create_revision) if order is not None else ():
            yield self._tasks[(tenant, task_id)].task()

    def all_tasks(self) -> ValuesView[Held]:
        """Every task in memory, of every tenant (the metrics count them at scrape time).

        As kept (`Held`): the state and the stalled flag without parsing anything.
        """
        return self._tasks.values()

    def tasks_of(self, tenant: str) -> Iterator[task_pb2.Task]:
        return self.tasks_after(tenant, 0)

    async def read_events(
        self, tenant: str, after: int, upto: int, limit: int
    ) -> list[EventRecord]:
        """History in (after, upto]; raises `HistoryCompactedError` if part of it is gone."""
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
        held = self._tasks.get(key)
        return None if held is None else held.task()

    def head(self, tenant: str) -> int:
        """The tenant's revision: that of its latest committed change."""
        return self._heads.get(tenant, 0)

    def compacted(self, tenant: str) -> int:
        """The tenant's compaction fence: its history at or below it may be gone."""
        return self._compacted.get(tenant, 0)

    def tenants(self) -> list[str]:
        """Every tenant that has ever changed anything."""
        return list(self._heads)

    def pin(self, tenant: str, revision: int) -> int:
        """Keep history after `revision` from compaction while a subscriber catches up.

        Call it in the same step of the loop as the check against `compacted`:
        with no await between them, the janitor either sees the pin or the
        reader sees the moved fence.
        """
        self._next_pin += 1
        self._pins[self._next_pin] = (tenant, revision)
        return self._next_pin

    def move_pin(self, pin: int, revision: int) -> None:
        tenant, _ = self._pins[pin]
        self._pins[pin] = (tenant, revision)

    def unpin(self, pin: int) -> None:
        self._pins.pop(pin, None)

    # -- mutations ----------------------------------------------------------------

    async def mutate(
        self,
        *,
        tenant: str,
        task_id: str,
        method: str,
        actor: Actor,
        request: Message,
        apply: Apply,
        request_id: str = "",
        expected_revision: int = 0,
    ) -> Outcome:
        """Apply one mutation durably; a retry with the same request_id gets the first outcome."""
        print_ = fingerprint(method, request) if request_id else b""
        if request_id:
            record = self._requests.find(tenant, request_id)
            if record is not None:
                check_same_request(record, method, print_)
                return await self._replay(record)
        future: asyncio.Future[Outcome | RequestRecord] = asyncio.get_running_loop().create_future()
        if self._refusing or self._stopping:
            raise HeadwayError(
                Kind.UNAVAILABLE,
                "SHUTTING_DOWN",
                "the server is shutting down; retry (with the same request_id) elsewhere or later",
            )
        self._queue.append(
            _Command(
                tenant, task_id, method, actor, print_, request_id, expected_revision, apply, future
            )
        )
        self._wake.set()
        result = await future
        if isinstance(result, RequestRecord):
            return await self._replay(result)
        return result

    async def _replay(self, record: RequestRecord) -> Outcome:
        """The outcome of an already applied request, rebuilt from its recorded change."""
        event = await self._store.read_event(record.tenant, record.revision)
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
            current = self.find((record.tenant, event.facts.task_id))
            if current is not None and current.cancel_request.revision <= event.revision:
                task.cancel_request.CopyFrom(current.cancel_request)
            if not task.cancel_request.revision:
                task.ClearField("cancel_request")
            return Outcome(event.revision, ChangeKind.LOGS, task)
        task = getattr(message, str(which))
        return Outcome(event.revision, ChangeKind(str(which)), task)

    async def _commit_loop(self) -> None:
        """Stage the next group while the previous one is being made durable (pipelining).

        One group at a time is in the store's hands (`flight`); commands that
        arrive meanwhile are staged into the next group (`staging`) on top of
        it, and that group goes to the store the moment the previous one is
        durable, before the previous one's callers are even answered. Nothing
        of a group is answered, installed or published before its own commit:
        a refusal it got may depend on the group below it, which can still
        fail. If it does, the group staged on it is dropped unanswered, the
        failed one's members are retried alone (`_isolate`), and the dropped
        commands are staged again against the state as it then is.
        """
        flight: _Flight | None = None
        staging: _Staged | None = None
        limit = self._settings.max_batch_mutations
        while True:
            if self._queue and (staging is None or len(staging.commands) < limit):
                if staging is None:
                    if flight is None:
                        self.estimator.begin()
                    staging = _Staged(
                        batch=CommitBatch(), base=None if flight is None else flight.staged
                    )
                room = limit - len(staging.commands)
                commands, self._queue = self._queue[:room], self._queue[room:]
                self._stage_into(staging, commands, self._clock())
            if flight is None:
                if staging is not None:
                    flight = self._launch(staging)
                    staging = None
                    continue
                self.estimator.end()
                self._committing = False
                if self._stopping and not self._queue:
                    return
                await self._wake.wait()
                self._wake.clear()
                continue
            self._committing = True
            if not flight.landed:
                await self._wake.wait()
                self._wake.clear()
                continue
            done, flight = flight, None
            if done.error is None:
                self.estimator.release(done.staged.journal_end)
                if staging is not None:
                    # Durable below it now: the next group reads memory from here on.
                    staging.base = None
                    flight = self._launch(staging)
                    staging = None
                self._finish(done.staged)
                continue
            # The failed group and everything staged on it leave no trace.
            self.estimator.rollback_to(0)
            self.estimator.end()
            again = [] if staging is None else staging.commands
            staging = None
            self.observer.commit_failed(done.error)
            await self._isolate(done.staged, done.error)
            self._queue[:0] = [command for command in again if not command.future.done()]

    def _launch(self, staged: _Staged) -> _Flight:
        """Hand a staged group to the store; its end wakes the commit loop."""
        self._seal(staged)
        staged.journal_end = self.estimator.savepoint()
        flight = _Flight(staged)
        if not staged.batch:
            flight.landed = True
            return flight
        flight.started = time.perf_counter()

        def landed(task: asyncio.Future[None]) -> None:
            error = task.exception() if not task.cancelled() else asyncio.CancelledError()
            if error is not None:
                flight.error = error if isinstance(error, Exception) else RuntimeError(error)
            staged.seconds = time.perf_counter() - flight.started
            flight.landed = True
            self._wake.set()

        asyncio.ensure_future(self._store.commit(staged.batch)).add_done_callback(landed)
        return flight

    def _finish(self, staged: _Staged) -> None:
        """After a group's commit: install it, publish it, then answer its callers."""
        if staged.batch:
            self.observer.committed(len(staged.commands), len(staged.batch.events), staged.seconds)
            self._install(staged)
            self._hub.publish(staged.events)
        outcomes: dict[int, Outcome | RequestRecord] = {}
        for command, answer in staged.answers:
            if isinstance(answer, _Command):
                answer = outcomes[id(answer)]
            outcomes[id(command)] = answer
            if not command.future.done():
                command.future.set_result(answer)
        for command, error in staged.refused:
            if not command.future.done():
                command.future.set_exception(error)

    async def _commit_group(self, commands: Sequence[_Command]) -> None:
        """Stage and commit one group with nothing else in flight (isolation's retries)."""
        self.estimator.begin()
        try:
            staged = _Staged(batch=CommitBatch())
            self._stage_into(staged, commands, self._clock())
            self._seal(staged)
            if staged.batch:
                started = time.perf_counter()
                try:
                    await self._store.commit(staged.batch)
                except Exception as error:
                    self.estimator.rollback_to(0)
                    self.observer.commit_failed(error)
                    await self._isolate(staged, error)
                    return
                staged.seconds = time.perf_counter() - started
        finally:
            self.estimator.end()
        self._finish(staged)

    async def _isolate(self, staged: _Staged, failure: Exception) -> None:
        """After a failed group commit: retry its members alone, so only the guilty one fails.

        Nothing of the group was installed, so each member is staged afresh
        against the state as it was before the group. A member the group had
        refused is staged again too: its refusal may have rested on a group
        mate's change that is now gone.
        """
        members = [command for command in staged.commands if not command.future.done()]
        if len(members) > 1:
            logger.warning(
                "commit of %d mutations failed (%s); retrying them one at a time",
                len(members),
                failure,
            )
            for command in members:
                await self._commit_group([command])
            return
        for command in members:
            if isinstance(failure, StorageUnavailableError):
                logger.error(
                    "%s of task %r: storage unavailable: %s",
                    command.method,
                    command.task_id,
                    failure,
                )
                error = HeadwayError(
                    Kind.UNAVAILABLE,
                    "STORAGE_UNAVAILABLE",
                    "the change could not be stored just now; retry with the same request_id",
                )
            else:
                logger.error(
                    "%s of task %r cannot be stored",
                    command.method,
                    command.task_id,
                    exc_info=failure,
                )
                error = HeadwayError(
                    Kind.INTERNAL,
                    "CHANGE_NOT_STORABLE",
                    "the store refused this change; retrying it will not help",
                    {"task_id": command.task_id},
                )
            command.future.set_exception(error)

    def _stage_into(self, staged: _Staged, commands: Sequence[_Command], now_ns: int) -> None:
        """Add commands to a group; a refused one is answered only once the group is durable."""
        for command in commands:
            if command.future.done():  # its caller gave up before the group formed
                continue
            staged.commands.append(command)
            savepoint = self.estimator.savepoint()
            try:
                answer = self._stage(command, staged, now_ns)
            except HeadwayError as error:
                self.estimator.rollback_to(savepoint)
                staged.refused.append((command, error))
                continue
            except Exception:
                self.estimator.rollback_to(savepoint)
                logger.exception("mutation %s of task %r failed", command.method, command.task_id)
                staged.refused.append(
                    (
                        command,
                        HeadwayError(Kind.INTERNAL, "INTERNAL", "the mutation failed unexpectedly"),
                    )
                )
                continue
            staged.answers.append((command, answer))

    def _seal(self, staged: _Staged) -> None:
        """Complete a group's batch before it goes to the store."""
        # A lease renewed without the task's row being written (a heartbeat, a log
        # append) is stored on its own, so it survives a restart.
        for key, lease_expire_ns in staged.leases.items():
            if key not in staged.stored and staged.overlay.get(key, True) is not None:
                staged.batch.leases.append(LeaseRow(*key, lease_expire_ns))
        staged.batch.heads = dict(staged.heads)

    def _stage(
        self, command: _Command, staged: _Staged, now_ns: int
    ) -> Outcome | RequestRecord | _Command:
        """Apply one command to the group, or raise and leave the group as it was."""
        earlier = self._earlier_answer(command, staged)
        if earlier is not None:
            return earlier
        key = (command.tenant, command.task_id)
        current, working = self._current(key, staged)
        _check_expected_revision(command, current)
        revision = staged.head(command.tenant, self.head(command.tenant)) + 1
        lease_before = staged.lease(key, self._leases.get(key, 0))
        counts = staged.count(command.tenant) or self.counts(command.tenant)
        now = timestamp_of(now_ns)
        ctx = MutationContext(
            tenant=command.tenant,
            revision=revision,
            now=now,
            now_ns=now_ns,
            lookup=lambda task_id: self._view((command.tenant, task_id), staged, {}),
            lease_expire_ns=lease_before,
            stored_tasks=counts[0],
            active_tasks=counts[1],
        )
        change = command.apply(working, ctx)
        if change.kind is ChangeKind.NONE:
            # Nothing changed, but a retry must still get this answer: remember the
            # request at the task's revision, whose event holds the task as it is.
            self._record_request(command, staged, change.task.revision, now_ns)
            return Outcome(change.task.revision, ChangeKind.NONE, change.task)
        task = change.task
        lease_expire_ns = lease_before
        if command.actor is Actor.AGENT and not domain.is_resting(task.state):
            lease_expire_ns = now_ns + task.lease_duration.ToNanoseconds()
        if change.kind is ChangeKind.LEASE:
            staged.leases[key] = lease_expire_ns
            return Outcome(task.revision, ChangeKind.LEASE, task, lease_expire_ns)
        if change.kind is ChangeKind.UPDATED:
            rollup.derive(task, self._children_of(task, staged, {}, {}))
        encoded = self._encode(command, change, revision, now, now_ns)
        follow_ups = self._roll_up(current, change, staged, revision, now, now_ns)
        # Every check has passed: from here on the change joins the group.
        staged.heads[command.tenant] = follow_ups[-1].revision if follow_ups else revision
        if lease_expire_ns != lease_before:
            staged.leases[key] = lease_expire_ns
        previous_state = current.state if current is not None else task.state
        staged.counts[command.tenant] = _counted(counts, current, change)
        self._join(
            staged,
            command.tenant,
            change,
            revision,
            encoded,
            previous_state,
            lease_expire_ns,
            now_ns,
        )
        if change.kind is ChangeKind.CREATED and task.parent_id:
            staged.born.setdefault((command.tenant, task.parent_id), set()).add(task.id)
        for follow_up in follow_ups:
            self._join(
                staged,
                command.tenant,
                follow_up.change,
                follow_up.revision,
                follow_up.encoded,
                follow_up.previous_state,
                follow_up.lease_expire_ns,
                now_ns,
            )
        self._record_request(command, staged, revision, now_ns)
        return Outcome(revision, change.kind, task, lease_expire_ns)

    def _roll_up(
        self,
        before: task_pb2.Task | None,
        change: Change,
        staged: _Staged,
        revision: int,
        now: Timestamp,
        now_ns: int,
    ) -> list[_FollowUp]:
        """The changes of the parents that follow a child's change, with the next revisions.

        Each parent is recomputed from all its children as they stand after the
        change (`rollup.derive`, O(children)); when nothing of it changes the
        chain stops there, and at a parent at rest, whose counts alone move.
        Nothing is staged here, so that a failure (a size check) leaves the
        group as it was, child included.
        """
        if change.kind not in (ChangeKind.CREATED, ChangeKind.UPDATED, ChangeKind.DELETED):
            return []
        child = change.task
        # Only a child's state and fraction matter to its parent (its weight is
        # fixed): a message or a metric spares the parent's O(children) recompute.
        unmoved = before is not None and (before.state, before.fraction) == (
            child.state,
            child.fraction,
        )
        if change.kind is ChangeKind.UPDATED and unmoved:
            return []
        tenant = child.tenant
        pending: dict[TaskKey, task_pb2.Task | None] = {
            (tenant, child.id): None if change.kind is ChangeKind.DELETED else child
        }
        born: dict[TaskKey, set[str]] = {}
        if change.kind is ChangeKind.CREATED and child.parent_id:
            born[(tenant, child.parent_id)] = {child.id}
        follow_ups: list[_FollowUp] = []
        while child.parent_id and len(follow_ups) < rollup.MAX_DEPTH:
            key = (tenant, child.parent_id)
            parent = self._view(key, staged, pending)
            if parent is None or not rollup.is_child(child, parent):
                break
            # A parent at rest keeps its fraction, and so its own parent has nothing
            # to follow; its children counts still follow its children.
            resting = domain.is_resting(parent.state)
            updated = task_pb2.Task()
            updated.CopyFrom(parent)
            children = self._children_of(updated, staged, pending, born)
            if not rollup.derive(updated, children, counts_only=resting):
                break
            updated.update_time.CopyFrom(now)
            revision += 1
            source = _RollUp(tenant, parent.id)
            moved = Change(ChangeKind.UPDATED, updated)
            encoded = self._encode(source, moved, revision, now, now_ns)
            lease = staged.lease(key, self._leases.get(key, 0))
            follow_ups.append(_FollowUp(source, moved, revision, encoded, parent.state, lease))
            pending[key] = updated
            if resting:
                break
            child = updated
        return follow_ups

    def _view(
        self, key: TaskKey, staged: _Staged, pending: dict[TaskKey, task_pb2.Task | None]
    ) -> task_pb2.Task | None:
        """A task as the change being staged sees it: its own edits, the group's, then memory."""
        if key in pending:
            return pending[key]
        touched, task = staged.task(key)
        if touched:
            return task
        held = self._tasks.get(key)
        if held is None:
            return None
        # A task at rest is parsed again; a parent's roll-up reads all its
        # children, so the parses of recent ones are kept (bounded, see `Held.shared`).
        return held.shared()

    def _current(
        self, key: TaskKey, staged: _Staged
    ) -> tuple[task_pb2.Task | None, task_pb2.Task | None]:
        """The task as the group sees it, and a private working copy of it (one copy)."""
        touched, current = staged.task(key)
        if touched:
            if current is None:
                return None, None
            working = task_pb2.Task()
            working.CopyFrom(current)
            return current, working
        held = self._tasks.get(key)
        if held is None:
            return None, None
        return held.task(), held.copy()

    def _children_of(
        self,
        parent: task_pb2.Task,
        staged: _Staged,
        pending: dict[TaskKey, task_pb2.Task | None],
        born: dict[TaskKey, set[str]],
    ) -> list[task_pb2.Task]:
        """The parent's children as the change being staged sees them."""
        key = (parent.tenant, parent.id)
        ids = self._children.get(key, set()) | staged.born_to(key) | born.get(key, set())
        children = []
        for task_id in ids:
            task = self._view((parent.tenant, task_id), staged, pending)
            if task is not None and rollup.is_child(task, parent):
                children.append(task)
        return children

    def _earlier_answer(
        self, command: _Command, staged: _Staged
    ) -> RequestRecord | _Command | None:
        """The answer a request already got (or is getting in this group), if it is a retry."""
        if not command.request_id:
            return None
        record = self._requests.find(command.tenant, command.request_id)
        if record is not None:
            check_same_request(record, command.method, command.fingerprint)
            return record
        pending = staged.requests.get((command.tenant, command.request_id))
        if pending is not None:
            check_same_request(pending[1], command.method, command.fingerprint)
            return pending[0]
        below = staged.base
        while below is not None:
            pending = below.requests.get((command.tenant, command.request_id))
            if pending is not None:
                # Answered from its record: the group below is durable before this one answers.
                check_same_request(pending[1], command.method, command.fingerprint)
                return pending[1]
            below = below.base
        return None

    def _encode(
        self,
        command: _Command | _RollUp,
        change: Change,
        revision: int,
        now: Timestamp,
        now_ns: int,
    ) -> _Encoded:
        """The change's event (and row) bytes; refuses a change over the size budget."""
        task = change.task
        if change.kind is ChangeKind.LOGS:
            stamped = records.stamp_logs(change.logs, task.id, revision, now)
            data = records.logs_event(revision, now, task.id, stamped)
            self._check_size(command, len(data), "the log lines")
            return _Encoded(data, b"", stamped)
        if change.kind is ChangeKind.DELETED:
            # The deleted task as it was last seen, so a watcher knows what went.
            return _Encoded(records.task_event(revision, "deleted", task.SerializeToString(), now))
        if command.actor is Actor.AGENT:
            domain.record_report(task, now)
        self.estimator.refresh(task, now_ns)
        task.revision = revision
        task_bytes = task.SerializeToString()
        self._check_size(command, len(task_bytes), "the task")
        return _Encoded(
            records.task_event(revision, change.kind.value, task_bytes, now), task_bytes
        )

    def _join(
        self,
        staged: _Staged,
        tenant: str,
        change: Change,
        revision: int,
        encoded: _Encoded,
        previous_state: int,
        lease_expire_ns: int,
        now_ns: int,
    ) -> None:
        """Add an accepted change to the group: overlay, batch rows and its event."""
        task = change.task
        key = (tenant, task.id)
        batch = staged.batch
        if change.kind is ChangeKind.LOGS:
            batch.logs.extend(records.log_records(tenant, encoded.logs))
        elif change.kind is ChangeKind.DELETED:
            staged.overlay[key] = None
            staged.rows.pop(key, None)
            batch.deletes.append(key)
        else:
            if task.state == task_pb2.TASK_STATE_SUCCEEDED and previous_state != task.state:
                batch.durations.extend(
                    DurationRecord(tenant, task.kind, step_key, now_ns, seconds)
                    for step_key, seconds in eta.durations(task)
                )
            staged.overlay[key] = task
            staged.rows[key] = encoded.task
            staged.stored.add(key)
            batch.upserts.append(
                TaskRow(tenant, task.id, task.create_revision, encoded.task, lease_expire_ns)
            )
        event = EventRecord(
            revision=revision,
            facts=TaskFacts.of(task, previous_state),
            is_log=change.kind is ChangeKind.LOGS,
            at_rest=change.kind is ChangeKind.DELETED or domain.is_resting(task.state),
            commit_ns=now_ns,
            data=encoded.event,
        )
        staged.events.append(event)
        batch.events.append(event)

    def _check_size(self, command: _Command | _RollUp, size: int, what: str) -> None:
        """Refuse a change that would make a task (or one change) too large to read back.

        The agent's budget is well below the message limit, so every task stays
        readable by GetTask, ListTasks and Subscribe; the server's own changes
        only have to fit the hard ceiling, so they can never be refused.
        """
        limit = self._settings.limits.max_task_bytes
        if command.actor is Actor.SERVER:
            limit = self._settings.limits.max_message_bytes // 2
        if size <= limit:
            return
        raise HeadwayError(
            Kind.RESOURCE_EXHAUSTED,
            "TASK_TOO_LARGE",
            f"{command.method} would make {what} of task {command.task_id!r} {size} bytes, "
            f"more than the {limit} bytes allowed; send less (shorter errors, messages or "
            "fewer steps, metrics or artifacts)",
            {"task_id": command.task_id, "size_bytes": str(size), "limit_bytes": str(limit)},
        )

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
                self._leases[key] = lease_expire_ns
        for (tenant, task_id), task in staged.overlay.items():
            if task is None:
                self._forget(tenant, task_id)
            else:
                data = staged.rows[(tenant, task_id)]
                self._remember(task, data, staged.leases.get((tenant, task_id)))
        for run in staged.batch.durations:
            self.estimator.history.record(run.tenant, run.kind, run.step_key, run.seconds)
        self._requests.remember(record for _, record in staged.requests.values())
        self._counts.update(staged.counts)
        self._heads.update(staged.heads)

    def _remember(
        self, task: task_pb2.Task, data: bytes, lease_expire_ns: int | None = None
    ) -> None:
        # One string object per tenant, and one per id shared by every index.
        tenant, task_id = sys.intern(task.tenant), task.id
        key = (tenant, task_id)
        held = self._tasks.get(key)
        before = None if held is None else held.task()
        if before is None:
            self._order.setdefault(tenant, CreationOrder()).append(task.create_revision, task_id)
        elif before.parent_id != task.parent_id:  # deleted and created again in one group
            self._unlink(before)
        if task.parent_id:
            self._children.setdefault((tenant, task.parent_id), set()).add(task_id)
        self._tasks[key] = Held(data, task)
        if domain.is_resting(task.state):
            self._leases.pop(key, None)
            self._cancel_deadlines.pop(key, None)
            if before is None or not domain.is_resting(before.state):
                # Once per rest: a parent at rest still changes as its children do.
                heapq.heappush(self._finished, (task.finish_time.ToNanoseconds(), tenant, task_id))
            return
        if lease_expire_ns is not None:
            self._leases[key] = lease_expire_ns
        elif key not in self._leases:
            self._leases[key] = domain.lease_expiry_ns(task, task.last_report_time.ToNanoseconds())
        if task.HasField("cancel_request"):
            self._cancel_deadlines[key] = task.cancel_request.deadline_time.ToNanoseconds()

    def _forget(self, tenant: str, task_id: str) -> None:
        self._leases.pop((tenant, task_id), None)
        self._cancel_deadlines.pop((tenant, task_id), None)
        held = self._tasks.pop((tenant, task_id), None)
        if held is None:
            return
        task = held.task()
        self._unlink(task)
        self._order[tenant].remove(task.create_revision, task.id)

    def _unlink(self, task: task_pb2.Task) -> None:
        """Take the task out of its parent's children index."""
        key = (task.tenant, task.parent_id)
        siblings = self._children.get(key)
        if siblings is not None:
            siblings.discard(task.id)
            if not siblings:
                del self._children[key]

    def children(self, tenant: str, parent_id: str) -> list[task_pb2.Task]:
        """The task's children as committed (for checks that the index is right)."""
        parent = self.find((tenant, parent_id))
        if parent is None:
            return []
        return self._children_of(parent, _Staged(batch=CommitBatch()), {}, {})

    # -- housekeeping -------------------------------------------------------------

    def counts(self, tenant: str) -> tuple[int, int]:
        """The tenant's (stored, not at rest) task counts, for quotas."""
        return self._counts.get(tenant, (0, 0))

    def leases(self) -> ItemsView[TaskKey, int]:
        """The lease expiry (ns) of every task not at rest."""
        return self._leases.items()

    def lease_of(self, key: TaskKey) -> int | None:
        return self._leases.get(key)

    def cancel_deadlines(self) -> ItemsView[TaskKey, int]:
        """The deadline (ns) of every pending cancel request."""
        return self._cancel_deadlines.items()

    def take_finished(self, cutoff_ns: int, limit: int) -> list[TaskKey]:
        """Up to `limit` tasks that came to rest at or before the cutoff and still rest.

        They leave the retention index: the caller expires them now.
        """
        taken: list[TaskKey] = []
        while self._finished and self._finished[0][0] <= cutoff_ns and len(taken) < limit:
            _, tenant, task_id = heapq.heappop(self._finished)
            held = self._tasks.get((tenant, task_id))
            if held is not None and domain.is_resting(held.state):
                taken.append((tenant, task_id))
        return taken

    def has_finished_before(self, cutoff_ns: int) -> bool:
        return bool(self._finished) and self._finished[0][0] <= cutoff_ns

    def compaction_floor(self, tenant: str) -> int | None:
        """The oldest revision of the tenant a catching-up subscriber still needs, if any."""
        pinned = [revision for owner, revision in self._pins.values() if owner == tenant]
        return min(pinned) if pinned else None

    def fence_compaction(self, tenant: str, revision: int) -> None:
        """Move the tenant's fence up to `revision`, before the store deletes up to it."""
        self._compacted[tenant] = max(self.compacted(tenant), revision)

    def forget_requests_before(self, cutoff_ns: int) -> int:
        """Drop remembered request ids older than the cutoff; the oldest kept one's time."""
        return self._requests.forget_before(cutoff_ns)

    def request_records(self) -> dict[RequestKey, RequestRecord]:
        """A copy of the remembered request ids (for checks that nothing changed)."""
        return self._requests.snapshot()


def _counted(
    counts: tuple[int, int], before: task_pb2.Task | None, change: Change
) -> tuple[int, int]:
    """The tenant's (stored, active) counts after `change` to a task that was `before`."""
    stored, active = counts
    after = None if change.kind is ChangeKind.DELETED else change.task
    if before is not None:
        stored -= 1
        active -= not domain.is_resting(before.state)
    if after is not None:
        stored += 1
        active += not domain.is_resting(after.state)
    return stored, active


def _check_expected_revision(command: _Command, current: task_pb2.Task | None) -> None:
    if not command.expected_revision or current is None:
        return
    if current.revision != command.expected_revision:
        raise HeadwayError(
            Kind.ABORTED,
            "REVISION_MISMATCH",
            f"task {command.task_id!r} is at revision {current.revision}, not "
            f"{command.expected_revision}; read it again and retry",
            {"task_id": command.task_id, "revision": str(current.revision)},
        )
