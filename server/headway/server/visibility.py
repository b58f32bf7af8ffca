"""Which tasks a principal may read: the one rule behind GetTask, ListLogs, ListTasks, Subscribe.

A principal sees the tasks of its own tenant (every read is keyed by tenant);
a scoped principal (an embedding read token) only those its `Scope` covers.
A task it may not see is answered exactly as one that does not exist,
NOT_FOUND `TASK_NOT_FOUND`, so a token never learns what else there is.
"""

from __future__ import annotations

from dataclasses import dataclass

from headway.server.auth.principal import Principal, Scope
from headway.server.engine import Engine
from headway.server.errors import task_not_found
from headway.server.filtering import CompiledFilter
from headway.v1 import task_pb2, task_service_pb2


@dataclass(frozen=True, slots=True)
class Visibility:
    """What one principal may read."""

    tenant: str
    scope: Scope | None = None

    @staticmethod
    def of(principal: Principal) -> Visibility:
        return Visibility(principal.tenant, principal.scope)

    def sees(self, task: task_pb2.Task) -> bool:
        return self.scope is None or self.scope.covers(task.id, task.labels)

    def task(self, engine: Engine, task_id: str) -> task_pb2.Task:
        """The task, or NOT_FOUND when it is missing, of another tenant or out of scope."""
        task = engine.get(self.tenant, task_id)
        if not self.sees(task):
            raise task_not_found(task_id)
        return task

    def filter(self, task_filter: task_service_pb2.TaskFilter) -> CompiledFilter:
        """The request's filter intersected with the scope, for listings and streams."""
        return CompiledFilter.compile(task_filter).within(self.scope)
