"""How right is the ETA? Replays synthetic workloads with known durations and measures.

Each workload is a task of four steps whose true durations are known. The
agent reports progress every two seconds; the server's domain logic and
estimator (the same code the engine runs) see every report. When the task's
progress first reaches 25%, 50% and 75%, the estimated finish is compared with
the true one. The error is given as a share of the time that was truly left,
so "10%" means: with 60 s to go, the estimate was off by 6 s.

Workloads: steady (constant speed within each step), bursty (speed swings
5x within each step), pauses (two silent stalls of 10-20 s per task), and
steady with history from 5 earlier runs of the same kind. Run durations vary
by ±10% from run to run, as real ones do.

    python -m bench.eta_accuracy            # prints the table and writes bench/eta_accuracy.md
"""

from __future__ import annotations

import argparse
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.duration_pb2 import Duration

from headway.server import domain, eta
from headway.server.engine import timestamp_of
from headway.v1 import task_pb2, task_service_pb2

BASE_DURATIONS = (30.0, 60.0, 45.0, 90.0)
REPORT_EVERY = 2.0
CHECKPOINTS = (0.25, 0.5, 0.75)
START_NS = 1_800_000_000 * 10**9

# speed(step_fraction_of_time) -> relative speed; integrates to the step's duration
Profile = Callable[[random.Random], Callable[[float], float]]


def steady(_: random.Random) -> Callable[[float], float]:
    return lambda t: 1.0


def bursty(rng: random.Random) -> Callable[[float], float]:
    phase = rng.random()

    def speed(t: float) -> float:
        # Alternating fast (2.5x) and slow (0.5x) stretches, averaging 1.
        return 2.5 if ((t * 4 + phase) % 1.0) < 1 / 3 else 0.25

    return speed


@dataclass
class Run:
    durations: list[float]
    pauses: list[tuple[int, float, float]]  # (step, at fraction of its time, seconds)


def make_run(rng: random.Random, *, with_pauses: bool) -> Run:
    durations = [d * rng.uniform(0.9, 1.1) for d in BASE_DURATIONS]
    pauses = []
    if with_pauses:
        for _ in range(2):
            pauses.append((rng.randrange(4), rng.uniform(0.2, 0.8), rng.uniform(10, 20)))
    return Run(durations, pauses)


def simulate(
    estimator: eta.Estimator,
    run: Run,
    profile: Callable[[float], float],
    task_id: str,
    *,
    weighted: bool = False,
) -> dict[float, float]:
    """Drive one task; return {checkpoint: relative error of the remaining-time estimate}."""
    now_ns = START_NS
    request = task_service_pb2.CreateTaskRequest(
        kind="synthetic",
        steps=[
            task_service_pb2.StepSpec(key=f"s{i}", weight=BASE_DURATIONS[i] if weighted else 1)
            for i in range(4)
        ],
    )
    lease = Duration(seconds=3600)
    task = domain.new_task(
        request, tenant="t", task_id=task_id, revision=1, now=timestamp_of(now_ns), lease=lease
    )
    domain.start_task(task, timestamp_of(now_ns))
    total = sum(run.durations) + sum(p[2] for p in run.pauses)
    true_finish_ns = now_ns + int(total * 1e9)
    errors: dict[float, float] = {}

    def report(step_key: str, **fields: object) -> None:
        update = task_service_pb2.UpdateStepRequest(task_id=task_id, step_key=step_key, **fields)  # type: ignore[arg-type]
        domain.update_step(task, update, timestamp_of(now_ns))
        estimator.refresh(task, now_ns)
        for mark in CHECKPOINTS:
            if mark not in errors and task.fraction >= mark:
                left = (true_finish_ns - now_ns) / 1e9
                if task.eta.HasField("finish_time") and left > 0:
                    guessed = (task.eta.finish_time.ToNanoseconds() - now_ns) / 1e9
                    errors[mark] = abs(guessed - left) / left
                else:
                    errors[mark] = float("nan")  # no estimate at all

    for index, duration in enumerate(run.durations):
        key = f"s{index}"
        report(key, state=task_pb2.STEP_STATE_RUNNING)
        pauses = sorted((at, seconds) for step, at, seconds in run.pauses if step == index)
        # Integrate the speed profile so the step takes exactly `duration` seconds of work.
        steps = 400
        weights = [profile((i + 0.5) / steps) for i in range(steps)]
        scale = sum(weights)
        done = 0.0
        elapsed_work = 0.0
        next_report = REPORT_EVERY
        for i, weight in enumerate(weights):
            slice_seconds = duration / steps
            while pauses and (i / steps) >= pauses[0][0]:
                _, seconds = pauses.pop(0)
                now_ns += int(seconds * 1e9)  # the agent is silent: no reports
            done += weight / scale
            elapsed_work += slice_seconds
            now_ns += int(slice_seconds * 1e9)
            if elapsed_work >= next_report and done < 1.0:
                next_report += REPORT_EVERY
                report(key, progress=task_pb2.Progress(fraction=min(done, 1.0)))
        report(key, state=task_pb2.STEP_STATE_SUCCEEDED)
    domain.succeed_task(task, None, timestamp_of(now_ns))
    estimator.refresh(task, now_ns)
    for key, seconds in eta.durations(task):
        estimator.history.record("t", task.kind, key, seconds)
    return errors


@dataclass
class Workload:
    name: str
    profile: Profile
    pauses: bool = False
    history_runs: int = 0
    weighted: bool = False  # step weights proportional to the steps' usual durations


WORKLOADS = (
    Workload("steady", steady),
    Workload("bursty", bursty),
    Workload("pauses", steady, pauses=True),
    Workload("steady, weights match durations", steady, weighted=True),
    Workload("bursty, weights match durations", bursty, weighted=True),
    Workload("steady, 5 runs of history", steady, history_runs=5),
    Workload("bursty, 5 runs of history", bursty, history_runs=5),
    Workload("pauses, 5 runs of history", steady, pauses=True, history_runs=5),
)


def measure(workload: Workload, trials: int, seed: int = 7) -> dict[float, float]:
    """Median relative error at each checkpoint over `trials` independent tasks."""
    rng = random.Random(f"{seed}:{workload.name}")
    samples: dict[float, list[float]] = {mark: [] for mark in CHECKPOINTS}
    for trial in range(trials):
        estimator = eta.Estimator(time_constant=120.0)
        for past in range(workload.history_runs):
            run = make_run(rng, with_pauses=workload.pauses)
            simulate(
                estimator,
                run,
                workload.profile(rng),
                f"past-{trial}-{past}",
                weighted=workload.weighted,
            )
        run = make_run(rng, with_pauses=workload.pauses)
        errors = simulate(
            estimator, run, workload.profile(rng), f"measured-{trial}", weighted=workload.weighted
        )
        for mark in CHECKPOINTS:
            samples[mark].append(errors.get(mark, float("nan")))
    return {
        mark: statistics.median(v if v == v else float("inf") for v in values)
        for mark, values in samples.items()
    }


def table(results: dict[str, dict[float, float]], trials: int) -> str:
    lines = [
        f"Median error of the ETA's remaining time, {trials} tasks per workload "
        "(`python -m bench.eta_accuracy`):",
        "",
        "| workload | at 25% | at 50% | at 75% |",
        "| --- | --- | --- | --- |",
    ]
    for name, errors in results.items():
        cells = " | ".join(f"{errors[mark]:.1%}" for mark in CHECKPOINTS)
        lines.append(f"| {name} | {cells} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("eta_accuracy.md"))
    options = parser.parse_args()
    results = {w.name: measure(w, options.trials) for w in WORKLOADS}
    text = table(results, options.trials)
    print(text)
    options.out.write_text(text)


if __name__ == "__main__":
    main()
