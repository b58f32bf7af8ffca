"""Idempotent retries, conditional writes, the reads, and what survives a restart."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from headway.client import (
    AbortedError,
    AlreadyExistsError,
    HeadwayClient,
    InvalidArgumentError,
    NotFoundError,
    task_filter,
)
from headway.v1 import log_pb2, task_pb2, task_service_pb2
from tests.harness import ServerHarness

RUNNING = task_pb2.TASK_STATE_RUNNING
PENDING = task_pb2.TASK_STATE_PENDING
SUCCEEDED = task_pb2.TASK_STATE_SUCCEEDED
FAILED = task_pb2.TASK_STATE_FAILED
CANCELLED = task_pb2.TASK_STATE_CANCELLED


def fraction(value: float) -> task_pb2.Progress:
    return task_pb2.Progress(fraction=value)


async def store_revision(client: HeadwayClient) -> int:
    return (await client.list_tasks(page_size=1)).revision


async def everything(client: HeadwayClient) -> tuple[Any, ...]:
    """The whole observable state: revision, every task, every task's logs."""
    listing = await client.list_tasks(page_size=1000)
    logs = [
        list((await client.list_logs(task.id, page_size=1000)).entries) for task in listing.tasks
    ]
    return listing.revision, list(listing.tasks), logs


def ids(tasks: Any) -> list[str]:
    return [task.id for task in tasks]


# -- idempotent retries ---------------------------------------------------------------

# Each mutation, given a client and a request_id. Run on a fresh store holding
# "t" (RUNNING, step "a" at 0.1), "p" (PENDING) and "done" (SUCCEEDED).
RETRIED: dict[str, Callable[[HeadwayClient, str], Awaitable[Any]]] = {
    "CreateTask": lambda c, r: c.create_task("n", steps=["x"], labels={"k": "v"}, request_id=r),
    "CreateTask(no id)": lambda c, r: c.create_task(display_name="anon", request_id=r),
    "StartTask": lambda c, r: c.start_task("p", request_id=r),
    "AddSteps": lambda c, r: c.add_steps("t", ["b"], request_id=r),
    "UpdateStep": lambda c, r: c.update_step("t", "a", progress=fraction(0.5), request_id=r),
    "UpdateTask": lambda c, r: c.update_task("t", metrics={"m": 1.0}, request_id=r),
    "AppendLogs": lambda c, r: c.append_logs("t", ["once", "only"], request_id=r),
    "AddArtifacts": lambda c, r: c.add_artifacts(
        "t", [task_pb2.Artifact(name="out", uri="s3://o")], request_id=r
    ),
    "SucceedTask": lambda c, r: c.succeed_task("t", request_id=r),
    "FailTask": lambda c, r: c.fail_task("t", message="boom", request_id=r),
    "CancelTask": lambda c, r: c.cancel_task("t", reason="stop", request_id=r),
    "CancelTask(force)": lambda c, r: c.cancel_task("t", force=True, request_id=r),
    "ConfirmCancel": lambda c, r: c.confirm_cancel("t", request_id=r),
    "DeleteTask": lambda c, r: c.delete_task("done", request_id=r),
}


async def seed(client: HeadwayClient) -> None:
    await client.create_task("t", steps=["a"], start=True)
    await client.update_step("t", "a", progress=fraction(0.1))
    await client.create_task("p")
    await client.create_task("done")
    await client.succeed_task("done")


@pytest.mark.parametrize("name", RETRIED, ids=lambda n: n)
async def test_retry_returns_first_response_and_applies_nothing(
    client: HeadwayClient, name: str
) -> None:
    await seed(client)
    head = await store_revision(client)
    first = await RETRIED[name](client, f"req-{name}")
    assert await store_revision(client) == head + 1
    after_first = await everything(client)

    for _ in range(2):
        assert await RETRIED[name](client, f"req-{name}") == first
        assert await everything(client) == after_first


@pytest.mark.parametrize("name", RETRIED, ids=lambda n: n)
async def test_retry_after_restart_returns_first_response(
    harness: ServerHarness, name: str
) -> None:
    client = harness.client()
    await seed(client)
    first = await RETRIED[name](client, f"req-{name}")
    after_first = await everything(client)

    await harness.restart()
    client = harness.client()
    assert await everything(client) == after_first
    assert await RETRIED[name](client, f"req-{name}") == first
    assert await everything(client) == after_first
    # The record still tells a reuse from a retry.
    with pytest.raises(InvalidArgumentError) as info:
        await client.update_task("p", message="other", request_id=f"req-{name}")
    assert info.value.reason == "REQUEST_ID_REUSED"


async def test_retry_returns_first_response_after_the_task_moved_on(
    client: HeadwayClient,
) -> None:
    await client.create_task("t", steps=["a"])
    first = await client.update_step("t", "a", progress=fraction(0.5), request_id="r1")
    assert first.revision == 2
    later = await client.update_step("t", "a", progress=fraction(0.7))
    assert later.revision == 3

    # Not PROGRESS_REGRESSED, not a new revision: the answer of the first attempt.
    assert await client.update_step("t", "a", progress=fraction(0.5), request_id="r1") == first
    assert await client.get_task("t") == later
    assert await store_revision(client) == 3


async def test_retried_create_does_not_recreate_a_deleted_task(client: HeadwayClient) -> None:
    created = await client.create_task("t", request_id="create-t")
    await client.succeed_task("t")
    await client.delete_task("t")
    head = await store_revision(client)

    assert await client.create_task("t", request_id="create-t") == created
    with pytest.raises(NotFoundError):
        await client.get_task("t")
    assert await store_revision(client) == head


async def test_failed_attempt_is_not_remembered(client: HeadwayClient) -> None:
    """Only applied requests are recorded: a rejected one may be retried once it can apply."""
    with pytest.raises(NotFoundError):
        await client.create_task("child", parent_id="parent", request_id="r")
    await client.create_task("parent")
    child = await client.create_task("child", parent_id="parent", request_id="r")
    assert child.revision == 2
    assert await client.create_task("child", parent_id="parent", request_id="r") == child


async def test_retried_append_logs_returns_first_response_after_a_cancel_request(
    client: HeadwayClient,
) -> None:
    await client.create_task("t", start=True)
    first = await client.append_logs("t", ["line"], request_id="log-1")
    assert not first.HasField("cancel_request")
    await client.cancel_task("t", reason="stop")
    head = await store_revision(client)

    again = await client.append_logs("t", ["line"], request_id="log-1")
    assert await store_revision(client) == head
    assert again == first


async def test_retried_no_op_cancel_returns_first_response(client: HeadwayClient) -> None:
    """A no-op answer is an answer too: its retry gets it, even once the task is at rest."""
    await client.create_task("t", start=True)
    await client.cancel_task("t", reason="first")
    first = await client.cancel_task("t", reason="again", request_id="cancel-2")
    assert first.state == RUNNING
    await client.confirm_cancel("t")

    assert await client.cancel_task("t", reason="again", request_id="cancel-2") == first


# -- concurrent duplicates ------------------------------------------------------------


async def test_concurrent_duplicate_creates_apply_once(client: HeadwayClient) -> None:
    results = await asyncio.gather(
        *(client.create_task("t", steps=["a"], request_id="same") for _ in range(2))
    )
    assert results[0] == results[1]
    assert results[0].revision == 1
    assert await store_revision(client) == 1
    assert ids(await client.list_all_tasks()) == ["t"]


async def test_concurrent_duplicate_creates_without_id_make_one_task(
    client: HeadwayClient,
) -> None:
    results = await asyncio.gather(
        *(client.create_task(display_name="anon", request_id="same") for _ in range(3))
    )
    assert results[0] == results[1] == results[2]
    assert ids(await client.list_all_tasks()) == [results[0].id]
    assert await store_revision(client) == 1


async def test_concurrent_duplicate_mutations_apply_once(client: HeadwayClient) -> None:
    await client.create_task("t", steps=["a"], start=True)

    steps = await asyncio.gather(
        *(client.add_steps("t", ["b", "c"], request_id="add") for _ in range(3))
    )
    assert steps[0] == steps[1] == steps[2]
    assert [s.key for s in steps[0].steps] == ["a", "b", "c"]

    updates = await asyncio.gather(
        *(client.update_step("t", "a", progress=fraction(0.5), request_id="up") for _ in range(2))
    )
    assert updates[0] == updates[1]

    logs = await asyncio.gather(
        *(client.append_logs("t", ["exactly once"], request_id="log") for _ in range(2))
    )
    assert logs[0] == logs[1]

    assert (steps[0].revision, updates[0].revision, logs[0].revision) == (2, 3, 4)
    assert await store_revision(client) == 4
    assert [e.message for e in (await client.list_logs("t")).entries] == ["exactly once"]


async def test_concurrent_creates_of_one_id_without_request_id(client: HeadwayClient) -> None:
    results = await asyncio.gather(
        *(client.create_task("t", display_name=str(i)) for i in range(2)),
        return_exceptions=True,
    )
    created = [r for r in results if isinstance(r, task_pb2.Task)]
    refused = [r for r in results if isinstance(r, AlreadyExistsError)]
    assert len(created) == len(refused) == 1
    assert refused[0].reason == "TASK_ALREADY_EXISTS"
    assert await client.get_task("t") == created[0]
    assert await store_revision(client) == 1


# -- expected_revision ----------------------------------------------------------------


async def test_expected_revision_applies_when_current(client: HeadwayClient) -> None:
    t = await client.create_task("t", steps=["a"])
    t = await client.start_task("t", expected_revision=t.revision)
    t = await client.update_step("t", "a", progress=fraction(0.3), expected_revision=t.revision)
    # Logs do not move the task's revision, so a conditional write still applies.
    await client.append_logs("t", ["between"])
    t = await client.update_task("t", message="m", expected_revision=t.revision)
    t = await client.succeed_task("t", expected_revision=t.revision)
    assert (t.state, t.revision) == (SUCCEEDED, 6)  # the logs took revision 4
    assert await client.delete_task("t", expected_revision=t.revision) == 7


async def test_expected_revision_mismatch_then_reread_and_retry(client: HeadwayClient) -> None:
    stale = await client.create_task("t")
    await client.update_task("t", message="someone else")

    with pytest.raises(AbortedError) as info:
        await client.update_task("t", message="mine", expected_revision=stale.revision)
    assert info.value.reason == "REVISION_MISMATCH"
    assert info.value.metadata["revision"] == "2"
    assert (await client.get_task("t")).message == "someone else"

    fresh = await client.get_task("t")
    mine = await client.update_task("t", message="mine", expected_revision=fresh.revision)
    assert (mine.message, mine.revision) == ("mine", 3)


async def test_concurrent_conditional_writes_one_wins(client: HeadwayClient) -> None:
    t = await client.create_task("t")
    results = await asyncio.gather(
        *(
            client.update_task("t", message=f"writer {i}", expected_revision=t.revision)
            for i in range(4)
        ),
        return_exceptions=True,
    )
    won = [r for r in results if isinstance(r, task_pb2.Task)]
    lost = [r for r in results if isinstance(r, AbortedError)]
    assert len(won) == 1
    assert len(lost) == 3
    assert all(e.reason == "REVISION_MISMATCH" for e in lost)
    assert await client.get_task("t") == won[0]
    assert await store_revision(client) == 2


# -- GetTask --------------------------------------------------------------------------


async def test_get_task_returns_the_latest_state(client: HeadwayClient) -> None:
    created = await client.create_task("t", steps=["a"])
    assert await client.get_task("t") == created
    updated = await client.update_step("t", "a", progress=fraction(0.4))
    got = await client.get_task("t")
    assert got == updated
    assert got.steps[0].progress == fraction(0.4)
    assert got.revision == 2


# -- ListTasks filters ----------------------------------------------------------------


async def family(client: HeadwayClient) -> None:
    """p1 RUNNING; p2, x PENDING; c1 SUCCEEDED and c2 FAILED (children of p1);
    g1 CANCELLED (child of c1)."""
    await client.create_task("p1", kind="ci.build", labels={"team": "core", "env": "prod"})
    await client.create_task("p2", kind="ci.deploy", labels={"team": "core", "env": "dev"})
    await client.create_task("c1", kind="ci.build", labels={"team": "web"}, parent_id="p1")
    await client.create_task("c2", kind="ci.test", parent_id="p1")
    await client.create_task("g1", kind="ci.build", parent_id="c1")
    await client.create_task("x")
    await client.start_task("p1")
    await client.succeed_task("c1")
    await client.fail_task("c2", message="red")
    await client.cancel_task("g1", force=True)


@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        ({}, ["p1", "p2", "c1", "c2", "g1", "x"]),
        ({"task_ids": ["c2", "p1", "nope"]}, ["p1", "c2"]),
        ({"kinds": ["ci.build"]}, ["p1", "c1", "g1"]),
        ({"kinds": ["ci.build", "ci.test"]}, ["p1", "c1", "c2", "g1"]),
        ({"kinds": ["nothing"]}, []),
        ({"labels": {"team": "core"}}, ["p1", "p2"]),
        ({"labels": {"team": "core", "env": "prod"}}, ["p1"]),
        ({"labels": {"team": "core", "env": "qa"}}, []),
        ({"states": [RUNNING]}, ["p1"]),
        ({"states": [PENDING, SUCCEEDED]}, ["p2", "c1", "x"]),
        ({"states": [FAILED, CANCELLED]}, ["c2", "g1"]),
        ({"parent_id": "p1"}, ["c1", "c2"]),
        ({"parent_id": "c1"}, ["g1"]),
        ({"parent_id": "x"}, []),
        ({"parent_id": "p1", "kinds": ["ci.build"]}, ["c1"]),
        ({"kinds": ["ci.build"], "states": [SUCCEEDED, CANCELLED]}, ["c1", "g1"]),
        ({"task_ids": ["p1", "p2", "x"], "labels": {"env": "dev"}}, ["p2"]),
        (
            {
                "task_ids": ["c1"],
                "kinds": ["ci.build"],
                "labels": {"team": "web"},
                "states": [SUCCEEDED],
                "parent_id": "p1",
            },
            ["c1"],
        ),
    ],
    ids=[
        "empty",
        "task_ids",
        "kind",
        "kinds-or",
        "kind-none",
        "label",
        "labels-and",
        "labels-none",
        "state",
        "states-or",
        "states-at-rest",
        "parent",
        "grandparent",
        "no-children",
        "parent-and-kind",
        "kind-and-states",
        "ids-and-label",
        "all-criteria",
    ],
)
async def test_list_tasks_filter(
    client: HeadwayClient, criteria: dict[str, Any], expected: list[str]
) -> None:
    await family(client)
    listing = await client.list_tasks(task_filter(**criteria))
    assert ids(listing.tasks) == expected
    assert listing.next_page_token == ""
    # Ten changes, and six made by the server as p1 and c1 follow their children
    # (c1 at rest still counts g1's cancel).
    assert listing.revision == 16
    for task in listing.tasks:
        assert task == await client.get_task(task.id)


async def test_list_tasks_is_in_create_order_not_update_order(client: HeadwayClient) -> None:
    for name in ("a", "b", "c"):
        await client.create_task(name)
    await client.update_task("a", message="touched last")
    listing = await client.list_tasks()
    assert ids(listing.tasks) == ["a", "b", "c"]
    assert [t.create_revision for t in listing.tasks] == [1, 2, 3]
    assert listing.revision == 4


# -- ListTasks pagination -------------------------------------------------------------


async def walk(client: HeadwayClient, page_size: int, **criteria: Any) -> list[list[str]]:
    pages: list[list[str]] = []
    token = ""
    while True:
        page = await client.list_tasks(
            task_filter(**criteria), page_size=page_size, page_token=token
        )
        pages.append(ids(page.tasks))
        token = page.next_page_token
        if not token:
            return pages


async def test_list_tasks_default_and_capped_page_size(client: HeadwayClient) -> None:
    await asyncio.gather(*(client.create_task(f"t{i:04d}") for i in range(1001)))
    every = await client.list_tasks(page_size=1000)
    order = ids(every.tasks)
    assert [t.create_revision for t in every.tasks] == sorted(
        t.create_revision for t in every.tasks
    )

    default = await client.list_tasks()
    assert ids(default.tasks) == order[:100]
    assert default.next_page_token

    capped = await client.list_tasks(page_size=5000)
    assert ids(capped.tasks) == order[:1000]
    assert capped.next_page_token
    rest = await client.list_tasks(page_size=5000, page_token=capped.next_page_token)
    assert len(rest.tasks) == 1
    assert rest.next_page_token == ""
    assert set(order + ids(rest.tasks)) == {f"t{i:04d}" for i in range(1001)}


async def test_list_tasks_negative_page_size(client: HeadwayClient) -> None:
    await client.create_task("t")
    with pytest.raises(InvalidArgumentError) as info:
        await client.list_tasks(page_size=-1)
    assert info.value.reason == "FIELD_VIOLATION"
    assert set(info.value.field_violations) == {"page_size"}


@pytest.mark.parametrize(
    ("count", "page_size", "sizes"),
    [(10, 3, [3, 3, 3, 1]), (6, 3, [3, 3]), (2, 5, [2]), (0, 3, [0]), (5, 1, [1] * 5)],
)
async def test_list_tasks_tokens_walk_every_task_once_in_create_order(
    client: HeadwayClient, count: int, page_size: int, sizes: list[int]
) -> None:
    names = [f"t{i}" for i in range(count)]
    for name in names:
        await client.create_task(name)
    pages = await walk(client, page_size)
    assert [len(page) for page in pages] == sizes
    assert [name for page in pages for name in page] == names


async def test_list_tasks_tokens_walk_a_filter(client: HeadwayClient) -> None:
    for i in range(9):
        await client.create_task(f"t{i}", kind="even" if i % 2 == 0 else "odd")
    pages = await walk(client, 2, kinds=["even"])
    assert pages == [["t0", "t2"], ["t4", "t6"], ["t8"]]


async def test_list_tasks_walk_while_tasks_come_and_go(client: HeadwayClient) -> None:
    for i in range(6):
        await client.create_task(f"t{i}")
    first = await client.list_tasks(page_size=2)
    assert ids(first.tasks) == ["t0", "t1"]
    # A task created during the walk shows up once, at the end; a deleted one is skipped.
    await client.create_task("late")
    await client.succeed_task("t3")
    await client.delete_task("t3")
    second = await client.list_tasks(page_size=2, page_token=first.next_page_token)
    third = await client.list_tasks(page_size=2, page_token=second.next_page_token)
    assert ids(second.tasks) == ["t2", "t4"]
    assert ids(third.tasks) == ["t5", "late"]
    assert third.next_page_token == ""
    assert second.revision == third.revision == 9


async def test_list_tasks_token_with_another_filter_is_rejected(client: HeadwayClient) -> None:
    for i in range(4):
        await client.create_task(f"t{i}", labels={"team": "a"})
    page = await client.list_tasks(task_filter(labels={"team": "a"}), page_size=2)
    with pytest.raises(InvalidArgumentError) as info:
        await client.list_tasks(
            task_filter(labels={"team": "b"}), page_size=2, page_token=page.next_page_token
        )
    assert info.value.reason == "INVALID_PAGE_TOKEN"
    assert set(info.value.field_violations) == {"page_token"}


# -- ListLogs -------------------------------------------------------------------------


def at(seconds: int) -> Timestamp:
    return Timestamp(seconds=1_700_000_000 + seconds)


def entry(message: str, **fields: Any) -> log_pb2.LogEntry:
    return log_pb2.LogEntry(message=message, **fields)


def messages(response: task_service_pb2.ListLogsResponse) -> list[str]:
    return [e.message for e in response.entries]


async def test_list_logs_in_revision_then_index_order(client: HeadwayClient) -> None:
    await client.create_task("t")
    await client.create_task("other")
    # Times run backwards: the order is that of recording, not of the agents' clocks.
    await client.append_logs("t", [entry("a", time=at(50)), entry("b", time=at(40))])
    await client.append_logs("other", ["elsewhere"])
    await client.append_logs("t", [entry("c", time=at(30))])
    await client.append_logs("t", [entry("d", time=at(20)), entry("e", time=at(10))])

    entries = (await client.list_logs("t")).entries
    assert [(e.message, e.revision, e.index) for e in entries] == [
        ("a", 3, 0),
        ("b", 3, 1),
        ("c", 5, 0),
        ("d", 6, 0),
        ("e", 6, 1),
    ]
    assert all(e.task_id == "t" for e in entries)


async def test_list_logs_min_level(client: HeadwayClient) -> None:
    await client.create_task("t")
    await client.append_logs(
        "t",
        [
            entry("debug", level=log_pb2.LOG_LEVEL_DEBUG),
            entry("default"),
            entry("info", level=log_pb2.LOG_LEVEL_INFO),
            entry("warning", level=log_pb2.LOG_LEVEL_WARNING),
            entry("error", level=log_pb2.LOG_LEVEL_ERROR),
        ],
    )
    by_level = {
        level: messages(await client.list_logs("t", min_level=level))
        for level in (
            log_pb2.LOG_LEVEL_UNSPECIFIED,
            log_pb2.LOG_LEVEL_DEBUG,
            log_pb2.LOG_LEVEL_INFO,
            log_pb2.LOG_LEVEL_WARNING,
            log_pb2.LOG_LEVEL_ERROR,
        )
    }
    assert by_level == {
        log_pb2.LOG_LEVEL_UNSPECIFIED: ["debug", "default", "info", "warning", "error"],
        log_pb2.LOG_LEVEL_DEBUG: ["debug", "default", "info", "warning", "error"],
        log_pb2.LOG_LEVEL_INFO: ["default", "info", "warning", "error"],
        log_pb2.LOG_LEVEL_WARNING: ["warning", "error"],
        log_pb2.LOG_LEVEL_ERROR: ["error"],
    }


async def test_list_logs_step_key(client: HeadwayClient) -> None:
    await client.create_task("t", steps=["fetch", "build"])
    await client.append_logs(
        "t",
        [
            entry("task-wide"),
            entry("fetch 1", step_key="fetch"),
            entry("build 1", step_key="build"),
            entry("fetch 2", step_key="fetch"),
        ],
    )
    assert messages(await client.list_logs("t", step_key="fetch")) == ["fetch 1", "fetch 2"]
    assert messages(await client.list_logs("t", step_key="build")) == ["build 1"]
    assert len((await client.list_logs("t")).entries) == 4


async def test_list_logs_text_search_ignores_case(client: HeadwayClient) -> None:
    await client.create_task("t")
    await client.append_logs(
        "t",
        [
            "Timeout while fetching",
            "fetched page 3",
            "retry after TIMEOUT",
            "100% done",
            "1000 done",
            "under_score",
            "underXscore",
        ],
    )
    expected = ["Timeout while fetching", "retry after TIMEOUT"]
    assert messages(await client.list_logs("t", text="timeout")) == expected
    assert messages(await client.list_logs("t", text="TimeOut")) == expected
    assert messages(await client.list_logs("t", text="FETCH")) == [
        "Timeout while fetching",
        "fetched page 3",
    ]
    # Wildcard characters of SQL patterns are matched literally.
    assert messages(await client.list_logs("t", text="0%")) == ["100% done"]
    assert messages(await client.list_logs("t", text="r_s")) == ["under_score"]
    assert messages(await client.list_logs("t", text="nowhere")) == []


async def test_list_logs_text_search_ignores_case_beyond_ascii(client: HeadwayClient) -> None:
    """Case is ignored in any script, not only ASCII."""
    await client.create_task("t")
    await client.append_logs("t", ["ÉCHEC du téléchargement", "Ошибка сети", "all good"])
    assert messages(await client.list_logs("t", text="échec")) == ["ÉCHEC du téléchargement"]
    assert messages(await client.list_logs("t", text="ошибка")) == ["Ошибка сети"]


async def test_list_logs_time_range(client: HeadwayClient) -> None:
    await client.create_task("t")
    await client.append_logs("t", [entry(f"at {s}", time=at(s)) for s in (0, 10, 20, 30, 40)])

    assert messages(await client.list_logs("t", start_time=at(10), end_time=at(30))) == [
        "at 10",
        "at 20",
    ]  # start inclusive, end exclusive
    assert messages(await client.list_logs("t", start_time=at(25))) == ["at 30", "at 40"]
    assert messages(await client.list_logs("t", end_time=at(10))) == ["at 0"]
    assert messages(await client.list_logs("t", start_time=at(41))) == []


async def test_list_logs_filters_combine(client: HeadwayClient) -> None:
    await client.create_task("t", steps=["s"])
    warning = log_pb2.LOG_LEVEL_WARNING
    await client.append_logs(
        "t",
        [
            entry("disk slow", step_key="s", level=warning, time=at(1)),
            entry("disk slow", level=warning, time=at(2)),
            entry("disk ok", step_key="s", time=at(3)),
            entry("Disk slow again", step_key="s", level=log_pb2.LOG_LEVEL_ERROR, time=at(4)),
            entry("disk slow", step_key="s", level=warning, time=at(9)),
        ],
    )
    found = await client.list_logs(
        "t", min_level=warning, step_key="s", text="DISK SLOW", start_time=at(0), end_time=at(5)
    )
    assert [(e.message, e.time.seconds) for e in found.entries] == [
        ("disk slow", at(1).seconds),
        ("Disk slow again", at(4).seconds),
    ]


async def test_list_logs_pagination(client: HeadwayClient) -> None:
    await client.create_task("t")
    lines = [f"line {i}" for i in range(7)]
    await client.append_logs("t", lines[:3])
    await client.append_logs("t", lines[3:4])
    await client.append_logs("t", lines[4:])

    pages: list[list[str]] = []
    token = ""
    while True:
        page = await client.list_logs("t", page_size=3, page_token=token)
        pages.append(messages(page))
        token = page.next_page_token
        if not token:
            break
    assert pages == [lines[0:3], lines[3:6], lines[6:7]]

    # With a filter, pages hold only matching lines and still cover each once.
    first = await client.list_logs("t", text="line", page_size=6)
    assert messages(first) == lines[:6]
    second = await client.list_logs("t", text="line", page_size=6, page_token=first.next_page_token)
    assert messages(second) == lines[6:]
    assert second.next_page_token == ""


async def test_list_logs_default_and_capped_page_size(client: HeadwayClient) -> None:
    await client.create_task("t")
    await client.append_logs("t", [f"l{i}" for i in range(1000)])
    await client.append_logs("t", ["l1000"])

    default = await client.list_logs("t")
    assert messages(default) == [f"l{i}" for i in range(100)]
    assert default.next_page_token

    capped = await client.list_logs("t", page_size=5000)
    assert len(capped.entries) == 1000
    assert capped.next_page_token
    rest = await client.list_logs("t", page_size=5000, page_token=capped.next_page_token)
    assert messages(rest) == ["l1000"]
    assert rest.next_page_token == ""

    with pytest.raises(InvalidArgumentError) as info:
        await client.list_logs("t", page_size=-5)
    assert set(info.value.field_violations) == {"page_size"}


# -- restart --------------------------------------------------------------------------


async def test_state_persists_across_restart(harness: ServerHarness) -> None:
    client = harness.client()
    await client.create_task("a", kind="k", labels={"x": "y"}, steps=["s1", "s2"], start=True)
    await client.update_step("a", "s1", state=task_pb2.STEP_STATE_SUCCEEDED)
    await client.update_step("a", "s2", progress=fraction(0.25), message="half")
    await client.append_logs("a", [entry("hello", level=log_pb2.LOG_LEVEL_WARNING), "world"])
    await client.create_task("b", parent_id="a", metrics={"cost": 2.0})
    await client.add_artifacts("b", [task_pb2.Artifact(name="out", uri="s3://out")])
    await client.fail_task("b", code="E", message="bad")
    await client.create_task("c")
    await client.cancel_task("c", reason="not needed", requested_by="me")
    await client.create_task("gone")
    await client.succeed_task("gone")
    await client.delete_task("gone")
    before = await everything(client)
    head = before[0]
    assert head == 14  # twelve changes, and two of a counting its child b
    token = (await client.list_tasks(page_size=1)).next_page_token

    await harness.restart()
    client = harness.client()

    assert await everything(client) == before
    with pytest.raises(NotFoundError):
        await client.get_task("gone")
    # A page token issued before the restart still continues the walk.
    assert ids((await client.list_tasks(page_size=5, page_token=token)).tasks) == ["b", "c"]
    # The pending cancel request is still pending and still reaches the agent.
    logged = await client.append_logs("c", ["after restart"])
    assert logged.revision == head + 1
    assert logged.cancel_request.requested_by == "me"
    # The revision continues where it was, and the restored tasks accept changes.
    done = await client.succeed_task("a")
    assert done.revision == head + 2
    assert [s.state for s in done.steps] == [task_pb2.STEP_STATE_SUCCEEDED] * 2
    assert await store_revision(client) == head + 2
    assert messages(await client.list_logs("a")) == ["hello", "world"]
