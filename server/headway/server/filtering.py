"""Which tasks and changes a TaskFilter selects, for ListTasks and Subscribe alike.

A filter is compiled once per request into plain Python sets so that checking
it against each change on the fan-out path costs a few lookups.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from headway.server.auth.principal import Scope
from headway.v1 import task_pb2, task_service_pb2


@dataclass(frozen=True, slots=True)
class TaskFacts:
    """What a filter looks at: the attributes of a task at one change.

    `previous_state` is the state before the change, so a watcher filtering on
    state is told when a task leaves its selection (the change that moved it out
    matches by its previous state).
    """

    tenant: str
    task_id: str
    kind: str
    parent_id: str
    labels: Mapping[str, str]
    state: int
    previous_state: int

    @staticmethod
    def of(task: task_pb2.Task, previous_state: int = 0) -> TaskFacts:
        return TaskFacts(
            tenant=task.tenant,
            task_id=task.id,
            kind=task.kind,
            parent_id=task.parent_id,
            labels=dict(task.labels),
            state=task.state,
            previous_state=previous_state or task.state,
        )


@dataclass(frozen=True, slots=True)
class CompiledFilter:
    """A TaskFilter ready to test; an empty criterion selects everything.

    `scope`, when set, narrows the filter to the tasks a scoped principal may
    see, whatever the request asked for (see `visibility`).
    """

    task_ids: frozenset[str]
    kinds: frozenset[str]
    labels: tuple[tuple[str, str], ...]
    states: frozenset[int]
    parent_id: str
    scope: Scope | None = None

    @staticmethod
    def compile(task_filter: task_service_pb2.TaskFilter) -> CompiledFilter:
        return CompiledFilter(
            task_ids=frozenset(task_filter.task_ids),
            kinds=frozenset(task_filter.kinds),
            labels=tuple(sorted(task_filter.labels.items())),
            states=frozenset(task_filter.states),
            parent_id=task_filter.parent_id,
        )

    def within(self, scope: Scope | None) -> CompiledFilter:
        """This filter, limited to the tasks `scope` covers (unchanged when None)."""
        return self if scope is None else dataclasses.replace(self, scope=scope)

    @property
    def selects_all(self) -> bool:
        return not (
            self.task_ids
            or self.kinds
            or self.labels
            or self.states
            or self.parent_id
            or self.scope is not None
        )

    def matches(self, facts: TaskFacts) -> bool:
        """Whether a change with these facts concerns the subscriber."""
        # Labels are fixed at creation: a task never enters or leaves a scope.
        if self.scope is not None and not self.scope.covers(facts.task_id, facts.labels):
            return False
        if self.task_ids and facts.task_id not in self.task_ids:
            return False
        if self.kinds and facts.kind not in self.kinds:
            return False
        if self.parent_id and facts.parent_id != self.parent_id:
            return False
        if self.states and not (facts.state in self.states or facts.previous_state in self.states):
            return False
        return all(facts.labels.get(key) == value for key, value in self.labels)

    def matches_task(self, task: task_pb2.Task) -> bool:
        """Whether a task, as it stands, is selected (for listings and snapshots)."""
        return self.selects_all or self.matches(TaskFacts.of(task))
