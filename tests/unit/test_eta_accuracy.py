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
