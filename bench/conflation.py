"""A conflating subscriber that can read a tenth of what is written.

    python -m bench.conflation [--seconds 10] [--rate 1000]

Writers update a few tasks at a paced rate; one subscriber with
`slow_consumer` CONFLATE reads at most a tenth of that many events per second
(it sleeps after each response in proportion to the events it held). Once the
transport's buffers and its queue fill, the server collapses its backlog.
When the writers stop, the reader goes on at its pace until it has the last
change, and its view is compared with the server's tasks.

Reported: changes written and events received (how many of them conflated),
whether the reader was ever ended, whether its final state matches every
task exactly, and the server's resident memory before, at peak and after.
Everything lives here; `run.py` calls `measure` and `report.py` calls `render`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import time
from pathlib import Path
from typing import Any

import grpc

from bench.servers import RssSampler, ServerProcess, ServerSpec, rss_bytes
from bench.stats import mib
from headway.client import HeadwayClient, task_filter
from headway.v1 import task_pb2, task_service_pb2, task_service_pb2_grpc

# A queue of 512 events (the default is 4096) so that a run of seconds overflows it.
QUEUE = 512
SPEC = ServerSpec(
    "headway",
    (
        "--sqlite-synchronous",
        "NORMAL",
        "--quota-mutation-rate",
        "0",
        "--subscriber-queue-events",
        str(QUEUE),
    ),
)
TASKS = [f"c{n}" for n in range(10)]
STEPS = 10  # each with a 1000-character message: ~10 kB a change
SLOWDOWN = 10
WRITERS = 8
PLANS = {"full": {"seconds": 20.0, "rate": 1000.0}, "quick": {"seconds": 5.0, "rate": 1000.0}}


async def _setup(client: HeadwayClient) -> None:
    for task_id in TASKS:
        steps = [f"s{n}" for n in range(STEPS)]
        await client.create_task(task_id, steps=steps, start=True)
        for step in steps:
            await client.update_step(task_id, step, message="x" * 1000)


async def _write(client: HeadwayClient, seconds: float, rate: float) -> int:
    """Paced updates, round-robin over the tasks, from WRITERS coroutines; returns the count."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    interval = WRITERS / rate
    written = 0

    async def writer(n: int) -> None:
        nonlocal written
        k = 0
        while (due := start + (n / WRITERS + k) * interval) < start + seconds:
            await asyncio.sleep(max(0.0, due - loop.time()))
            await client.update_task(TASKS[(n + k * WRITERS) % len(TASKS)], message=f"{n}.{k}")
            written += 1
            k += 1

    await asyncio.gather(*(writer(n) for n in range(WRITERS)))
    return written


class SlowReader:
    """A CONFLATE subscriber that reads at most `rate` events per second."""

    def __init__(self, target: str, rate: float) -> None:
        self.channel = grpc.aio.insecure_channel(target)
        request = task_service_pb2.SubscribeRequest(
            filter=task_filter(task_ids=TASKS),
            slow_consumer=task_service_pb2.SLOW_CONSUMER_POLICY_CONFLATE,
        )
        self.call = task_service_pb2_grpc.TaskServiceStub(self.channel).Subscribe(request)
        self.rate = rate
        self.tasks: dict[str, task_pb2.Task] = {}
        self.events = 0
        self.conflated = 0
        self.batches = 0
        self.ordered = True
        self.revision = 0
        self.error = ""
        self._moved = asyncio.Condition()

    async def run(self) -> None:
        last_span: object = None
        try:
            async for response in self.call:
                for event in response.events:
                    which = event.WhichOneof("kind")
                    if which in ("snapshot", "updated", "created"):
                        task = getattr(event, which)
                        self.tasks[task.id] = task
                    if which == "snapshot":
                        continue
                    self.ordered &= event.revision > self.revision
                    self.revision = event.revision
                    self.events += 1
                    if event.HasField("conflation"):
                        self.conflated += 1
                        span = (event.conflation.after_revision, event.conflation.through_revision)
                        self.batches += span != last_span
                        last_span = span
                async with self._moved:
                    self._moved.notify_all()
                await asyncio.sleep(len(response.events) / self.rate)
        except grpc.aio.AioRpcError as error:
            self.error = f"{error.code().name}: {error.details()}"
        async with self._moved:
            self._moved.notify_all()

    async def until(self, revision: int, timeout: float) -> None:
        """Wait until the reader has the change at `revision`, or it was ended, or `timeout`."""
        async with self._moved:
            await asyncio.wait_for(
                self._moved.wait_for(lambda: self.revision >= revision or bool(self.error)),
                timeout,
            )


async def _measure(server: ServerProcess, seconds: float, rate: float) -> dict[str, Any]:
    client = HeadwayClient(server.target)
    await _setup(client)
    reader = SlowReader(server.target, rate / SLOWDOWN)
    reading = asyncio.create_task(reader.run())
    await reader.until(1, 10)  # synced
    rss_before = rss_bytes(server.pid)
    sampler = RssSampler(server.pid).start()
    began = time.monotonic()
    written = await _write(client, seconds, rate)
    write_seconds = time.monotonic() - began
    head = (await client.list_tasks(task_filter(task_ids=TASKS), page_size=1)).revision
    await reader.until(head, timeout=120)
    catch_up = time.monotonic() - began - write_seconds
    peak = sampler.stop()
    truth = {t: await client.get_task(t) for t in TASKS}
    correct = sum(reader.tasks.get(t) == task for t, task in truth.items())
    reading.cancel()
    await asyncio.gather(reading, return_exceptions=True)
    await reader.channel.close()
    await client.close()
    return {
        "write_rate_target": rate,
        "read_rate_events_per_s": rate / SLOWDOWN,
        "changes_written": written,
        "write_seconds": round(write_seconds, 2),
        "events_received": reader.events,
        "conflated_events": reader.conflated,
        "conflated_batches": reader.batches,
        "received_per_written": round(reader.events / written, 3) if written else None,
        "ended_with": reader.error or None,
        "strictly_increasing": reader.ordered,
        "tasks_correct": correct,
        "tasks": len(TASKS),
        "final_state_correct": correct == len(TASKS) and reader.revision >= head,
        "catch_up_seconds": round(catch_up, 2),
        "server_rss_mib": {
            "before": mib(rss_before),
            "peak": mib(peak),
            "after": mib(rss_bytes(server.pid)),
        },
    }


def measure(workdir: Path, seconds: float, rate: float) -> dict[str, Any]:
    """One run against a fresh server in `workdir` (removed afterwards)."""
    try:
        with ServerProcess(SPEC, workdir, workdir / "headway.db").start() as server:
            return asyncio.run(_measure(server, seconds, rate))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def problems(results: dict[str, Any]) -> list[str]:
    """What `check` reports about this section: a failure, or a broken guarantee."""
    r = results.get("conflation")
    if not r:
        return []
    if "error" in r:
        return [f"conflation: {r['error']}"]
    found = []
    if r["ended_with"]:
        found.append(f"conflation: the subscriber was ended ({r['ended_with']})")
    if not r["strictly_increasing"]:
        found.append("conflation: revisions went backwards")
    if not r["final_state_correct"]:
        found.append(f"conflation: {r['tasks_correct']} of {r['tasks']} final states exact")
    if not r["conflated_events"]:
        found.append("conflation: the subscriber never fell behind enough to conflate")
    return found


def render(results: dict[str, Any]) -> list[str]:
    """The RESULTS.md section, or nothing when the section did not run."""
    r = results.get("conflation")
    if not r:
        return []
    lines = ["## Conflation: a subscriber reading a tenth of the write rate", ""]
    if "error" in r:
        return [*lines, f"Failed: {r['error']}", ""]
    rss = r["server_rss_mib"]
    lines += [
        f"{r['changes_written']} changes of ~10 kB to {r['tasks']} tasks in {r['write_seconds']} s "
        f"(target {r['write_rate_target']:.0f}/s); one `slow_consumer` CONFLATE subscriber reading "
        f"at most {r['read_rate_events_per_s']:.0f} events/s; the server queues {QUEUE} events "
        "per subscriber.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| events received | {r['events_received']} ({r['received_per_written']} per change) |",
        f"| of which conflated | {r['conflated_events']} in {r['conflated_batches']} batches |",
        f"| stream ended | {r['ended_with'] or 'never'} |",
        f"| revisions strictly increasing | {r['strictly_increasing']} |",
        f"| final state of every task | {r['tasks_correct']} of {r['tasks']} exact |",
        f"| caught up after the writers stopped | {r['catch_up_seconds']} s |",
        f"| server RSS before / peak / after (MiB) | {rss['before']} / {rss['peak']} / "
        f"{rss['after']} |",
        "",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=PLANS["full"]["seconds"])
    parser.add_argument("--rate", type=float, default=PLANS["full"]["rate"])
    args = parser.parse_args()
    figures = measure(Path("bench/out/conflation"), args.seconds, args.rate)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
