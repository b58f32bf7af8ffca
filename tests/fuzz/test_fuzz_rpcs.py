"""Fuzz every RPC of TaskService against a real server, with a benign writer alongside.

How the pieces fit (hypothesis is synchronous, the server and gRPC are asyncio):
the test is an ordinary pytest-asyncio test, so the server (the `harness`
fixture: a real socket, a real SQLite file), the channel and the benign writer
all live on the test's event loop. Hypothesis runs in a worker thread
(`asyncio.to_thread`): its `@given` function draws one `Example` at a time and
hands it to the loop with `asyncio.run_coroutine_threadsafe`, blocking on the
result. Hypothesis thus drives generation (and, with HEADWAY_FUZZ_FAIL_FAST,
shrinking) as usual, while every gRPC object stays on the one loop that owns it.

Each example creates fresh tasks for the pool ids it names, in drawn states,
so examples do not depend on each other and a failure replays on its own.

By default the example body records violations instead of raising: one run
then surveys every distinct defect (RPC, broken rule, answer, smallest
request), and the test fails at the end listing them all. The summary also
goes to a report file (HEADWAY_FUZZ_REPORT, by default
.pytest_cache/headway-fuzz-report.txt).

Environment:
- HEADWAY_FUZZ_EXAMPLES: examples to run (default: a fixed-seed run of
  `SHORT_RUN_EXAMPLES`, part of the normal test suite). Any other value runs
  randomly seeded examples (or seeded by HEADWAY_FUZZ_SEED); see `make fuzz`.
- HEADWAY_FUZZ_FAIL_FAST=1: raise at the first violation, so hypothesis shrinks
  the example and prints it.
- HEADWAY_FUZZ_REPORT: where to write the summary.
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, seed
from hypothesis import settings as hypothesis_settings

from headway.server.config import Settings
from tests.fuzz.runner import BenignWriter, FuzzRunner, Summary
from tests.fuzz.strategies import Example, examples
from tests.harness import ServerHarness

SHORT_RUN_EXAMPLES = 900
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The usual test settings; housekeeping that changes tasks by itself is kept out
    of the way, so that "a rejected call changes nothing" can be checked exactly."""
    return Settings(
        address="127.0.0.1:0",
        database=tmp_path / "headway.db",
        heartbeat_min=timedelta(milliseconds=50),
        shutdown_grace=timedelta(seconds=1),
        liveness_interval=timedelta(hours=1),
        compaction_interval=timedelta(hours=1),
    )


def _run_settings() -> tuple[int, bool]:
    """The number of examples, and whether this is the fixed-seed run."""
    value = os.environ.get("HEADWAY_FUZZ_EXAMPLES", "")
    if not value:
        return SHORT_RUN_EXAMPLES, True
    return int(value), False


def _report_path() -> Path:
    default = ROOT / ".pytest_cache" / "headway-fuzz-report.txt"
    return Path(os.environ.get("HEADWAY_FUZZ_REPORT", default))


def _write_report(summary: Summary, header: str) -> Path:
    path = _report_path()
    if not path.is_absolute():
        path = ROOT / path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n" + summary.render(), encoding="utf-8")
    return path


async def test_fuzz_every_rpc(harness: ServerHarness) -> None:
    count, fixed = _run_settings()
    fail_fast = os.environ.get("HEADWAY_FUZZ_FAIL_FAST") == "1"
    loop = asyncio.get_running_loop()
    assert harness.running is not None
    fuzz_client = harness.client()
    benign_client = harness.client()
    runner = FuzzRunner(fuzz_client.channel, harness.settings.limits.max_message_bytes)
    writer = BenignWriter(benign_client.channel)

    @hypothesis_settings(
        max_examples=count,
        derandomize=fixed,
        database=None,
        deadline=None,
        print_blob=False,
        suppress_health_check=list(HealthCheck),
    )
    @given(example=examples())
    def explore(example: Example) -> None:
        found = asyncio.run_coroutine_threadsafe(runner.run(example), loop).result()
        if fail_fast and found:
            raise AssertionError("\n".join(v.render() for v in found))

    seed_value = os.environ.get("HEADWAY_FUZZ_SEED")
    if seed_value and not fixed:
        explore = seed(int(seed_value))(explore)

    started = time.monotonic()
    writer.start()
    try:
        await asyncio.to_thread(explore)
    finally:
        await writer.stop()
        summary = runner.summary
        summary.benign_done = writer.done
        summary.benign_failed = writer.failed
        summary.final_problems = await runner.final_checks(writer.task_ids)
        mode = "fixed seed" if fixed else f"random (seed {seed_value or 'unset'})"
        header = f"Headway fuzz run: {count} examples, {mode}, {time.monotonic() - started:.1f} s"
        path = _write_report(summary, header)
        print(f"\n{header}\n{summary.render()}(report: {path})")

    problems = summary.problems()
    assert not problems, f"{len(problems)} distinct problem(s):\n" + "\n".join(problems)
