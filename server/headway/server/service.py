"""The gRPC face of TaskService: validate, hand to the engine, convert the answer.

No state, no SQL, no fan-out here. Each handler checks its request, picks its
change as a pure function of the task (see `mutations` and `domain`), and lets
the engine apply it. Errors become statuses in one place, `_guarded`, through
`status.to_rpc_status`; that guard also refuses unparseable requests and times
out of range for every RPC, and hides unexpected failures behind INTERNAL.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from headway.server import domain, mutations, paging, validation
from headway.server.auth.context import bind, current_principal
from headway.server.auth.credentials import Authenticator, Credentials, OpenAuthenticator
from headway.server.auth.principal import Principal, Scope, authorize
from headway.server.config import Settings
from headway.server.durations import clamp_duration
from headway.server.engine import Actor, Apply, Engine, Outcome
from headway.server.errors import HeadwayError, Kind, internal_error, malformed_request
from headway.server.hub import Hub
from headway.server.observe import CallRecorder, observed
from headway.server.quotas import RateLimiter, StreamQuota, TaskQuota
from headway.server.status import to_rpc_status
from headway.server.store.base import LogQuery
from headway.server.stream import Subscription
from headway.server.visibility import Visibility
from headway.v1 import log_pb2, task_pb2, task_service_pb2

if TYPE_CHECKING:
    # Only a server with authentication has read tokens; see auth.factory for why lazily.
    from headway.server.auth.read_tokens import ReadTokens

logger = logging.getLogger(__name__)

SERVICE_NAME = "headway.v1.TaskService"

Request = TypeVar("Request", bound=Message)
Context = grpc.aio.ServicerContext[Any, Any]


def tenant_of(context: Context) -> str:
    """The tenant a call acts for: its principal's, bound by the guard."""
    del context
    return current_principal().tenant


def caller_of(context: Context) -> Principal:
    """The principal of the call, bound by the guard; mutations are handed it explicitly."""
    del context
    return current_principal()


def visibility_of(context: Context) -> Visibility:
    """What the call's principal may read: its tenant, narrowed to its scope if it has one."""
    return Visibility.of(caller_of(context))


def credentials_of(context: Context) -> Credentials:
    """What a gRPC call presents: its authorization header and, under mTLS, its certificate."""
    metadata = {key: value for key, value in context.invocation_metadata() or ()}
    names = list(context.auth_context().get("x509_common_name", ()))
    peer = names[0].decode(errors="replace") if names else None
    authorization = metadata.get("authorization")
    tenant = metadata.get("x-headway-tenant")
    return Credentials(
        authorization=authorization if isinstance(authorization, str) else None,
        peer=peer,
        tenant=tenant if isinstance(tenant, str) else None,
    )


class MalformedRequest:
    """Stands in for a request whose bytes did not parse (for example invalid UTF-8).

    gRPC would answer a deserializer's exception with a bare INTERNAL or UNKNOWN;
    handing this to the guard instead gives the client an INVALID_ARGUMENT with
    its ErrorInfo, like every other error.
    """

    def __init__(self, message_type: str) -> None:
        self.message_type = message_type


class TaskService:
    """Implements every RPC of headway.v1.TaskService."""

    def __init__(
        self, engine: Engine, hub: Hub, settings: Settings, *, read_tokens: ReadTokens | None = None
    ) -> None:
        self._engine = engine
        self._hub = hub
        self._settings = settings
        self._limits = settings.limits
        # None when authentication is off: then there is nothing to mint read tokens for.
        self._read_tokens = read_tokens
        self._task_quota = TaskQuota(
            stored=settings.quota_stored_tasks, active=settings.quota_active_tasks
        )
        self._rate = RateLimiter(
            settings.quota_mutation_rate, settings.quota_mutation_burst, clock=engine.now_ns
        )
        self._streams = StreamQuota(settings.quota_subscriptions)

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def hub(self) -> Hub:
        return self._hub

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def streams(self) -> StreamQuota:
        """Open change streams per tenant, counted across transports (gRPC and HTTP)."""
        return self._streams

    # -- mutations ----------------------------------------------------------------

    async def _mutate(
        self,
        context: Context,
        method: str,
        request: Message,
        task_id: str,
        apply: Apply,
        *,
        request_id: str,
        expected_revision: int = 0,
        actor: Actor = Actor.AGENT,
    ) -> Outcome:
        tenant = tenant_of(context)
        # Before the mutation is queued: a tenant over its rate costs the engine nothing.
        self._rate.take(tenant)
        return await self._engine.mutate(
            tenant=tenant,
            task_id=task_id,
            method=method,
            actor=actor,
            request=request,
            apply=apply,
            request_id=request_id,
            expected_revision=expected_revision,
        )

    async def CreateTask(
        self, request: task_service_pb2.CreateTaskRequest, context: Context
    ) -> task_service_pb2.CreateTaskResponse:
        validation.check_create(request, self._limits)
        task_id = request.task_id or str(uuid.uuid4())
        lease = clamp_duration(
            request.lease_duration,
            default=self._settings.lease_default,
            low=self._settings.lease_min,
            high=self._settings.lease_max,
        )
        apply = mutations.create(request, task_id, lease, caller_of(context), self._task_quota)
        outcome = await self._mutate(
            context, "CreateTask", request, task_id, apply, request_id=request.request_id
        )
        return task_service_pb2.CreateTaskResponse(task=outcome.task)

    async def StartTask(
        self, request: task_service_pb2.StartTaskRequest, context: Context
    ) -> task_service_pb2.StartTaskResponse:
        validation.check_start(request)
        outcome = await self._update(
            context, "StartTask", request, domain.start_task, request.expected_revision
        )
        return task_service_pb2.StartTaskResponse(task=outcome.task)

    async def AddSteps(
        self, request: task_service_pb2.AddStepsRequest, context: Context
    ) -> task_service_pb2.AddStepsResponse:
        validation.check_add_steps(request, self._limits)
        outcome = await self._update(
            context,
            "AddSteps",
            request,
            lambda task, now: domain.add_steps(task, request.steps, now, self._limits),
            request.expected_revision,
        )
        return task_service_pb2.AddStepsResponse(task=outcome.task)

    async def UpdateStep(
        self, request: task_service_pb2.UpdateStepRequest, context: Context
    ) -> task_service_pb2.UpdateStepResponse:
        validation.check_update_step(request)
        outcome = await self._update(
            context,
            "UpdateStep",
            request,
            lambda task, now: domain.update_step(task, request, now),
            request.expected_revision,
        )
        return task_service_pb2.UpdateStepResponse(task=outcome.task)

    async def UpdateTask(
        self, request: task_service_pb2.UpdateTaskRequest, context: Context
    ) -> task_service_pb2.UpdateTaskResponse:
        validation.check_update_task(request, self._limits)
        outcome = await self._update(
            context,
            "UpdateTask",
            request,
            lambda task, now: domain.update_task(task, request, now, self._limits),
            request.expected_revision,
        )
        return task_service_pb2.UpdateTaskResponse(task=outcome.task)

    async def AppendLogs(
        self, request: task_service_pb2.AppendLogsRequest, context: Context
    ) -> task_service_pb2.AppendLogsResponse:
        validation.check_append_logs(request, self._limits)
        apply = mutations.append_logs(request, caller_of(context))
        outcome = await self._mutate(
            context, "AppendLogs", request, request.task_id, apply, request_id=request.request_id
        )
        response = task_service_pb2.AppendLogsResponse(revision=outcome.revision)
        if outcome.task.HasField("cancel_request"):
            response.cancel_request.CopyFrom(outcome.task.cancel_request)
        return response

    async def AddArtifacts(
        self, request: task_service_pb2.AddArtifactsRequest, context: Context
    ) -> task_service_pb2.AddArtifactsResponse:
        validation.check_add_artifacts(request, self._limits)
        outcome = await self._update(
            context,
            "AddArtifacts",
            request,
            lambda task, now: domain.add_artifacts(task, request.artifacts, now, self._limits),
            request.expected_revision,
        )
        return task_service_pb2.AddArtifactsResponse(task=outcome.task)

    async def SucceedTask(
        self, request: task_service_pb2.SucceedTaskRequest, context: Context
    ) -> task_service_pb2.SucceedTaskResponse:
        validation.check_succeed(request)
        message = request.message if request.HasField("message") else None
        outcome = await self._update(
            context,
            "SucceedTask",
            request,
            lambda task, now: domain.succeed_task(task, message, now),
            request.expected_revision,
        )
        return task_service_pb2.SucceedTaskResponse(task=outcome.task)

    async def FailTask(
        self, request: task_service_pb2.FailTaskRequest, context: Context
    ) -> task_service_pb2.FailTaskResponse:
        validation.check_fail(request)
        outcome = await self._update(
            context,
            "FailTask",
            request,
            lambda task, now: domain.fail_task(task, request.error, now),
            request.expected_revision,
        )
        return task_service_pb2.FailTaskResponse(task=outcome.task)

    async def CancelTask(
        self, request: task_service_pb2.CancelTaskRequest, context: Context
    ) -> task_service_pb2.CancelTaskResponse:
        validation.check_cancel(request)
        deadline = clamp_duration(
            request.deadline,
            default=self._settings.cancel_deadline_default,
            low=timedelta(0),
            high=self._settings.cancel_deadline_max,
        )
        apply = mutations.cancel(request, deadline, caller_of(context))
        outcome = await self._mutate(
            context,
            "CancelTask",
            request,
            request.task_id,
            apply,
            request_id=request.request_id,
            expected_revision=request.expected_revision,
            actor=Actor.VIEWER,
        )
        return task_service_pb2.CancelTaskResponse(task=outcome.task)

    async def ConfirmCancel(
        self, request: task_service_pb2.ConfirmCancelRequest, context: Context
    ) -> task_service_pb2.ConfirmCancelResponse:
        validation.check_confirm_cancel(request)
        apply = mutations.confirm_cancel(request, caller_of(context))
        outcome = await self._mutate(
            context,
            "ConfirmCancel",
            request,
            request.task_id,
            apply,
            request_id=request.request_id,
            expected_revision=request.expected_revision,
        )
        return task_service_pb2.ConfirmCancelResponse(task=outcome.task)

    async def Heartbeat(
        self, request: task_service_pb2.HeartbeatRequest, context: Context
    ) -> task_service_pb2.HeartbeatResponse:
        validation.check_heartbeat(request)
        apply = mutations.heartbeat(request.task_id, caller_of(context))
        outcome = await self._mutate(
            context, "Heartbeat", request, request.task_id, apply, request_id=""
        )
        response = task_service_pb2.HeartbeatResponse(revision=outcome.task.revision)
        response.lease_expire_time.FromNanoseconds(outcome.lease_expire_ns)
        if outcome.task.HasField("cancel_request"):
            response.cancel_request.CopyFrom(outcome.task.cancel_request)
        return response

    async def DeleteTask(
        self, request: task_service_pb2.DeleteTaskRequest, context: Context
    ) -> task_service_pb2.DeleteTaskResponse:
        validation.check_delete(request)
        apply = mutations.delete(request.task_id)
        outcome = await self._mutate(
            context,
            "DeleteTask",
            request,
            request.task_id,
            apply,
            request_id=request.request_id,
            expected_revision=request.expected_revision,
            actor=Actor.VIEWER,
        )
        return task_service_pb2.DeleteTaskResponse(revision=outcome.revision)

    async def _update(
        self,
        context: Context,
        method: str,
        request: Any,
        change: Callable[[task_pb2.Task, Any], None],
        expected_revision: int,
    ) -> Outcome:
        """A mutation of an existing task that changes it in place (the common shape)."""
        return await self._mutate(
            context,
            method,
            request,
            request.task_id,
            mutations.update(request.task_id, change, caller_of(context)),
            request_id=request.request_id,
            expected_revision=expected_revision,
        )

    # -- reads --------------------------------------------------------------------

    async def GetTask(
        self, request: task_service_pb2.GetTaskRequest, context: Context
    ) -> task_service_pb2.GetTaskResponse:
        validation.check_get(request)
        task = visibility_of(context).task(self._engine, request.task_id)
        return task_service_pb2.GetTaskResponse(task=task)

    async def ListTasks(
        self, request: task_service_pb2.ListTasksRequest, context: Context
    ) -> task_service_pb2.ListTasksResponse:
        v = validation.Violations()
        validation.check_filter(v, "filter", request.filter, self._limits)
        page_size = v.page(request.page_size, self._limits)
        v.raise_if_any()
        digest = paging.query_digest("ListTasks", request.filter)
        position = paging.decode(request.page_token, digest, 1)
        after = position[0] if position else 0
        visibility = visibility_of(context)
        task_filter = visibility.filter(request.filter)
        response = task_service_pb2.ListTasksResponse(
            revision=self._engine.head(tenant_of(context))
        )
        # A page ends at page_size tasks or at about max_response_bytes, whichever
        # comes first, so no task (each within max_task_bytes) can make it fail.
        size = 0
        for task in self._engine.tasks_after(visibility.tenant, after):
            if not task_filter.matches_task(task):
                continue
            task_size = task.ByteSize()
            full = size + task_size > self._limits.max_response_bytes
            if response.tasks and (len(response.tasks) == page_size or full):
                last = response.tasks[-1].create_revision
                response.next_page_token = paging.encode([last], digest)
                break
            response.tasks.append(task)
            size += task_size
        return response

    async def ListLogs(
        self, request: task_service_pb2.ListLogsRequest, context: Context
    ) -> task_service_pb2.ListLogsResponse:
        page_size = validation.check_list_logs(request, self._limits)
        visibility = visibility_of(context)
        tenant = visibility.tenant
        visibility.task(self._engine, request.task_id)
        scope = task_service_pb2.ListLogsRequest()
        scope.CopyFrom(request)
        scope.ClearField("page_size")
        scope.ClearField("page_token")
        digest = paging.query_digest("ListLogs", scope)
        position = paging.decode(request.page_token, digest, 2)
        query = LogQuery(
            tenant=tenant,
            task_id=request.task_id,
            min_level=request.min_level,
            step_key=request.step_key,
            text=request.text,
            start_ns=request.start_time.ToNanoseconds() if request.HasField("start_time") else None,
            end_ns=request.end_time.ToNanoseconds() if request.HasField("end_time") else None,
            after=(position[0], position[1]) if position else None,
            limit=page_size + 1,
            newest_first=request.newest_first,
        )
        rows = await self._engine.store.list_logs(query)
        response = task_service_pb2.ListLogsResponse(
            entries=[log_pb2.LogEntry.FromString(data) for data in rows[:page_size]]
        )
        if len(rows) > page_size:
            last = response.entries[-1]
            response.next_page_token = paging.encode([last.revision, last.index], digest)
        return response

    async def CreateReadToken(
        self, request: task_service_pb2.CreateReadTokenRequest, context: Context
    ) -> task_service_pb2.CreateReadTokenResponse:
        v = validation.Violations()
        if bool(request.task_id) == bool(request.labels):
            v.add("task_id", "set exactly one of task_id and labels")
        elif request.task_id:
            v.task_id("task_id", request.task_id)
        else:
            v.labels("labels", request.labels, self._limits)
        v.raise_if_any()
        principal = current_principal()
        if principal.scope is not None:
            raise HeadwayError(
                Kind.PERMISSION_DENIED,
                "SCOPED_TOKEN",
                "a read token cannot mint another; ask whoever gave it to you",
            )
        if self._read_tokens is None:
            raise HeadwayError(
                Kind.FAILED_PRECONDITION,
                "AUTHENTICATION_OFF",
                "the server runs without authentication, so every caller is already an "
                "admin: there is nothing to mint a read token for",
            )
        if request.task_id:
            self._engine.get(principal.tenant, request.task_id)  # NOT_FOUND if not the tenant's
            scope = Scope(task_ids=frozenset({request.task_id}))
        else:
            scope = Scope(labels=tuple(sorted(request.labels.items())))
        from headway.server.auth.read_tokens import DEFAULT_TTL  # loaded with `_read_tokens`

        ttl = clamp_duration(
            request.ttl,
            default=DEFAULT_TTL,
            low=timedelta(seconds=1),
            high=self._settings.auth_read_token_max_ttl,
        )
        minted = self._read_tokens.mint(principal, scope, ttl)
        response = task_service_pb2.CreateReadTokenResponse(token=minted.token)
        response.expire_time.FromNanoseconds(minted.expire_ns)
        return response

    # -- stream -------------------------------------------------------------------

    async def Subscribe(self, request: task_service_pb2.SubscribeRequest, context: Context) -> None:
        visibility = visibility_of(context)
        subscription = Subscription(
            self._engine,
            self._hub,
            self._settings,
            visibility.tenant,
            request,
            visibility=visibility,
            streams=self._streams,
        )
        await subscription.serve(context)


# -- registration -----------------------------------------------------------------


def _guarded(
    handler: Callable[[Any, Context], Awaitable[Any]],
    authenticator: Authenticator,
) -> Callable[[Any, Context], Awaitable[Any]]:
    """Every RPC's one way in and one way out on failure: a status with ErrorInfo.

    Before the handler runs, the caller is authenticated (UNAUTHENTICATED) and
    bound as the call's principal, an unparseable request is refused
    (MALFORMED_REQUEST), the principal's role is checked for the RPC
    (PERMISSION_DENIED), and so is any Timestamp or Duration the server cannot
    store, whatever the request type: checking here means no RPC, present or
    future, can forget any of it.
    A `HeadwayError` becomes its status; anything else is a bug, logged with its
    traceback and answered with a plain INTERNAL so no Python detail leaks.
    """
    name = getattr(handler, "__name__", "handler")

    async def guarded(request: Any, context: Context) -> Any:
        try:
            admit(authenticator, credentials_of(context), name, request)
            return await handler(request, context)
        except HeadwayError as error:
            status = to_rpc_status(error)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception:
            logger.exception("%s failed unexpectedly", name)
            status = to_rpc_status(internal_error())
        await context.abort(status.code, status.details, status.trailing_metadata)

    guarded.__name__ = name
    return guarded


def admit(
    authenticator: Authenticator,
    credentials: Credentials,
    method: str,
    request: Message | MalformedRequest,
) -> Principal:
    """Everything a call must pass before its handler runs, for any transport.

    Authenticates the caller and binds it as the call's principal, refuses an
    unparseable request, checks the principal's permission for `method`, and
    refuses any Timestamp or Duration the server cannot store. Raises
    `HeadwayError`; the transport turns it into its own status.
    """
    principal = authenticator.authenticate(credentials)
    bind(principal, lambda: authenticator.authenticate(credentials))
    if isinstance(request, MalformedRequest):
        raise malformed_request(request.message_type)
    authorize(principal, method)
    validation.check_times(request)
    return principal


def _deserializer(message_type: type[Message]) -> Callable[[bytes], Message | MalformedRequest]:
    full_name = message_type.DESCRIPTOR.full_name

    def deserialize(data: bytes) -> Message | MalformedRequest:
        try:
            return message_type.FromString(data)
        except DecodeError:
            return MalformedRequest(full_name)

    return deserialize


def _identity(data: bytes) -> bytes:
    # Subscribe handlers write pre-encoded SubscribeResponse bytes (see hub.frame).
    return data


def handlers(
    service: TaskService,
    authenticator: Authenticator | None = None,
    recorder: CallRecorder | None = None,
) -> grpc.GenericRpcHandler[Any, Any]:
    """Method handlers for every RPC of the service descriptor.

    Built from the descriptor rather than the generated `add_..._to_server` so
    that Subscribe can write pre-encoded bytes, and so that every handler gets
    the same error guard and lenient request parsing. Each runs `observed`
    (request id for its logs; its outcome to `recorder`, the metrics, if any).
    """
    descriptor = task_service_pb2.DESCRIPTOR.services_by_name["TaskService"]
    methods: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in descriptor.methods:
        request_type: type[Message] = getattr(task_service_pb2, method.input_type.name)
        response_type: type[Message] = getattr(task_service_pb2, method.output_type.name)
        guarded = _guarded(getattr(service, method.name), authenticator or OpenAuthenticator())
        handler = observed(method.name, guarded, recorder)
        if method.server_streaming:
            methods[method.name] = grpc.unary_stream_rpc_method_handler(
                handler,
                request_deserializer=_deserializer(request_type),
                response_serializer=_identity,
            )
        else:
            methods[method.name] = grpc.unary_unary_rpc_method_handler(
                handler,
                request_deserializer=_deserializer(request_type),
                response_serializer=response_type.SerializeToString,
            )
    return grpc.method_handlers_generic_handler(SERVICE_NAME, methods)
