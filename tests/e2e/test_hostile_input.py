"""Hostile or nonsensical input gets a precise INVALID_ARGUMENT and changes nothing.

Each case is a request a careless or malicious client can send: times the
server cannot store, durations beyond any sane bound, edited page tokens, bytes
that do not parse. None may reach the client as UNKNOWN or INTERNAL (which
would leak Python internals and tell the client nothing it can act on), and
none may change a task, add a log line or move the store's revision.

Requests go through the generated stub (or a raw channel) rather than the
client's helpers, so the exact hostile message reaches the server.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from headway.client import HeadwayClient, HeadwayError
from headway.client.errors import from_rpc_error
from headway.server import app, service
from headway.v1 import log_pb2, task_pb2, task_service_pb2
from tests.harness import ServerHarness

# Seconds since the epoch of a few instants at and around the accepted range,
# [1678-01-01T00:00:00Z, 2262-01-01T00:00:00Z).
YEAR_1 = -62_135_596_800  # 0001-01-01, the smallest Timestamp protobuf allows
YEAR_9999 = 253_402_300_799  # 9999-12-31T23:59:59, the largest
RANGE_START = -9_214_560_000  # 1678-01-01T00:00:00Z
RANGE_END = 9_214_646_400  # 2262-01-01T00:00:00Z (excluded)
MAX_DURATION = 315_576_000  # 10 Julian years, the longest duration the server accepts

Call = Callable[[], Awaitable[Any]]


async def observe(client: HeadwayClient, task_id: str) -> tuple[Any, ...]:
    """Everything a rejected call must leave as it was: the task, its logs, the revision."""
    listing = await client.list_tasks(page_size=1000)
    task = await client.get_task(task_id)
    logs = list((await client.list_logs(task_id, page_size=1000)).entries)
    return listing.revision, list(listing.tasks), task, logs


async def refused(client: HeadwayClient, call: Call, task_id: str = "t") -> HeadwayError:
    """Run `call`, expect INVALID_ARGUMENT with ErrorInfo, and check that nothing changed."""
    before = await observe(client, task_id)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call()
    error = from_rpc_error(info.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT, (error.code, str(error))
    assert "Error" not in str(error), "a Python exception leaked to the client"
    assert await observe(client, task_id) == before
    return error


def violation(error: HeadwayError, field: str) -> None:
    assert error.reason == "FIELD_VIOLATION", error.reason
    assert field in error.field_violations, error.field_violations
    assert error.field_violations[field]


@pytest.fixture
async def task(client: HeadwayClient) -> task_pb2.Task:
    """A running task with a step and three log lines, for calls to aim at."""
    await client.create_task("t", steps=["a"], start=True)
    await client.append_logs("t", ["one", "two", "three"])
    return await client.get_task("t")


# -- timestamps -----------------------------------------------------------------------

BAD_TIMES = {
    "year-9999": Timestamp(seconds=YEAR_9999),
    "year-1": Timestamp(seconds=YEAR_1),
    "negative-nanos": Timestamp(seconds=1_700_000_000, nanos=-1),
    "nanos-overflow": Timestamp(seconds=1_700_000_000, nanos=1_000_000_000),
    "range-end": Timestamp(seconds=RANGE_END),
    "just-before-range": Timestamp(seconds=RANGE_START - 1, nanos=999_999_999),
}


@pytest.mark.parametrize("field", ["start_time", "end_time"])
@pytest.mark.parametrize("when", BAD_TIMES.values(), ids=BAD_TIMES.keys())
async def test_list_logs_time_out_of_range(
    client: HeadwayClient, task: task_pb2.Task, field: str, when: Timestamp
) -> None:
    del task
    request = task_service_pb2.ListLogsRequest(task_id="t", **{field: when})
    error = await refused(client, lambda: client.stub.ListLogs(request))
    violation(error, field)


async def test_list_logs_accepts_the_edges_of_the_range(
    client: HeadwayClient, task: task_pb2.Task
) -> None:
    """The accepted range is inclusive at the start and excludes its end."""
    del task
    request = task_service_pb2.ListLogsRequest(
        task_id="t",
        start_time=Timestamp(seconds=RANGE_START),
        end_time=Timestamp(seconds=RANGE_END - 1, nanos=999_999_999),
    )
    response = await client.stub.ListLogs(request)
    assert [entry.message for entry in response.entries] == ["one", "two", "three"]


@pytest.mark.parametrize("when", BAD_TIMES.values(), ids=BAD_TIMES.keys())
async def test_append_logs_time_out_of_range(
    client: HeadwayClient, task: task_pb2.Task, when: Timestamp
) -> None:
    del task
    request = task_service_pb2.AppendLogsRequest(
        task_id="t",
        entries=[
            log_pb2.LogEntry(message="fine"),
            log_pb2.LogEntry(message="fine too", time=Timestamp(seconds=1_700_000_000)),
            log_pb2.LogEntry(message="hostile", time=when),
        ],
    )
    error = await refused(client, lambda: client.stub.AppendLogs(request))
    violation(error, "entries[2].time")
    assert set(error.field_violations) == {"entries[2].time"}


async def test_every_bad_log_time_is_named(client: HeadwayClient, task: task_pb2.Task) -> None:
    del task
    request = task_service_pb2.AppendLogsRequest(
        task_id="t",
        entries=[
            log_pb2.LogEntry(message=f"m{i}", time=when)
            for i, when in enumerate(BAD_TIMES.values())
        ],
    )
    error = await refused(client, lambda: client.stub.AppendLogs(request))
    assert set(error.field_violations) == {f"entries[{i}].time" for i in range(len(BAD_TIMES))}


async def test_artifact_create_time_out_of_range(
    client: HeadwayClient, task: task_pb2.Task
) -> None:
    """Output-only fields are ignored when valid, but a malformed one is still refused."""
    del task
    request = task_service_pb2.AddArtifactsRequest(
        task_id="t",
        artifacts=[task_pb2.Artifact(name="x", create_time=Timestamp(nanos=-1))],
    )
    error = await refused(client, lambda: client.stub.AddArtifacts(request))
    violation(error, "artifacts[0].create_time")


# -- durations ------------------------------------------------------------------------

BAD_DURATIONS = {
    "10e12-seconds": Duration(seconds=10**12),
    "beyond-protobuf": Duration(seconds=315_576_000_001),
    "beyond-server": Duration(seconds=MAX_DURATION, nanos=1),
    "nanos-overflow": Duration(seconds=1, nanos=1_000_000_000),
    "mixed-signs": Duration(seconds=1, nanos=-1),
    "negative": Duration(seconds=-1),
    "huge-negative": Duration(seconds=-(10**15)),
}


@pytest.mark.parametrize("value", BAD_DURATIONS.values(), ids=BAD_DURATIONS.keys())
async def test_create_task_lease_out_of_range(
    client: HeadwayClient, task: task_pb2.Task, value: Duration
) -> None:
    del task
    request = task_service_pb2.CreateTaskRequest(task_id="n", lease_duration=value)
    error = await refused(client, lambda: client.stub.CreateTask(request))
    violation(error, "lease_duration")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.stub.GetTask(task_service_pb2.GetTaskRequest(task_id="n"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("value", BAD_DURATIONS.values(), ids=BAD_DURATIONS.keys())
async def test_cancel_deadline_out_of_range(
    client: HeadwayClient, task: task_pb2.Task, value: Duration
) -> None:
    request = task_service_pb2.CancelTaskRequest(
        task_id="t", deadline=value, expected_revision=task.revision
    )
    error = await refused(client, lambda: client.stub.CancelTask(request))
    violation(error, "deadline")
    assert not (await client.get_task("t")).HasField("cancel_request")


@pytest.mark.parametrize("value", BAD_DURATIONS.values(), ids=BAD_DURATIONS.keys())
async def test_step_expected_duration_out_of_range(
    client: HeadwayClient, task: task_pb2.Task, value: Duration
) -> None:
    del task
    spec = task_service_pb2.StepSpec(key="b", expected_duration=value)
    add = task_service_pb2.AddStepsRequest(task_id="t", steps=[spec])
    error = await refused(client, lambda: client.stub.AddSteps(add))
    violation(error, "steps[0].expected_duration")
    create = task_service_pb2.CreateTaskRequest(
        task_id="n", steps=[task_service_pb2.StepSpec(key="a"), spec]
    )
    error = await refused(client, lambda: client.stub.CreateTask(create))
    violation(error, "steps[1].expected_duration")


async def test_longest_durations_are_accepted(client: HeadwayClient, task: task_pb2.Task) -> None:
    del task
    longest = Duration(seconds=MAX_DURATION)
    spec = task_service_pb2.StepSpec(key="b", expected_duration=longest)
    await client.stub.AddSteps(task_service_pb2.AddStepsRequest(task_id="t", steps=[spec]))
    created = await client.stub.CreateTask(
        task_service_pb2.CreateTaskRequest(task_id="n", lease_duration=longest)
    )
    # Clamped to the server's bound, as documented.
    assert created.task.lease_duration.ToTimedelta() <= longest.ToTimedelta()
    cancelled = await client.stub.CancelTask(
        task_service_pb2.CancelTaskRequest(task_id="t", deadline=longest)
    )
    assert cancelled.task.HasField("cancel_request")


@pytest.mark.parametrize("value", BAD_DURATIONS.values(), ids=BAD_DURATIONS.keys())
async def test_subscribe_heartbeat_interval_out_of_range(
    client: HeadwayClient, task: task_pb2.Task, value: Duration
) -> None:
    del task
    request = task_service_pb2.SubscribeRequest(heartbeat_interval=value)

    async def subscribe() -> None:
        async for _ in client.stub.Subscribe(request, timeout=5):
            pass

    error = await refused(client, subscribe)
    violation(error, "heartbeat_interval")


# -- page tokens ----------------------------------------------------------------------


def _edited(token: str, position: list[Any]) -> str:
    """`token` with its position replaced: still valid base64 and JSON, and the right query."""
    payload = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    payload["p"] = position
    data = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@pytest.mark.parametrize(
    "position",
    [[2**63, 0], [0, 2**63], [2**70, 2**70], [-1, 0], [1, -(2**63) - 1]],
    ids=["revision-2^63", "index-2^63", "both-huge", "negative", "int64-min-minus-one"],
)
async def test_list_logs_edited_page_token(
    client: HeadwayClient, task: task_pb2.Task, position: list[int]
) -> None:
    del task
    page = await client.list_logs("t", page_size=1)
    assert page.next_page_token
    token = _edited(page.next_page_token, position)
    request = task_service_pb2.ListLogsRequest(task_id="t", page_size=1, page_token=token)
    error = await refused(client, lambda: client.stub.ListLogs(request))
    assert error.reason == "INVALID_PAGE_TOKEN"
    assert set(error.field_violations) == {"page_token"}


# -- unparseable requests -------------------------------------------------------------


def _identity(data: bytes) -> bytes:
    return data


INVALID_UTF8_TASK_ID = b"\x0a\x03\xff\xfe\x41"  # field 1 (task_id): 3 bytes that are not UTF-8
MALFORMED = {
    "get-utf8": ("GetTask", INVALID_UTF8_TASK_ID),
    "create-utf8": ("CreateTask", INVALID_UTF8_TASK_ID),
    "append-utf8": ("AppendLogs", INVALID_UTF8_TASK_ID),
    "get-truncated": ("GetTask", b"\x0a\x10short"),
    "create-bad-tag": ("CreateTask", b"\xff" * 11),
}


@pytest.mark.parametrize(("method", "data"), MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_request_has_error_info(
    client: HeadwayClient, task: task_pb2.Task, method: str, data: bytes
) -> None:
    del task
    call = client.channel.unary_unary(
        f"/headway.v1.TaskService/{method}",
        request_serializer=_identity,
        response_deserializer=_identity,
    )
    error = await refused(client, lambda: call(data))
    assert error.reason == "MALFORMED_REQUEST"
    assert error.metadata == {"message_type": f"headway.v1.{method}Request"}


@pytest.mark.parametrize(
    "data",
    [b"\x0a\x05\x0a\x03\xff\xfe\x41", b"\x0a\x10short"],  # filter.task_ids[0] not UTF-8; truncated
    ids=["utf8", "truncated"],
)
async def test_malformed_subscribe_has_error_info(
    client: HeadwayClient, task: task_pb2.Task, data: bytes
) -> None:
    del task
    call = client.channel.unary_stream(
        "/headway.v1.TaskService/Subscribe",
        request_serializer=_identity,
        response_deserializer=_identity,
    )

    async def subscribe() -> None:
        async for _ in call(data, timeout=5):
            pass

    error = await refused(client, subscribe)
    assert error.reason == "MALFORMED_REQUEST"
    assert error.metadata == {"message_type": "headway.v1.SubscribeRequest"}


# -- iteration ------------------------------------------------------------------------


async def test_iteration_above_the_tasks_max_iterations(client: HeadwayClient) -> None:
    """The same answer whether the limit comes with the request or is already on the task."""
    await client.create_task("t", max_iterations=5)
    for request in (
        task_service_pb2.UpdateTaskRequest(task_id="t", iteration=6),
        task_service_pb2.UpdateTaskRequest(task_id="t", iteration=6, max_iterations=5),
    ):
        error = await refused(client, lambda request=request: client.stub.UpdateTask(request))
        violation(error, "iteration")
    # The limit on the task may be lifted and the iteration set in the same call.
    response = await client.stub.UpdateTask(
        task_service_pb2.UpdateTaskRequest(task_id="t", iteration=6, max_iterations=0)
    )
    assert response.task.iteration == 6


# -- the last line of defence ---------------------------------------------------------

SECRET = "secret-internal-detail"


class _Faulty(service.TaskService):
    """A servicer with a bug: the guard must hide it behind a plain INTERNAL."""

    async def GetTask(
        self, request: task_service_pb2.GetTaskRequest, context: service.Context
    ) -> task_service_pb2.GetTaskResponse:
        raise RuntimeError(SECRET)

    async def Subscribe(
        self, request: task_service_pb2.SubscribeRequest, context: service.Context
    ) -> None:
        raise KeyError(SECRET)


async def test_unexpected_exception_is_internal_with_error_info(
    harness: ServerHarness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    await harness.stop()
    harness.running = None
    monkeypatch.setattr(app, "TaskService", _Faulty)
    await harness.start()
    client = harness.client()
    await client.create_task("t")

    async def subscribe() -> None:
        async for _ in client.stub.Subscribe(task_service_pb2.SubscribeRequest(), timeout=5):
            pass

    calls: list[Call] = [
        lambda: client.stub.GetTask(task_service_pb2.GetTaskRequest(task_id="t")),
        subscribe,
    ]
    for call in calls:
        caplog.clear()
        with (
            caplog.at_level(logging.ERROR, logger=service.__name__),
            pytest.raises(grpc.aio.AioRpcError) as info,
        ):
            await call()
        error = from_rpc_error(info.value)
        assert error.code == grpc.StatusCode.INTERNAL
        assert error.reason == "INTERNAL"
        assert SECRET not in (info.value.details() or "")
        assert "Error" not in (info.value.details() or "")
        # The operator sees what the client does not: the traceback.
        logged = [r for r in caplog.records if r.exc_info is not None]
        assert logged, caplog.records
        assert SECRET in caplog.text
    # The server is unharmed.
    assert (await client.list_tasks()).tasks[0].id == "t"


# -- errors too large to deliver ------------------------------------------------------


async def test_an_error_about_huge_fields_still_fits_in_the_trailers(
    client: HeadwayClient, task: task_pb2.Task
) -> None:
    """Field paths quote map keys; thousands of long hostile keys must not blow the trailers.

    gRPC clients refuse trailers over 16 KiB, which turned INVALID_ARGUMENT into a
    RESOURCE_EXHAUSTED without any reason.
    """
    keys = {f"{'😀' * 3000}{i}": "v" for i in range(40)}
    error = await refused(
        client,
        lambda: client.stub.CreateTask(
            task_service_pb2.CreateTaskRequest(task_id="huge-keys", labels=keys)
        ),
    )
    assert error.reason == "FIELD_VIOLATION"
    assert error.field_violations, "the first violations are named"
    assert all(len(field.encode()) <= 200 for field in error.field_violations)
    assert int(error.metadata["violations_omitted"]) > 0, "the rest are counted"
    assert len(str(error).encode()) < 2048

    steps = [task_service_pb2.StepSpec(key="K" * 60 + str(i)) for i in range(1000)]
    error = await refused(
        client,
        lambda: client.stub.AddSteps(task_service_pb2.AddStepsRequest(task_id="t", steps=steps)),
    )
    assert error.reason == "FIELD_VIOLATION"
    assert "steps[0].key" in error.field_violations
