"""What a task's body calls to report: `progress` and `step`.

They report to what is current where they are called: the innermost step (or tqdm
bar of headway.contrib.tqdm), else the run's task. They are also where a run
learns that it must stop: a cancel request from Headway, or a revoke the worker
received while the body ran, raises `Cancelled` from the next call. Outside a
tracked run they do nothing, so a task's code runs the same without Headway.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from headway.contrib._reporter import Active, activate, current, deactivate
from headway.contrib._session import Progress
from headway.contrib.celery._runs import current_run


def progress(
    current_units: float | None = None,
    total: float | None = None,
    *,
    message: str | None = None,
    unit: str = "",
) -> None:
    """Report how far the run (or its current step) is: `progress(3, 10, message="…")`.

    Without a total the progress is "under way", with `message` as the status line.
    Never waits for the server and never fails because of it.

    Raises:
        Cancelled: The run was cancelled in Headway or revoked in Celery.
    """
    run = current_run()
    if run is not None:
        run.cancel_if_asked()
    where = current()
    if where is None:
        return
    known = total if total is not None and total > 0 else None
    where.session.progress(where.step, Progress(current_units or 0, known, unit, message))


@contextmanager
def step(name: str) -> Iterator[None]:
    """A step of the run, discovered as it runs: `with step("upload"): ...`.

    The step succeeds when the block ends, fails with the exception that leaves it,
    and receives the `progress` reported inside it.

    Raises:
        Cancelled: On entry, when the run was already cancelled or revoked.
    """
    run = current_run()
    if run is not None:
        run.cancel_if_asked()
    where = current()
    if where is None:
        yield
        return
    ref = where.session.open_step(name)
    active = Active(where.session, ref)
    token = activate(active)
    try:
        yield
    except BaseException as error:
        where.session.close_step(ref, error)
        raise
    else:
        where.session.close_step(ref)
    finally:
        deactivate(token, active)


__all__ = ["progress", "step"]
