"""The parent/child protocol of the load generator's processes.

Each load-generator role (writers, subscribers, catch-up reader) runs in its
own process so that its CPU can be measured apart from the server's and from
the orchestrator's, and so that several can share the two cores. A child gets
its plan as an argument, says "ready" on a pipe once it is connected, waits for
the parent's schedule, and sends back one report. The parent never touches
gRPC itself, and children are started with "spawn", so nothing of gRPC's
state is ever forked.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
import traceback
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import uvloop

FAR_FUTURE_NS = 1 << 62
_CONTEXT = multiprocessing.get_context("spawn")


@dataclass(frozen=True)
class Window:
    """The schedule every child follows, in `time.monotonic_ns()` (shared by all processes).

    Load starts at `start_ns`; what is sent in [`t0_ns`, `t1_ns`) is measured;
    nothing is sent from `t1_ns` on.
    """

    start_ns: int
    t0_ns: int
    t1_ns: int

    @staticmethod
    def after(delay: float, warmup: float, duration: float) -> Window:
        start = time.monotonic_ns() + int(delay * 1e9)
        t0 = start + int(warmup * 1e9)
        return Window(start, t0, t0 + int(duration * 1e9))

    @property
    def seconds(self) -> float:
        return (self.t1_ns - self.t0_ns) / 1e9


class ChildError(RuntimeError):
    """A child process reported an exception or died."""


async def receive(conn: Connection) -> Any:
    """The parent's next message, without blocking the child's event loop."""
    return await asyncio.get_running_loop().run_in_executor(None, conn.recv)


def run_child(conn: Connection, main: Callable[[], Coroutine[Any, Any, Any]]) -> None:
    """Run a child's coroutine on uvloop; an exception goes to the parent as ("error", text)."""
    try:
        uvloop.run(main())
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


class Child:
    """The parent's handle on one child process."""

    def __init__(self, name: str, target: Callable[..., None], *args: Any) -> None:
        self.name = name
        self.conn, child_end = _CONTEXT.Pipe()
        self.process: BaseProcess = _CONTEXT.Process(
            target=target, args=(child_end, *args), name=name, daemon=True
        )
        self.process.start()
        child_end.close()

    @property
    def pid(self) -> int:
        pid = self.process.pid
        if pid is None:
            raise ChildError(f"{self.name} has no pid")
        return pid

    def send(self, message: Any) -> None:
        self.conn.send(message)

    def expect(self, kind: str, timeout: float) -> Any:
        """Wait for a message of `kind` and return its payload; raise on error or timeout."""
        if not self.conn.poll(timeout):
            raise ChildError(f"{self.name}: no {kind!r} within {timeout:.0f} s")
        try:
            got, payload = self.conn.recv()
        except EOFError as error:
            raise ChildError(f"{self.name} died (exit code {self.process.exitcode})") from error
        if got == "error":
            raise ChildError(f"{self.name} failed:\n{payload}")
        if got != kind:
            raise ChildError(f"{self.name}: expected {kind!r}, got {got!r}")
        return payload

    def stop(self, timeout: float = 10.0) -> None:
        """Wait for the child to exit; terminate it, then kill it, if it does not."""
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()
