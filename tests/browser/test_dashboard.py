"""The dashboard in a real browser against a real server and real agents."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from playwright.async_api import Locator, Page, expect

from headway.client import NotFoundError, TaskCancelled, Tracker
from headway.client.tracker import progress_message
from headway.server.auth.tokens import append_token
from headway.server.config import Settings
from headway.v1 import log_pb2, task_pb2
from tests.browser.conftest import Web, start_web, web_settings
from tests.browser.scene import busy_tenant

pytestmark = pytest.mark.asyncio(loop_scope="module")

OpenPage = Callable[..., Awaitable[Page]]


def card(page: Page, task_id: str) -> Locator:
    return page.locator(f'#tasks [data-task-id="{task_id}"]')


async def open_dashboard(page: Page, web: Web, route: str = "") -> None:
    await page.goto(f"{web.base_url}/{route}")
    await expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
    await expect(page.locator("html")).to_have_attribute("data-synced", "true")


async def test_an_agent_appears_and_its_bar_and_steps_move(web: Web, new_page: OpenPage) -> None:
    page = await new_page()
    await open_dashboard(page, web)
    await expect(page.locator("#empty")).to_contain_text("No tasks yet")

    async with (
        Tracker(web.target) as tracker,
        tracker.task(
            "etl-1", display_name="Nightly ETL", kind="etl", steps=["extract", "load"]
        ) as task,
    ):
        etl = card(page, "etl-1")
        await expect(etl).to_have_attribute("data-state", "running")
        await expect(etl.locator(".card-title")).to_have_text("Nightly ETL")
        await expect(etl.locator(".kind")).to_have_text("etl")
        await expect(etl.locator(".badge")).to_have_text("RUNNING")
        async with task.step("extract") as step:
            await step.progress(40, 120, unit="files")
            await step.flush()
            extract = etl.locator('[data-step-key="extract"]')
            await expect(extract).to_have_attribute("data-state", "running")
            await expect(extract.locator(".step-progress")).to_have_text("40/120 files")
            await expect(etl.locator(".percent")).to_have_text("16%")  # a third of half
            await step.progress(120, 120, unit="files")
        await expect(extract).to_have_attribute("data-state", "succeeded")
        await expect(etl.locator(".percent")).to_have_text("50%")
        bar = etl.locator(".progress-row [role=progressbar]")
        await expect(bar).to_have_attribute("aria-valuenow", "50")
        await task.iteration(3, max_iterations=10)
        await task.metrics(rows=48213)
        await task.log("loaded the warehouse", step="load")
        await expect(etl.locator(".iteration")).to_have_text("Iteration 3/10")
        await expect(etl.locator(".metric")).to_have_text("rows48,213")
        await expect(etl.locator(".card-logs .log-message")).to_have_text("loaded the warehouse")
        await expect(page.locator('.stat-running [class="stat-count"]')).to_have_text("1")
    await expect(etl).to_have_attribute("data-state", "succeeded")
    await expect(etl.locator(".percent")).to_have_text("100%")
    await expect(page.locator('.stat-succeeded [class="stat-count"]')).to_have_text("1")
    assert await page.get_attribute("html", "data-duplicates") == "0"


async def test_cancel_from_the_page_reaches_the_agent_then_dismiss(
    web: Web, new_page: OpenPage
) -> None:
    page = await new_page()
    await open_dashboard(page, web)
    stopped: asyncio.Future[TaskCancelled] = asyncio.get_running_loop().create_future()

    async def agent() -> None:
        async with (
            Tracker(web.target) as tracker,
            tracker.task("crunch", display_name="Crunch numbers", steps=["crunch"]) as task,
            task.step("crunch") as step,
        ):
            try:
                for n in range(1, 10_000):
                    await step.progress(n, 10_000, unit="rows")
                    await asyncio.sleep(0.05)
            except TaskCancelled as cancelled:
                stopped.set_result(cancelled)
                raise

    running = asyncio.create_task(agent())
    try:
        job = card(page, "crunch")
        await expect(job).to_have_attribute("data-state", "running")
        # By keyboard: the button opens a dialog that asks for a reason.
        await job.get_by_role("button", name="Cancel Crunch numbers").focus()
        await page.keyboard.press("Enter")
        dialog = page.get_by_role("dialog", name="Cancel task")
        await expect(dialog).to_be_visible()
        await expect(page.locator("#cancel-reason")).to_be_focused()
        await page.keyboard.type("wrong input file")
        await page.keyboard.press("Tab")
        await page.keyboard.press("Tab")
        await expect(page.locator("#cancel-confirm")).to_be_focused()
        await page.keyboard.press("Enter")
        await expect(dialog).to_be_hidden()

        cancelled = await asyncio.wait_for(stopped, 15)
        assert cancelled.reason == "wrong input file"
        await expect(job).to_have_attribute("data-state", "cancelled")
        await expect(job.locator(".badge")).to_have_text("CANCELLED")
        await expect(job.get_by_role("button", name="Cancel Crunch numbers")).to_have_count(0)
        await asyncio.wait_for(running, 15)
    finally:
        running.cancel()

    await job.get_by_role("button", name="Dismiss Crunch numbers").click()
    await expect(job).to_have_count(0)
    with pytest.raises(NotFoundError):
        await web.client.get_task("crunch")


async def test_task_page_searches_logs_and_shows_the_timeline(web: Web, new_page: OpenPage) -> None:
    client = web.client
    await client.create_task("ingest", display_name="Ingest", steps=["fetch", "parse"], start=True)
    await client.update_step("ingest", "fetch", state=task_pb2.STEP_STATE_RUNNING)
    lines = []
    for n in range(30):
        level = log_pb2.LOG_LEVEL_WARNING if n % 10 == 0 else log_pb2.LOG_LEVEL_INFO
        word = "disk" if n % 3 == 0 else "net"
        lines.append(log_pb2.LogEntry(message=f"{word} check {n}", level=level, step_key="fetch"))
    await client.append_logs("ingest", lines)
    await client.update_step("ingest", "fetch", state=task_pb2.STEP_STATE_SUCCEEDED)
    await client.update_step(
        "ingest", "parse", state=task_pb2.STEP_STATE_RUNNING, progress=progress_message(3, 9)
    )

    page = await new_page()
    await open_dashboard(page, web)
    await card(page, "ingest").get_by_role("link", name="Ingest").click()
    assert page.url.endswith("#/tasks/ingest")
    logs = page.locator("#log-view .log")
    await expect(logs).to_have_count(30)

    # The timeline: a bar per step that ran, the running one still open.
    timeline = page.locator(".timeline")
    await expect(timeline.locator(".tl-bar")).to_have_count(2)
    await expect(timeline.locator('.tl-bar[data-step-key="fetch"]')).to_have_class(
        "tl-bar tl-succeeded"
    )
    await expect(timeline.locator('.tl-bar[data-step-key="parse"]')).to_have_class(
        "tl-bar tl-running tl-open"
    )

    await page.locator("#log-text").fill("DISK")
    await expect(logs).to_have_count(10)
    await expect(logs.first.locator(".log-message")).to_have_text("disk check 0")
    await page.locator("#log-level").select_option("LOG_LEVEL_WARNING")
    await expect(logs).to_have_count(1)  # warnings are 0, 10 and 20; of those only 0 is "disk"
    await expect(logs.locator(".log-message")).to_have_text(["disk check 0"])

    # Live lines join the view when they match the search, and only then.
    await client.append_logs(
        "ingest",
        [
            log_pb2.LogEntry(message="disk fine", level=log_pb2.LOG_LEVEL_INFO),
            log_pb2.LogEntry(message="net slow", level=log_pb2.LOG_LEVEL_WARNING),
        ],
    )
    await client.append_logs(
        "ingest", [log_pb2.LogEntry(message="disk almost full", level=log_pb2.LOG_LEVEL_ERROR)]
    )
    await expect(logs.locator(".log-message")).to_have_text(["disk check 0", "disk almost full"])
    await page.locator("#log-text").fill("")
    await expect(logs.locator(".log-message")).to_have_text(
        ["disk check 0", "net check 10", "net check 20", "net slow", "disk almost full"]
    )
    await page.get_by_role("link", name="All tasks").click()
    await expect(card(page, "ingest")).to_be_visible()


async def test_a_server_restart_mid_stream_loses_and_repeats_nothing(
    web: Web, new_page: OpenPage
) -> None:
    client = web.client
    page = await new_page()
    await open_dashboard(page, web)
    # Every state the connection indicator takes, in order.
    await page.evaluate(
        """() => {
            window.connectionStates = [];
            const node = document.getElementById("connection");
            new MutationObserver(() => window.connectionStates.push(node.dataset.state))
                .observe(node, { attributes: true, attributeFilter: ["data-state"] });
        }"""
    )
    await client.create_task("resume", display_name="Resumable", steps=["a", "b"], start=True)
    await client.update_step("resume", "a", state=task_pb2.STEP_STATE_RUNNING)
    await client.append_logs("resume", ["before the restart"])
    job = card(page, "resume")
    await expect(job.locator('[data-step-key="a"]')).to_have_attribute("data-state", "running")

    await web.harness.restart()
    # Changes while the page is still away: it must get them by resuming.
    await client.update_step(
        "resume", "a", state=task_pb2.STEP_STATE_SUCCEEDED, progress=progress_message(5, 5)
    )
    await client.append_logs("resume", ["after the restart"])
    await client.update_step(
        "resume", "b", state=task_pb2.STEP_STATE_RUNNING, progress=progress_message(2, 8, unit="MB")
    )
    await client.update_task("resume", message="halfway there")
    final = await client.get_task("resume")

    await expect(job).to_have_attribute("data-revision", str(final.revision))
    await expect(job.locator('[data-step-key="a"]')).to_have_attribute("data-state", "succeeded")
    await expect(job.locator('[data-step-key="b"] .step-progress')).to_have_text("2/8 MB")
    await expect(job.locator(".message")).to_have_text("halfway there")
    await expect(job.locator(".card-logs .log-message")).to_have_text(
        ["before the restart", "after the restart"]
    )
    await expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
    states = await page.evaluate("window.connectionStates")
    assert "reconnecting" in states or "offline" in states, states
    html = page.locator("html")
    await expect(html).to_have_attribute("data-duplicates", "0")
    await expect(html).to_have_attribute("data-resyncs", "0")
    # One more change after the resume arrives once, too.
    await client.succeed_task("resume")
    await expect(job).to_have_attribute("data-state", "succeeded")
    await expect(html).to_have_attribute("data-duplicates", "0")


async def test_a_viewer_sees_no_cancel_and_forged_posts_are_refused(
    make_settings: Callable[..., Settings], tmp_path: Path, new_page: OpenPage
) -> None:
    token_file = tmp_path / "tokens"
    tokens = {
        "agent": append_token(token_file, "bot", "acme", "agent"),
        "viewer": append_token(token_file, "watcher", "acme", "viewer"),
        "operator": append_token(token_file, "ops", "acme", "operator"),
    }
    web = await start_web(web_settings(make_settings, auth_token_file=token_file), **tokens)
    try:
        await web.client.create_task("guarded", display_name="Guarded job", start=True)
        forged = """async () => (await fetch("/v1/tasks/guarded:cancel", {
            method: "POST",
            headers: { "Content-Type": "application/json" },
            body: JSON.stringify({ reason: "forged" }),
        })).status"""

        for who in ("viewer", "operator"):
            page = await new_page()
            await page.goto(web.base_url + "/")
            await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
            await page.get_by_label("Token").fill(tokens[who])
            await page.get_by_role("button", name="Sign in").click()
            await expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
            job = card(page, "guarded")
            await expect(job).to_have_attribute("data-state", "running")
            assert tokens[who] not in page.url
            assert await page.evaluate("localStorage.length + sessionStorage.length") == 0
            cancel = job.get_by_role("button", name="Cancel Guarded job")
            await expect(cancel).to_have_count(0 if who == "viewer" else 1)
            # The cookie alone, without the CSRF header, moves nothing.
            assert await page.evaluate(forged) == 403
            assert not (await web.client.get_task("guarded")).HasField("cancel_request")
        # The page's own request carries the header: the operator's cancel goes through.
        await cancel.click()
        await page.locator("#cancel-reason").fill("not needed any more")
        await page.get_by_role("button", name="Request cancel").click()
        await expect(job.locator(".cancelling")).to_contain_text("not needed any more")
        request = (await web.client.get_task("guarded")).cancel_request
        assert request.reason == "not needed any more"
    finally:
        await web.harness.close()


async def test_screenshots_of_a_busy_dashboard_and_a_timeline(
    web: Web, new_page: OpenPage, artifacts: Path
) -> None:
    client = web.client
    await busy_tenant(client)
    for round, scheme in enumerate(("light", "dark"), start=1):
        page = await new_page(color_scheme=scheme, height=1000)
        await open_dashboard(page, web)
        # Log lines come live: a card shows the latest ones from when the page opened.
        await client.append_logs(
            "nightly-etl",
            [
                log_pb2.LogEntry(message=f"transform: batch {n} of 12", step_key="transform")
                for n in range(4, 7)
            ],
        )
        await client.append_logs("train-resnet", ["epoch 3 done: loss 0.418, accuracy 0.873"])
        await expect(card(page, "crawler")).to_have_attribute("data-stalled", "true")
        await expect(card(page, "nightly-etl").locator(".card-logs .log")).to_have_count(3)
        await card(page, "sync-crm").locator("details summary").click()
        await expect(card(page, "sync-crm").locator(".traceback")).to_be_visible()
        await page.screenshot(path=artifacts / f"dashboard-{scheme}.png", full_page=True)

        await card(page, "nightly-etl").get_by_role("link", name="Nightly ETL").click()
        await expect(page.locator(".timeline .tl-bar")).to_have_count(3)
        for step in ("validate", "transform"):  # each waited for the step before it
            await expect(page.locator(f'.tl-row[data-step-key="{step}"] .tl-wait')).to_have_count(1)
        await expect(page.locator("#log-view .log")).to_have_count(3 + 3 * round)
        await page.screenshot(path=artifacts / f"timeline-{scheme}.png", full_page=True)


async def test_filters_nesting_and_the_clock(web: Web, new_page: OpenPage) -> None:
    client = web.client
    await client.create_task("etl-a", display_name="Load orders", kind="etl", start=True)
    await client.create_task(
        "etl-b", display_name="Load users", kind="etl", labels={"team": "crm"}, start=True
    )
    await client.create_task("train", display_name="Train model", kind="training")
    await client.create_task(
        "train-shard", display_name="Shard 1", kind="shard", parent_id="train", start=True
    )
    await client.succeed_task("etl-a")
    page = await new_page()
    await open_dashboard(page, web)
    top = page.locator("#tasks > .card")
    await expect(top).to_have_count(3)
    # The child is nested in its parent's card, not beside it.
    await expect(card(page, "train").locator('[data-task-id="train-shard"]')).to_be_visible()

    await page.locator("#filter-kind").select_option("etl")
    await expect(top).to_have_count(2)
    await page.locator("#filter-label").fill("team:crm")
    await expect(top).to_have_count(1)
    await expect(top.first).to_have_attribute("data-task-id", "etl-b")
    await page.locator("#filter-label").fill("")
    await page.locator("#filter-kind").select_option("")
    await page.locator("#filter-text").fill("shard")
    await expect(top).to_have_count(1)  # the parent, for its matching child
    await page.locator("#filter-text").fill("")

    complete = page.get_by_role("button", name="1 Complete: show only these")
    await complete.click()
    await expect(complete).to_have_attribute("aria-pressed", "true")
    await expect(top).to_have_count(1)
    await expect(top.first).to_have_attribute("data-task-id", "etl-a")
    await complete.click()
    await expect(top).to_have_count(3)

    # Elapsed time counts up between changes, from the page's own clock.
    elapsed = card(page, "etl-b").locator(".elapsed")
    before = await elapsed.text_content()
    await expect(elapsed).not_to_have_text(before or "")
