"""JSON to request messages and messages to JSON, with protobuf's canonical proto3 JSON.

Bodies are parsed with `json_format` (field names in lowerCamelCase or as in
the protos; an unknown field is an error), query parameters are first gathered
into the same JSON shape, so both go through one parser and one set of rules.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message
from multidict import MultiMapping

from headway.server.errors import FieldViolation, HeadwayError, Kind, invalid_argument
from headway.server.http.errors import malformed

M = TypeVar("M", bound=Message)

# Parameters that carry a secret are refused wherever they appear: URLs end up in logs.
SECRET_PARAMETERS = frozenset({"token", "access_token", "authorization"})


@dataclass(frozen=True, slots=True)
class Param:
    """Where one query parameter goes in the request's JSON: a path of field names.

    `repeated`: it may appear several times (a list); `label`: each value is
    `key:value`, gathered into a map; `prefix`: added to an enum value given
    without it (`state=RUNNING` is `TASK_STATE_RUNNING`); `boolean`: `true`,
    `false`, `1`, `0` (and a bare `?includeLogs`, true).
    """

    path: tuple[str, ...]
    repeated: bool = False
    label: bool = False
    prefix: str = ""
    boolean: bool = False


FILTER_PARAMS: Mapping[str, Param] = {
    "kind": Param(("filter", "kinds"), repeated=True),
    "state": Param(("filter", "states"), repeated=True, prefix="TASK_STATE_"),
    "label": Param(("filter", "labels"), label=True),
    "parent": Param(("filter", "parentId")),
    "taskId": Param(("filter", "taskIds"), repeated=True),
}


def to_json(message: Message) -> dict[str, Any]:
    """`message` in canonical proto3 JSON (lowerCamelCase, int64 as strings, enums by name)."""
    return json_format.MessageToDict(message)


def parse_body(body: bytes, message: M) -> M:
    """Merge a JSON object body into `message`; an empty body is `{}`."""
    name = message.DESCRIPTOR.full_name
    if not body.strip():
        return message
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise malformed(name, f"the body is not JSON ({error})") from None
    except RecursionError:
        raise malformed(name, "the body nests too deeply") from None
    if not isinstance(data, dict):
        raise malformed(name, "the body must be a JSON object")
    return parse_dict(data, message)


def parse_dict(data: dict[str, Any], message: M) -> M:
    try:
        json_format.ParseDict(data, message, ignore_unknown_fields=False)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as error:
        raise malformed(message.DESCRIPTOR.full_name, str(error)) from None
    return message


def query_json(query: MultiMapping[str], params: Mapping[str, Param]) -> dict[str, Any]:
    """The query parameters as the request's JSON; INVALID_ARGUMENT for unknown or misused ones."""
    data: dict[str, Any] = {}
    violations: list[FieldViolation] = []
    for name in dict.fromkeys(query.keys()):
        values = query.getall(name)
        param = params.get(name)
        if param is None:
            violations.append(FieldViolation(name, "unknown query parameter"))
            continue
        if not param.repeated and not param.label and len(values) > 1:
            violations.append(FieldViolation(name, "may appear only once"))
            continue
        node = data
        for part in param.path[:-1]:
            node = node.setdefault(part, {})
        leaf = param.path[-1]
        if param.label:
            labels = node.setdefault(leaf, {})
            for value in values:
                key, colon, label_value = value.partition(":")
                if not colon:
                    violations.append(FieldViolation(name, f"{value[:64]!r} is not key:value"))
                else:
                    labels[key] = label_value
        elif param.repeated:
            node[leaf] = [_enum(param, v) for v in values]
        else:
            node[leaf] = _enum(param, values[0])
    if violations:
        raise invalid_argument(violations)
    return data


def _enum(param: Param, value: str) -> str | bool:
    if param.boolean:
        return _BOOLEANS.get(value.lower(), value)
    if param.prefix and value and not value.startswith(param.prefix):
        return param.prefix + value.upper()
    return value


_BOOLEANS = {"": True, "true": True, "1": True, "false": False, "0": False}


def refuse_secrets_in_url(query: MultiMapping[str]) -> None:
    """A token in a URL is refused (it would land in access logs, history and Referer headers)."""
    found = sorted(SECRET_PARAMETERS.intersection(query.keys()))
    if found:
        raise HeadwayError(
            Kind.INVALID_ARGUMENT,
            "TOKEN_IN_URL",
            f"credentials are not accepted in URLs (query parameter {found[0]!r}); send "
            "'Authorization: Bearer <token>' or sign in with POST /v1/session",
            {"parameter": found[0]},
        )
