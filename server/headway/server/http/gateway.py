"""What every HTTP handler needs: the service, the authenticator, the sessions; and admission.

`call` runs one unary RPC for a matched route; `subscription` admits a change
feed (Server-Sent Events or a long poll) exactly as a gRPC Subscribe is: same
permission, same request check (`stream.check_subscribe`), same visibility.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from google.protobuf.message import Message
from multidict import MultiMapping

from headway.server.auth.credentials import Authenticator
from headway.server.auth.principal import Principal
from headway.server.config import Settings
from headway.server.errors import HeadwayError
from headway.server.feed import ChangeFeed, FeedRequest
from headway.server.http.codec import Param, parse_dict, query_json
from headway.server.http.routes import Route
from headway.server.http.sessions import Caller, SessionStore, caller_of
from headway.server.service import MalformedRequest, TaskService, admit
from headway.server.stream import check_subscribe, heartbeat_interval
from headway.server.visibility import Visibility
from headway.v1 import task_service_pb2

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Admitted:
    """A change feed the caller may open: its tenant, the checked request, its heartbeat."""

    tenant: str
    feed_request: FeedRequest
    heartbeat: float


class Gateway:
    def __init__(
        self, service: TaskService, authenticator: Authenticator, sessions: SessionStore
    ) -> None:
        self.service = service
        self.authenticator = authenticator
        self.sessions = sessions

    @property
    def settings(self) -> Settings:
        return self.service.settings

    def caller(self, request: web.Request) -> Caller:
        return caller_of(request, self.sessions)

    def admit(
        self, request: web.Request, method: str, build: Callable[[], Message]
    ) -> tuple[Caller, Message, Principal]:
        """Authenticate, then build the request message (`build()`), then the rest of `admit`.

        The caller is authenticated before anything it sent is judged, as over
        gRPC: an unknown caller learns only that it is unknown.
        """
        caller = self.caller(request)
        refused: HeadwayError | None = None
        message: Message | MalformedRequest
        try:
            message = build()
        except HeadwayError as error:
            refused = error
            message = MalformedRequest(method)
        try:
            principal = admit(self.authenticator, caller.credentials, method, message)
        except HeadwayError as error:
            if refused is not None and error.reason == "MALFORMED_REQUEST":
                raise refused from None
            raise
        assert isinstance(message, Message)
        return caller, message, principal

    async def call(
        self,
        request: web.Request,
        route: Route,
        path_params: Mapping[str, str],
        body: bytes,
    ) -> Message:
        """One unary RPC: admission, then the same TaskService method as over gRPC."""
        _, message, _ = self.admit(
            request, route.rpc, lambda: route.build(path_params, body, request.query)
        )
        handler = getattr(self.service, route.rpc)
        response: Message = await handler(message, None)
        return response

    def subscription(
        self,
        request: web.Request,
        query: MultiMapping[str],
        params: Mapping[str, Param],
        defaults: Mapping[str, Any],
    ) -> Admitted:
        """Admit a change feed described by query parameters, as Subscribe would be."""

        def build() -> Message:
            data = {**defaults, **query_json(query, params)}
            return parse_dict(data, task_service_pb2.SubscribeRequest())

        _, message, principal = self.admit(request, "Subscribe", build)
        assert isinstance(message, task_service_pb2.SubscribeRequest)
        visibility = Visibility.of(principal)
        return Admitted(
            visibility.tenant,
            check_subscribe(message, self.settings, visibility),
            heartbeat_interval(message, self.settings),
        )

    def feed(self, admitted: Admitted) -> ChangeFeed:
        return ChangeFeed(
            self.service.engine,
            self.service.hub,
            admitted.tenant,
            admitted.feed_request,
            max_batch_bytes=self.settings.limits.max_response_bytes,
        )
