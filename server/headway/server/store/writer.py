"""The thread that owns the writing connection: work runs in the order it was handed over.

Every commit crosses from the event loop to this thread and back. Through a
`ThreadPoolExecutor` that round trip costs about 75 µs of CPU (a concurrent
future, `wrap_future`'s callbacks on both sides, the pool's bookkeeping); a
plain queue one way and one `call_soon_threadsafe` back cost about 35 µs. At a
few hundred commits a second, one per acknowledged write when writes come
one at a time, that difference is a visible share of a write's cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Item = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[[], Any]]


class WriterThread:
    """One thread running callables one at a time, in order; each answers on its caller's loop."""

    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._stopped = False

    def run(self, work: Callable[[], T]) -> asyncio.Future[T]:
        """`work()` on the thread, after everything handed over before it."""
        if self._stopped:
            raise RuntimeError("the writer thread has stopped")
        if not self._thread.is_alive():
            self._thread.start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((loop, future, work))
        return future

    def stop(self) -> None:
        """Finish what was handed over, then end the thread (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _serve(self) -> None:
        while self._serve_one():
            pass

    def _serve_one(self) -> bool:
        """Run the next piece of work; False once told to stop.

        One call per piece, so that nothing of it (the work, its future, its
        result) stays referenced from this thread's frame while the thread
        waits for the next: the store's load at start-up answers with every
        task's encoding, which would otherwise stay resident until the first
        commit.
        """
        item = self._queue.get()
        if item is None:
            return False
        loop, future, work = item
        try:
            result = work()
        except BaseException as error:  # handed to the caller, whatever it is
            _answer(loop, _fail, future, error)
        else:
            _answer(loop, _succeed, future, result)
        return True


def _answer(
    loop: asyncio.AbstractEventLoop,
    settle: Callable[[asyncio.Future[Any], Any], None],
    future: asyncio.Future[Any],
    value: Any,
) -> None:
    # A closed loop raises RuntimeError: nobody is waiting any more.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(settle, future, value)


def _succeed(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():  # the caller may have been cancelled meanwhile
        future.set_result(result)


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
