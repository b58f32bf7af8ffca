"""Run the server as its own process, as an operator would, for tests that measure it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import psutil

_SERVING = re.compile(r"headway serving on port (\d+)")
_HTTP = re.compile(r"HTTP on https?://[^ ]*:(\d+)")


class ServerProcess:
    """`python -m headway.server` on a free port; stopped with SIGTERM like a real deployment."""

    def __init__(
        self,
        database: Path,
        *args: str,
        address: str = "127.0.0.1:0",
        http_address: str = "127.0.0.1:0",
        log: Path | None = None,
    ) -> None:
        self.database = database
        self.args = args
        self.address = address
        self.http_address = http_address
        self.port = 0
        self.http_port = 0
        self.process: subprocess.Popen[str] | None = None
        # Give servers that share a database their own `log`, or they overwrite each other's.
        self.log = log if log is not None else database.with_suffix(".log")

    def start(self, timeout: float = 20.0) -> ServerProcess:
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "headway.server",
                    "--address",
                    self.address,
                    "--http-address",
                    self.http_address,
                    "--database",
                    str(self.database),
                    *self.args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = _SERVING.search(self.log.read_text())
            if found:
                self.port = int(found.group(1))
                http = _HTTP.search(self.log.read_text())
                self.http_port = int(http.group(1)) if http else 0
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log.read_text()}")
            time.sleep(0.05)
        raise TimeoutError(f"server did not start:\n{self.log.read_text()}")

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def rss_bytes(self) -> int:
        assert self.process is not None
        return int(psutil.Process(self.process.pid).memory_info().rss)

    def stop(self, timeout: float = 15.0) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.terminate()
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()
