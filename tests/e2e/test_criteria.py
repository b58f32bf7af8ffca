"""Success criteria over real gRPC: declared at creation, upserted by name, refused precisely.

Every refusal is checked to change nothing: the store revision, the listing and
the task itself are compared before and after the call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import aiohttp
import pytest

from headway.client import (
    FailedPreconditionError,
    HeadwayClient,
    HeadwayError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    task_filter,
)
from headway.server.config import Limits, Settings
from headway.v1 import task_pb2
from tests.harness import ServerHarness
from tests.streams import Collector, kind, rebuild

Criterion = task_pb2.Criterion


def listed(task: task_pb2.Task) -> list[tuple[str, bool, str]]:
    return [(c.name, c.met, c.detail) for c in task.criteria]


async def snapshot(client: HeadwayClient) -> tuple[int, list[task_pb2.Task]]:
    listing = await client.list_tasks(page_size=1000)
    return listing.revision, list(listing.tasks)


async def refused(
    client: HeadwayClient,
    call: Callable[[], Awaitable[object]],
    error_type: type[HeadwayError],
    reason: str,
) -> HeadwayError:
    """Run `call`, expect `error_type` with `reason`, and check that nothing changed."""
    before = await snapshot(client)
    with pytest.raises(error_type) as info:
        await call()
    assert info.value.reason == reason, str(info.value)
    assert await snapshot(client) == before
    return info.value


async def test_criteria_are_declared_then_upserted_by_name_in_first_seen_order(
    client: HeadwayClient,
) -> None:
    created = await client.create_task(
        "agent-1",
        start=True,
        criteria=[
            "tests pass",
            Criterion(name="lint clean", met=True, detail="0 warnings"),
            "docs",
        ],
    )
    assert listed(created) == [
        ("tests pass", False, ""),
        ("lint clean", True, "0 warnings"),
        ("docs", False, ""),
    ]

    collector = Collector().start(client, filter=task_filter(task_ids=["agent-1"]))
    await collector.wait_for(lambda events: any(kind(e) == "synced" for e in events))

    updated = await client.update_task(
        "agent-1",
        criteria=[
            Criterion(name="docs", met=True, detail="README updated"),
            Criterion(name="benchmarks", detail="not run yet"),
            Criterion(name="tests pass", met=True, detail="42/42"),
        ],
    )
    expected = [
        ("tests pass", True, "42/42"),
        ("lint clean", True, "0 warnings"),  # not named: left as it was
        ("docs", True, "README updated"),
        ("benchmarks", False, "not run yet"),  # new: appended
    ]
    assert listed(updated) == expected
    assert updated.revision == created.revision + 1
    assert updated.state == task_pb2.TASK_STATE_RUNNING
    assert listed(await client.get_task("agent-1")) == expected

    # A criterion named again is replaced whole: it can become unmet, and its detail cleared.
    again = await client.update_task("agent-1", criteria=[Criterion(name="tests pass")])
    assert listed(again)[0] == ("tests pass", False, "")
    assert listed(again)[1:] == expected[1:]
    assert listed(await client.get_task("agent-1")) == listed(again)

    events = await collector.wait_revision(again.revision)
    await collector.stop()
    assert [listed(e.updated) for e in events if kind(e) == "updated"] == [
        expected,
        listed(again),
    ]
    assert listed(rebuild(events)["agent-1"]) == listed(again)


async def test_criteria_alone_are_a_change_and_other_fields_keep_them(
    client: HeadwayClient,
) -> None:
    await client.create_task("agent-2", criteria=["a"])
    only = await client.update_task("agent-2", criteria=[Criterion(name="a", met=True)])
    assert listed(only) == [("a", True, "")]
    assert only.state == task_pb2.TASK_STATE_PENDING  # criteria do not start a task
    other = await client.update_task("agent-2", message="still going", metrics={"cost": 1})
    assert listed(other) == [("a", True, "")]


LONG_NAME = "n" * 257
LONG_DETAIL = "d" * 1025

# (the criteria sent, the field the refusal names)
INVALID: dict[str, tuple[Sequence[Criterion], str]] = {
    "empty name": ([Criterion(name="ok"), Criterion(name="")], "criteria[1].name"),
    "name too long": ([Criterion(name=LONG_NAME)], "criteria[0].name"),
    "NUL in name": ([Criterion(name="a\x00b")], "criteria[0].name"),
    "duplicate name": (
        [Criterion(name="x"), Criterion(name="y"), Criterion(name="x", met=True)],
        "criteria[2].name",
    ),
    "detail too long": ([Criterion(name="x", detail=LONG_DETAIL)], "criteria[0].detail"),
    "too many": ([Criterion(name=f"c{i}") for i in range(65)], "criteria"),
}


@pytest.mark.parametrize("case", INVALID)
async def test_invalid_criteria_at_creation_are_refused_with_their_field(
    client: HeadwayClient, case: str
) -> None:
    criteria, field = INVALID[case]
    error = await refused(
        client,
        lambda: client.create_task("bad", criteria=criteria),
        InvalidArgumentError,
        "FIELD_VIOLATION",
    )
    assert list(error.field_violations) == [field]
    with pytest.raises(NotFoundError):
        await client.get_task("bad")


@pytest.mark.parametrize("case", INVALID)
async def test_invalid_criteria_in_an_update_are_refused_with_their_field(
    client: HeadwayClient, case: str
) -> None:
    criteria, field = INVALID[case]
    await client.create_task("agent-3", criteria=["x", "y"], start=True)
    error = await refused(
        client,
        lambda: client.update_task("agent-3", message="not applied", criteria=criteria),
        InvalidArgumentError,
        "FIELD_VIOLATION",
    )
    assert list(error.field_violations) == [field]


async def test_the_64th_criterion_fits_and_the_65th_is_resource_exhausted(
    client: HeadwayClient,
) -> None:
    await client.create_task("agent-4", criteria=[f"c{i}" for i in range(60)])
    # Four new names and one known one: exactly 64.
    names = ["c0", "c60", "c61", "c62", "c63"]
    full = await client.update_task("agent-4", criteria=[Criterion(name=n) for n in names])
    assert len(full.criteria) == 64
    # Known names still update a full task; one new name is refused, with all the rest.
    error = await refused(
        client,
        lambda: client.update_task(
            "agent-4", criteria=[Criterion(name="c1", met=True), Criterion(name="c64")]
        ),
        ResourceExhaustedError,
        "TOO_MANY_CRITERIA",
    )
    assert error.metadata["limit"] == "64"
    updated = await client.update_task("agent-4", criteria=[Criterion(name="c1", met=True)])
    assert [c.name for c in updated.criteria if c.met] == ["c1"]


async def test_a_task_at_rest_refuses_criteria(client: HeadwayClient) -> None:
    await client.create_task("agent-5", criteria=["done"], start=True)
    await client.succeed_task("agent-5")
    error = await refused(
        client,
        lambda: client.update_task("agent-5", criteria=[Criterion(name="done", met=True)]),
        FailedPreconditionError,
        "TASK_AT_REST",
    )
    assert error.metadata["state"] == "SUCCEEDED"
    assert listed(await client.get_task("agent-5")) == [("done", False, "")]


@pytest.fixture
async def small_tasks(make_settings: Callable[..., Settings]) -> AsyncIterator[HeadwayClient]:
    """A server whose task budget is 8 KiB, which a handful of long criteria can fill."""
    harness = ServerHarness(make_settings(limits=Limits(max_task_bytes=8192)))
    await harness.start()
    try:
        yield harness.client()
    finally:
        await harness.close()


async def test_criteria_count_against_the_task_size_budget(small_tasks: HeadwayClient) -> None:
    client = small_tasks
    detail = "d" * 1000
    await client.create_task("agent-6", criteria=[Criterion(name=f"c{i}") for i in range(4)])
    await client.update_task(
        "agent-6", criteria=[Criterion(name=f"c{i}", detail=detail) for i in range(4)]
    )
    error = await refused(
        client,
        lambda: client.update_task(
            "agent-6", criteria=[Criterion(name=f"more{i}", detail=detail) for i in range(6)]
        ),
        ResourceExhaustedError,
        "TASK_TOO_LARGE",
    )
    assert int(error.metadata["size_bytes"]) > 8192
    with pytest.raises(ResourceExhaustedError) as info:
        await client.create_task(
            "agent-7", criteria=[Criterion(name=f"c{i}", detail=detail) for i in range(10)]
        )
    assert info.value.reason == "TASK_TOO_LARGE"


async def test_the_http_face_carries_criteria_both_ways(harness: ServerHarness) -> None:
    base = harness.http_url + "/v1/tasks"

    async def call(method: str, url: str, body: Any = None) -> dict[str, Any]:
        async with http.request(method, url, json=body) as response:
            answer: dict[str, Any] = await response.json()
            assert response.status == 200, answer
            return answer

    async with aiohttp.ClientSession() as http:
        await call("POST", base, {"taskId": "web-1", "criteria": [{"name": "a"}, {"name": "b"}]})
        patched = await call(
            "PATCH", f"{base}/web-1", {"criteria": [{"name": "b", "met": True, "detail": "ok"}]}
        )
        fetched = await call("GET", f"{base}/web-1")
    expected = [{"name": "a"}, {"name": "b", "met": True, "detail": "ok"}]
    assert patched["task"]["criteria"] == expected
    assert fetched["task"]["criteria"] == expected
