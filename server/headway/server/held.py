"""How the engine keeps a task between changes: its stored bytes, parsed only while it moves.

A parsed `Task` costs several times its encoding in memory (about 2.8 KB
against 450 bytes for a task with three steps), and most tasks of a long-lived
server are at rest: they are read now and then and never change again. So
every task is kept as the bytes its last change stored (the row and the
event already needed them, so keeping them costs no extra serialization), and
only a task that may still change (not at rest) also keeps its parsed message,
because every mutation, lease check and roll-up of it needs its fields.

A task at rest is parsed again on each read. What is read of every task on
hot paths (its state, for the metrics; whether it is stalled) is kept beside
the bytes.

A `Held` is replaced, never changed in place, so a reader holding one (or the
message it gave out) sees the task as it was when it read it.
"""

from __future__ import annotations

from headway.v1 import task_pb2

_RESTING = frozenset(
    {task_pb2.TASK_STATE_SUCCEEDED, task_pb2.TASK_STATE_FAILED, task_pb2.TASK_STATE_CANCELLED}
)


class Held:
    """One task as kept in memory: its encoding, and its message while it is not at rest."""

    __slots__ = ("_parsed", "data", "stalled", "state")

    def __init__(self, data: bytes, task: task_pb2.Task) -> None:
        self.data = data
        self.state: task_pb2.TaskState.ValueType = task.state
        self.stalled: bool = task.stalled
        self._parsed: task_pb2.Task | None = None if self.state in _RESTING else task

    @property
    def parsed(self) -> task_pb2.Task | None:
        """The message, if it is kept (the task is not at rest); never to be changed."""
        return self._parsed

    def task(self) -> task_pb2.Task:
        """The task as a message: the kept one, or a fresh parse of the bytes (at rest).

        The kept message is shared: callers read it and never change it.
        """
        if self._parsed is not None:
            return self._parsed
        return task_pb2.Task.FromString(self.data)

    def copy(self) -> task_pb2.Task:
        """A private copy that the caller may change (a mutation's working copy)."""
        if self._parsed is None:
            return task_pb2.Task.FromString(self.data)
        working = task_pb2.Task()
        working.CopyFrom(self._parsed)
        return working
