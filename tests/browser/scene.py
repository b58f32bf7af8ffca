"""A busy tenant for screenshots: tasks in every state, steps, logs, a stalled one."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from headway.client import HeadwayClient
from headway.client.tracker import error_from_exception, progress_message
from headway.v1 import log_pb2, task_pb2

RUNNING = task_pb2.STEP_STATE_RUNNING
SUCCEEDED = task_pb2.STEP_STATE_SUCCEEDED
STEP_GAP = 0.4
"""Seconds between steps, so the timeline shows bars of some length and waits between them."""


def _log(
    message: str, level: log_pb2.LogLevel.ValueType = log_pb2.LOG_LEVEL_INFO, step: str = ""
) -> log_pb2.LogEntry:
    return log_pb2.LogEntry(message=message, level=level, step_key=step)


def _traceback() -> task_pb2.TaskError:
    try:
        rows = {"region": "eu"}
        _ = rows["us"]
    except KeyError as error:
        return error_from_exception(error)
    raise AssertionError("unreachable")


async def busy_tenant(client: HeadwayClient) -> None:
    """Tasks as an operator sees them on a busy morning (ids: nightly-etl, ...)."""
    # A pipeline with steps done, one running with units, one waiting.
    await client.create_task(
        "nightly-etl",
        display_name="Nightly ETL",
        kind="etl",
        labels={"team": "data", "env": "prod"},
        steps=["extract", "validate", "transform", "load"],
        start=True,
    )
    await client.update_step("nightly-etl", "extract", state=RUNNING)
    await client.append_logs("nightly-etl", [_log("connected to warehouse", step="extract")])
    await asyncio.sleep(STEP_GAP)
    await client.update_step(
        "nightly-etl", "extract", state=SUCCEEDED, progress=progress_message(120, 120, unit="files")
    )
    await asyncio.sleep(STEP_GAP)
    await client.update_step("nightly-etl", "validate", state=RUNNING)
    await asyncio.sleep(STEP_GAP)
    await client.update_step("nightly-etl", "validate", state=SUCCEEDED)
    await asyncio.sleep(STEP_GAP / 2)
    await client.update_step(
        "nightly-etl", "transform", state=RUNNING, progress=progress_message(40, 120, unit="files")
    )
    await client.update_task("nightly-etl", metrics={"rows": 48213, "errors": 0})
    await client.append_logs(
        "nightly-etl",
        [
            _log("transform: 40 of 120 files", step="transform"),
            _log("slow partition 2026-11-29", log_pb2.LOG_LEVEL_WARNING, "transform"),
        ],
    )

    # An iterative training run with metrics and an artifact.
    await client.create_task(
        "train-resnet",
        display_name="Train ResNet-50",
        kind="training",
        labels={"team": "ml"},
        max_iterations=10,
        steps=["epochs"],
        start=True,
    )
    await client.update_step("train-resnet", "epochs", state=RUNNING)
    await client.update_task(
        "train-resnet",
        iteration=3,
        progress=progress_message(fraction=0.3),
        metrics={"loss": 0.4182, "accuracy": 0.873},
        message="epoch 3: validation improved",
    )
    await client.add_artifacts(
        "train-resnet",
        [
            task_pb2.Artifact(
                name="checkpoint-3.pt", uri="https://example.com/ckpt/3.pt", media_type="x/pt"
            )
        ],
    )
    await client.append_logs("train-resnet", [_log("epoch 3 loss=0.418 acc=0.873")])

    # A parent with two children.
    await client.create_task(
        "release",
        display_name="Release 2.4",
        kind="release",
        steps=["build", "publish"],
        start=True,
    )
    await client.update_step("release", "build", state=RUNNING)
    await client.create_task(
        "release-linux", display_name="Build linux", kind="build", parent_id="release", start=True
    )
    await client.update_task("release-linux", progress=progress_message(fraction=0.7))
    await client.create_task(
        "release-mac", display_name="Build macOS", kind="build", parent_id="release"
    )

    # Done, failed (with a traceback) and cancelled tasks.
    await client.create_task(
        "backup", display_name="Backup volumes", kind="backup", steps=["snapshot"], start=True
    )
    await client.update_step("backup", "snapshot", state=SUCCEEDED)
    await client.succeed_task("backup", message="3 volumes, 41 GB")
    await client.create_task(
        "sync-crm", display_name="Sync CRM", kind="etl", steps=["fetch"], start=True
    )
    await client.update_step("sync-crm", "fetch", state=RUNNING)
    error = _traceback()
    await client.append_logs(
        "sync-crm", [_log("region lookup failed", log_pb2.LOG_LEVEL_ERROR, "fetch")]
    )
    await client.fail_task(
        "sync-crm", message="region 'us' not configured", code=error.code, details=error.details
    )
    await client.create_task(
        "reindex", display_name="Reindex search", kind="maintenance", start=True
    )
    await client.cancel_task("reindex", reason="maintenance window over")
    await client.confirm_cancel("reindex")

    # A stalled agent: its lease lapses while it says nothing.
    await client.create_task(
        "crawler",
        display_name="Web crawler",
        kind="crawl",
        start=True,
        lease_duration=timedelta(seconds=1),
        message="crawling example.org",
    )
    await client.update_task("crawler", progress=progress_message(312, 1000, unit="pages"))
