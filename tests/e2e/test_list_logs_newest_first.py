"""ListLogs newest first: the last lines of a long log without paging through it all."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from headway.client import HeadwayClient, InvalidArgumentError
from headway.v1 import log_pb2
from tests.harness import ServerHarness

WARNING = log_pb2.LOG_LEVEL_WARNING


async def write_log(client: HeadwayClient, task_id: str = "long") -> list[str]:
    """Twelve lines over five appends (several lines share a revision); every third a warning."""
    await client.create_task(task_id)
    messages: list[str] = []
    for batch in (3, 2, 4, 1, 2):
        entries = []
        for _ in range(batch):
            n = len(messages)
            level = WARNING if n % 3 == 2 else log_pb2.LOG_LEVEL_INFO
            entries.append(log_pb2.LogEntry(message=f"line {n}", level=level))
            messages.append(f"line {n}")
        await client.append_logs(task_id, entries)
    return messages


async def all_pages(client: HeadwayClient, page_size: int, **kw: Any) -> list[list[str]]:
    pages: list[list[str]] = []
    token = ""
    while True:
        page = await client.list_logs("long", page_size=page_size, page_token=token, **kw)
        pages.append([entry.message for entry in page.entries])
        token = page.next_page_token
        if not token:
            return pages


@pytest.mark.parametrize("page_size", [1, 2, 5, 12, 100])
async def test_newest_first_pages_hold_every_line_once_in_reverse(
    client: HeadwayClient, page_size: int
) -> None:
    messages = await write_log(client)
    pages = await all_pages(client, page_size, newest_first=True)
    assert pages[0] == messages[::-1][:page_size], "the first page holds the last lines"
    assert [m for page in pages for m in page] == messages[::-1]
    assert all(len(page) == page_size for page in pages[:-1])
    assert pages[-1], "no empty last page after a full one"


async def test_newest_first_keeps_the_filters(client: HeadwayClient) -> None:
    messages = await write_log(client)
    warnings = [m for i, m in enumerate(messages) if i % 3 == 2]
    pages = await all_pages(client, 2, newest_first=True, min_level=WARNING)
    assert [m for page in pages for m in page] == warnings[::-1]
    found = await all_pages(client, 1, newest_first=True, text="LINE 1")
    assert [m for page in found for m in page] == ["line 11", "line 10", "line 1"]
    oldest_first = await all_pages(client, 5)
    assert [m for page in oldest_first for m in page] == messages, "the default is unchanged"


async def test_a_page_token_keeps_its_order(client: HeadwayClient) -> None:
    await write_log(client)
    newest = await client.list_logs("long", page_size=2, newest_first=True)
    oldest = await client.list_logs("long", page_size=2)
    for token, newest_first in ((newest.next_page_token, False), (oldest.next_page_token, True)):
        with pytest.raises(InvalidArgumentError) as info:
            await client.list_logs("long", page_size=2, page_token=token, newest_first=newest_first)
        assert info.value.reason == "INVALID_PAGE_TOKEN"
    # Another page size is the same query: the token goes on towards older lines.
    rest = await client.list_logs(
        "long", page_size=3, page_token=newest.next_page_token, newest_first=True
    )
    assert [e.message for e in rest.entries] == ["line 9", "line 8", "line 7"]


async def test_lines_appended_between_pages_do_not_repeat(client: HeadwayClient) -> None:
    messages = await write_log(client)
    first = await client.list_logs("long", page_size=4, newest_first=True)
    await client.append_logs("long", ["late"])
    rest = await all_pages(client, 100, newest_first=True)
    assert rest[0][0] == "late"
    second = await client.list_logs(
        "long", page_size=100, page_token=first.next_page_token, newest_first=True
    )
    seen = [e.message for e in first.entries] + [e.message for e in second.entries]
    assert seen == messages[::-1], "older pages continue below the first, without the new line"


async def test_http_newest_first(harness: ServerHarness, client: HeadwayClient) -> None:
    messages = await write_log(client)
    url = f"{harness.http_url}/v1/tasks/long/logs"
    async with aiohttp.ClientSession() as http:

        async def get(query: str) -> tuple[int, dict[str, Any]]:
            async with http.get(f"{url}?{query}") as response:
                return response.status, await response.json()

        status, page = await get("newestFirst=true&pageSize=3")
        assert status == 200, page
        assert [e["message"] for e in page["entries"]] == messages[::-1][:3]
        status, more = await get(
            f"newestFirst=true&pageSize=3&pageToken={quote(page['nextPageToken'])}"
        )
        assert status == 200, more
        assert [e["message"] for e in more["entries"]] == messages[::-1][3:6]
        status, warnings = await get("newestFirst=1&minLevel=WARNING&pageSize=2")
        assert [e["message"] for e in warnings["entries"]] == ["line 11", "line 8"]
        status, oldest = await get("newestFirst=false&pageSize=2")
        assert [e["message"] for e in oldest["entries"]] == ["line 0", "line 1"]
        status, wrong = await get(f"pageSize=3&pageToken={quote(page['nextPageToken'])}")
        assert status == 400, wrong
