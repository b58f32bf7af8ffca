"""ETAs and stalled agents on the command line, from a server whose clock the test moves.

Two earlier runs of kind "report" took 40 s + 30 s, so a new run's ETA is exactly
70 s by history. Piped lines describe each change as of its commit, so their text
is exact; the board and `headway task` count down on the real clock, so for them
the server's clock is first brought to the real time.
"""

from __future__ import annotations

import asyncio
import re
import time
from datetime import timedelta

import pytest

from tests.cli.conftest import Stream, Terminal, environment, headway
from tests.client.history import check_liveness, run_once
from tests.clock import FakeClock
from tests.harness import ServerHarness

WIDE = environment(COLUMNS="200")
HISTORY = {"fetch": 40.0, "write": 30.0}


@pytest.fixture
def clock() -> FakeClock:
    # Far enough in the past for the history runs to end before the real now.
    return FakeClock(time.time_ns() - 300 * 10**9)


@pytest.fixture
async def server(clocked_harness: ServerHarness, clock: FakeClock) -> ServerHarness:
    """The shared clocked server, with two past runs of "report" in its history."""
    client = clocked_harness.client()
    for n in range(2):
        await run_once(client, clock, f"past-{n}", "report", HISTORY)
    return clocked_harness


def to_real_time(clock: FakeClock, *, minus: float = 0.0) -> None:
    """Bring the server's clock (which only ever moves forward) to the real time."""
    target = time.time_ns() - int(minus * 1e9)
    assert target >= clock.now_ns, "the history runs went past the real time"
    clock.now_ns = target


async def test_watch_piped_shows_the_eta_and_a_stalled_agent(
    server: ServerHarness, clock: FakeClock
) -> None:
    client = server.client()
    watch = await Stream.start("watch", "--server", server.target, "--state", "running")
    await watch.wait_for(lambda lines: any("synced" in line for line in lines))
    await client.create_task("report-3", kind="report", steps=list(HISTORY), start=True)
    await client.create_task(
        "mystery", kind="never-seen", start=True, lease_duration=timedelta(seconds=10)
    )
    clock.advance(12)  # past the mystery's lease, within the report's (the default 60 s)
    await check_liveness(server)
    await client.update_task("mystery", message="back")  # its agent reports again
    await watch.wait_for(lambda lines: any('"back"' in line for line in lines))
    result = await watch.interrupt()

    assert result.code == 130, result.stderr
    created, unknown, stalled, back = result.lines[1:]
    assert created.endswith(
        "created report-3 RUNNING 0% | fetch: PENDING | ETA 0:01:10 (history)"
    ), created
    assert unknown.endswith("created mystery RUNNING 0% | ETA unknown"), unknown
    assert stalled.endswith(
        "updated mystery RUNNING 0% | STALLED, no report for 0:00:12 | ETA unknown"
    ), stalled
    assert back.endswith('updated mystery RUNNING 0% | "back" | ETA unknown'), back


async def test_watch_board_counts_the_eta_down_and_marks_a_stalled_task(
    server: ServerHarness, clock: FakeClock, terminal: Terminal
) -> None:
    client = server.client()
    to_real_time(clock, minus=100)
    await client.create_task("stuck", kind="etl", start=True, lease_duration=timedelta(seconds=10))
    clock.advance(12)
    await check_liveness(server)
    to_real_time(clock)
    await client.create_task(
        "report-9",
        display_name="Quarterly report",
        kind="report",
        steps=["fetch", "write"],
        start=True,
    )
    await terminal.start("watch", "--server", server.target, "--state", "running")
    screen = await terminal.wait_for(lambda text: "(history)" in text and "STALLED" in text)

    assert re.search(r"2 tasks \(2 running\) · 1 stalled · revision \d+", screen), screen
    # 70 s from when it was computed, counting down on the real clock.
    assert re.search(r"elapsed 0:00:\d\d  ETA 0:01:[01]\d \(history\)", screen), screen
    assert re.search(r"⚠ STALLED, no report for 0:01:[45]\d", screen), screen
    assert "RUNNING · STALLED ─╯" in screen
    assert "ETA unknown" in screen  # the stuck task: no kind's history, no progress
    assert await terminal.interrupt() == 130


async def test_task_shows_eta_lease_stall_and_a_pending_cancel_with_its_deadline(
    server: ServerHarness, clock: FakeClock
) -> None:
    client = server.client()
    to_real_time(clock, minus=12)
    await client.create_task(
        "job", kind="report", steps=list(HISTORY), start=True, lease_duration=timedelta(seconds=10)
    )
    clock.advance(12)
    await check_liveness(server)
    await client.cancel_task(
        "job", reason="wrong input", requested_by="ops", deadline=timedelta(minutes=5)
    )
    # Wide enough that no detail is wrapped or cut (piped, it is 80 columns by default).
    shown = await headway("task", "job", "--server", server.target, env=WIDE)

    assert shown.code == 0, shown.stderr
    out = shown.stdout
    # The viewer's cancel was the last change: the estimate is as of then, both steps pending.
    assert re.search(r"eta\s+0:01:(10|0\d) \(history\), confidence \d+%; finish at \d\d:", out), out
    assert re.search(r"lease\s+0:00:10 ", out), out
    assert re.search(r"last report\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(0:00:1\d ago\)", out), out
    assert re.search(r"stalled\s+yes: no report for 0:00:1\d", out), out
    assert re.search(
        r"cancel\s+requested by ops at [\d:\- ]+: wrong input; pending, the server cancels it "
        r"at [\d:\- ]+ \(in 0:0[45]:\d\d\) unless its agent confirms first",
        out,
    ), out
    assert "⚠ STALLED, no report for 0:00:1" in out  # the panel says it too
    assert "ETA 0:01:" in out


async def test_cancel_with_a_deadline(server: ServerHarness, clock: FakeClock) -> None:
    client = server.client()
    await client.create_task("slow", start=True)
    asked, bad = await asyncio.gather(
        headway("cancel", "slow", "--deadline", "30", "--by", "ops", "--server", server.target),
        headway("cancel", "slow", "--deadline", "0", "--server", server.target),
    )
    assert asked.code == 0, asked.stderr
    assert re.fullmatch(
        r"Cancel requested for slow; its agent stops at its next report, "
        r"or the server cancels it at \d\d:\d\d:\d\d\.\n",
        asked.stdout,
    )
    request = (await client.get_task("slow")).cancel_request
    assert request.deadline_time.ToNanoseconds() - request.request_time.ToNanoseconds() == 30e9
    assert bad.code == 2
    assert "'0' is not a positive number of seconds" in bad.stderr

    clock.advance(31)  # the agent never confirms: the server cancels it anyway
    await check_liveness(server)
    shown = await headway("task", "slow", "--server", server.target, env=WIDE)
    assert "forced: the agent did not confirm in time" in shown.stdout
