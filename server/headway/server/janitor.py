"""Housekeeping beside the service: liveness, cancel deadlines, retention, compaction.

Everything the server decides by itself — a task is stalled, its agent is
lost, a cancel request went unconfirmed, a finished task has outlived its
retention — is a mutation like any other: it goes through the engine, gets a
revision and reaches subscribers. Each apply function re-checks its condition
against the task as it stands when the mutation is applied, so a report that
races the janitor always wins.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from google.protobuf import empty_pb2

from headway.server import domain
from headway.server.engine import Actor, Change, ChangeKind, Engine, MutationContext, TaskKey
from headway.server.errors import HeadwayError
from headway.v1 import task_pb2

logger = logging.getLogger(__name__)

HISTORY_RUNS_KEPT = 50
COMPACTION_STEP = 10_000

ServerApply = Callable[[task_pb2.Task | None, MutationContext], Change]


def _stall(task: task_pb2.Task | None, ctx: MutationContext) -> Change:
    if task is None or task.state != task_pb2.TASK_STATE_RUNNING or task.stalled:
        return Change(ChangeKind.NONE, task or task_pb2.Task())
    if ctx.now_ns <= ctx.lease_expire_ns:
        return Change(ChangeKind.NONE, task)
    domain.mark_stalled(task, _last_report_ns(task, ctx), ctx.now)
    return Change(ChangeKind.UPDATED, task)


def _recover(task: task_pb2.Task | None, ctx: MutationContext) -> Change:
    """A lease renewed without a task change (logs, heartbeat) clears `stalled` here."""
    if task is None or not task.stalled or ctx.now_ns > ctx.lease_expire_ns:
        return Change(ChangeKind.NONE, task or task_pb2.Task())
    task.stalled = False
    task.last_report_time.FromNanoseconds(_last_report_ns(task, ctx))
    task.update_time.CopyFrom(ctx.now)
    return Change(ChangeKind.UPDATED, task)


def _lose(lost_after_ns: int) -> ServerApply:
    def lose(task: task_pb2.Task | None, ctx: MutationContext) -> Change:
        if task is None or task.state != task_pb2.TASK_STATE_RUNNING or not task.stalled:
            return Change(ChangeKind.NONE, task or task_pb2.Task())
        if ctx.now_ns <= ctx.lease_expire_ns + lost_after_ns:
            return Change(ChangeKind.NONE, task)
        domain.fail_lost(task, _last_report_ns(task, ctx), ctx.now)
        return Change(ChangeKind.UPDATED, task)

    return lose


def _force_cancel(task: task_pb2.Task | None, ctx: MutationContext) -> Change:
    if task is None or domain.is_resting(task.state) or not task.HasField("cancel_request"):
        return Change(ChangeKind.NONE, task or task_pb2.Task())
    if ctx.now_ns <= task.cancel_request.deadline_time.ToNanoseconds():
        return Change(ChangeKind.NONE, task)
    domain.force_cancel(task, ctx.now)
    return Change(ChangeKind.UPDATED, task)


def _expire(retention_ns: int) -> ServerApply:
    def expire(task: task_pb2.Task | None, ctx: MutationContext) -> Change:
        if task is None or not domain.is_resting(task.state):
            return Change(ChangeKind.NONE, task or task_pb2.Task())
        if task.finish_time.ToNanoseconds() + retention_ns > ctx.now_ns:
            return Change(ChangeKind.NONE, task)
        return Change(ChangeKind.DELETED, task)

    return expire


def _last_report_ns(task: task_pb2.Task, ctx: MutationContext) -> int:
    return ctx.lease_expire_ns - task.lease_duration.ToNanoseconds()


class Janitor:
    """Runs the periodic checks; each check is also callable on its own (tests, start-up)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._settings = engine.settings
        self._loops: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._loops = [
            asyncio.create_task(
                self._every(self._settings.liveness_interval.total_seconds(), self.check_liveness),
                name="headway-liveness",
            ),
            asyncio.create_task(
                self._every(self._settings.compaction_interval.total_seconds(), self.tidy),
                name="headway-retention",
            ),
        ]

    async def stop(self) -> None:
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)

    async def _every(self, seconds: float, work: Callable[[], object]) -> None:
        # The first run is immediate: a lease that lapsed while the server was
        # down is handled at start, not one interval later.
        while True:
            try:
                await work()  # type: ignore[misc]
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("housekeeping failed; it will run again")
            await asyncio.sleep(seconds)

    async def _apply(self, key: TaskKey, method: str, apply: ServerApply) -> None:
        tenant, task_id = key
        try:
            await self._engine.mutate(
                tenant=tenant,
                task_id=task_id,
                method=method,
                actor=Actor.SERVER,
                request=empty_pb2.Empty(),
                apply=apply,
            )
        except HeadwayError as error:
            logger.warning("%s of task %r failed: %s", method, task_id, error)

    async def check_liveness(self) -> None:
        """Stall silent agents, recover renewed ones, fail lost ones, force overdue cancels."""
        engine = self._engine
        now = engine.now_ns()
        lost_after = int(self._settings.agent_lost_after.total_seconds() * 1e9)
        # One action per task. An overdue cancel ends the task, which beats merely
        # flagging it stalled; when a task is due for two endings (its cancel
        # deadline and its agent-lost limit both passed, say across a restart),
        # the one that fell due first wins.
        work: dict[TaskKey, tuple[int, str, ServerApply]] = {}
        for key, lease_expire_ns in engine.leases():
            task = engine.find(key)
            if task is None or task.state != task_pb2.TASK_STATE_RUNNING:
                continue
            if not task.stalled and now > lease_expire_ns:
                work[key] = (lease_expire_ns, "server.MarkStalled", _stall)
            elif task.stalled and now <= lease_expire_ns:
                work[key] = (lease_expire_ns, "server.ClearStalled", _recover)
            elif task.stalled and now > lease_expire_ns + lost_after:
                due = lease_expire_ns + lost_after
                work[key] = (due, "server.FailLostAgent", _lose(lost_after))
        for key, deadline_ns in engine.cancel_deadlines():
            if now <= deadline_ns:
                continue
            lost_first = key in work and work[key][1] == "server.FailLostAgent"
            if not lost_first or deadline_ns < work[key][0]:
                work[key] = (deadline_ns, "server.ForceCancel", _force_cancel)
        if work:
            await asyncio.gather(
                *(self._apply(key, method, apply) for key, (_, method, apply) in work.items())
            )

    async def expire_tasks(self) -> int:
        """Delete tasks whose retention after coming to rest is over; how many were deleted."""
        engine = self._engine
        retention = int(self._settings.task_retention.total_seconds() * 1e9)
        cutoff = engine.now_ns() - retention
        deleted = 0
        while engine.has_finished_before(cutoff):
            batch = engine.take_finished(cutoff, self._settings.janitor_batch)
            await asyncio.gather(
                *(self._apply(key, "server.ExpireTask", _expire(retention)) for key in batch)
            )
            deleted += len(batch)
        return deleted

    async def compact(self) -> None:
        """Drop each tenant's history beyond the retained count and age, never past a reader.

        Each step re-reads the oldest pin and moves the fence before it
        deletes: a subscriber that resumed since the last step has either
        pinned its start (and the step stops below it) or found the fence moved
        (and resyncs). The fence is also checked by every history read.
        """
        engine = self._engine
        settings = self._settings
        cutoff = engine.now_ns() - int(settings.history_retention.total_seconds() * 1e9)
        for tenant in engine.tenants():
            if engine.compacted(tenant) >= engine.head(tenant):
                continue
            by_count = engine.head(tenant) - settings.history_retention_events
            by_age = await engine.store.revision_before(tenant, cutoff)
            await self._compact_tenant(tenant, max(by_count, by_age))

    async def _compact_tenant(self, tenant: str, target: int) -> None:
        engine = self._engine
        while True:
            floor = engine.compaction_floor(tenant)
            step = min(target, engine.compacted(tenant) + COMPACTION_STEP)
            if floor is not None:
                step = min(step, floor)
            if step <= engine.compacted(tenant):
                return
            engine.fence_compaction(tenant, step)
            await engine.store.compact(tenant, step)
            logger.debug("history of tenant %r compacted up to revision %d", tenant, step)

    async def prune(self) -> None:
        engine = self._engine
        window = int(self._settings.idempotency_window.total_seconds() * 1e9)
        oldest_kept = engine.forget_requests_before(engine.now_ns() - window)
        await engine.store.prune_requests(oldest_kept)
        await engine.store.prune_durations(HISTORY_RUNS_KEPT)

    async def tidy(self) -> None:
        await self.expire_tasks()
        await self.compact()
        await self.prune()
