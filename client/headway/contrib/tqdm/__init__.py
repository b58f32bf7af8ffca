"""tqdm that also reports to Headway: change the import, keep the loop.

    from headway.contrib.tqdm import tqdm, trange

    for path in tqdm(paths, desc="resize images", kind="images"):
        ...

`tqdm` is `tqdm.auto.tqdm` (the notebook widget in Jupyter, asyncio-aware
everywhere) and draws the same bar; it also reports it (see headway.contrib._bar):
a bar outside any task opens a task (`task_id`, `kind` and `labels` are extra
keyword arguments), a bar inside a Tracker block or inside another bar becomes a
step of that task, its postfix the step's status line. Reporting never slows or
breaks the loop: the server is reached from a background thread, and while it is
away the loop goes on (see headway.contrib._reporter). Install with
`pip install 'headway[tqdm]'`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from tqdm.auto import tqdm as tqdm_auto

from headway.client.errors import TaskCancelled
from headway.contrib._bar import ReportingBar

_T = TypeVar("_T")


if TYPE_CHECKING:

    class tqdm(ReportingBar[_T], tqdm_auto[_T]):  # noqa: N801 - the name it replaces
        """`tqdm.auto.tqdm` that reports its progress to Headway."""

else:  # tqdm's classes are not generic at run time

    class tqdm(ReportingBar, tqdm_auto):  # noqa: N801 - the name it replaces
        """`tqdm.auto.tqdm` that reports its progress to Headway."""


def trange(*args: int, **kwargs: Any) -> tqdm[int]:
    """`tqdm(range(*args), **kwargs)`, as tqdm's own `trange`."""
    return tqdm(range(*args), **kwargs)


__all__ = ["TaskCancelled", "tqdm", "trange"]
