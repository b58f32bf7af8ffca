"""Sends fuzz examples to a real server and checks what it answers.

`FuzzRunner.run(example)` prepares the pool tasks in the drawn states, sends
each call (as a message, or as corrupt bytes through a raw channel), and records
a `Violation` for every answer that breaks a property:

- the status code is one the RPC may return (`ALLOWED_CODES`, from the
  contract in task_service.proto): never UNKNOWN, INTERNAL, or UNAVAILABLE;
- every error carries a `google.rpc.ErrorInfo` in the domain "headway.v1"
  with a non-empty reason;
- a rejected call changes nothing: the task it names and every pool task of
  the example read the same (GetTask, and the number of log lines) before and
  after, and stay readable.

`BenignWriter` runs valid agent work on its own tasks meanwhile; `final_checks`
looks at the server as a whole at the end. `Summary` renders what was seen.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from headway.v1 import log_pb2, task_pb2, task_service_pb2, task_service_pb2_grpc
from tests.fuzz.strategies import (
    BENIGN_PREFIX,
    ID_FIELDS,
    METHOD_NAMES,
    POOL_IDS,
    STEP_KEYS,
    Call,
    Example,
    PoolState,
    method_named,
    request_class,
)

SERVICE = "headway.v1.TaskService"
ERROR_DOMAIN = "headway.v1"
CALL_TIMEOUT = 10.0
# How long a fuzzed Subscribe is read when it does not reach `synced` or end by itself.
SUBSCRIBE_READ = 0.25

Code = grpc.StatusCode
_COMMON = {Code.OK, Code.INVALID_ARGUMENT}
_ON_TASK = _COMMON | {Code.NOT_FOUND, Code.FAILED_PRECONDITION}
_CONDITIONAL = _ON_TASK | {Code.ABORTED}
# The codes each RPC may answer, from its documentation in task_service.proto
# (INVALID_ARGUMENT everywhere: field syntax, and `REQUEST_ID_REUSED`).
ALLOWED_CODES: dict[str, frozenset[grpc.StatusCode]] = {
    "CreateTask": frozenset(_COMMON | {Code.ALREADY_EXISTS, Code.NOT_FOUND}),
    "StartTask": frozenset(_CONDITIONAL),
    "AddSteps": frozenset(_CONDITIONAL | {Code.ALREADY_EXISTS, Code.RESOURCE_EXHAUSTED}),
    "UpdateStep": frozenset(_CONDITIONAL),
    "UpdateTask": frozenset(_CONDITIONAL | {Code.RESOURCE_EXHAUSTED}),
    "AppendLogs": frozenset(_ON_TASK),
    "AddArtifacts": frozenset(_CONDITIONAL | {Code.ALREADY_EXISTS, Code.RESOURCE_EXHAUSTED}),
    "SucceedTask": frozenset(_CONDITIONAL),
    "FailTask": frozenset(_CONDITIONAL),
    "CancelTask": frozenset(_CONDITIONAL),
    "ConfirmCancel": frozenset(_CONDITIONAL),
    "Heartbeat": frozenset(_ON_TASK),
    "DeleteTask": frozenset(_CONDITIONAL),
    "GetTask": frozenset(_COMMON | {Code.NOT_FOUND}),
    "ListTasks": frozenset(_COMMON),
    "ListLogs": frozenset(_COMMON | {Code.NOT_FOUND}),
    "Subscribe": frozenset(_COMMON | {Code.OUT_OF_RANGE, Code.RESOURCE_EXHAUSTED}),
    # FAILED_PRECONDITION: `AUTHENTICATION_OFF`, as on the fuzzed server.
    "CreateReadToken": frozenset(_COMMON | {Code.NOT_FOUND, Code.FAILED_PRECONDITION}),
}
assert set(ALLOWED_CODES) == set(METHOD_NAMES), "every RPC needs its allowed codes"


def _identity(data: bytes) -> bytes:
    return data


def error_info(
    metadata: Iterable[Any] | None,
) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo packed in `grpc-status-details-bin`, if any."""
    for key, value in metadata or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    return info
    return None


def bad_request_fields(metadata: Iterable[Any] | None) -> tuple[str, ...]:
    """The field paths of the google.rpc.BadRequest packed in the status, if any."""
    for key, value in metadata or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            for detail in status_pb2.Status.FromString(value).details:
                if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    bad = error_details_pb2.BadRequest()
                    detail.Unpack(bad)
                    return tuple(v.field for v in bad.field_violations)
    return ()


@dataclass(frozen=True)
class Answer:
    """What the server answered a call: its code, and its ErrorInfo for errors."""

    code: grpc.StatusCode
    details: str = ""
    info: error_details_pb2.ErrorInfo | None = None
    fields: tuple[str, ...] = ()  # The fields a google.rpc.BadRequest names.

    @staticmethod
    def of_error(error: grpc.aio.AioRpcError) -> Answer:
        return Answer.of_status(error.code(), error.details(), error.trailing_metadata())

    @staticmethod
    def of_status(
        code: grpc.StatusCode,
        details: str | None,
        metadata: Iterable[Any] | None,
    ) -> Answer:
        return Answer(code, details or "", error_info(metadata), bad_request_fields(metadata))

    def describe(self) -> str:
        reason = f" {self.info.reason}" if self.info is not None and self.info.reason else ""
        return f"{self.code.name}{reason}"


@dataclass
class Violation:
    """One kind of broken property, with how often it was seen and its smallest trigger."""

    rpc: str
    rule: str
    seen: str
    count: int = 0
    example: str = ""
    example_size: int = 0

    def render(self) -> str:
        return (
            f"- {self.rpc}: {self.rule} (got {self.seen}), {self.count} time(s); smallest:\n"
            f"    {self.example}"
        )


_RUNS = re.compile(r"(.)\1{15,}", re.DOTALL)


def _shorten(text: str) -> str:
    return _RUNS.sub(lambda m: f"{m.group(1)}<x{len(m.group(0))}>", text)


@dataclass
class Summary:
    """Counts of everything the fuzz run did and saw."""

    tried: Counter[str] = field(default_factory=Counter)
    codes: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    reasons: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    violations: dict[tuple[str, str, str], Violation] = field(default_factory=dict)
    examples: int = 0
    benign_done: int = 0
    benign_failed: list[str] = field(default_factory=list)
    final_problems: list[str] = field(default_factory=list)

    def violate(self, rpc: str, rule: str, seen: str, example: str) -> Violation:
        key = (rpc, rule, seen)
        violation = self.violations.setdefault(key, Violation(rpc, rule, seen))
        violation.count += 1
        text = _shorten(example)
        if not violation.example or len(text) < violation.example_size:
            violation.example, violation.example_size = text, len(text)
        return violation

    @property
    def unknown_or_internal(self) -> int:
        return sum(c[Code.UNKNOWN.name] + c[Code.INTERNAL.name] for c in self.codes.values())

    def problems(self) -> list[str]:
        found = [v.render() for v in self.violations.values()]
        found += [f"- benign writer: {failure}" for failure in _distinct(self.benign_failed)]
        found += [f"- at the end: {problem}" for problem in self.final_problems]
        return found

    def render(self) -> str:
        lines = [f"Fuzz examples: {self.examples}; calls: {sum(self.tried.values())}", ""]
        lines.append(f"{'RPC':<22} {'tried':>6}  status codes seen")
        for rpc in sorted(self.tried):
            seen = ", ".join(f"{code} {n}" for code, n in self.codes[rpc].most_common())
            lines.append(f"{rpc:<22} {self.tried[rpc]:>6}  {seen}")
        lines += ["", "Error reasons (and, for INVALID_ARGUMENT, the first field named):"]
        for rpc in sorted(self.reasons):
            seen = ", ".join(f"{reason} {n}" for reason, n in self.reasons[rpc].most_common(8))
            lines.append(f"{rpc:<22} {seen}")
        lines += [
            "",
            f"UNKNOWN or INTERNAL answers: {self.unknown_or_internal}",
            f"Benign writes: {self.benign_done} done, {len(self.benign_failed)} failed",
            "",
        ]
        problems = self.problems()
        lines.append(f"Problems ({len(problems)} distinct):" if problems else "No problems found.")
        lines += problems
        return "\n".join(lines) + "\n"


def _distinct(failures: Sequence[str]) -> list[str]:
    counts = Counter(failures)
    return [f"{text} ({n} time(s))" for text, n in counts.most_common()]


def _map_ids(message: Message, mapping: dict[str, str]) -> None:
    """Replace pool ids by the example's real ids in every id field, recursively."""
    for fd, value in message.ListFields():
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            if fd.message_type.fields_by_name["value"].message_type is not None:
                for item in value.values():
                    _map_ids(item, mapping)
        elif fd.type == fd.TYPE_MESSAGE:
            for item in value if fd.is_repeated else [value]:
                _map_ids(item, mapping)
        elif fd.type == fd.TYPE_STRING and fd.name in ID_FIELDS:
            if fd.is_repeated:
                value[:] = [mapping.get(item, item) for item in value]
            elif value in mapping:
                setattr(message, fd.name, mapping[value])


def _mentions(message: Message, ids: Iterable[str]) -> set[str]:
    wanted = set(ids)
    found: set[str] = set()
    for fd, value in message.ListFields():
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            continue
        if fd.type == fd.TYPE_MESSAGE:
            for item in value if fd.is_repeated else [value]:
                found |= _mentions(item, wanted)
        elif fd.type == fd.TYPE_STRING and fd.name in ID_FIELDS:
            found |= wanted.intersection(value if fd.is_repeated else [value])
    return found


@dataclass(frozen=True)
class Snapshot:
    """How a task reads: GetTask's answer and, when it exists, how many log lines it has."""

    code: grpc.StatusCode
    task: task_pb2.Task | None
    logs: int | None


class FuzzRunner:
    """Runs examples against one server over one channel; records into `summary`."""

    def __init__(self, channel: grpc.aio.Channel, max_message_bytes: int) -> None:
        self.stub = task_service_pb2_grpc.TaskServiceStub(channel)
        self.health = health_pb2_grpc.HealthStub(channel)
        self.max_message_bytes = max_message_bytes
        self.summary = Summary()
        self.ids_used: set[str] = set()
        self._unary = {
            name: channel.unary_unary(
                f"/{SERVICE}/{name}", request_serializer=_identity, response_deserializer=_identity
            )
            for name in METHOD_NAMES
            if name != "Subscribe"
        }
        self._stream = channel.unary_stream(
            f"/{SERVICE}/Subscribe", request_serializer=_identity, response_deserializer=_identity
        )
        self._counter = 0

    # -- one example --------------------------------------------------------------

    async def run(self, example: Example) -> list[Violation]:
        """Prepare the pool, send the calls; the violations this example caused."""
        self._counter += 1
        self.summary.examples += 1
        mapping = {pool: f"fz{self._counter}-{pool[-1]}" for pool in POOL_IDS}
        states = dict(zip(POOL_IDS, example.states, strict=True))
        mentioned: set[str] = set()
        for call in example.calls:
            mentioned |= _mentions(call.request, POOL_IDS)
        watched = sorted(mapping[pool] for pool in mentioned)
        self.ids_used.update(watched)
        found: list[Violation] = []
        for pool in sorted(mentioned):
            try:
                await self._prepare(mapping[pool], states[pool])
            except grpc.aio.AioRpcError as error:
                # Valid calls on a fresh task: any failure is a defect too.
                found.append(
                    self.summary.violate(
                        "(pool setup)",
                        f"a valid call failed while preparing a {states[pool].value} task",
                        Answer.of_error(error).describe(),
                        error.details() or "",
                    )
                )
                return found
        for call in example.calls:
            request = request_class(method_named(call.method))()
            request.CopyFrom(call.request)
            _map_ids(request, mapping)
            mapped = Call(call.method, request, call.raw)
            found += await self._check(mapped, watched)
        return found

    async def _check(self, call: Call, watched: list[str]) -> list[Violation]:
        target = getattr(call.request, "task_id", "") if call.method != "CreateTask" else ""
        if call.method == "CreateTask":
            target = getattr(call.request, "task_id", "")
        ids = sorted(set(watched) | ({target} if target else set()))
        before = {task_id: await self.snapshot(task_id) for task_id in ids}
        payload = call.raw.apply(call.request) if call.raw else call.request.SerializeToString()
        answer = await self.send(call.method, payload, call.request)
        label = call.method + ("[raw]" if call.raw else "")
        self.summary.tried[label] += 1
        self.summary.codes[label][answer.code.name] += 1
        if answer.code != Code.OK:
            reason = answer.info.reason if answer.info is not None else "(no ErrorInfo)"
            where = re.sub(r"\[.*?\]", "[]", answer.fields[0]) if answer.fields else ""
            self.summary.reasons[label][f"{reason}{'@' + where if where else ''}"] += 1
        if isinstance(target, str) and target:
            self.ids_used.add(target)

        found: list[Violation] = []
        text = f"{call.describe()} ({len(payload)} bytes)"
        if answer.code != Code.OK:
            text += f" -> {answer.details[:160]!r}"

        def violate(rule: str, seen: str) -> None:
            found.append(self.summary.violate(label, rule, seen, text))

        too_large = len(payload) > self.max_message_bytes
        if too_large and answer.code == Code.RESOURCE_EXHAUSTED:
            return found  # Refused by gRPC itself, before any handler could explain.
        if answer.code not in ALLOWED_CODES[call.method]:
            violate("answered a code the RPC may not return", answer.describe())
        elif answer.code != Code.OK:
            if answer.info is None:
                violate("error without google.rpc.ErrorInfo", answer.code.name)
            elif not answer.info.reason or answer.info.domain != ERROR_DOMAIN:
                info = answer.info
                violate(
                    "ErrorInfo without a reason or outside the headway.v1 domain",
                    f"{answer.code.name} reason={info.reason!r} domain={info.domain!r}",
                )
        for task_id in ids:
            after = await self.snapshot(task_id)
            if after.code not in (Code.OK, Code.NOT_FOUND, Code.INVALID_ARGUMENT):
                violate(
                    f"a task became unreadable (GetTask/ListLogs on {task_id!r})", after.code.name
                )
            elif answer.code != Code.OK and after != before[task_id]:
                violate("a rejected call changed a task", f"{answer.describe()} on {task_id!r}")
        return found

    async def send(self, method: str, payload: bytes, request: Message) -> Answer:
        if method == "Subscribe":
            return await self._subscribe(payload, request)
        try:
            await self._unary[method](payload, timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as error:
            return Answer.of_error(error)
        return Answer(Code.OK)

    async def _subscribe(self, payload: bytes, request: Message) -> Answer:
        resuming = request.HasField("start_revision")  # type: ignore[attr-defined]
        call = self._stream(payload, timeout=CALL_TIMEOUT)
        try:
            async with asyncio.timeout(SUBSCRIBE_READ):
                async for frame in call:
                    response = task_service_pb2.SubscribeResponse.FromString(frame)
                    if resuming or any(e.HasField("synced") for e in response.events):
                        break
        except grpc.aio.AioRpcError as error:
            return Answer.of_error(error)
        except TimeoutError:
            pass
        if call.done():
            code = await call.code()
            if code == Code.CANCELLED:
                return Answer(Code.OK)
            return Answer(
                code, await call.details() or "", error_info(await call.trailing_metadata())
            )
        call.cancel()
        return Answer(Code.OK)

    async def snapshot(self, task_id: str) -> Snapshot:
        try:
            task = (
                await self.stub.GetTask(
                    task_service_pb2.GetTaskRequest(task_id=task_id), timeout=CALL_TIMEOUT
                )
            ).task
        except grpc.aio.AioRpcError as error:
            return Snapshot(error.code(), None, None)
        try:
            logs = await self.count_logs(task_id)
        except grpc.aio.AioRpcError as error:
            return Snapshot(error.code(), task, None)
        return Snapshot(Code.OK, task, logs)

    async def count_logs(self, task_id: str) -> int:
        count, token = 0, ""
        while True:
            page = await self.stub.ListLogs(
                task_service_pb2.ListLogsRequest(task_id=task_id, page_size=1000, page_token=token),
                timeout=CALL_TIMEOUT,
            )
            count += len(page.entries)
            token = page.next_page_token
            if not token:
                return count

    # -- pool ---------------------------------------------------------------------

    async def _prepare(self, task_id: str, state: PoolState) -> None:
        """Create `task_id` in `state` with valid calls (a failure here is a server bug too)."""
        if state is PoolState.ABSENT:
            return
        stub = self.stub
        steps = [task_service_pb2.StepSpec(key=key) for key in STEP_KEYS]
        start = state not in (PoolState.PENDING,)
        await stub.CreateTask(
            task_service_pb2.CreateTaskRequest(
                task_id=task_id, kind="fuzz", steps=steps, start=start, labels={"pool": "yes"}
            ),
            timeout=CALL_TIMEOUT,
        )
        await stub.AppendLogs(
            task_service_pb2.AppendLogsRequest(
                task_id=task_id,
                entries=[
                    log_pb2.LogEntry(message="prepared", step_key="a"),
                    log_pb2.LogEntry(message="warned", level=log_pb2.LOG_LEVEL_WARNING),
                ],
            ),
            timeout=CALL_TIMEOUT,
        )
        match state:
            case PoolState.RUNNING:
                await self._step(task_id, "a", progress=task_pb2.Progress(fraction=0.4))
            case PoolState.PROGRESSED:
                await self._step(task_id, "a", state=task_pb2.STEP_STATE_SUCCEEDED)
                await self._step(
                    task_id,
                    "b",
                    state=task_pb2.STEP_STATE_FAILED,
                    error=task_pb2.TaskError(code="OOPS", message="failed once"),
                )
                units = task_pb2.Progress.Units(current=3, total=10, unit="files")
                await self._step(task_id, "c", progress=task_pb2.Progress(units=units))
            case PoolState.CANCEL_REQUESTED:
                await stub.CancelTask(
                    task_service_pb2.CancelTaskRequest(task_id=task_id, reason="enough"),
                    timeout=CALL_TIMEOUT,
                )
            case PoolState.SUCCEEDED | PoolState.DELETED:
                await stub.SucceedTask(
                    task_service_pb2.SucceedTaskRequest(task_id=task_id), timeout=CALL_TIMEOUT
                )
                if state is PoolState.DELETED:
                    await stub.DeleteTask(
                        task_service_pb2.DeleteTaskRequest(task_id=task_id), timeout=CALL_TIMEOUT
                    )
            case PoolState.FAILED:
                await stub.FailTask(
                    task_service_pb2.FailTaskRequest(
                        task_id=task_id, error=task_pb2.TaskError(code="BROKE", message="broke")
                    ),
                    timeout=CALL_TIMEOUT,
                )
            case PoolState.CANCELLED:
                await stub.CancelTask(
                    task_service_pb2.CancelTaskRequest(task_id=task_id, reason="stop", force=True),
                    timeout=CALL_TIMEOUT,
                )
            case _:
                pass

    async def _step(self, task_id: str, key: str, **fields: Any) -> None:
        await self.stub.UpdateStep(
            task_service_pb2.UpdateStepRequest(task_id=task_id, step_key=key, **fields),
            timeout=CALL_TIMEOUT,
        )

    # -- the whole server, at the end ---------------------------------------------

    async def final_checks(self, benign_ids: Iterable[str]) -> list[str]:
        """Health SERVING; every task readable by GetTask, ListTasks and a Subscribe snapshot."""
        problems: list[str] = []
        for service in ("", SERVICE):
            try:
                health = await self.health.Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=CALL_TIMEOUT
                )
                if health.status != health_pb2.HealthCheckResponse.SERVING:
                    problems.append(f"health of {service!r} is {health.status}")
            except grpc.aio.AioRpcError as error:
                problems.append(f"health check of {service!r} failed: {error.code().name}")

        listed: dict[str, task_pb2.Task] = {}
        token, pages = "", 0
        try:
            while True:
                page = await self.stub.ListTasks(
                    task_service_pb2.ListTasksRequest(page_size=100, page_token=token),
                    timeout=CALL_TIMEOUT,
                )
                pages += 1
                for task in page.tasks:
                    if task.id in listed:
                        problems.append(f"ListTasks listed {task.id!r} twice")
                    listed[task.id] = task
                token = page.next_page_token
                if not token or pages > 10_000:
                    break
        except grpc.aio.AioRpcError as error:
            problems.append(f"ListTasks failed on page {pages + 1}: {error.code().name}")

        for task_id in sorted(set(listed) | self.ids_used | set(benign_ids)):
            try:
                task = (
                    await self.stub.GetTask(
                        task_service_pb2.GetTaskRequest(task_id=task_id), timeout=CALL_TIMEOUT
                    )
                ).task
                await self.count_logs(task_id)
            except grpc.aio.AioRpcError as error:
                unlisted = (Code.NOT_FOUND, Code.INVALID_ARGUMENT)  # Deleted, or never valid.
                if error.code() not in unlisted or task_id in listed:
                    problems.append(f"GetTask/ListLogs of {task_id!r}: {error.code().name}")
                continue
            if task_id not in listed:
                problems.append(f"{task_id!r} is readable but ListTasks does not list it")
            elif task != listed[task_id]:
                problems.append(f"GetTask and ListTasks disagree on {task_id!r}")

        snapshot: set[str] = set()
        call = self.stub.Subscribe(task_service_pb2.SubscribeRequest(), timeout=60)
        try:
            synced = False
            async for response in call:
                for event in response.events:
                    if event.HasField("snapshot"):
                        snapshot.add(event.snapshot.id)
                    synced = synced or event.HasField("synced")
                if synced:
                    break
            if not synced:
                problems.append("the Subscribe snapshot ended before `synced`")
        except grpc.aio.AioRpcError as error:
            problems.append(f"Subscribe snapshot failed: {error.code().name} {error.details()}")
        finally:
            call.cancel()
        if snapshot != set(listed):
            problems.append(
                f"the Subscribe snapshot has {len(snapshot)} tasks, ListTasks {len(listed)}"
            )
        return problems


class BenignWriter:
    """Valid agent work on its own tasks, in a loop, concurrently with the fuzzing."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.stub = task_service_pb2_grpc.TaskServiceStub(channel)
        self.done = 0
        self.failed: list[str] = []
        self.task_ids: list[str] = []
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task

    async def _loop(self) -> None:
        n = 0
        while not self._stopping.is_set():
            n += 1
            try:
                await self._one(f"{BENIGN_PREFIX}{n}")
            except grpc.aio.AioRpcError as error:
                info = error_info(error.trailing_metadata())
                reason = f" {info.reason}" if info is not None else ""
                self.failed.append(f"{error.code().name}{reason}: {error.details()}")
            except Exception as error:  # Anything else is a failure of the writer too.
                self.failed.append(f"{type(error).__name__}: {error}")
            await asyncio.sleep(0.005)

    async def _write(self, method: str, request: Message) -> None:
        await getattr(self.stub, method)(request, timeout=CALL_TIMEOUT)
        self.done += 1

    async def _one(self, task_id: str) -> None:
        t = task_service_pb2
        self.task_ids.append(task_id)
        steps = [t.StepSpec(key="fetch"), t.StepSpec(key="build")]
        await self._write(
            "CreateTask", t.CreateTaskRequest(task_id=task_id, kind="benign", steps=steps)
        )
        await self._write("StartTask", t.StartTaskRequest(task_id=task_id))
        for fraction in (0.25, 0.5, 1.0):
            await self._write(
                "UpdateStep",
                t.UpdateStepRequest(
                    task_id=task_id, step_key="fetch", progress=task_pb2.Progress(fraction=fraction)
                ),
            )
        await self._write(
            "AppendLogs",
            t.AppendLogsRequest(
                task_id=task_id,
                entries=[log_pb2.LogEntry(message="fetched", step_key="fetch", fields={"n": "3"})],
            ),
        )
        await self._write(
            "UpdateStep",
            t.UpdateStepRequest(
                task_id=task_id, step_key="fetch", state=task_pb2.STEP_STATE_SUCCEEDED
            ),
        )
        await self._write(
            "UpdateStep",
            t.UpdateStepRequest(
                task_id=task_id, step_key="build", state=task_pb2.STEP_STATE_RUNNING
            ),
        )
        await self._write("UpdateTask", t.UpdateTaskRequest(task_id=task_id, metrics={"cost": 1.5}))
        await self._write("SucceedTask", t.SucceedTaskRequest(task_id=task_id, message="done"))
