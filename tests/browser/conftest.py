"""A real server with its HTTP face, and Debian's Chromium driven by Playwright.

One browser per module (its tests share the module's event loop); each test gets
a fresh server, browser context and page. Screenshots land in artifacts/.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright, expect

from headway.client import HeadwayClient
from headway.server.config import Settings
from tests.harness import ServerHarness

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).parent / "artifacts"

expect.set_options(timeout=15_000)


@dataclass
class Web:
    """A running server with HTTP, and where the page finds it."""

    harness: ServerHarness
    base_url: str
    client: HeadwayClient
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def target(self) -> str:
        return self.harness.target


def web_settings(make_settings: Callable[..., Settings], **overrides: object) -> Settings:
    base: dict[str, object] = {
        "http_address": "127.0.0.1:0",
        # Leases lapse and are noticed quickly (a stalled task in the screenshots).
        "liveness_interval": timedelta(milliseconds=200),
        "compaction_interval": timedelta(hours=1),
        "heartbeat_default": timedelta(seconds=2),
    }
    base.update(overrides)
    return make_settings(**base)


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.skip("Chromium is not installed: run `make browser`")
    return CHROMIUM


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(chromium), args=["--no-sandbox"]
        )
        try:
            yield launched
        finally:
            await launched.close()


async def start_web(settings: Settings, **tokens: str) -> Web:
    harness = ServerHarness(settings)
    await harness.start()
    client_token = tokens.get("agent")
    return Web(harness, harness.http_url, harness.client(client_token), dict(tokens))


@pytest_asyncio.fixture(loop_scope="module")
async def web(make_settings: Callable[..., Settings]) -> AsyncIterator[Web]:
    started = await start_web(web_settings(make_settings))
    try:
        yield started
    finally:
        await started.harness.close()


@pytest_asyncio.fixture(loop_scope="module")
async def new_page(browser: Browser) -> AsyncIterator[Callable[..., Awaitable[Page]]]:
    """Opens pages in fresh contexts (cookies of their own); fails the test on a script error."""
    contexts = []
    errors: list[str] = []

    async def open_page(color_scheme: str = "light", width: int = 1280, height: int = 900) -> Page:
        context = await browser.new_context(
            viewport={"width": width, "height": height},
            color_scheme=color_scheme,  # type: ignore[arg-type]
        )
        contexts.append(context)
        page = await context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        return page

    yield open_page
    for context in contexts:
        await context.close()
    assert not errors, f"script errors on the page: {errors}"


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
