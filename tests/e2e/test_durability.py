"""Nothing acknowledged is ever lost: not at a graceful shutdown, not at a crash."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from headway.client import HeadwayClient, HeadwayError, UnavailableError
from headway.v1 import task_pb2
from tests.harness import ServerHarness
from tests.processes import ServerProcess
from tests.streams import Collector, changes


async def report_until_stopped(
    client: HeadwayClient, task_id: str, acknowledged: dict[str, int]
) -> None:
    """An agent reporting units as fast as it can; records the last value acknowledged."""
    for current in range(1, 100_000):
        try:
            await client.update_step(
                task_id,
                "work",
                progress=task_pb2.Progress(
                    units=task_pb2.Progress.Units(current=current, total=10**6)
                ),
                timeout=5,
            )
        except HeadwayError:
            return
        acknowledged[task_id] = current


async def test_in_flight_mutations_finish_at_graceful_shutdown(harness: ServerHarness) -> None:
    client = harness.client()
    agents = [f"g{n}" for n in range(4)]
    for task_id in agents:
        await client.create_task(task_id, steps=["work"], start=True)
    acknowledged: dict[str, int] = {}
    reporters = [
        asyncio.create_task(report_until_stopped(client, task_id, acknowledged))
        for task_id in agents
    ]
    await asyncio.sleep(0.3)
    await harness.stop()
    await asyncio.gather(*reporters)

    await harness.start()
    client = harness.client()
    for task_id in agents:
        task = await client.get_task(task_id)
        assert task.steps[0].progress.units.current == acknowledged[task_id]


async def test_acknowledged_writes_survive_a_crash(tmp_path: Path) -> None:
    database = tmp_path / "crash.db"
    server = ServerProcess(database).start()
    client = HeadwayClient(server.target)
    agents = [f"c{n}" for n in range(4)]
    for task_id in agents:
        await client.create_task(task_id, steps=["work"], start=True)
    acknowledged: dict[str, int] = {}
    reporters = [
        asyncio.create_task(report_until_stopped(client, task_id, acknowledged))
        for task_id in agents
    ]
    await asyncio.sleep(1.0)
    assert server.process is not None
    server.process.send_signal(signal.SIGKILL)  # no shutdown, no flush: a crash
    server.process.wait()
    await asyncio.gather(*reporters)
    await client.close()
    assert all(acknowledged.get(task_id, 0) > 10 for task_id in agents), acknowledged

    restarted = ServerProcess(database).start()
    try:
        client = HeadwayClient(restarted.target)
        head = (await client.list_tasks(page_size=1)).revision
        for task_id in agents:
            task = await client.get_task(task_id)
            # Every acknowledged report is there; at most the in-flight one on top.
            stored = task.steps[0].progress.units.current
            assert acknowledged[task_id] <= stored <= acknowledged[task_id] + 1
            assert task.revision <= head
        # The history survived with the state: replaying it from 0 rebuilds every task.
        watcher = Collector().start(client, start_revision=0)
        events = await watcher.wait_revision(head)
        await watcher.stop()
        assert [e.revision for e in changes(events)] == list(range(1, head + 1))
        # And the revision counter goes on from where it was.
        after = await client.update_task(agents[0], message="after the crash")
        assert after.revision == head + 1
        await client.close()
    finally:
        assert restarted.stop() == 0


async def test_mutation_during_shutdown_is_unavailable_not_lost(harness: ServerHarness) -> None:
    client = harness.client()
    await client.create_task("late", start=True)
    assert harness.running is not None
    stopping = asyncio.create_task(harness.running.stop(grace=1))
    await asyncio.sleep(0)
    try:
        task = await client.update_task("late", message="racing the shutdown", timeout=3)
    except (UnavailableError, HeadwayError):
        acknowledged = False
    else:
        acknowledged = task.message == "racing the shutdown"
    await stopping
    await harness.start()
    stored = await harness.client().get_task("late")
    assert (stored.message == "racing the shutdown") == acknowledged
