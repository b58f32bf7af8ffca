"""Friendly read models: Python enums, datetimes, None for unset, the raw proto kept.

Also the estimates, liveness fields and heartbeat answers that viewers and agents read.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp

from headway.client import (
    Estimate,
    EstimateBasis,
    LeaseRenewal,
    LogEntry,
    Progress,
    StepState,
    Task,
    TaskState,
)
from headway.client.tracker import error_from_exception, progress_message
from headway.v1 import log_pb2, task_pb2, task_service_pb2


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


def stamp(moment: datetime) -> Timestamp:
    message = Timestamp()
    message.FromDatetime(moment)
    return message


def test_an_estimate_reads_as_datetimes_a_timedelta_and_an_enum() -> None:
    noon = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    raw = task_pb2.Estimate(
        basis=task_pb2.ESTIMATE_BASIS_HISTORY,
        finish_time=stamp(noon + timedelta(seconds=70)),
        confidence=0.6,
        earliest_finish_time=stamp(noon + timedelta(seconds=60)),
        latest_finish_time=stamp(noon + timedelta(seconds=90)),
        rate=0.01,
        compute_time=stamp(noon),
    )
    raw.remaining.FromTimedelta(timedelta(seconds=70))
    task = Task.from_proto(task_pb2.Task(id="t", eta=raw, steps=[task_pb2.Step(key="s", eta=raw)]))
    eta = task.eta
    assert eta is not None
    assert eta.basis is EstimateBasis.HISTORY
    assert eta.finish_time == noon + timedelta(seconds=70)
    assert eta.finish_time.tzinfo is not None
    assert (eta.earliest_finish_time, eta.latest_finish_time) == (
        noon + timedelta(seconds=60),
        noon + timedelta(seconds=90),
    )
    assert eta.remaining == timedelta(seconds=70)
    assert (eta.confidence, eta.rate, eta.compute_time) == (0.6, 0.01, noon)
    assert task.steps[0].eta == eta
    # It counts down from the finish time, and a passed one leaves nothing, not less.
    assert eta.time_left(noon + timedelta(seconds=20)) == timedelta(seconds=50)
    assert eta.time_left(noon + timedelta(minutes=5)) == timedelta(0)


def test_no_estimate_is_none_and_an_unknown_basis_keeps_the_estimate() -> None:
    assert Task.from_proto(task_pb2.Task(id="t")).eta is None
    unspecified = task_pb2.Task(id="t", eta=task_pb2.Estimate(confidence=0.0))
    assert unspecified.HasField("eta")
    assert Task.from_proto(unspecified).eta is None
    future = task_pb2.Estimate(finish_time=stamp(datetime(2026, 1, 1, tzinfo=UTC)))
    future.basis = 9  # type: ignore[assignment]  # a basis added to the contract later
    eta = Estimate.from_proto(future)
    assert eta is not None
    assert eta.basis is None
    assert eta.finish_time == datetime(2026, 1, 1, tzinfo=UTC)
    # Without a finish time, the remaining time counts down from when it was computed.
    computed = datetime(2026, 1, 1, tzinfo=UTC)
    partial = task_pb2.Estimate(basis=task_pb2.ESTIMATE_BASIS_RATE, compute_time=stamp(computed))
    partial.remaining.FromTimedelta(timedelta(seconds=30))
    estimate = Estimate.from_proto(partial)
    assert estimate is not None
    assert estimate.time_left(computed + timedelta(seconds=10)) == timedelta(seconds=20)


def test_liveness_fields_and_a_cancel_deadline() -> None:
    reported = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    raw = task_pb2.Task(
        id="t",
        state=task_pb2.TASK_STATE_RUNNING,
        stalled=True,
        last_report_time=stamp(reported),
        cancel_request=task_pb2.CancelRequest(
            requested_by="ops", deadline_time=stamp(reported + timedelta(minutes=1)), forced=True
        ),
    )
    raw.lease_duration.FromTimedelta(timedelta(seconds=30))
    task = Task.from_proto(raw)
    assert task.stalled
    assert task.last_report_time == reported
    assert task.lease_duration == timedelta(seconds=30)
    assert task.silence(reported + timedelta(seconds=42)) == timedelta(seconds=42)
    assert task.cancel_request is not None
    assert task.cancel_request.deadline_time == reported + timedelta(minutes=1)
    assert task.cancel_request.forced
    fresh = Task.from_proto(task_pb2.Task(id="t"))
    assert (fresh.stalled, fresh.last_report_time, fresh.lease_duration) == (False, None, None)
    assert fresh.silence() is None


def test_a_lease_renewal_reads_the_heartbeat_answer() -> None:
    expires = datetime(2026, 1, 1, 12, 1, tzinfo=UTC)
    renewal = LeaseRenewal.from_proto(
        task_service_pb2.HeartbeatResponse(
            lease_expire_time=stamp(expires),
            cancel_request=task_pb2.CancelRequest(requested_by="ops", reason="stop"),
            revision=7,
        )
    )
    assert renewal.lease_expire_time == expires
    assert renewal.cancel_request is not None
    assert (renewal.cancel_request.requested_by, renewal.revision) == ("ops", 7)
    assert LeaseRenewal.from_proto(task_service_pb2.HeartbeatResponse()).cancel_request is None
