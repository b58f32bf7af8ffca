"""`tqdm.asyncio` that also reports to Headway: `async for`, `gather` and `as_completed`.

    from headway.contrib.tqdm.asyncio import tqdm

    results = await tqdm.gather(*fetches, desc="fetch pages")

Reports exactly as `headway.contrib.tqdm.tqdm` does, from the event loop's thread
without waiting on it: the reports are queued and sent from a background thread
(or, inside a Tracker block, by a task on the Tracker's loop).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from tqdm.asyncio import tqdm_asyncio as tqdm_asyncio_base

from headway.client.errors import TaskCancelled
from headway.contrib._bar import ReportingBar

_T = TypeVar("_T")


if TYPE_CHECKING:

    class tqdm_asyncio(ReportingBar[_T], tqdm_asyncio_base[_T]):  # noqa: N801 - tqdm's name
        """`tqdm.asyncio.tqdm_asyncio` that reports its progress to Headway."""

else:  # tqdm's classes are not generic at run time

    class tqdm_asyncio(ReportingBar, tqdm_asyncio_base):  # noqa: N801 - tqdm's name
        """`tqdm.asyncio.tqdm_asyncio` that reports its progress to Headway."""


def tarange(*args: int, **kwargs: Any) -> tqdm_asyncio[int]:
    """`tqdm_asyncio(range(*args), **kwargs)`, as tqdm's own `tarange`."""
    return tqdm_asyncio(range(*args), **kwargs)


tqdm = tqdm_asyncio
trange = tarange

__all__ = ["TaskCancelled", "tarange", "tqdm", "tqdm_asyncio", "trange"]
