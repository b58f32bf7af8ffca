"""Nested tasks over real gRPC: a parent's progress and children counts follow its children."""

from __future__ import annotations

import uuid

import pytest

from headway.client import (
    FailedPreconditionError,
    HeadwayClient,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    task_filter,
)
from headway.v1 import task_pb2, task_service_pb2
from tests.harness import ServerHarness
from tests.streams import Collector, changes, kind


def fresh(name: str) -> str:
    """A task id new on every run."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def fraction(value: float) -> task_pb2.Progress:
    return task_pb2.Progress(fraction=value)


async def head(client: HeadwayClient) -> int:
    return (await client.list_tasks(page_size=1)).revision


async def test_a_parent_at_zero_follows_its_child_to_seventy_percent(
    client: HeadwayClient,
) -> None:
    parent = await client.create_task(fresh("parent"), start=True)
    child = await client.create_task(fresh("child"), parent_id=parent.id, start=True)
    assert child.weight == 1.0

    after_create = await client.get_task(parent.id)
    assert after_create.fraction == 0.0
    assert after_create.children == task_pb2.ChildCounts(total=1, running=1)

    moved = await client.update_task(child.id, progress=fraction(0.7))
    rolled = await client.get_task(parent.id)

    assert rolled.fraction == pytest.approx(0.7)
    assert rolled.revision == moved.revision + 1
    assert rolled.state == task_pb2.TASK_STATE_RUNNING


async def test_children_count_by_their_weights(client: HeadwayClient) -> None:
    parent = await client.create_task(fresh("parent"), start=True)
    light = await client.create_task(fresh("light"), parent_id=parent.id, start=True)
    heavy = await client.create_task(fresh("heavy"), parent_id=parent.id, start=True, weight=3)
    assert heavy.weight == 3.0

    await client.succeed_task(light.id)
    assert (await client.get_task(parent.id)).fraction == pytest.approx(0.25)

    await client.update_task(heavy.id, progress=fraction(0.5))
    rolled = await client.get_task(parent.id)
    assert rolled.fraction == pytest.approx((1 * 1.0 + 3 * 0.5) / 4)
    assert rolled.children == task_pb2.ChildCounts(total=2, running=1, succeeded=1)


async def test_a_succeeded_child_makes_its_parent_whole_but_not_succeeded(
    client: HeadwayClient,
) -> None:
    parent = await client.create_task(fresh("parent"), start=True)
    child = await client.create_task(fresh("child"), parent_id=parent.id, start=True)
    before = await client.get_task(parent.id)

    await client.succeed_task(child.id)
    after = await client.get_task(parent.id)

    assert after.fraction == 1.0
    assert after.state == task_pb2.TASK_STATE_RUNNING
    assert after.children == task_pb2.ChildCounts(total=1, succeeded=1)
    # A change made by the server says nothing of the parent's agent.
    assert after.last_report_time == before.last_report_time
    assert not after.stalled


async def test_a_failed_or_cancelled_child_keeps_what_it_reached(client: HeadwayClient) -> None:
    parent = await client.create_task(fresh("parent"), start=True)
    failed = await client.create_task(fresh("failed"), parent_id=parent.id, start=True)
    cancelled = await client.create_task(fresh("cancelled"), parent_id=parent.id, start=True)
    await client.update_task(failed.id, progress=fraction(0.4))
    await client.update_task(cancelled.id, progress=fraction(0.2))

    await client.fail_task(failed.id, code="BROKEN", message="it broke")
    await client.cancel_task(cancelled.id, force=True)
    rolled = await client.get_task(parent.id)

    assert rolled.fraction == pytest.approx(0.3)
    assert rolled.children == task_pb2.ChildCounts(total=2, failed=1, cancelled=1)


async def test_a_parent_with_its_own_progress_or_steps_keeps_its_own_fraction(
    client: HeadwayClient,
) -> None:
    reporting = await client.create_task(fresh("reporting"), start=True)
    await client.update_task(reporting.id, progress=fraction(0.1))
    stepped = await client.create_task(fresh("stepped"), steps=["only"], start=True)
    for parent in (reporting, stepped):
        child = await client.create_task(fresh("child"), parent_id=parent.id, start=True)
        await client.update_task(child.id, progress=fraction(0.9))

    assert (await client.get_task(reporting.id)).fraction == pytest.approx(0.1)
    assert (await client.get_task(stepped.id)).fraction == 0.0
    # Counts are kept all the same.
    for parent in (reporting, stepped):
        counts = (await client.get_task(parent.id)).children
        assert counts == task_pb2.ChildCounts(total=1, running=1)


async def test_a_parents_own_report_keeps_what_its_children_reached(
    client: HeadwayClient,
) -> None:
    parent = await client.create_task(fresh("parent"), start=True)
    child = await client.create_task(fresh("child"), parent_id=parent.id, start=True)
    await client.update_task(child.id, progress=fraction(0.6))

    noted = await client.update_task(parent.id, message="still going")
    assert noted.fraction == pytest.approx(0.6)
    failed = await client.fail_task(parent.id, code="GAVE_UP", message="gave up")
    assert failed.fraction == pytest.approx(0.6)
    assert failed.children == task_pb2.ChildCounts(total=1, running=1)


async def test_a_parent_at_rest_keeps_its_fraction_and_counts_children_that_outlive_it(
    client: HeadwayClient,
) -> None:
    parent = await client.create_task(fresh("parent"), start=True)
    child = await client.create_task(fresh("child"), parent_id=parent.id, start=True)
    await client.update_task(child.id, progress=fraction(0.2))
    ended = await client.succeed_task(parent.id)
    assert ended.fraction == 1.0

    # A child's progress moves nothing that a parent at rest shows.
    await client.update_task(child.id, progress=fraction(0.5))
    assert await client.get_task(parent.id) == ended

    # Its children's states are still counted: a chain's first link ends before the next.
    late = await client.create_task(fresh("late"), parent_id=parent.id, start=True)
    counted = await client.get_task(parent.id)
    assert counted.children == task_pb2.ChildCounts(total=2, running=2)
    assert counted.revision == late.revision + 1
    await client.fail_task(child.id, code="X", message="x")
    await client.succeed_task(late.id)
    await client.delete_task(late.id)

    final = await client.get_task(parent.id)
    assert final.children == task_pb2.ChildCounts(total=1, failed=1)
    # Nothing else of it moved: state, fraction, finish time, the rest of the task.
    assert (final.state, final.fraction) == (task_pb2.TASK_STATE_SUCCEEDED, 1.0)
    assert final.finish_time == ended.finish_time
    final.ClearField("children")
    final.ClearField("revision")
    final.ClearField("update_time")
    final.ClearField("eta")
    ended.ClearField("children")
    ended.ClearField("revision")
    ended.ClearField("update_time")
    ended.ClearField("eta")
    assert final == ended


async def test_deleting_a_child_drops_it_from_the_counts_and_the_mean(
    client: HeadwayClient,
) -> None:
    parent = await client.create_task(fresh("parent"), start=True)
    done = await client.create_task(fresh("done"), parent_id=parent.id, start=True)
    going = await client.create_task(fresh("going"), parent_id=parent.id, start=True)
    await client.update_task(going.id, progress=fraction(0.2))
    await client.succeed_task(done.id)
    assert (await client.get_task(parent.id)).fraction == pytest.approx(0.6)

    deleted_at = await client.delete_task(done.id)
    rolled = await client.get_task(parent.id)

    assert rolled.children == task_pb2.ChildCounts(total=1, running=1)
    assert rolled.fraction == pytest.approx(0.2)
    assert rolled.revision == deleted_at + 1


async def test_a_grandparent_follows_its_grandchild(client: HeadwayClient) -> None:
    grandparent = await client.create_task(fresh("grandparent"), start=True)
    parent = await client.create_task(fresh("parent"), parent_id=grandparent.id, start=True)
    child = await client.create_task(fresh("child"), parent_id=parent.id, start=True)

    moved = await client.update_task(child.id, progress=fraction(0.5))

    rolled_parent = await client.get_task(parent.id)
    rolled_grandparent = await client.get_task(grandparent.id)
    assert rolled_parent.fraction == pytest.approx(0.5)
    assert rolled_grandparent.fraction == pytest.approx(0.5)
    assert (rolled_parent.revision, rolled_grandparent.revision) == (
        moved.revision + 1,
        moved.revision + 2,
    )
    assert await head(client) == moved.revision + 2


async def test_subscribers_get_the_parents_change_right_after_the_childs(
    client: HeadwayClient,
) -> None:
    parent = await client.create_task(fresh("parent"), start=True)
    child = await client.create_task(fresh("child"), parent_id=parent.id, start=True)
    start = await head(client)
    collector = Collector().start(client, start_revision=start)

    moved = await client.update_task(child.id, progress=fraction(0.7))
    events = await collector.wait_for(lambda got: len(changes(got)) >= 2)
    await collector.stop()

    updates = [(e.revision, e.updated.id, e.updated.fraction) for e in changes(events)]
    assert [kind(e) for e in changes(events)] == ["updated", "updated"]
    assert updates == [
        (moved.revision, child.id, pytest.approx(0.7)),
        (moved.revision + 1, parent.id, pytest.approx(0.7)),
    ]
    assert moved.revision == start + 1


async def test_a_retried_request_makes_no_extra_parent_change(client: HeadwayClient) -> None:
    parent = await client.create_task(fresh("parent"), start=True)
    child = await client.create_task(fresh("child"), parent_id=parent.id, start=True)
    request_id = uuid.uuid4().hex

    first = await client.update_task(child.id, progress=fraction(0.3), request_id=request_id)
    revision = await head(client)
    again = await client.update_task(child.id, progress=fraction(0.3), request_id=request_id)

    assert again == first
    assert await head(client) == revision
    assert (await client.get_task(parent.id)).revision == first.revision + 1


async def test_a_refused_child_change_leaves_the_parent_untouched(client: HeadwayClient) -> None:
    parent = await client.create_task(fresh("parent"), start=True)
    child = await client.create_task(fresh("child"), parent_id=parent.id, steps=["a"], start=True)
    await client.update_step(child.id, "a", progress=fraction(0.5))
    before = await client.get_task(parent.id)
    revision = await head(client)

    with pytest.raises(FailedPreconditionError) as refused:
        await client.update_step(child.id, "a", progress=fraction(0.1))
    assert refused.value.reason == "PROGRESS_REGRESSED"
    with pytest.raises(NotFoundError):
        await client.create_task(fresh("orphan"), parent_id=fresh("missing"))

    assert await client.get_task(parent.id) == before
    assert await head(client) == revision


@pytest.mark.parametrize("weight", [-1.0, 1e6 + 1, float("nan"), float("inf")])
async def test_a_bad_weight_is_invalid_and_creates_nothing(
    client: HeadwayClient, weight: float
) -> None:
    parent = await client.create_task(fresh("parent"), start=True)
    revision = await head(client)
    task_id = fresh("child")

    with pytest.raises(InvalidArgumentError) as refused:
        await client.create_task(task_id, parent_id=parent.id, weight=weight)

    assert set(refused.value.field_violations) == {"weight"}
    assert await head(client) == revision
    assert not (await client.get_task(parent.id)).HasField("children")


async def test_listing_by_parent_gives_the_children(client: HeadwayClient) -> None:
    parent = await client.create_task(fresh("parent"), start=True)
    ids = {(await client.create_task(fresh("c"), parent_id=parent.id)).id for _ in range(3)}
    await client.create_task(fresh("other"))

    listed = await client.list_all_tasks(task_filter(parent_id=parent.id))

    assert {task.id for task in listed} == ids
    assert (await client.get_task(parent.id)).children == task_pb2.ChildCounts(total=3, pending=3)


async def test_a_new_task_does_not_adopt_the_children_of_a_deleted_one_of_its_id(
    client: HeadwayClient,
) -> None:
    old = await client.create_task(fresh("reused"), start=True)
    orphan = await client.create_task(fresh("orphan"), parent_id=old.id, start=True)
    await client.succeed_task(old.id)
    await client.delete_task(old.id)
    # The id comes back, as a child of the orphan: the ids now point at each other.
    reborn = await client.create_task(old.id, parent_id=orphan.id, start=True)

    noted = await client.update_task(orphan.id, message="working")
    assert await head(client) == noted.revision  # the orphan moves no one
    assert not (await client.get_task(reborn.id)).HasField("children")

    moved = await client.update_task(reborn.id, progress=fraction(0.9))
    rolled = await client.get_task(orphan.id)
    assert rolled.fraction == pytest.approx(0.9)
    assert rolled.children == task_pb2.ChildCounts(total=1, running=1)
    assert await head(client) == moved.revision + 1  # and the chain stops at the orphan
    assert (await client.get_task(reborn.id)).revision == moved.revision


async def test_after_a_restart_the_next_child_change_still_rolls_up(
    harness: ServerHarness,
) -> None:
    client = harness.client()
    parent = await client.create_task(fresh("parent"), start=True)
    child = await client.create_task(fresh("child"), parent_id=parent.id, start=True)
    await client.update_task(child.id, progress=fraction(0.3))
    await client.close()

    await harness.restart()
    client = harness.client()
    assert (await client.get_task(parent.id)).fraction == pytest.approx(0.3)
    moved = await client.update_task(child.id, progress=fraction(0.8))
    rolled = await client.get_task(parent.id)

    assert rolled.fraction == pytest.approx(0.8)
    assert rolled.revision == moved.revision + 1


async def test_a_child_change_that_moves_neither_state_nor_fraction_leaves_the_parent(
    client: HeadwayClient,
) -> None:
    parent = await client.create_task(fresh("parent"), start=True)
    child = await client.create_task(fresh("child"), parent_id=parent.id, start=True)
    await client.update_task(child.id, progress=fraction(0.5))
    before = await client.get_task(parent.id)

    noted = await client.update_task(child.id, message="halfway", metrics={"rows": 10})

    assert await head(client) == noted.revision
    assert await client.get_task(parent.id) == before


# The smallest positive doubles: a valid weight, yet weight * fraction underflows.
TINY_WEIGHTS = [5e-324, 1e-310]


@pytest.mark.parametrize("weight", TINY_WEIGHTS)
@pytest.mark.parametrize("reached", [0.3, 0.7])
async def test_a_lone_child_of_tiny_weight_moves_its_parent_to_exactly_its_fraction(
    client: HeadwayClient, weight: float, reached: float
) -> None:
    parent = await client.create_task(fresh("parent"))
    child = await client.create_task(fresh("child"), parent_id=parent.id, weight=weight)

    await client.update_task(child.id, progress=fraction(reached))

    assert (await client.get_task(parent.id)).fraction == reached


@pytest.mark.parametrize("weight", TINY_WEIGHTS)
async def test_steps_of_tiny_weight_roll_up_to_exactly_their_mean(
    client: HeadwayClient, weight: float
) -> None:
    steps = [task_service_pb2.StepSpec(key=key, weight=weight) for key in ("a", "b")]
    task = await client.create_task(fresh("task"), steps=steps, start=True)

    await client.update_step(task.id, "a", progress=fraction(0.7))

    assert (await client.get_task(task.id)).fraction == pytest.approx(0.35, rel=1e-12)


async def test_a_task_may_have_64_levels_of_parents_and_not_65(client: HeadwayClient) -> None:
    chain = [await client.create_task(fresh("level-0"))]
    for level in range(1, 65):
        chain.append(await client.create_task(fresh(f"level-{level}"), parent_id=chain[-1].id))
    revision = await head(client)

    with pytest.raises(ResourceExhaustedError) as refused:
        await client.create_task(fresh("level-65"), parent_id=chain[-1].id)
    assert refused.value.reason == "TOO_DEEP"
    assert refused.value.metadata["limit"] == "64"
    assert await head(client) == revision

    # The deepest allowed task moves every one of its 64 parents.
    await client.update_task(chain[-1].id, progress=fraction(0.5))
    assert [(await client.get_task(t.id)).fraction for t in chain] == [0.5] * 65


async def test_the_depth_counts_only_the_parents_a_change_would_move(
    client: HeadwayClient,
) -> None:
    """A task left behind by a deleted task of the same id is no child of the new one."""
    chain = [await client.create_task(fresh("level-0"))]
    for level in range(1, 65):
        chain.append(await client.create_task(fresh(f"level-{level}"), parent_id=chain[-1].id))
    await client.cancel_task(chain[0].id, force=True)
    await client.delete_task(chain[0].id)
    await client.create_task(chain[0].id)

    await client.create_task(fresh("level-65"), parent_id=chain[-1].id)
