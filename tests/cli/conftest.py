"""Run the `headway` command as a person would: a real process, piped or on a terminal.

The server runs on the test's event loop (the `harness` fixture), so every process
is started and read asynchronously. A pseudo-terminal session feeds what the
command draws into a terminal emulator (pyte), so tests read the screen a person
would see, after every cursor movement and redraw.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pty
import signal
import struct
import sys
import termios
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pyte
import pytest

HEADWAY = Path(sys.executable).parent / "headway"


def environment(**overrides: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"}
    env.pop("HEADWAY_SERVER", None)
    env.update(overrides)
    return env


@dataclass
class Result:
    """How a finished command ended: its exit code and what it printed."""

    code: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()


async def headway(*args: str, timeout: float = 30, env: dict[str, str] | None = None) -> Result:
    """Run `headway ARGS` with its output piped, to the end."""
    process = await asyncio.create_subprocess_exec(
        str(HEADWAY),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env or environment(),
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return Result(process.returncode, stdout.decode(), stderr.decode())


class Stream:
    """A running `headway` whose piped output is read line by line as it comes."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._reader = asyncio.create_task(self._read())
        self._grew = asyncio.Event()

    @classmethod
    async def start(cls, *args: str) -> Stream:
        process = await asyncio.create_subprocess_exec(
            str(HEADWAY),
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=environment(),
        )
        return cls(process)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            self.lines.append(line.decode().rstrip("\n"))
            self._grew.set()
        self._grew.set()

    async def wait_for(self, predicate: Callable[[list[str]], bool], timeout: float = 10) -> None:
        async with asyncio.timeout(timeout):
            while not predicate(self.lines):
                if self._reader.done():
                    raise AssertionError(f"the command ended first:\n{self.text}")
                self._grew.clear()
                await self._grew.wait()

    async def finish(self, timeout: float = 10) -> Result:
        assert self.process.stderr is not None
        async with asyncio.timeout(timeout):
            await self._reader
            stderr = await self.process.stderr.read()
            code = await self.process.wait()
        return Result(code, self.text, stderr.decode())

    async def interrupt(self) -> Result:
        self.process.send_signal(signal.SIGINT)
        return await self.finish()

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


class Terminal:
    """`headway ARGS` on a pseudo-terminal of a given size, its screen kept by pyte."""

    def __init__(self, columns: int = 100, rows: int = 50) -> None:
        self.screen = pyte.Screen(columns, rows)
        self._stream = pyte.ByteStream(self.screen)
        self._columns = columns
        self._rows = rows
        self._master = -1
        self._process: asyncio.subprocess.Process | None = None
        self._changed = asyncio.Event()
        self._closed = False

    async def start(self, *args: str) -> Terminal:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", self._rows, self._columns, 0, 0))
        env = environment(TERM="xterm-256color", COLUMNS=str(self._columns), LINES=str(self._rows))
        self._process = await asyncio.create_subprocess_exec(
            str(HEADWAY), *args, stdin=slave, stdout=slave, stderr=slave, env=env
        )
        os.close(slave)
        self._master = master
        asyncio.get_running_loop().add_reader(master, self._on_output)
        return self

    def _on_output(self) -> None:
        try:
            data = os.read(self._master, 65536)
        except OSError:  # the command ended and closed the terminal
            data = b""
        if not data:
            self._close_reader()
        else:
            self._stream.feed(data)
        self._changed.set()

    def _close_reader(self) -> None:
        if not self._closed:
            self._closed = True
            asyncio.get_running_loop().remove_reader(self._master)
            os.close(self._master)

    def resize(self, columns: int, rows: int) -> None:
        """Change the window's size, as a person dragging its corner does.

        What the command drew so far lands on the screen at the old size; then the
        terminal changes size and the command is told (SIGWINCH), in that order.
        """
        assert self._process is not None
        assert not self._closed, "the command ended"
        os.set_blocking(self._master, False)
        with contextlib.suppress(BlockingIOError):
            while data := os.read(self._master, 65536):
                self._stream.feed(data)
        os.set_blocking(self._master, True)
        fcntl.ioctl(self._master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        self.screen.resize(rows, columns)
        self._process.send_signal(signal.SIGWINCH)

    @property
    def text(self) -> str:
        """The screen as a person sees it, trailing blanks removed."""
        return "\n".join(line.rstrip() for line in self.screen.display).rstrip()

    async def wait_for(self, predicate: Callable[[str], bool], timeout: float = 10) -> str:
        try:
            async with asyncio.timeout(timeout):
                while not predicate(self.text):
                    if self._closed:
                        break
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"the screen never showed it:\n{self.text}") from None
        assert predicate(self.text), f"the command ended first:\n{self.text}"
        return self.text

    async def interrupt(self) -> int:
        """Press Ctrl-C (SIGINT to the process) and wait for it to end."""
        assert self._process is not None
        self._process.send_signal(signal.SIGINT)
        async with asyncio.timeout(10):
            code = await self._process.wait()
            while not self._closed:  # read what it drew while exiting
                self._changed.clear()
                await self._changed.wait()
        return code

    async def close(self) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.kill()
            await self._process.wait()
        self._close_reader()


@pytest.fixture
async def terminal() -> AsyncIterator[Terminal]:
    session = Terminal()
    try:
        yield session
    finally:
        await session.close()
