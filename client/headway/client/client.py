"""An async client for headway.v1.TaskService.

A thin, typed layer over the generated stub: keyword arguments instead of
request messages, typed exceptions instead of `AioRpcError`, a request_id on
every mutation (so a caller that retries never applies a change twice), and
`subscribe()` as an async iterator of events. The raw stub stays reachable as
`client.stub` for anything this layer does not cover.

With a `retry` policy, calls that fail for a passing reason (UNAVAILABLE,
DEADLINE_EXCEEDED) are sent again, the same request with the same request_id, so
a retried mutation is applied once (see `retry.py`). `subscribe()` here is one
stream; `headway.client.subscribe()` (watch.py) is the one that resumes by itself.

`token`, `tls`, `ca`, `cert` and `key` (or their `HEADWAY_*` variables, see
security.py) authenticate the client and secure its channel. A server that
refuses the caller answers UnauthenticatedError or PermissionDeniedError, with
the server's `reason`; no retry policy retries those.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message

from headway.client.errors import from_rpc_error
from headway.client.models import LeaseRenewal
from headway.client.retry import RetryPolicy, call_with_retry
from headway.client.security import PemSource, Security
from headway.v1 import event_pb2, log_pb2, task_pb2, task_service_pb2, task_service_pb2_grpc

Response = TypeVar("Response", bound=Message)
StepLike = str | task_service_pb2.StepSpec
CriterionLike = str | task_pb2.Criterion
"""A criterion to declare: its name alone (not met yet), or a Criterion message."""
Metadata = Sequence[tuple[str, str]]

DEFAULT_TARGET = "127.0.0.1:50051"
SERVER_ENV = "HEADWAY_SERVER"


def default_target() -> str:
    """The server to call when none is named: `$HEADWAY_SERVER`, else DEFAULT_TARGET.

    The command line reads the same variable, so one setting points both an agent
    and the `headway` command at the same server.
    """
    return os.environ.get(SERVER_ENV) or DEFAULT_TARGET


def _step_spec(step: StepLike) -> task_service_pb2.StepSpec:
    return task_service_pb2.StepSpec(key=step) if isinstance(step, str) else step


def criterion(value: CriterionLike) -> task_pb2.Criterion:
    """A criterion to declare; a bare name is one not met yet."""
    return task_pb2.Criterion(name=value) if isinstance(value, str) else value


def duration(value: timedelta | None) -> Duration | None:
    """A timedelta as a Duration field; None leaves the field unset (the server's default)."""
    if value is None:
        return None
    message = Duration()
    message.FromTimedelta(value)
    return message


def task_filter(
    *,
    task_ids: Sequence[str] = (),
    kinds: Sequence[str] = (),
    labels: Mapping[str, str] | None = None,
    states: Sequence[task_pb2.TaskState.ValueType] = (),
    parent_id: str = "",
) -> task_service_pb2.TaskFilter:
    """A TaskFilter from keyword arguments; an empty filter selects every task."""
    return task_service_pb2.TaskFilter(
        task_ids=task_ids, kinds=kinds, labels=labels or {}, states=states, parent_id=parent_id
    )


class HeadwayClient:
    """Calls TaskService on one channel. Use as `async with HeadwayClient(target) as client:`.

    Args:
        target: host:port of the server; `default_target()` when None.
        channel: An existing channel to use (and not close) instead of opening one.
        timeout: Seconds one attempt of a unary call may take.
        metadata: Sent with every call.
        options: gRPC channel options, for a channel this client opens.
        retry: Retry transient failures of unary calls under this policy; None sends
            each call once.
        token: Bearer token sent with every call; else `$HEADWAY_TOKEN`, else the
            first line of the file `$HEADWAY_TOKEN_FILE`.
        tls: Speak TLS. None: when `$HEADWAY_TLS=1` or any of ca, cert, key (or
            their variables) is set; False: plaintext whatever the environment says.
        ca: PEM (bytes, or a file's path) of the CAs to trust for the server's
            certificate; else `$HEADWAY_CA`, else the system's.
        cert: PEM client certificate for mutual TLS (with `key`); else `$HEADWAY_CERT`.
        key: PEM private key of `cert`; else `$HEADWAY_KEY`.
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        channel: grpc.aio.Channel | None = None,
        timeout: float | None = 30.0,
        metadata: Metadata = (),
        options: Sequence[tuple[str, Any]] = (),
        retry: RetryPolicy | None = None,
        token: str | None = None,
        tls: bool | None = None,
        ca: PemSource | None = None,
        cert: PemSource | None = None,
        key: PemSource | None = None,
    ) -> None:
        self.target = target or default_target()
        self._own_channel = channel is None
        if channel is None:
            self.security = Security.resolve(token=token, tls=tls, ca=ca, cert=cert, key=key)
            self.channel = self.security.open_channel(self.target, options)
            auth = self.security.metadata()
        else:
            # The channel's credentials are its owner's: a token can only go as metadata.
            self.security = Security(token=token)
            self.channel = channel
            auth = (("authorization", f"Bearer {token}"),) if token is not None else ()
        self.stub = task_service_pb2_grpc.TaskServiceStub(self.channel)
        self.timeout = timeout
        self.metadata = (*metadata, *auth)
        self.retry = retry

    async def __aenter__(self) -> HeadwayClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_channel:
            await self.channel.close(None)

    async def _call(
        self,
        method: Callable[..., Awaitable[Response]],
        request: Message,
        timeout: float | None,
    ) -> Response:
        async def attempt(attempt_timeout: float | None) -> Response:
            try:
                return await method(request, timeout=attempt_timeout, metadata=self.metadata)
            except grpc.aio.AioRpcError as error:
                raise from_rpc_error(error) from error

        # The request, and so its request_id, is built once: every retry is the same call.
        if self.retry is None:
            return await attempt(timeout or self.timeout)
        return await call_with_retry(
            attempt, self.retry, timeout=timeout or self.timeout, target=self.target
        )

    # -- mutations ----------------------------------------------------------------

    async def create_task(
        self,
        task_id: str = "",
        *,
        display_name: str = "",
        kind: str = "",
        labels: Mapping[str, str] | None = None,
        parent_id: str = "",
        steps: Sequence[StepLike] = (),
        message: str = "",
        max_iterations: int = 0,
        metrics: Mapping[str, float] | None = None,
        start: bool = False,
        lease_duration: timedelta | None = None,
        criteria: Sequence[CriterionLike] = (),
        weight: float = 0.0,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> task_pb2.Task:
        """Create a task, PENDING (or RUNNING with `start`).

        Args:
            weight: Its weight in its parent's progress roll-up; 0 means 1.
            lease_duration: How long its agent may stay silent before the task is
                marked stalled; None means the server's default (clamped to its bounds).
            criteria: Its success criteria, in order: names (not met yet) or
                Criterion messages.
        """
        request = task_service_pb2.CreateTaskRequest(
            task_id=task_id,
            display_name=display_name,
            kind=kind,
            labels=labels or {},
            parent_id=parent_id,
            steps=[_step_spec(step) for step in steps],
            message=message,
            max_iterations=max_iterations,
            metrics=metrics or {},
            start=start,
            lease_duration=duration(lease_duration),
            criteria=[criterion(value) for value in criteria],
            weight=weight,
            request_id=request_id or _new_request_id(),
        )
        response = await self._call(self.stub.CreateTask, request, timeout)
        return response.task

    async def start_task(
        self,
        task_id: str,
        *,
        expected_revision: int = 0,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> task_pb2.Task:
        request = task_service_pb2.StartTaskRequest(
            task_id=task_id,
            expected_revision=expected_revision,
            request_id=request_id or _new_request_id(),
        )
        return (await self._call(self.stub.StartTask, request, timeout)).task

    async def add_steps(
        self,
        task_id: str,
        steps: Sequence[StepLike],
        *,
        expected_revision: int = 0,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> task_pb2.Task:
        request = task_service_pb2.AddStepsRequest(
            task_id=task_id,
            steps=[_step_spec(step) for step in steps],
            expected_revision=expected_revision,
            request_id=request_id or _new_request_id(),
        )
        return (await self._call(self.stub.AddSteps, request, timeout)).task

    async def update_step(
        self,
        task_id: str,
        step_key: str,
        *,
        state: task_pb2.StepState.ValueType = task_pb2.STEP_STATE_UNSPECIFIED,
        progress: task_pb2.Progress | None = None,
        message: str | None = None,
        restart: bool = False,
        error: task_pb2.TaskError | None = None,
        expected_revision: int = 0,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> task_pb2.Task:
        request = task_service_pb2.UpdateStepRequest(
            task_id=task_id,
            step_key=step_key,
            state=state,
            progress=progress,
            message=message,
            restart=restart,
            error=error,
            expected_revision=expected_revision,
            request_id=request_id or _new_request_id(),
        )
        return (await self._call(self.stub.UpdateStep, request, timeout)).task

    async def update_task(
        self,
        task_id: str,
        *,
        progress: task_pb2.Progress | None = None,
        message: str | None = None,
        iteration: int | None = None,
        max_iterations: int | None = None,
        metrics: Mapping[str, float] | None = None,
        criteria: Sequence[task_pb2.Criterion] = (),
        expected_revision: int = 0,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> task_pb2.Task:
        """Change task-level fields; those left None (or empty) stay as they are.

        Args:
            metrics: Merged into the task's metrics.
            criteria: Merged into the task's criteria by name: a known name is
                replaced (met and detail) in place, a new one appended.
        """
        request = task_service_pb2.UpdateTaskRequest(
            task_id=task_id,
            progress=progress,
            message=message,
            iteration=iteration,
            max_iterations=max_iterations,
            metrics=metrics or {},
            criteria=criteria,
            expected_revision=expected_revision,
            request_id=request_id or _new_request_id(),
        )
        return (await self._call(self.stub.UpdateTask, request, timeout)).task

    async def append_logs(
        self,
        task_id: str,
        entries: Sequence[log_pb2.LogEntry | str],
        *,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> task_service_pb2.AppendLogsResponse:
        request = task_service_pb2.AppendLogsRequest(
            task_id=task_id,
            entries=[
                log_pb2.LogEntry(message=entry) if isinstance(entry, str) else entry
                for entry in entries
            ],
            request_id=request_id or _new_request_id(),
        )
        return await self._call(self.stub.AppendLogs, request, timeout)

    async def add_artifacts(
        self,
        task_id: str,
        artifacts: Sequence[task_pb2.Artifact],
        *,
        expected_revision: int = 0,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> task_pb2.Task:
        request = task_service_pb2.AddArtifactsRequest(
            task_id=task_id,
            artifacts=artifacts,
            expected_revision=expected_revision,
            request_id=request_id or _new_request_id(),
        )
        return (await self._call(self.stub.AddArtifacts, request, timeout)).task

    async def succeed_task(
        self,
        task_id: str,
        *,
        message: str | None = None,
        expected_revision: int = 0,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> task_pb2.Task:
        request = task_service_pb2.SucceedTaskRequest(
            task_id=task_id,
            message=message,
            expected_revision=expected_revision,
            request_id=request_id or _new_request_id(),
        )
        return (await self._call(self.stub.SucceedTask, request, timeout)).task

    async def fail_task(
        self,
        task_id: str,
        *,
        message: str,
        code: str = "",
        details: Mapping[str, str] | None = None,
        retryable: bool = False,
        expected_revision: int = 0,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> task_pb2.Task:
        error = task_pb2.TaskError(
            code=code, message=message, details=details or {}, retryable=retryable
        )
        request = task_service_pb2.FailTaskRequest(
            task_id=task_id,
            error=error,
            expected_revision=expected_revision,
            request_id=request_id or _new_request_id(),
        )
        return (await self._call(self.stub.FailTask, request, timeout)).task

    async def cancel_task(
        self,
        task_id: str,
        *,
        reason: str = "",
        requested_by: str = "",
        force: bool = False,
        deadline: timedelta | None = None,
        expected_revision: int = 0,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> task_pb2.Task:
        """Ask for a task to be cancelled; its agent confirms (or `force` cancels at once).

        Args:
            deadline: How long the agent has to confirm before the server cancels the
                task by itself; None means the server's default (clamped to its bounds).
        """
        request = task_service_pb2.CancelTaskRequest(
            task_id=task_id,
            reason=reason,
            requested_by=requested_by,
            force=force,
            deadline=duration(deadline),
            expected_revision=expected_revision,
            request_id=request_id or _new_request_id(),
        )
        return (await self._call(self.stub.CancelTask, request, timeout)).task

    async def confirm_cancel(
        self,
        task_id: str,
        *,
        reason: str = "",
        expected_revision: int = 0,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> task_pb2.Task:
        request = task_service_pb2.ConfirmCancelRequest(
            task_id=task_id,
            reason=reason,
            expected_revision=expected_revision,
            request_id=request_id or _new_request_id(),
        )
        return (await self._call(self.stub.ConfirmCancel, request, timeout)).task

    async def heartbeat(self, task_id: str, *, timeout: float | None = None) -> LeaseRenewal:
        """Renew the task's lease (the agent is alive), and learn of a pending cancel request.

        It changes nothing else, so it is safe to repeat: it carries no request_id.
        """
        request = task_service_pb2.HeartbeatRequest(task_id=task_id)
        return LeaseRenewal.from_proto(await self._call(self.stub.Heartbeat, request, timeout))

    async def delete_task(
        self,
        task_id: str,
        *,
        expected_revision: int = 0,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> int:
        """Delete a task at rest; returns the revision of the deletion."""
        request = task_service_pb2.DeleteTaskRequest(
            task_id=task_id,
            expected_revision=expected_revision,
            request_id=request_id or _new_request_id(),
        )
        return (await self._call(self.stub.DeleteTask, request, timeout)).revision

    # -- reads --------------------------------------------------------------------

    async def get_task(self, task_id: str, *, timeout: float | None = None) -> task_pb2.Task:
        request = task_service_pb2.GetTaskRequest(task_id=task_id)
        return (await self._call(self.stub.GetTask, request, timeout)).task

    async def list_tasks(
        self,
        filter: task_service_pb2.TaskFilter | None = None,
        *,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> task_service_pb2.ListTasksResponse:
        request = task_service_pb2.ListTasksRequest(
            filter=filter, page_size=page_size, page_token=page_token
        )
        return await self._call(self.stub.ListTasks, request, timeout)

    async def list_all_tasks(
        self, filter: task_service_pb2.TaskFilter | None = None, *, page_size: int = 0
    ) -> list[task_pb2.Task]:
        """Every page of ListTasks, concatenated."""
        tasks: list[task_pb2.Task] = []
        token = ""
        while True:
            page = await self.list_tasks(filter, page_size=page_size, page_token=token)
            tasks.extend(page.tasks)
            token = page.next_page_token
            if not token:
                return tasks

    async def list_logs(
        self,
        task_id: str,
        *,
        min_level: log_pb2.LogLevel.ValueType = log_pb2.LOG_LEVEL_UNSPECIFIED,
        step_key: str = "",
        text: str = "",
        page_size: int = 0,
        page_token: str = "",
        newest_first: bool = False,
        timeout: float | None = None,
        **time_range: Any,
    ) -> task_service_pb2.ListLogsResponse:
        """One page of a task's log lines; `newest_first` starts from the last line.

        A `next_page_token` keeps the order it was issued for: pass the same
        `newest_first` (and filters) with it.
        """
        request = task_service_pb2.ListLogsRequest(
            task_id=task_id,
            min_level=min_level,
            step_key=step_key,
            text=text,
            page_size=page_size,
            page_token=page_token,
            newest_first=newest_first,
            **time_range,
        )
        return await self._call(self.stub.ListLogs, request, timeout)

    # -- stream -------------------------------------------------------------------

    async def subscribe(
        self,
        filter: task_service_pb2.TaskFilter | None = None,
        *,
        start_revision: int | None = None,
        include_logs: bool = False,
        end_at_rest: bool = False,
        heartbeat_interval: timedelta | None = None,
        on_compacted: task_service_pb2.CompactedPolicy.ValueType = (
            task_service_pb2.COMPACTED_POLICY_UNSPECIFIED
        ),
        slow_consumer: task_service_pb2.SlowConsumerPolicy.ValueType = (
            task_service_pb2.SLOW_CONSUMER_POLICY_UNSPECIFIED
        ),
    ) -> AsyncGenerator[event_pb2.Event, None]:
        """Every event of one Subscribe call, in order. Ends when the stream ends.

        This iterator does not reconnect: a broken stream raises, and the caller
        resumes by subscribing again with `start_revision` set to the revision
        of the last event it processed.
        """
        request = task_service_pb2.SubscribeRequest(
            filter=filter,
            start_revision=start_revision,
            include_logs=include_logs,
            end_at_rest=end_at_rest,
            heartbeat_interval=duration(heartbeat_interval),
            on_compacted=on_compacted,
            slow_consumer=slow_consumer,
        )
        call = self.stub.Subscribe(request, metadata=self.metadata)
        try:
            async for response in call:
                for event in response.events:
                    yield event
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from error
        finally:
            call.cancel()


def _new_request_id() -> str:
    return str(uuid.uuid4())


__all__ = ["DEFAULT_TARGET", "SERVER_ENV", "HeadwayClient", "default_target", "task_filter"]
