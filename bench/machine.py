"""Facts about the machine a run used, and a gate that waits for other jobs to calm down.

The benchmark shares two cores with whatever else runs on the machine (test
suites of other work in progress, for one). Every load run records the CPU
that other processes used during its window, and before each run the gate
waits, within a total budget, until the machine is nearly idle, so that the
figures describe Headway rather than its neighbours.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import time
from datetime import UTC, datetime
from typing import Any

import psutil

from bench.servers import machine_busy_seconds
from bench.stats import mib

PACKAGES = ("grpcio", "protobuf", "uvloop", "psutil")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def facts() -> dict[str, Any]:
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_mib": mib(psutil.virtual_memory().total),
        "os": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        **versions,
    }


def busy_cores(seconds: float) -> float:
    """CPU cores the whole machine kept busy over the next `seconds`."""
    before = machine_busy_seconds()
    time.sleep(seconds)
    return (machine_busy_seconds() - before) / seconds


class QuietGate:
    """Before a run: wait (within a total budget) until other jobs use under `threshold` cores."""

    def __init__(self, budget: float, threshold: float = 0.25) -> None:
        self.budget = budget
        self.threshold = threshold
        self.waited = 0.0

    def wait(self) -> float:
        """The machine's load just before the run, in cores, after waiting if needed."""
        while True:
            load = busy_cores(1.0 if self.budget else 0.2)
            if load <= self.threshold or self.waited >= self.budget:
                return round(load, 3)
            time.sleep(2.0)
            self.waited += 3.0
