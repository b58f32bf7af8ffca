"""The Headway task of one Celery task run, as its reporter creates and ends it.

Three things differ from a plain TaskReporter, all because a Celery run is one of
many processes' work on the same task id:

- The parent (the Celery task that sent this one) is created by another process,
  in the background: it may not be on the server yet when the child starts, or
  never be (it was not tracked). Creation waits a little for it, then goes ahead
  without a parent.
- A retried run may start in another worker while the task stays RUNNING: creating
  it again finds it there, and the run adopts it.
- A cancel request from a viewer is passed on to Celery (`on_cancel`, which
  revokes the Celery task) as soon as any answer or heartbeat brings it, and a
  revoke seen first in Celery is confirmed in Headway with its own reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from types import TracebackType

from headway.client import models
from headway.client.errors import AlreadyExistsError, NotFoundError
from headway.client.tracker import TaskReporter, Tracker
from headway.v1 import task_pb2, task_service_pb2

logger = logging.getLogger("headway.contrib.celery")

PARENT_GRACE = 3.0
"""Seconds a child waits for its parent's task to be created before it goes on without."""

_PARENT_POLL = 0.1


class CeleryTaskReporter(TaskReporter):
    """Reports one Celery task run; see the module's docstring for what it adds."""

    def __init__(
        self,
        tracker: Tracker,
        create: task_service_pb2.CreateTaskRequest,
        *,
        on_cancel: Callable[[], None] | None = None,
        parent_grace: float = PARENT_GRACE,
    ) -> None:
        super().__init__(
            tracker.client,
            create,
            tracker.progress_rate,
            tracker._keep_alives,  # stopped with the tracker, as its own tasks' are
            tracker.retryable,
        )
        self.on_cancel = on_cancel
        self.parent_grace = parent_grace
        self.revoke_reason = ""
        """Set when Celery revoked the run: the reason recorded when it is confirmed."""
        self._watcher: asyncio.Task[None] | None = None

    async def start(self) -> CeleryTaskReporter:
        try:
            await self._create_under_parent()
        except AlreadyExistsError:
            await self._adopt()
        if self.on_cancel is not None and self._watcher is None:
            self._watcher = asyncio.ensure_future(self._pass_cancel_on())
        return self

    async def _create_under_parent(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.parent_grace
        while True:
            try:
                await super().start()
                return
            except NotFoundError as error:
                if error.reason != "PARENT_NOT_FOUND" or not self._create.parent_id:
                    raise
                if loop.time() < deadline:
                    await asyncio.sleep(_PARENT_POLL)
                    continue
                logger.debug(
                    "task %s: its parent %s is not tracked; created without a parent",
                    self._create.task_id,
                    self._create.parent_id,
                )
                self._create.parent_id = ""

    async def _adopt(self) -> None:
        """Go on reporting the task an earlier attempt of the run created (a retry)."""
        raw = await self._client.get_task(self._create.task_id)
        if raw.state != task_pb2.TASK_STATE_RUNNING:
            raise AlreadyExistsError(
                f"task {raw.id} exists and is {task_pb2.TaskState.Name(raw.state)}",
                reason="TASK_ALREADY_EXISTS",
            )
        self._observe(raw)
        self._start_heartbeats()

    async def _pass_cancel_on(self) -> None:
        await self.wait_cancelled()
        if self.revoke_reason or self.on_cancel is None:
            return  # Celery revoked it first: nothing to pass on
        try:
            await asyncio.to_thread(self.on_cancel)
        except Exception as error:
            logger.warning("could not revoke Celery task of %s: %s", self.id, error)

    async def confirm_cancel(self, reason: str = "") -> models.Task:
        return await super().confirm_cancel(reason or self.revoke_reason)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        try:
            return await super().__aexit__(exc_type, exc, tb)
        finally:
            watcher, self._watcher = self._watcher, None
            if watcher is not None and not watcher.done():
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher


__all__ = ["PARENT_GRACE", "CeleryTaskReporter"]
