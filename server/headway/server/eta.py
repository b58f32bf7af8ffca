"""Estimated finish times from evidence: observed rate, history, and the agent's word.

Three sources, each turned into "seconds left" with a weight that grows with
the evidence behind it:

- rate: a time-weighted exponential moving average of progress per second,
  bias-corrected (the average of the first observations is divided by the
  weight they carry, so it does not start near zero), so a burst or a pause
  moves it only as much as its share of the elapsed time;
- history: the durations of earlier successful runs of the same kind (per
  step key, and of whole tasks), median and quartiles;
- agent: the `expected_duration` declared on a step.

The estimate is the weighted mean; its basis says which sources stood behind
it. With no evidence there is no estimate: a made-up ETA is worse than none.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from google.protobuf.timestamp_pb2 import Timestamp

from headway.server import domain
from headway.v1 import task_pb2

NANOS = 1_000_000_000
HISTORY_RUNS = 50
TASK_KEY = ""  # history key of a whole task, beside its steps' keys

TrackerKey = tuple[str, str, str]  # (tenant, task id, step key or TASK_KEY)


@dataclass(slots=True)
class RateTracker:
    """The smoothed progress rate (fraction per second) of one step or stepless task."""

    time_constant: float
    last_ns: int = 0
    last_fraction: float = 0.0
    mean: float = 0.0
    mean_square: float = 0.0
    weight: float = 0.0
    samples: int = 0

    def observe(self, now_ns: int, fraction: float) -> None:
        if self.samples == 0 or fraction < self.last_fraction:
            # First sight, or the work restarted: the old rate says nothing now.
            self.last_ns, self.last_fraction = now_ns, fraction
            self.mean = self.mean_square = self.weight = 0.0
            self.samples = 1
            return
        elapsed = (now_ns - self.last_ns) / NANOS
        if elapsed <= 0 or fraction == self.last_fraction:
            return
        rate = (fraction - self.last_fraction) / elapsed
        alpha = 1.0 - math.exp(-elapsed / self.time_constant)
        self.mean += alpha * (rate - self.mean)
        self.mean_square += alpha * (rate * rate - self.mean_square)
        self.weight += alpha * (1.0 - self.weight)
        self.last_ns, self.last_fraction = now_ns, fraction
        self.samples += 1

    def rate(self) -> tuple[float, float] | None:
        """(rate, standard deviation), bias-corrected; None before two observations."""
        if self.samples < 2 or self.weight <= 0:
            return None
        mean = self.mean / self.weight
        variance = max(self.mean_square / self.weight - mean * mean, 0.0)
        return (mean, math.sqrt(variance)) if mean > 0 else None


class HistoryBook:
    """Durations of past successful runs, by (tenant, kind, step key); newest kept."""

    def __init__(self) -> None:
        self._runs: dict[tuple[str, str, str], deque[float]] = {}

    def record(self, tenant: str, kind: str, key: str, seconds: float) -> None:
        runs = self._runs.setdefault((tenant, kind, key), deque(maxlen=HISTORY_RUNS))
        runs.append(seconds)

    def quartiles(self, tenant: str, kind: str, key: str) -> tuple[int, float, float, float]:
        """(runs, 25th percentile, median, 75th percentile); runs is 0 when nothing is known."""
        runs = self._runs.get((tenant, kind, key))
        if not kind or not runs:
            return 0, 0.0, 0.0, 0.0
        ordered = sorted(runs)
        return (
            len(ordered),
            _quantile(ordered, 0.25),
            _quantile(ordered, 0.5),
            _quantile(ordered, 0.75),
        )


def _quantile(ordered: list[float], q: float) -> float:
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True, slots=True)
class Guess:
    """One source's opinion of the seconds left, with its weight and spread."""

    basis: int
    remaining: float
    weight: float
    low: float | None = None
    high: float | None = None


@dataclass(slots=True)
class Combined:
    remaining: float
    basis: int
    confidence: float
    low: float | None
    high: float | None
    rate: float = 0.0


# Beyond this an estimate says nothing useful (and would not fit a Timestamp).
MAX_REMAINING = 10 * 365 * 24 * 3600.0


def combine(guesses: Iterable[Guess], rate: float = 0.0) -> Combined | None:
    present = [
        g
        for g in guesses
        if g.weight > 0
        and 0.0 <= g.remaining <= MAX_REMAINING
        and (g.high is None or g.high <= MAX_REMAINING)
    ]
    if not present:
        return None
    total = math.fsum(g.weight for g in present)
    remaining = math.fsum(g.remaining * g.weight for g in present) / total
    bases = {g.basis for g in present}
    basis = bases.pop() if len(bases) == 1 else task_pb2.ESTIMATE_BASIS_COMBINED
    spread = [g for g in present if g.low is not None and g.high is not None]
    low = high = None
    if spread:
        spread_weight = math.fsum(g.weight for g in spread)
        low = math.fsum(g.low * g.weight for g in spread) / spread_weight  # type: ignore[operator]
        high = math.fsum(g.high * g.weight for g in spread) / spread_weight  # type: ignore[operator]
    return Combined(remaining, basis, min(1.0, total / 1.5), low, high, rate)


def rate_guess(tracker: RateTracker | None, fraction: float) -> Guess | None:
    measured = tracker.rate() if tracker else None
    if measured is None or tracker is None:
        return None
    rate, deviation = measured
    left = 1.0 - fraction
    weight = min(1.0, (tracker.samples - 1) / 4) * (0.25 + fraction)
    slow = max(rate - deviation, rate / 4)
    return Guess(
        task_pb2.ESTIMATE_BASIS_RATE, left / rate, weight, left / (rate + deviation), left / slow
    )


def history_guess(
    quartiles: tuple[int, float, float, float], fraction: float, elapsed: float | None
) -> Guess | None:
    runs, p25, median, p75 = quartiles
    if runs == 0:
        return None
    weight = runs / (runs + 1) * (1.25 - fraction)
    if elapsed is not None and fraction == 0.0:
        # Nothing measurable reported: what is usual, minus what has passed.
        return Guess(
            task_pb2.ESTIMATE_BASIS_HISTORY,
            max(median - elapsed, 0.0),
            weight,
            max(p25 - elapsed, 0.0),
            max(p75 - elapsed, 0.0),
        )
    left = 1.0 - fraction
    return Guess(task_pb2.ESTIMATE_BASIS_HISTORY, median * left, weight, p25 * left, p75 * left)


def agent_guess(expected: float, fraction: float, elapsed: float | None) -> Guess | None:
    if expected <= 0:
        return None
    weight = 0.5 * (1.25 - fraction)
    if elapsed is not None and fraction == 0.0:
        return Guess(task_pb2.ESTIMATE_BASIS_AGENT, max(expected - elapsed, 0.0), weight)
    return Guess(task_pb2.ESTIMATE_BASIS_AGENT, expected * (1.0 - fraction), weight)


@dataclass
class Estimator:
    """Keeps rate trackers and the history book, and writes estimates onto tasks."""

    time_constant: float
    history: HistoryBook = field(default_factory=HistoryBook)
    _trackers: dict[TrackerKey, RateTracker] = field(default_factory=dict)
    # While a commit group is staged, the first-touch state of every tracker it
    # changed (None: absent), so that a group (or one mutation of it) that is
    # not committed leaves the rates exactly as they were.
    _journal: list[tuple[TrackerKey, RateTracker | None]] | None = None
    # Throttle (0: off): a report that only moves fractions, within this long of
    # the task's last refresh, keeps the estimates it has (see `refresh`).
    min_interval_ns: int = 0
    # Each task's last refresh: when, and the shape (states) it saw.
    _refreshed: dict[tuple[str, str], tuple[int, _Shape]] = field(default_factory=dict)

    def begin(self) -> None:
        """Start journaling tracker changes; `rollback_to` undoes them, `end` keeps them."""
        self._journal = []

    def savepoint(self) -> int:
        return len(self._journal) if self._journal is not None else 0

    def rollback_to(self, savepoint: int = 0) -> None:
        """Undo every tracker change made since `savepoint` (since `begin` by default)."""
        journal = self._journal
        if journal is None:
            return
        while len(journal) > savepoint:
            ident, previous = journal.pop()
            if previous is None:
                self._trackers.pop(ident, None)
            else:
                self._trackers[ident] = previous

    def release(self, count: int) -> None:
        """Keep the first `count` journaled changes for good: the group that made them is durable.

        Changes journaled after them (a group staged behind it) stay undoable.
        """
        if self._journal is not None:
            del self._journal[:count]

    def end(self) -> None:
        self._journal = None

    def _note(self, ident: TrackerKey) -> None:
        if self._journal is not None:
            previous = self._trackers.get(ident)
            self._journal.append((ident, None if previous is None else replace(previous)))

    def refresh(self, task: task_pb2.Task, now_ns: int) -> None:
        """Observe the task's progress and recompute every estimate on it.

        With `min_interval_ns` set, a change that moves only fractions (no task
        or step state changed, no step added) within that long of the task's
        last refresh keeps the estimates the task carries: recomputing them on
        every report of a fast agent costs more than the rest of the write, and
        says little more. So an estimate lags the progress it reflects by at
        most `min_interval_ns`; any change of state refreshes it at once. The
        rate trackers see fewer, wider-spaced observations, which their
        time-weighted average is made for. The refresh times are not journaled:
        a change that is not committed may only delay the next refresh, within
        the same bound.
        """
        key = (task.tenant, task.id)
        shape = _shape(task)
        if self.min_interval_ns and not domain.is_resting(task.state):
            last = self._refreshed.get(key)
            if last is not None and last[1] == shape and now_ns - last[0] < self.min_interval_ns:
                return
            self._refreshed[key] = (now_ns, shape)
        task.ClearField("eta")
        for step in task.steps:
            step.ClearField("eta")
        if domain.is_resting(task.state):
            self.forget(task)
            return
        now = _timestamp(now_ns)
        if not task.steps:
            result = self._task_level(task, now_ns)
        else:
            result = self._by_steps(task, now_ns, now)
            if result is None:
                result = self._task_level(task, now_ns)
        if result is not None:
            _write(task.eta, result, now_ns, now)

    def _by_steps(self, task: task_pb2.Task, now_ns: int, now: Timestamp) -> Combined | None:
        """The sum of the steps' estimates, if every unfinished step has one."""
        if task.state != task_pb2.TASK_STATE_RUNNING:
            return None
        total = 0.0
        low = high = 0.0
        spread = True
        confidence = 1.0
        bases: set[int] = set()
        for step in task.steps:
            if step.state not in domain.STEP_UNFINISHED:
                continue
            result = self._step(task, step, now_ns)
            if result is None:
                return None
            _write(step.eta, result, now_ns, now)
            total += result.remaining
            confidence = min(confidence, result.confidence)
            bases.add(result.basis)
            if result.low is None or result.high is None:
                spread = False
            else:
                low += result.low
                high += result.high
        if not bases:
            return None
        basis = bases.pop() if len(bases) == 1 else task_pb2.ESTIMATE_BASIS_COMBINED
        return Combined(total, basis, confidence, low if spread else None, high if spread else None)

    def _step(self, task: task_pb2.Task, step: task_pb2.Step, now_ns: int) -> Combined | None:
        running = step.state == task_pb2.STEP_STATE_RUNNING
        fraction = step.fraction if running else 0.0
        elapsed = None
        if running and step.HasField("start_time"):
            elapsed = max((now_ns - step.start_time.ToNanoseconds()) / NANOS, 0.0)
        elif not running:
            elapsed = 0.0
        tracker = None
        if running and domain.progress_fraction(step.progress) is not None:
            tracker = self._tracker(task, step.key)
            tracker.observe(now_ns, fraction)
        expected = step.expected_duration.ToTimedelta().total_seconds()
        guesses = [
            rate_guess(tracker, fraction),
            history_guess(
                self.history.quartiles(task.tenant, task.kind, step.key), fraction, elapsed
            ),
            agent_guess(expected, fraction, elapsed),
        ]
        measured = tracker.rate() if tracker else None
        return combine((g for g in guesses if g is not None), measured[0] if measured else 0.0)

    def _task_level(self, task: task_pb2.Task, now_ns: int) -> Combined | None:
        fraction = task.fraction
        elapsed = None
        if task.HasField("start_time"):
            elapsed = max((now_ns - task.start_time.ToNanoseconds()) / NANOS, 0.0)
        tracker = None
        if task.state == task_pb2.TASK_STATE_RUNNING and (
            task.steps or domain.progress_fraction(task.progress) is not None
        ):
            tracker = self._tracker(task, TASK_KEY)
            tracker.observe(now_ns, fraction)
        guesses = [
            rate_guess(tracker, fraction),
            history_guess(
                self.history.quartiles(task.tenant, task.kind, TASK_KEY),
                fraction,
                elapsed if task.state == task_pb2.TASK_STATE_RUNNING else 0.0,
            ),
        ]
        measured = tracker.rate() if tracker else None
        return combine((g for g in guesses if g is not None), measured[0] if measured else 0.0)

    def _tracker(self, task: task_pb2.Task, key: str) -> RateTracker:
        ident = (task.tenant, task.id, key)
        # Every caller observes through the tracker it gets: journal it first.
        self._note(ident)
        tracker = self._trackers.get(ident)
        if tracker is None:
            tracker = self._trackers[ident] = RateTracker(self.time_constant)
        return tracker

    def forget(self, task: task_pb2.Task) -> None:
        self._refreshed.pop((task.tenant, task.id), None)
        for key in [TASK_KEY, *(step.key for step in task.steps)]:
            ident = (task.tenant, task.id, key)
            if ident in self._trackers:
                self._note(ident)
                del self._trackers[ident]

    def tracker_state(self) -> dict[TrackerKey, RateTracker]:
        """A copy of every tracker, for comparing the estimator's state before and after."""
        return {ident: replace(tracker) for ident, tracker in self._trackers.items()}


_Shape = tuple[int, tuple[int, ...]]


def _shape(task: task_pb2.Task) -> _Shape:
    """What must be unchanged for a report to keep its estimates: the states, and the steps."""
    return task.state, tuple(step.state for step in task.steps)


def durations(task: task_pb2.Task) -> list[tuple[str, float]]:
    """What a SUCCEEDED task teaches the history: its duration and its steps' durations."""
    if task.state != task_pb2.TASK_STATE_SUCCEEDED or not task.kind:
        return []
    learned = []
    if task.HasField("start_time") and task.HasField("finish_time"):
        learned.append((TASK_KEY, _seconds(task.start_time, task.finish_time)))
    for step in task.steps:
        ran = step.HasField("start_time") and step.HasField("finish_time")
        if step.state == task_pb2.STEP_STATE_SUCCEEDED and ran and step.restart_count == 0:
            learned.append((step.key, _seconds(step.start_time, step.finish_time)))
    return learned


def _seconds(start: Timestamp, end: Timestamp) -> float:
    return max((end.ToNanoseconds() - start.ToNanoseconds()) / NANOS, 0.0)


def _timestamp(ns: int) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(ns)
    return stamp


def _write(estimate: task_pb2.Estimate, result: Combined, now_ns: int, now: Timestamp) -> None:
    estimate.basis = result.basis  # type: ignore[assignment]
    estimate.remaining.FromNanoseconds(int(result.remaining * NANOS))
    estimate.finish_time.FromNanoseconds(now_ns + int(result.remaining * NANOS))
    estimate.confidence = result.confidence
    estimate.rate = result.rate
    estimate.compute_time.CopyFrom(now)
    if result.low is not None and result.high is not None:
        estimate.earliest_finish_time.FromNanoseconds(now_ns + int(result.low * NANOS))
        estimate.latest_finish_time.FromNanoseconds(now_ns + int(result.high * NANOS))
