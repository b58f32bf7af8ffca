"""Success criteria on the dashboard, in a real browser: a count on the card, a list on its page."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from playwright.async_api import Page, expect

from headway.client import Tracker
from headway.v1 import task_pb2
from tests.browser.conftest import Web

pytestmark = pytest.mark.asyncio(loop_scope="module")

OpenPage = Callable[..., Awaitable[Page]]


async def test_the_card_counts_criteria_and_the_task_page_lists_them(
    web: Web, new_page: OpenPage
) -> None:
    page = await new_page()
    await page.goto(f"{web.base_url}/")
    await expect(page.locator("html")).to_have_attribute("data-synced", "true")

    async with Tracker(web.target) as tracker:
        task = tracker.task(
            "loop-1",
            display_name="Fix the parser",
            criteria=["tests pass", "lint clean", "docs", "changelog", "no new warnings"],
        )
        await task.start()
        card = page.locator('#tasks [data-task-id="loop-1"]')
        count = card.locator(".criteria-count")
        await expect(count).to_have_text("Criteria 0/5")
        await task.set_criteria(
            {"tests pass": True, "lint clean": True, "docs": True},
            details={"tests pass": "42/42"},
        )
        await expect(count).to_have_text("Criteria 3/5")  # live, from the stream
        await task.set_criterion("changelog", False, detail="no entry yet")
        # The card stays compact: the count, not the list.
        await expect(card.locator(".criteria")).to_have_count(0)

        await card.get_by_role("link", name="Fix the parser").click()
        holder = page.locator("#task-card")
        await expect(holder.locator(".criteria-count")).to_have_text("Criteria 3/5")
        items = holder.locator(".criteria .criterion")
        await expect(items).to_have_count(5)
        await expect(items.locator(".criterion-name")).to_have_text(
            ["tests pass", "lint clean", "docs", "changelog", "no new warnings"]
        )
        await expect(items.locator(".criterion-icon")).to_have_text(["✓", "✓", "✓", "✗", "✗"])
        await expect(items.nth(0).locator(".criterion-detail")).to_have_text("— 42/42")
        await expect(items.nth(3).locator(".criterion-detail")).to_have_text("— no entry yet")
        await expect(items.nth(4).locator(".criterion-detail")).to_have_count(0)
        await expect(items.nth(3)).to_have_attribute("data-met", "false")

        # The page follows the stream too.
        await task.set_criterion("no new warnings")
        await expect(holder.locator(".criteria-count")).to_have_text("Criteria 4/5")
        await expect(items.nth(4)).to_have_attribute("data-met", "true")
        await task.succeed()


async def test_a_task_without_criteria_shows_no_count(web: Web, new_page: OpenPage) -> None:
    await web.client.create_task("plain-1", display_name="Plain", start=True)
    await web.client.update_task("plain-1", progress=task_pb2.Progress(fraction=0.5))
    page = await new_page()
    await page.goto(f"{web.base_url}/#/tasks/plain-1")
    holder = page.locator("#task-card")
    await expect(holder.locator(".percent")).to_have_text("50%")
    await expect(holder.locator(".criteria-count")).to_have_count(0)
    await expect(holder.locator(".criteria")).to_have_count(0)
