"""How the engine keeps a task between changes: deflated bytes at rest, a message while it moves.

A parsed `Task` costs several times its encoding in memory (about 2.8 KB
against 450 bytes for a task with three steps), and most tasks of a long-lived
server are at rest: they are read now and then and never change again. So a
task at rest is kept as its encoding, deflated: an encoding repeats its field
tags, step keys and timestamps, and deflate (level 1, raw, no header) halves
it in about 15 µs, once per rest; inflating it again costs about 2 µs per read,
beside the 5 µs the parse costs anyway. At 100k tasks at rest that is about
25 MiB less memory. A task that may still change (not at rest) keeps only its
parsed message, because every mutation, lease check and roll-up of it needs
its fields.

A task at rest is inflated and parsed again on each read. What is read of
every task on hot paths (its state, for the metrics; whether it is stalled) is
kept beside the bytes.

A `Held` is replaced, never changed in place, so a reader holding one (or the
message it gave out) sees the task as it was when it read it.
"""

from __future__ import annotations

import zlib
from functools import lru_cache

from headway.v1 import task_pb2

_RESTING = frozenset(
    {task_pb2.TASK_STATE_SUCCEEDED, task_pb2.TASK_STATE_FAILED, task_pb2.TASK_STATE_CANCELLED}
)
# Raw deflate: the zlib header and checksum would add 6 bytes to every task,
# and the bytes never leave memory, so there is nothing for them to protect.
_LEVEL = 1
_RAW = -zlib.MAX_WBITS


class Held:
    """One task as kept in memory: deflated at rest, its message otherwise."""

    __slots__ = ("_packed", "_parsed", "stalled", "state")

    def __init__(self, data: bytes, task: task_pb2.Task) -> None:
        """`data` is `task` encoded, as its last change stored it."""
        self.state: task_pb2.TaskState.ValueType = task.state
        self.stalled: bool = task.stalled
        self._parsed: task_pb2.Task | None
        self._packed: bytes | None
        if self.state in _RESTING:
            self._parsed, self._packed = None, zlib.compress(data, _LEVEL, _RAW)
        else:
            self._parsed, self._packed = task, None

    @property
    def parsed(self) -> task_pb2.Task | None:
        """The message, if it is kept (the task is not at rest); never to be changed."""
        return self._parsed

    @property
    def data(self) -> bytes:
        """The task's encoding."""
        if self._packed is not None:
            return zlib.decompress(self._packed, _RAW)
        assert self._parsed is not None
        return self._parsed.SerializeToString()

    def task(self) -> task_pb2.Task:
        """The task as a message: the kept one, or a fresh parse of the bytes (at rest).

        The kept message is shared: callers read it and never change it.
        """
        if self._parsed is not None:
            return self._parsed
        return task_pb2.Task.FromString(self.data)

    def shared(self) -> task_pb2.Task:
        """Like `task`, but a task at rest may come from a cache of recent parses.

        For reads that come in bursts over the same tasks (a parent's roll-up
        reads all its children); the message is shared, never to be changed.
        """
        if self._parsed is not None:
            return self._parsed
        assert self._packed is not None
        return _parse(self._packed)

    def copy(self) -> task_pb2.Task:
        """A private copy that the caller may change (a mutation's working copy)."""
        if self._parsed is None:
            return task_pb2.Task.FromString(self.data)
        working = task_pb2.Task()
        working.CopyFrom(self._parsed)
        return working


@lru_cache(maxsize=2048)
def _parse(packed: bytes) -> task_pb2.Task:
    """A task at rest, parsed; the newest parses are kept, never changed.

    Keyed by the deflated bytes themselves (a bytes object keeps its hash), so
    a task that changed is simply parsed afresh; at most a few MB are held.
    """
    return task_pb2.Task.FromString(zlib.decompress(packed, _RAW))
