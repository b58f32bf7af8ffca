"""Each mutation RPC as an `Apply`: a pure function from the task as it stands to its change.

The servicer validates a request, picks its mutation here and hands it to the
engine, which runs it against a private copy of the task under the task's lock.
Every decision that depends on the task as it stands (does it exist, may it
still change, does a cancel request change anything) lives here or in `domain`,
never in the servicer, so it can be tested without gRPC and reasoned about in
one place.

Who calls is decided when the RPC starts: the servicer passes the caller's
principal into the mutation it picks, and the mutation checks it against the
task as it stands when the change commits (a task is reported on only by the
principal that created it, or by one that may report on any task). The commit
loop runs in another asyncio task, so nothing here may look the caller up
from the context.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from headway.server import domain, rollup
from headway.server.auth.credentials import OpenAuthenticator
from headway.server.auth.principal import Permission, Principal
from headway.server.engine import Apply, Change, ChangeKind, MutationContext
from headway.server.errors import HeadwayError, Kind, task_not_found
from headway.server.quotas import TaskQuota
from headway.v1 import task_pb2, task_service_pb2


def existing(task: task_pb2.Task | None, task_id: str) -> task_pb2.Task:
    """The task, or NOT_FOUND: every mutation but CreateTask needs one."""
    if task is None:
        raise task_not_found(task_id)
    return task


def owned(task: task_pb2.Task | None, task_id: str, caller: Principal) -> task_pb2.Task:
    """The task, if `caller` may report on it: NOT_FOUND, then PERMISSION_DENIED `NOT_TASK_OWNER`.

    Every agent mutation checks this first, before the task's state, so a
    principal learns nothing about a task it may not report on beyond what it
    may read anyway.
    """
    task = existing(task, task_id)
    if task.creator != caller.name and not caller.may(Permission.REPORT_ANY):
        raise HeadwayError(
            Kind.PERMISSION_DENIED,
            "NOT_TASK_OWNER",
            f"task {task_id!r} was created by another principal; only its creator, or a "
            f"principal with the {Permission.REPORT_ANY.value!r} permission, may report on it",
            {"task_id": task_id, "permission": Permission.REPORT_ANY.value},
        )
    return task


def update(
    task_id: str, change: Callable[[task_pb2.Task, Timestamp], None], caller: Principal
) -> Apply:
    """The common shape: `change` edits the caller's own task in place at the commit time."""

    def apply(task: task_pb2.Task | None, ctx: MutationContext) -> Change:
        task = owned(task, task_id, caller)
        change(task, ctx.now)
        return Change(ChangeKind.UPDATED, task)

    return apply


def create(
    request: task_service_pb2.CreateTaskRequest,
    task_id: str,
    lease: timedelta,
    caller: Principal,
    quota: TaskQuota,
) -> Apply:
    """A new task of `caller` under `task_id`.

    The id must be free and the parent, if any, must exist in the tenant; the
    tenant must be below its task quotas, counted as of this commit.
    """
    lease_duration = Duration()
    lease_duration.FromTimedelta(lease)

    def apply(task: task_pb2.Task | None, ctx: MutationContext) -> Change:
        if task is not None:
            raise HeadwayError(
                Kind.ALREADY_EXISTS,
                "TASK_ALREADY_EXISTS",
                f"task {task_id!r} already exists",
                {"task_id": task_id},
            )
        parent = ctx.lookup(request.parent_id) if request.parent_id else None
        if request.parent_id and parent is None:
            raise HeadwayError(
                Kind.NOT_FOUND,
                "PARENT_NOT_FOUND",
                f"parent task {request.parent_id!r} not found",
                {"parent_id": request.parent_id},
            )
        if parent is not None and rollup.ancestors(parent, ctx.lookup) > rollup.MAX_DEPTH:
            raise HeadwayError(
                Kind.RESOURCE_EXHAUSTED,
                "TOO_DEEP",
                f"a task has at most {rollup.MAX_DEPTH} levels of parents",
                {"parent_id": request.parent_id, "limit": str(rollup.MAX_DEPTH)},
            )
        quota.check_create(ctx.stored_tasks, ctx.active_tasks)
        created = domain.new_task(
            request,
            tenant=ctx.tenant,
            task_id=task_id,
            revision=ctx.revision,
            now=ctx.now,
            lease=lease_duration,
        )
        created.creator = caller.name
        return Change(ChangeKind.CREATED, created)

    return apply


def append_logs(request: task_service_pb2.AppendLogsRequest, caller: Principal) -> Apply:
    """Log lines for a task that may still change, each about the task or one of its steps."""

    def apply(task: task_pb2.Task | None, ctx: MutationContext) -> Change:
        task = owned(task, request.task_id, caller)
        domain.ensure_mutable(task)
        for entry in request.entries:
            if entry.step_key:
                domain.find_step(task, entry.step_key)
        return Change(ChangeKind.LOGS, task, request.entries)

    return apply


def cancel(
    request: task_service_pb2.CancelTaskRequest, deadline: timedelta, caller: Principal
) -> Apply:
    """A viewer's cancel request; a repeated one (without `force`) changes nothing.

    `requested_by` is the caller's name, whatever the request says. Only a
    server without authentication, where every caller is the same anonymous
    admin and so has no name to record, keeps the name the request gives.
    """
    deadline_duration = Duration()
    deadline_duration.FromTimedelta(deadline)
    stamped = task_service_pb2.CancelTaskRequest()
    stamped.CopyFrom(request)
    if caller != OpenAuthenticator.PRINCIPAL:
        stamped.requested_by = caller.name

    def apply(task: task_pb2.Task | None, ctx: MutationContext) -> Change:
        task = existing(task, request.task_id)
        changed = domain.request_cancel(task, stamped, ctx.revision, ctx.now, deadline_duration)
        return Change(ChangeKind.UPDATED if changed else ChangeKind.NONE, task)

    return apply


def confirm_cancel(request: task_service_pb2.ConfirmCancelRequest, caller: Principal) -> Apply:
    """The agent stops: the task ends CANCELLED."""

    def apply(task: task_pb2.Task | None, ctx: MutationContext) -> Change:
        task = owned(task, request.task_id, caller)
        domain.confirm_cancel(task, request.reason, ctx.revision, ctx.now)
        return Change(ChangeKind.UPDATED, task)

    return apply


def heartbeat(task_id: str, caller: Principal) -> Apply:
    """The agent is alive: renew its lease, and revive the task if it was stalled."""

    def apply(task: task_pb2.Task | None, ctx: MutationContext) -> Change:
        task = owned(task, task_id, caller)
        domain.ensure_mutable(task)
        # Only a stalled task changes: it is alive again. Otherwise the
        # heartbeat renews the lease and nobody else needs to hear of it.
        return Change(ChangeKind.UPDATED if task.stalled else ChangeKind.LEASE, task)

    return apply


def delete(task_id: str) -> Apply:
    """Remove a task at rest, with its logs."""

    def apply(task: task_pb2.Task | None, ctx: MutationContext) -> Change:
        task = existing(task, task_id)
        domain.ensure_deletable(task)
        return Change(ChangeKind.DELETED, task)

    return apply
