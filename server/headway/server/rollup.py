"""How a parent task follows its children: their counts by state, and their weighted progress.

Pure functions over `Task` messages, like `domain`: the engine finds a
parent's children and calls `derive` whenever the parent or one of its
children changes. The rules are those of the proto comments on
`Task.fraction` (rule 4) and `Task.children`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from headway.server import domain
from headway.v1 import task_pb2

# How many levels of parents one child's change may move. The parent relation
# cannot loop (see `is_child`), so this only bounds the work of one change.
MAX_DEPTH = 64

_COUNTED_AS = {
    task_pb2.TASK_STATE_PENDING: "pending",
    task_pb2.TASK_STATE_RUNNING: "running",
    task_pb2.TASK_STATE_SUCCEEDED: "succeeded",
    task_pb2.TASK_STATE_FAILED: "failed",
    task_pb2.TASK_STATE_CANCELLED: "cancelled",
}


def is_child(task: task_pb2.Task, parent: task_pb2.Task) -> bool:
    """Whether `task` is a child of `parent`, and not of an earlier task of the same id.

    A parent must exist when its child is created, so a child is always created
    after its parent: a task left behind by a deleted parent is not adopted by
    a new task that reuses the id. The same rule makes a loop impossible, since
    every step up the chain goes to a task created earlier.
    """
    return (
        task.tenant == parent.tenant
        and task.parent_id == parent.id
        and task.create_revision > parent.create_revision
    )


def ancestors(parent: task_pb2.Task, lookup: Callable[[str], task_pb2.Task | None]) -> int:
    """How many ancestors a new child of `parent` would have, counted up to `MAX_DEPTH + 1`.

    A child's change moves at most `MAX_DEPTH` parents, so a task deeper than
    that would leave its farthest ancestors behind its children for good;
    CreateTask refuses it instead (`TOO_DEEP`). The walk follows `is_child`,
    as the roll-up does, so it stops where the roll-up would.
    """
    count = 1
    task = parent
    while task.parent_id and count <= MAX_DEPTH:
        above = lookup(task.parent_id)
        if above is None or not is_child(task, above):
            break
        count += 1
        task = above
    return count


def follows_children(task: task_pb2.Task) -> bool:
    """A task with steps or its own reported progress keeps its own roll-up."""
    return (
        task.state != task_pb2.TASK_STATE_SUCCEEDED
        and not task.steps
        and not task.HasField("progress")
    )


def counts(children: Sequence[task_pb2.Task]) -> task_pb2.ChildCounts:
    summary = task_pb2.ChildCounts(total=len(children))
    for child in children:
        name = _COUNTED_AS.get(child.state)
        if name is not None:
            setattr(summary, name, getattr(summary, name) + 1)
    return summary


def weighted_fraction(children: Sequence[task_pb2.Task]) -> float:
    """The children's fractions weighted by their weights (0, from before weights, counts 1).

    A child's `fraction` already is 1 when it SUCCEEDED and what it had reached
    when it FAILED or was CANCELLED (see `domain.roll_up`), so it is used as is.
    """
    return domain.weighted_mean([(child.weight or 1.0, child.fraction) for child in children])


def derive(
    task: task_pb2.Task, children: Sequence[task_pb2.Task], *, counts_only: bool = False
) -> bool:
    """Set the fields of `task` that follow its `children`; whether any of them changed.

    The engine calls it on every change of the task itself (so the agent's own
    reports, including the one that brings it to rest, keep what the children
    reached) and on every change of a child; once the task is at rest, with
    `counts_only`, since its fraction is final but its children still change.
    O(len(children)): fine for thousands of children per parent.
    """
    before_counts = task_pb2.ChildCounts()
    before_counts.CopyFrom(task.children)
    had_counts = task.HasField("children")
    before_fraction = task.fraction
    if children:
        task.children.CopyFrom(counts(children))
    else:
        task.ClearField("children")
    if follows_children(task) and not counts_only:
        task.fraction = weighted_fraction(children)
    return (
        task.fraction != before_fraction
        or task.HasField("children") != had_counts
        or task.children != before_counts
    )
