"""The engine against a store that fails on purpose, and compaction racing a resume.

These are the edges a real store rarely shows on demand: a commit that fails
(for the batch's own fault or for a moment), and a janitor that compacts
while a subscriber resumes. The in-memory store (tests/memory_store.py) passes
the same contract suite as SQLite; the compaction race also runs on SQLite.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.duration_pb2 import Duration

from headway.server import domain, feed
from headway.server import janitor as janitor_module
from headway.server.config import Limits, Settings
from headway.server.engine import Actor, Change, ChangeKind, Engine, MutationContext, Outcome
from headway.server.errors import HeadwayError, Kind
from headway.server.feed import ChangeFeed, Emitted, FeedRequest
from headway.server.filtering import CompiledFilter
from headway.server.hub import Hub
from headway.server.janitor import Janitor
from headway.server.store.base import CommitBatch, StorageUnavailableError, Store
from headway.server.store.sqlite import SqliteStore
from headway.v1 import event_pb2, log_pb2, task_pb2, task_service_pb2
from tests.clock import FakeClock
from tests.memory_store import MemoryStore

Apply = Callable[[task_pb2.Task | None, MutationContext], Change]


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(database=tmp_path / "unused.db", **overrides)


class Rig:
    """An engine and hub on a given store, with helpers to mutate like the service does."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.clock = FakeClock()
        self.store = store
        self.hub = Hub(capacity=10_000, max_subscribers=100)
        self.engine = Engine(store, self.hub, settings, clock=self.clock)

    async def mutate(
        self, task_id: str, apply: Apply, *, request_id: str = "", actor: Actor = Actor.AGENT
    ) -> Outcome:
        return await self.engine.mutate(
            tenant="acme",
            task_id=task_id,
            method="Test",
            actor=actor,
            request=task_service_pb2.GetTaskRequest(task_id=task_id),
            apply=apply,
            request_id=request_id,
        )

    def state(self) -> tuple[object, ...]:
        """Everything a failed commit must leave as it was."""
        engine = self.engine
        tasks = {t.id: t.SerializeToString(deterministic=True) for t in engine.tasks_of("acme")}
        return (
            engine.head("acme"),
            self.hub.head("acme"),
            tasks,
            engine.request_records(),
            engine.estimator.tracker_state(),
            dict(engine.leases()),
        )


def create(steps: int = 1) -> Apply:
    def apply(task: task_pb2.Task | None, ctx: MutationContext) -> Change:
        assert task is None
        request = task_service_pb2.CreateTaskRequest(
            kind="test",
            start=True,
            steps=[task_service_pb2.StepSpec(key=f"s{i}") for i in range(steps)],
        )
        created = domain.new_task(
            request,
            tenant=ctx.tenant,
            task_id="",
            revision=ctx.revision,
            now=ctx.now,
            lease=Duration(seconds=60),
        )
        return Change(ChangeKind.CREATED, created)

    return apply


def named(task_id: str, apply: Apply) -> Apply:
    def rename(task: task_pb2.Task | None, ctx: MutationContext) -> Change:
        change = apply(task, ctx)
        change.task.id = task_id
        return change

    return rename


def progress(current: int, message: str = "") -> Apply:
    def apply(task: task_pb2.Task | None, ctx: MutationContext) -> Change:
        assert task is not None
        request = task_service_pb2.UpdateStepRequest(
            task_id=task.id,
            step_key="s0",
            progress=task_pb2.Progress(units=task_pb2.Progress.Units(current=current, total=100)),
        )
        if message:
            request.message = message
        domain.update_step(task, request, ctx.now)
        return Change(ChangeKind.UPDATED, task)

    return apply


def note(message: str) -> Apply:
    def apply(task: task_pb2.Task | None, ctx: MutationContext) -> Change:
        assert task is not None
        task.message = message
        return Change(ChangeKind.UPDATED, task)

    return apply


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    rig = Rig(MemoryStore(), make_settings(tmp_path))
    await rig.engine.start()
    yield rig
    await rig.engine.stop()


async def running_task(rig: Rig, task_id: str = "t1") -> None:
    await rig.mutate(task_id, named(task_id, create()))
    await rig.mutate(task_id, progress(10))
    rig.clock.advance(10)
    await rig.mutate(task_id, progress(20))  # the rate tracker now has a rate


def memory(rig: Rig) -> MemoryStore:
    assert isinstance(rig.store, MemoryStore)
    return rig.store


async def test_a_failed_commit_leaves_memory_revision_requests_and_rates_as_before(
    rig: Rig,
) -> None:
    await running_task(rig)
    before = rig.state()
    assert before[4], "the estimator tracks the running step"
    memory(rig).refuse = lambda batch: ValueError("the store refuses this batch")
    rig.clock.advance(10)

    with pytest.raises(HeadwayError) as raised:
        await rig.mutate("t1", progress(40), request_id="r1")

    assert (raised.value.kind, raised.value.reason) == (Kind.INTERNAL, "CHANGE_NOT_STORABLE")
    assert rig.state() == before
    # Nothing of the request was remembered: once the store takes it, it applies.
    memory(rig).refuse = lambda batch: None
    outcome = await rig.mutate("t1", progress(40), request_id="r1")
    assert outcome.revision == before[0] + 1
    assert outcome.task.steps[0].progress.units.current == 40


async def test_one_unstorable_mutation_fails_alone_and_its_group_mates_commit(rig: Rig) -> None:
    for i in range(10):
        await rig.mutate(f"t{i}", named(f"t{i}", create()))
    first = rig.engine.head("acme")
    subscriber = rig.hub.register(
        "acme",
        CompiledFilter.compile(task_service_pb2.TaskFilter()),
        include_logs=True,
        stop_at_rest=False,
    )
    seen: list[int] = []

    def refuse(batch: CommitBatch) -> Exception | None:
        seen.append(len(batch.events))
        if any(b"poison" in row.data for row in batch.upserts):
            return ValueError("cannot store this value")
        return None

    memory(rig).refuse = refuse
    benign = [rig.mutate(f"t{i % 10}", note(f"update {i}")) for i in range(40)]
    results = await asyncio.gather(
        *benign[:20], rig.mutate("t5", note("poison")), *benign[20:], return_exceptions=True
    )

    poisoned = results[20]
    assert isinstance(poisoned, HeadwayError)
    assert (poisoned.kind, poisoned.reason) == (Kind.INTERNAL, "CHANGE_NOT_STORABLE")
    good = [r for i, r in enumerate(results) if i != 20]
    assert all(isinstance(r, Outcome) for r in good), [
        r for r in good if not isinstance(r, Outcome)
    ]
    assert seen[0] == 41, "all 41 mutations were staged as one group first"
    revisions = sorted(r.revision for r in good if isinstance(r, Outcome))
    assert revisions == list(range(first + 1, first + 41)), "no revision was skipped or reused"
    assert rig.engine.head("acme") == rig.hub.head("acme") == first + 40
    assert [e.revision for e in subscriber.take()] == revisions
    assert all(b"poison" not in t.SerializeToString() for t in rig.engine.tasks_of("acme"))


def appended(text: str) -> Apply:
    def apply(task: task_pb2.Task | None, ctx: MutationContext) -> Change:
        assert task is not None
        task.message += text
        return Change(ChangeKind.UPDATED, task)

    return apply


async def staged_behind_a_held_commit(
    rig: Rig, first: list[tuple[str, Apply]], second: list[tuple[str, Apply]]
) -> tuple[list[asyncio.Task[Outcome]], list[asyncio.Task[Outcome]]]:
    """Group k held in the store's hands, group k+1 staged on top of it, neither answered."""
    store = memory(rig)
    store.gate_commit = asyncio.Event()
    store.commit_waiting.clear()
    below = [asyncio.ensure_future(rig.mutate(task_id, apply)) for task_id, apply in first]
    await asyncio.wait_for(store.commit_waiting.wait(), 5)
    head = rig.engine.head("acme")
    above = [asyncio.ensure_future(rig.mutate(task_id, apply)) for task_id, apply in second]
    for _ in range(10):
        await asyncio.sleep(0)
    assert not any(call.done() for call in below + above), "nothing answered before its commit"
    assert rig.engine.head("acme") == rig.hub.head("acme") == head, "nothing installed early"
    return below, above


async def test_a_group_staged_on_one_in_flight_sees_its_changes(rig: Rig) -> None:
    for task_id in ("t1", "t2"):
        await rig.mutate(task_id, named(task_id, create()))
    first = rig.engine.head("acme")
    batches: list[set[str]] = []
    memory(rig).refuse = lambda batch: batches.append({r.task_id for r in batch.upserts}) or None
    below, above = await staged_behind_a_held_commit(
        rig, [("t1", appended("a")), ("t2", appended("x"))], [("t1", appended("b"))]
    )
    gate = memory(rig).gate_commit
    assert gate is not None
    memory(rig).gate_commit = None
    gate.set()
    outcomes = [await call for call in below + above]

    assert [o.revision for o in outcomes] == [first + 1, first + 2, first + 3]
    assert rig.engine.get("acme", "t1").message == "ab"
    assert batches == [{"t1", "t2"}, {"t1"}], "two groups, the second only after the first"


async def test_a_group_staged_on_a_failing_one_is_staged_again_and_commits(rig: Rig) -> None:
    for i in range(3):
        await rig.mutate(f"t{i}", named(f"t{i}", create()))
    first = rig.engine.head("acme")
    subscriber = rig.hub.register(
        "acme",
        CompiledFilter.compile(task_service_pb2.TaskFilter()),
        include_logs=True,
        stop_at_rest=False,
    )
    committed: list[list[str]] = []

    def refuse(batch: CommitBatch) -> Exception | None:
        if any(b"poison" in row.data for row in batch.upserts):
            return ValueError("cannot store this value")
        committed.append(sorted(row.task_id for row in batch.upserts))
        return None

    memory(rig).refuse = refuse
    below, above = await staged_behind_a_held_commit(
        rig,
        [("t0", appended("poison")), ("t1", appended("a"))],
        # On top of the poisoned t0, and of t1 as group k left it.
        [("t0", appended("b")), ("t1", appended("b")), ("t2", appended("b"))],
    )
    before_release = rig.state()
    gate = memory(rig).gate_commit
    assert gate is not None
    memory(rig).gate_commit = None
    gate.set()
    results = await asyncio.gather(*below, *above, return_exceptions=True)

    poisoned = results[0]
    assert isinstance(poisoned, HeadwayError)
    assert (poisoned.kind, poisoned.reason) == (Kind.INTERNAL, "CHANGE_NOT_STORABLE")
    good = results[1:]
    assert all(isinstance(r, Outcome) for r in good), good
    revisions = [r.revision for r in good if isinstance(r, Outcome)]
    assert revisions == list(range(first + 1, first + 5)), "in order, none skipped or reused"
    assert before_release[0] == first
    assert [rig.engine.get("acme", f"t{i}").message for i in range(3)] == ["b", "ab", "b"]
    assert all(b"poison" not in t.SerializeToString() for t in rig.engine.tasks_of("acme"))
    assert rig.engine.head("acme") == rig.hub.head("acme") == first + 4
    assert [e.revision for e in subscriber.take()] == revisions
    # The failed group's good member alone, then the group above it staged again.
    assert committed == [["t1"], ["t0", "t1", "t2"]]


async def test_a_passing_storage_failure_is_retried_alone_and_succeeds(rig: Rig) -> None:
    for i in range(3):
        await rig.mutate(f"t{i}", named(f"t{i}", create()))
    failures = [StorageUnavailableError("disk I/O error")]
    memory(rig).refuse = lambda batch: failures.pop() if failures else None
    results = await asyncio.gather(*(rig.mutate(f"t{i}", note("x")) for i in range(3)))
    assert sorted(r.revision for r in results) == [4, 5, 6]


async def test_a_lasting_storage_failure_is_unavailable_for_each(rig: Rig) -> None:
    await rig.mutate("t1", named("t1", create()))
    before = rig.state()
    memory(rig).refuse = lambda batch: StorageUnavailableError("disk full")
    results = await asyncio.gather(
        rig.mutate("t1", note("a")), rig.mutate("t1", note("b")), return_exceptions=True
    )
    for result in results:
        assert isinstance(result, HeadwayError)
        assert (result.kind, result.reason) == (Kind.UNAVAILABLE, "STORAGE_UNAVAILABLE")
    assert rig.state() == before


async def test_a_task_over_its_budget_is_refused_and_its_rates_are_untouched(
    tmp_path: Path,
) -> None:
    rig = Rig(MemoryStore(), make_settings(tmp_path, limits=Limits(max_task_bytes=1024)))
    await rig.engine.start()
    try:
        await running_task(rig)
        before = rig.state()
        rig.clock.advance(10)
        with pytest.raises(HeadwayError) as raised:
            await rig.mutate("t1", progress(60, message="m" * 1000))
        assert (raised.value.kind, raised.value.reason) == (
            Kind.RESOURCE_EXHAUSTED,
            "TASK_TOO_LARGE",
        )
        assert raised.value.metadata["limit_bytes"] == "1024"
        assert rig.state() == before, "the estimator observed the progress, then forgot it"
        # The server's own changes are held to the hard ceiling only.
        outcome = await rig.mutate("t1", note("s" * 2000), actor=Actor.SERVER)
        assert outcome.task.message == "s" * 2000
    finally:
        await rig.engine.stop()


async def test_a_lease_renewed_by_logs_alone_is_stored(rig: Rig) -> None:
    await rig.mutate("t1", named("t1", create()))

    def logs(task: task_pb2.Task | None, ctx: MutationContext) -> Change:
        assert task is not None
        return Change(ChangeKind.LOGS, task, [])

    rig.clock.advance(30)
    outcome = await rig.mutate("t1", logs)
    assert outcome.lease_expire_ns == rig.clock.now_ns + 60 * 10**9
    await rig.engine.stop()
    restarted = Rig(rig.store, make_settings(Path("/nonexistent")))
    await restarted.engine.start()
    assert restarted.engine.lease_of(("acme", "t1")) == outcome.lease_expire_ns
    await restarted.engine.stop()
    await rig.engine.start()  # the fixture stops it again


# -- compaction racing a resume -------------------------------------------------------


class GatedSqliteStore(SqliteStore):
    """The real SQLite store, whose compaction steps wait for the test's word."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate_compaction: asyncio.Event | None = None
        self.compaction_waiting = asyncio.Event()

    async def compact(self, tenant: str, upto: int) -> None:
        if self.gate_compaction is not None:
            self.compaction_waiting.set()
            await self.gate_compaction.wait()
        await super().compact(tenant, upto)


@pytest.fixture(params=["memory", "sqlite"])
async def history_rig(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Rig]:
    """39 revisions of history; compaction keeps 5, in steps of 5; history read 3 at a time."""
    monkeypatch.setattr(janitor_module, "COMPACTION_STEP", 5)
    monkeypatch.setattr(feed, "HISTORY_PAGE", 3)
    store: Store = (
        MemoryStore() if request.param == "memory" else GatedSqliteStore(tmp_path / "race.db")
    )
    rig = Rig(store, make_settings(tmp_path, history_retention_events=5))
    await rig.engine.start()
    await rig.mutate("t1", named("t1", create()))
    for i in range(38):
        await rig.mutate("t1", note(f"change {i}"))
    assert rig.engine.head("acme") == 39
    yield rig
    await rig.engine.stop()


def resume_from(rig: Rig, start: int, *, fail: bool = False) -> ChangeFeed:
    request = FeedRequest(
        task_filter=CompiledFilter.compile(task_service_pb2.TaskFilter()),
        start_revision=start,
        fail_on_compacted=fail,
        include_logs=False,
        end_at_rest=False,
    )
    return ChangeFeed(rig.engine, rig.hub, "acme", request, max_batch_bytes=1 << 20)


def decode(batch: list[Emitted]) -> list[event_pb2.Event]:
    return [event_pb2.Event.FromString(item.data) for item in batch]


async def test_compaction_never_deletes_history_a_resuming_subscriber_has_not_read(
    history_rig: Rig,
) -> None:
    rig = history_rig
    gated = rig.store
    assert isinstance(gated, MemoryStore | GatedSqliteStore)
    gated.gate_compaction = asyncio.Event()
    janitor = Janitor(rig.engine)
    compaction = asyncio.create_task(janitor.compact())
    await gated.compaction_waiting.wait()
    assert rig.engine.compacted("acme") == 5, "the fence moved before the first delete"

    # The subscriber resumes between two compaction steps, above the fence.
    received: list[int] = []
    with resume_from(rig, 6) as subscription:
        batches = subscription.batches()
        received += [e.revision for e in decode(await anext(batches))]
        assert received == [7, 8, 9]
        gated.gate_compaction.set()  # the janitor goes on while the reader is mid-history
        await compaction
        assert rig.engine.compacted("acme") == 6, "compaction stopped at the reader's pin"
        while received[-1] < 39:
            received += [e.revision for e in decode(await anext(batches))]
    assert received == list(range(7, 40)), "every change after the resume point, once"
    await janitor.compact()
    assert rig.engine.compacted("acme") == 34, "with the reader gone, compaction catches up"


async def test_a_history_read_below_the_compaction_mark_resyncs_instead_of_skipping(
    history_rig: Rig,
) -> None:
    rig = history_rig
    with resume_from(rig, 6) as subscription:
        batches = subscription.batches()
        assert [e.revision for e in decode(await anext(batches))] == [7, 8, 9]
        # History vanishes under the reader without the fence it pinned (as a
        # compaction by another process would do): the next read must notice.
        await rig.store.compact("acme", 20)
        events = decode(await anext(batches))
        while events[-1].WhichOneof("kind") != "synced":
            events += decode(await anext(batches))
        assert events[0].WhichOneof("kind") == "resync"
        assert events[0].resync.oldest_revision == 20
        snapshot = [e for e in events[1:] if e.WhichOneof("kind") == "snapshot"]
        assert [e.snapshot.id for e in snapshot] == ["t1"]
        assert snapshot[0].snapshot.revision == 39, "the snapshot is the task as it is now"
        assert events[-1].WhichOneof("kind") == "synced"
        assert events[-1].revision == 39


async def test_a_history_read_below_the_compaction_mark_fails_when_asked_to(
    history_rig: Rig,
) -> None:
    rig = history_rig
    with resume_from(rig, 6, fail=True) as subscription:
        batches = subscription.batches()
        await anext(batches)
        await rig.store.compact("acme", 20)
        with pytest.raises(HeadwayError) as raised:
            await anext(batches)
    assert (raised.value.kind, raised.value.reason) == (Kind.OUT_OF_RANGE, "REVISION_COMPACTED")
    assert raised.value.metadata == {"oldest_revision": "20"}


async def test_a_change_sqlite_cannot_hold_fails_alone_on_the_real_store(tmp_path: Path) -> None:
    """The second line of defence, on SQLite itself: a log time beyond 64-bit nanoseconds.

    Validation refuses such times at the door; here the engine is handed one
    directly, as a bug in validation would, and the commit group survives it.
    """
    rig = Rig(SqliteStore(tmp_path / "poison.db"), make_settings(tmp_path))
    await rig.engine.start()
    try:
        for i in range(4):
            await rig.mutate(f"t{i}", named(f"t{i}", create()))

        def far_future_log(task: task_pb2.Task | None, ctx: MutationContext) -> Change:
            assert task is not None
            entry = log_pb2.LogEntry(message="from the far future")
            entry.time.FromJsonString("9999-12-31T23:59:59Z")
            return Change(ChangeKind.LOGS, task, [entry])

        benign = [rig.mutate(f"t{i % 4}", note(f"update {i}")) for i in range(40)]
        results = await asyncio.gather(
            *benign[:10], rig.mutate("t1", far_future_log), *benign[10:], return_exceptions=True
        )
        poisoned = results[10]
        assert isinstance(poisoned, HeadwayError)
        assert (poisoned.kind, poisoned.reason) == (Kind.INTERNAL, "CHANGE_NOT_STORABLE")
        good = [r for i, r in enumerate(results) if i != 10]
        assert all(isinstance(r, Outcome) for r in good)
        assert rig.engine.head("acme") == 44
        history = await rig.store.read_events("acme", 0, 100, 100)
        assert [e.revision for e in history] == list(range(1, 45))
        assert not any(e.is_log for e in history)
    finally:
        await rig.engine.stop()


async def test_tenant_counts_follow_creates_rests_deletes_and_restarts(rig: Rig) -> None:
    seen: list[tuple[int, int]] = []

    def counting(apply: Apply) -> Apply:
        def wrapped(task: task_pb2.Task | None, ctx: MutationContext) -> Change:
            seen.append((ctx.stored_tasks, ctx.active_tasks))
            return apply(task, ctx)

        return wrapped

    def succeed(task: task_pb2.Task | None, ctx: MutationContext) -> Change:
        assert task is not None
        domain.succeed_task(task, None, ctx.now)
        return Change(ChangeKind.UPDATED, task)

    def delete(task: task_pb2.Task | None, ctx: MutationContext) -> Change:
        assert task is not None
        return Change(ChangeKind.DELETED, task)

    await asyncio.gather(
        *(rig.mutate(f"t{i}", counting(named(f"t{i}", create()))) for i in range(3))
    )
    assert seen == [(0, 0), (1, 1), (2, 2)], "creates in one group count each other"
    await rig.mutate("t0", succeed)
    assert rig.engine.counts("acme") == (3, 2)
    await rig.mutate("t0", delete)
    assert rig.engine.counts("acme") == (2, 2)
    assert rig.engine.counts("globex") == (0, 0)
    restarted = Rig(rig.store, make_settings(Path("/nonexistent")))
    await restarted.engine.start()
    assert restarted.engine.counts("acme") == (2, 2), "rebuilt from the store"
    await restarted.engine.stop()


async def test_revisions_count_per_tenant_and_say_nothing_of_others(rig: Rig) -> None:
    async def mutate_in(tenant: str, task_id: str, apply: Apply) -> Outcome:
        return await rig.engine.mutate(
            tenant=tenant,
            task_id=task_id,
            method="Test",
            actor=Actor.AGENT,
            request=task_service_pb2.GetTaskRequest(task_id=task_id),
            apply=apply,
        )

    await mutate_in("acme", "a", named("a", create()))
    for i in range(50):  # a busy neighbour
        await mutate_in("globex", f"g{i}", named(f"g{i}", create()))
    outcome = await mutate_in("acme", "a", note("still here"))
    assert outcome.revision == 2, "acme's second change is its revision 2"
    assert (rig.engine.head("acme"), rig.engine.head("globex")) == (2, 50)
    assert (rig.hub.head("acme"), rig.hub.head("globex")) == (2, 50)
    assert [e.revision for e in await rig.store.read_events("acme", 0, 100, 100)] == [1, 2]
