"""The ETA's accuracy on synthetic workloads with known durations (bench/eta_accuracy.py)."""

from __future__ import annotations

import math

from bench.eta_accuracy import WORKLOADS, Workload, measure


def workload(name: str) -> Workload:
    return next(w for w in WORKLOADS if w.name == name)


def test_with_five_runs_of_history_a_steady_task_is_within_ten_percent_at_half_way() -> None:
    errors = measure(workload("steady, 5 runs of history"), trials=12)
    assert errors[0.5] < 0.10


def test_history_beats_rate_alone_when_step_weights_do_not_reflect_durations() -> None:
    without = measure(workload("steady"), trials=8)
    with_history = measure(workload("steady, 5 runs of history"), trials=8)
    for mark in (0.25, 0.5, 0.75):
        assert with_history[mark] < without[mark]


def test_rate_alone_is_accurate_when_weights_reflect_durations() -> None:
    errors = measure(workload("steady, weights match durations"), trials=8)
    assert all(math.isfinite(e) and e < 0.10 for e in errors.values())


def test_an_absurdly_slow_rate_gives_no_estimate_rather_than_an_error() -> None:
    from headway.server.engine import timestamp_of
    from headway.server.eta import Estimator
    from headway.v1 import task_pb2

    task = task_pb2.Task(id="t", tenant="x", state=task_pb2.TASK_STATE_RUNNING)
    task.start_time.CopyFrom(timestamp_of(0))
    estimator = Estimator(time_constant=120.0)
    for second in range(1, 4):
        fraction = second * 1e-12  # one unit of 10**12 every second
        task.progress.fraction = fraction
        task.fraction = fraction
        estimator.refresh(task, second * 10**9)
    assert not task.eta.HasField("finish_time")
