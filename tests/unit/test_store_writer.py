"""The store's writer thread: work in order, and nothing of it kept once answered."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from headway.server.store.writer import WriterThread


class _Payload:
    """Stands for a large answer, such as the store's load at start-up."""


async def test_work_runs_in_the_order_it_was_handed_over() -> None:
    writer = WriterThread("test-writer")
    seen: list[int] = []
    try:
        futures = [writer.run(lambda n=n: seen.append(n)) for n in range(50)]
        await asyncio.gather(*futures)
    finally:
        writer.stop()
    assert seen == list(range(50))


async def test_an_answer_is_not_kept_by_the_thread_while_it_waits_for_more() -> None:
    writer = WriterThread("test-writer")
    try:
        answer = await writer.run(_Payload)
        dead = weakref.ref(answer)
        del answer
        # Once the thread is idle, waiting for the next piece of work, nothing may
        # hold the payload: not its frame's last result, nor the future it settled.
        for _ in range(200):
            gc.collect()
            if dead() is None:
                break
            await asyncio.sleep(0.01)
        assert dead() is None
    finally:
        writer.stop()


async def test_a_failure_reaches_the_caller() -> None:
    writer = WriterThread("test-writer")

    def fail() -> None:
        raise ValueError("no")

    try:
        with pytest.raises(ValueError, match=r"^no$"):
            await writer.run(fail)
    finally:
        writer.stop()
