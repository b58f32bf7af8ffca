"""A parent's card on the dashboard: its rolled-up progress, its children summary and list."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import pytest
from playwright.async_api import Page, expect

from headway.v1 import task_pb2
from tests.browser.conftest import Web
from tests.browser.test_dashboard import card, open_dashboard

pytestmark = pytest.mark.asyncio(loop_scope="module")

OpenPage = Callable[..., Awaitable[Page]]


async def test_a_parent_card_shows_the_rolled_up_percentage_and_its_child(
    web: Web, new_page: OpenPage
) -> None:
    client = web.client
    parent = f"release-{uuid.uuid4().hex[:8]}"
    child = f"build-{uuid.uuid4().hex[:8]}"
    await client.create_task(parent, display_name="Release", start=True)
    await client.create_task(child, display_name="Build", parent_id=parent, start=True)
    page = await new_page()
    await open_dashboard(page, web)

    await client.update_task(child, progress=task_pb2.Progress(fraction=0.7))
    parent_card = card(page, parent)
    await expect(parent_card.locator(":scope > .progress-row .percent")).to_have_text("70%")
    await expect(parent_card.locator(":scope > .children-summary")).to_have_text(
        "Children 0/1 done · 1 running"
    )
    await expect(
        parent_card.locator(f':scope > .children [data-task-id="{child}"]')
    ).to_be_visible()

    await parent_card.get_by_role("link", name="Release").click()
    assert page.url.endswith(f"#/tasks/{parent}")
    await expect(page.locator("#task-card .children-summary")).to_have_text(
        "Children 0/1 done · 1 running"
    )
    row = page.locator(f'#children li[data-task-id="{child}"]')
    await expect(row).to_have_text("Build — running, 70%")

    await client.succeed_task(child)
    await expect(page.locator("#task-card .percent")).to_have_text("100%")
    await expect(page.locator("#task-card .badge")).to_have_text("RUNNING")
    await expect(row).to_have_text("Build — succeeded, 100%")
    await row.get_by_role("link", name="Build").click()
    assert page.url.endswith(f"#/tasks/{child}")
