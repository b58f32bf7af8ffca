"""The route table of the unary RPCs over HTTP/JSON, and how each request message is built.

One table, one rule: the request message is the JSON body (POST, PATCH) or the
query parameters (GET, DELETE), plus the path parameters, which name fields of
the request (`{taskId}` is `task_id`). Then it goes through the same admission
and the same `TaskService` method as over gRPC.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from google.protobuf.message import Message
from multidict import MultiMapping

from headway.server.errors import FieldViolation, HeadwayError, invalid_argument
from headway.server.http.codec import FILTER_PARAMS, Param, parse_body, parse_dict, query_json
from headway.server.http.errors import method_not_allowed, route_not_found
from headway.v1 import task_service_pb2

LIST_TASKS_QUERY: Mapping[str, Param] = {
    **FILTER_PARAMS,
    "pageSize": Param(("pageSize",)),
    "pageToken": Param(("pageToken",)),
}
LIST_LOGS_QUERY: Mapping[str, Param] = {
    "minLevel": Param(("minLevel",), prefix="LOG_LEVEL_"),
    "stepKey": Param(("stepKey",)),
    "text": Param(("text",)),
    "startTime": Param(("startTime",)),
    "endTime": Param(("endTime",)),
    "pageSize": Param(("pageSize",)),
    "pageToken": Param(("pageToken",)),
    "newestFirst": Param(("newestFirst",), boolean=True),
}
DELETE_QUERY: Mapping[str, Param] = {
    "requestId": Param(("requestId",)),
    "expectedRevision": Param(("expectedRevision",)),
}
NO_QUERY: Mapping[str, Param] = {}


@dataclass(frozen=True)
class Route:
    """One HTTP method and path template for one RPC."""

    method: str
    template: str
    rpc: str
    body: bool = False
    query: Mapping[str, Param] = field(default_factory=dict)

    @property
    def request_type(self) -> type[Message]:
        descriptor = task_service_pb2.DESCRIPTOR.services_by_name["TaskService"]
        name = descriptor.methods_by_name[self.rpc].input_type.name
        message_type: type[Message] = getattr(task_service_pb2, name)
        return message_type

    @property
    def pattern(self) -> re.Pattern[str]:
        parts = re.split(r"\{(\w+)\}", self.template)
        regex = "".join(
            re.escape(part) if i % 2 == 0 else f"(?P<{part}>[^/:]+)" for i, part in enumerate(parts)
        )
        return re.compile(f"^{regex}$")

    def build(
        self, path_params: Mapping[str, str], body: bytes, query: MultiMapping[str]
    ) -> Message:
        """The request message, or INVALID_ARGUMENT (MALFORMED_REQUEST for unparsable JSON)."""
        message = self.request_type()
        data: dict[str, Any] = query_json(query, self.query)
        if data:
            parse_dict(data, message)
        if self.body:
            parse_body(body, message)
        violations = []
        by_json_name = {f.json_name: f for f in message.DESCRIPTOR.fields}
        for name, value in path_params.items():
            target = by_json_name[name]
            given = getattr(message, target.name)
            if given and given != value:
                violations.append(FieldViolation(target.name, "differs from the one in the path"))
            setattr(message, target.name, value)
        if violations:
            raise invalid_argument(violations)
        return message


ROUTES: tuple[Route, ...] = (
    Route("POST", "/v1/tasks", "CreateTask", body=True),
    Route("GET", "/v1/tasks", "ListTasks", query=LIST_TASKS_QUERY),
    Route("GET", "/v1/tasks/{taskId}", "GetTask"),
    Route("PATCH", "/v1/tasks/{taskId}", "UpdateTask", body=True),
    Route("DELETE", "/v1/tasks/{taskId}", "DeleteTask", query=DELETE_QUERY),
    Route("POST", "/v1/tasks/{taskId}:start", "StartTask", body=True),
    Route("POST", "/v1/tasks/{taskId}:succeed", "SucceedTask", body=True),
    Route("POST", "/v1/tasks/{taskId}:fail", "FailTask", body=True),
    Route("POST", "/v1/tasks/{taskId}:cancel", "CancelTask", body=True),
    Route("POST", "/v1/tasks/{taskId}:confirmCancel", "ConfirmCancel", body=True),
    Route("POST", "/v1/tasks/{taskId}:heartbeat", "Heartbeat", body=True),
    Route("POST", "/v1/tasks/{taskId}/steps", "AddSteps", body=True),
    Route("PATCH", "/v1/tasks/{taskId}/steps/{stepKey}", "UpdateStep", body=True),
    Route("POST", "/v1/tasks/{taskId}/logs", "AppendLogs", body=True),
    Route("GET", "/v1/tasks/{taskId}/logs", "ListLogs", query=LIST_LOGS_QUERY),
    Route("POST", "/v1/tasks/{taskId}/artifacts", "AddArtifacts", body=True),
    Route("POST", "/v1/readTokens", "CreateReadToken", body=True),
)


class RouteTable:
    """Finds the route of a request: NOT_FOUND for an unknown path, 405 for a wrong method."""

    def __init__(self, routes: tuple[Route, ...] = ROUTES) -> None:
        self._routes = [(route, route.pattern) for route in routes]

    def match(self, method: str, raw_path: str) -> tuple[Route, dict[str, str]]:
        """The route and its decoded path parameters; HeadwayError when there is none."""
        allowed: list[str] = []
        lookup = "GET" if method == "HEAD" else method
        for route, pattern in self._routes:
            found = pattern.match(raw_path)
            if found is None:
                continue
            if route.method == lookup:
                return route, {k: unquote(v) for k, v in found.groupdict().items()}
            allowed.append(route.method)
        if allowed:
            raise MethodNotAllowedError(method_not_allowed(method, raw_path, allowed), allowed)
        raise route_not_found(method, raw_path)


class MethodNotAllowedError(Exception):
    """A known path with another method: answered 405 with an Allow header."""

    def __init__(self, error: HeadwayError, allowed: list[str]) -> None:
        super().__init__(str(error))
        self.error = error
        self.allowed = allowed
