"""Random interleaved mutations from concurrent clients, watched by several subscribers.

Whatever the interleaving, the state each subscriber rebuilds from its stream
equals what GetTask and ListTasks return at the end: the stream is a faithful
log of the authoritative state.

Random operations are often invalid in the state their task happens to be in;
the server refuses those (NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION) and
they change nothing. Any other error fails the test. So that the property does
not hold vacuously (every operation refused, nothing to converge on), the
outcomes are counted across the run: a real share of operations must succeed,
and every kind of operation must succeed at least once.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headway.client import (
    AlreadyExistsError,
    FailedPreconditionError,
    HeadwayClient,
    NotFoundError,
    task_filter,
)
from headway.server.config import Settings
from headway.v1 import log_pb2, task_pb2
from tests.harness import ServerHarness
from tests.streams import Collector, rebuild, validate_ordered, validate_unique

TASK_IDS = [f"t{i}" for i in range(4)]
STEP_KEYS = ["a", "b", "c"]
# Across the run, at least this share of the random operations must succeed,
# and every kind of operation at least once. About a quarter typically do: the
# four tasks soon come to rest, after which most operations are refused.
MIN_SUCCESS_SHARE = 0.15
# Restarting is valid only on a running or failed step of a live task, a state the
# random interleavings reach rarely (some runs never do), so it is not required.
RARELY_VALID = {"restart"}
# The refusals an operation may meet when it does not fit its task's current state.
REFUSED = (NotFoundError, AlreadyExistsError, FailedPreconditionError)


@dataclass
class Tally:
    """Outcomes of the random operations, by operation name, across every example."""

    succeeded: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)

    def total(self) -> int:
        return sum(self.succeeded.values()) + sum(self.refused.values())


@dataclass(frozen=True)
class Op:
    """One mutation an agent or viewer might send, possibly invalid in the current state."""

    name: str
    task_id: str
    step: str = "a"
    value: float = 0.0


OP_NAMES = [
    "create",
    "create",
    "start",
    "step_progress",
    "step_progress",
    "step_done",
    "step_fail",
    "restart",
    "task_update",
    "logs",
    "add_step",
    "succeed",
    "fail",
    "cancel",
    "confirm",
    "delete",
]

ops = st.builds(
    Op,
    name=st.sampled_from(OP_NAMES),
    task_id=st.sampled_from(TASK_IDS),
    step=st.sampled_from(STEP_KEYS),
    value=st.floats(min_value=0.0, max_value=1.0),
)


async def perform(
    client: HeadwayClient, op: Op, counter: list[int], tally: Tally | None = None
) -> None:
    counter[0] += 1
    task_id = op.task_id
    try:
        match op.name:
            case "create":
                kind = "odd" if int(task_id[1:]) % 2 else "even"
                await client.create_task(task_id, kind=kind, steps=STEP_KEYS[:2])
            case "start":
                await client.start_task(task_id)
            case "step_progress":
                await client.update_step(
                    task_id, op.step, progress=task_pb2.Progress(fraction=op.value)
                )
            case "step_done":
                await client.update_step(task_id, op.step, state=task_pb2.STEP_STATE_SUCCEEDED)
            case "step_fail":
                await client.update_step(
                    task_id,
                    op.step,
                    state=task_pb2.STEP_STATE_FAILED,
                    error=task_pb2.TaskError(message="bad"),
                )
            case "restart":
                await client.update_step(task_id, op.step, restart=True)
            case "task_update":
                await client.update_task(
                    task_id, message=f"m{counter[0]}", metrics={"cost": op.value}
                )
            case "logs":
                await client.append_logs(task_id, [log_pb2.LogEntry(message=f"line {counter[0]}")])
            case "add_step":
                await client.add_steps(task_id, ["c"])
            case "succeed":
                await client.succeed_task(task_id)
            case "fail":
                await client.fail_task(task_id, message="gave up")
            case "cancel":
                await client.cancel_task(task_id, reason="stop", force=op.value > 0.7)
            case "confirm":
                await client.confirm_cancel(task_id)
            case "delete":
                await client.delete_task(task_id)
    except REFUSED:
        # Invalid in the state the task happened to be in: refused, changes nothing.
        if tally is not None:
            tally.refused[op.name] += 1
        return
    if tally is not None:
        tally.succeeded[op.name] += 1


async def scenario(database: Path, agents: list[list[Op]], tally: Tally) -> None:
    harness = ServerHarness(
        Settings(
            address="127.0.0.1:0",
            database=database,
            heartbeat_min=timedelta(milliseconds=20),
        )
    )
    await harness.start()
    try:
        client = harness.client()
        beat = timedelta(milliseconds=50)
        everything = Collector().start(client, include_logs=True, heartbeat_interval=beat)
        odd_only = Collector().start(
            client, filter=task_filter(kinds=["odd"]), heartbeat_interval=beat
        )
        counter = [0]
        # Start from a few live tasks so that most random operations have something to act on.
        for task_id in TASK_IDS[:3]:
            await perform(client, Op("create", task_id), counter)
        await perform(client, Op("start", TASK_IDS[0]), counter)
        half = [ops[: len(ops) // 2] for ops in agents]
        rest = [ops[len(ops) // 2 :] for ops in agents]

        async def run(batches: list[list[Op]]) -> None:
            clients = [harness.client() for _ in batches]

            async def agent(agent_client: HeadwayClient, ops: list[Op]) -> None:
                for op in ops:
                    await perform(agent_client, op, counter, tally)

            await asyncio.gather(*(agent(c, o) for c, o in zip(clients, batches, strict=True)))

        await run(half)
        # A late watcher resuming from the middle must converge too.
        middle = (await client.list_tasks(page_size=1)).revision
        late = Collector().start(client, start_revision=middle, heartbeat_interval=beat)
        await run(rest)

        listing = await client.list_all_tasks()
        head = (await client.list_tasks(page_size=1)).revision
        expected = {task.id: task for task in listing}
        for task_id in expected:
            assert expected[task_id] == await client.get_task(task_id)

        for watcher in (everything, odd_only, late):
            await watcher.wait_revision(head)
            validate_ordered(watcher.events)
            validate_unique(watcher.events)
            await watcher.stop()

        assert rebuild(everything.events) == expected
        assert rebuild(odd_only.events) == {k: v for k, v in expected.items() if v.kind == "odd"}
        # The late watcher saw exactly the changes after `middle`: it knows every task
        # changed since, each in its final state.
        changed_since = {k: v for k, v in expected.items() if v.revision > middle}
        assert rebuild(late.events) == changed_since
    finally:
        await harness.close()


def test_subscribers_converge_on_authoritative_state() -> None:
    tally = Tally()

    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(agents=st.lists(st.lists(ops, min_size=5, max_size=40), min_size=2, max_size=4))
    def converge(agents: list[list[Op]]) -> None:
        with tempfile.TemporaryDirectory() as folder:
            asyncio.run(scenario(Path(folder) / "headway.db", agents, tally))

    converge()

    succeeded = sum(tally.succeeded.values())
    outcomes = {
        name: f"{tally.succeeded[name]} ok / {tally.refused[name]} refused"
        for name in sorted(set(tally.succeeded) | set(tally.refused))
    }
    assert succeeded >= MIN_SUCCESS_SHARE * tally.total(), (
        f"only {succeeded} of {tally.total()} operations succeeded: {outcomes}"
    )
    never = sorted(set(OP_NAMES) - RARELY_VALID - set(tally.succeeded))
    assert not never, f"never succeeded: {never}; outcomes: {outcomes}"
