"""Server processes under measurement: start, find the port, sample, stop.

Both servers run as their own processes, started the way an operator would
(Headway with `python -m headway.server`), so their CPU and memory can be read
from the outside with psutil without the benchmark's own work mixed in.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

_PORT_LINE = re.compile(r"(?<!http )serving on port (\d+)")
# The HTTP gateway's address in the startup line ("..., HTTP on http://127.0.0.1:N ...").
_HTTP_PORT_LINE = re.compile(r"HTTP on https?://[^ ]*:(\d+)")


@dataclass(frozen=True)
class ServerSpec:
    """Which server to run and with which extra flags."""

    kind: str  # "headway" or "baseline"
    args: tuple[str, ...] = ()
    http: bool = False  # also serve the HTTP gateway (SSE) on a free port

    def command(self, database: Path | None) -> list[str]:
        if self.kind == "baseline":
            return [sys.executable, "-m", "bench.baseline_server", "--address", "127.0.0.1:0"]
        if database is None:
            raise ValueError("headway needs a database path")
        return [
            sys.executable,
            "-m",
            "headway.server",
            "--address",
            "127.0.0.1:0",
            "--database",
            str(database),
            # Metrics on, as deployed, on a free port so that servers never collide.
            "--metrics-address",
            "127.0.0.1:0",
            # The HTTP gateway on a free port when measured, otherwise off (no fixed 8080).
            "--http-address",
            "127.0.0.1:0" if self.http else "",
            *self.args,
        ]


HEADWAY = ServerSpec("headway")
BASELINE = ServerSpec("baseline")


class ServerProcess:
    """One server process on 127.0.0.1 and a free port; SIGTERM to stop, SIGKILL if it hangs."""

    def __init__(self, spec: ServerSpec, workdir: Path, database: Path | None = None) -> None:
        self.spec = spec
        self.workdir = workdir
        self.database = database
        self.command = spec.command(database)
        self.log_path = workdir / f"{spec.kind}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.http_port = 0
        self.start_seconds = 0.0

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        if not self.http_port:
            raise RuntimeError(f"{self.spec.kind} serves no HTTP gateway")
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("server not started")
        return self.process.pid

    def start(self, timeout: float = 120.0) -> ServerProcess:
        """Start and wait for the "serving on port" line; `start_seconds` is how long that took."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = began + timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            found = _PORT_LINE.search(text)
            http = _HTTP_PORT_LINE.search(text)
            if found and (http or not self.spec.http):
                self.start_seconds = time.monotonic() - began
                self.port = int(found.group(1))
                self.http_port = int(http.group(1)) if http else 0
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.spec.kind} exited early:\n{self.log_text()}")
            time.sleep(0.01)
        self.stop()
        raise TimeoutError(f"{self.spec.kind} did not start:\n{self.log_text()}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self, timeout: float = 20.0) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process (all its threads), or 0 once it is gone."""
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


def main_thread_cpu_seconds(pid: int) -> float:
    """CPU time of a process's main thread: for both servers, the event loop's thread."""
    try:
        for thread in psutil.Process(pid).threads():
            if thread.id == pid:
                return float(thread.user_time + thread.system_time)
    except psutil.Error:
        pass
    return 0.0


def machine_busy_seconds() -> float:
    """CPU time all cores spent on anything but idling, since boot."""
    times = psutil.cpu_times()
    busy = ("user", "nice", "system", "irq", "softirq", "steal")  # guest is within user
    return float(sum(getattr(times, name, 0.0) for name in busy))


def rss_bytes(pid: int) -> int:
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return 0


def established_connections(pid: int) -> int:
    """TCP connections the process has in ESTABLISHED state (the clients, on loopback)."""
    try:
        connections = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return 0
    return sum(1 for c in connections if c.status == psutil.CONN_ESTABLISHED)


@dataclass
class RssSampler:
    """Samples a process's RSS every `interval` seconds on a thread, keeping the peak."""

    pid: int
    interval: float = 0.1
    peak: int = 0
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> RssSampler:
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> int:
        rss = rss_bytes(self.pid)
        self.peak = max(self.peak, rss)
        self.samples += 1
        return rss

    def stop(self) -> int:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.peak
