"""Friendly read models: Python enums, datetimes, None for unset, the raw proto kept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp

from headway.client import LogEntry, Progress, StepState, Task, TaskState
from headway.client.tracker import error_from_exception, progress_message
from headway.v1 import log_pb2, task_pb2


def test_zero_and_unknown_enum_values_become_none() -> None:
    assert Task.from_proto(task_pb2.Task(id="t")).state is None
    future = task_pb2.Task(id="t")
    future.state = 42  # type: ignore[assignment]  # a state added to the contract later
    task = Task.from_proto(future)
    assert task.state is None
    assert task.raw.state == 42
    assert LogEntry.from_proto(log_pb2.LogEntry(message="m")).level is None


def test_unset_messages_and_times_become_none() -> None:
    task = Task.from_proto(task_pb2.Task(id="t", steps=[task_pb2.Step(key="s")]))
    assert (task.error, task.cancel_request, task.progress) == (None, None, None)
    assert (task.create_time, task.start_time, task.finish_time) == (None, None, None)
    assert task.elapsed() is None
    assert task.display_name == "t"  # defaults to the id
    assert task.steps[0].display_name == "s"
    assert task.steps[0].expected_duration is None


def test_times_are_aware_datetimes_and_elapsed_uses_them() -> None:
    started = Timestamp()
    started.FromDatetime(datetime(2026, 1, 1, 12, 0, tzinfo=UTC))
    finished = Timestamp()
    finished.FromDatetime(datetime(2026, 1, 1, 12, 1, 30, tzinfo=UTC))
    raw = task_pb2.Task(
        id="t", state=task_pb2.TASK_STATE_SUCCEEDED, start_time=started, finish_time=finished
    )
    task = Task.from_proto(raw)
    assert task.start_time == datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert task.elapsed() == timedelta(seconds=90)
    assert task.at_rest
    assert TaskState.SUCCEEDED.at_rest
    assert not TaskState.RUNNING.at_rest
    assert StepState.SKIPPED.finished
    assert not StepState.RUNNING.finished


def test_progress_reads_every_way_it_can_be_reported() -> None:
    units = Progress.from_proto(progress_message(40, 120, unit="files"))
    assert units is not None
    assert (units.current, units.total, units.unit) == (40, 120, "files")
    assert units.fraction == 40 / 120
    assert units.describe() == "40/120 files"
    fraction = Progress.from_proto(progress_message(fraction=0.5))
    assert fraction is not None
    assert fraction.describe() == "50%"
    spinner = Progress.from_proto(progress_message())
    assert spinner is not None
    assert spinner.indeterminate
    assert spinner.describe() == "…"
    assert Progress.from_proto(task_pb2.Progress()) is None


def test_an_exception_becomes_a_task_error_with_its_traceback() -> None:
    try:
        raise KeyError("missing")
    except KeyError as error:
        recorded = error_from_exception(error)
    assert recorded.code == "KeyError"
    assert recorded.message == "'missing'"
    assert recorded.details["exception"] == "builtins.KeyError"
    assert "test_an_exception_becomes_a_task_error" in recorded.details["traceback"]
    huge = error_from_exception(RuntimeError("x" * 10_000))
    assert len(huge.message) == 4096
