"""Fixtures and helpers shared by the async Playwright tests (tests/test_browser_*.py but
tests/test_browser.py, which uses the sync API).

A module of them imports its fixtures from here and sets `pytestmark = BROWSER_MODULE`: its
tests run in one event loop per module, where one Chromium lives for the whole module; each
test gets fresh browser contexts (`open_page`, `new_context`), closed after it. The Daphne is
conftest's `browser_server`, one for the session; the kernel worker is the session's too.
"""
import os
import re

import pytest
import pytest_asyncio
from channels.db import database_sync_to_async
from playwright.async_api import async_playwright, expect

from notebooks_app.constants import POSITION_STEP
from tests.conftest import BROWSER_PASSWORDS as PASSWORDS

TIMEOUT_MS = 20_000
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]
VIEWPORT = {"width": 1100, "height": 900}

# The marks of a module of async browser tests: its tests share the module's event loop, the one
# its Chromium runs in.
BROWSER_MODULE = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def chromium():
    """Debian's Chromium (never a downloaded browser), one per module."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"), args=CHROMIUM_ARGS, headless=True)
        yield browser
        await browser.close()


@pytest.fixture
def daphne(browser_server, live_kernel, browser_passwords):
    """The base URL of the session's Daphne, with this test's users able to log in."""
    return browser_server.url


@pytest_asyncio.fixture(loop_scope="module")
async def new_context(chromium):
    """Factory: `await new_context(**options)` -> a fresh browser context. After the test, no
    page that records its JavaScript errors (`watch_errors`) may have any, and every context is
    closed."""
    contexts = []

    async def make(**options):
        context = await chromium.new_context(**{"viewport": VIEWPORT, **options})
        contexts.append(context)
        return context

    yield make
    errors = [error for context in contexts for page in context.pages for error in getattr(page, "errors", ())]
    for context in contexts:
        await context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def watch_errors(page):
    """`page.errors`: the page's uncaught JavaScript errors, checked by `new_context`."""
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    return page


@pytest.fixture
def open_page(new_context, daphne, notebook):
    """Factory: `await open_page("bob")` -> a page logged in as bob on the test's notebook,
    showing its live state. `wire` (test_browser_resync.Wire) sits on its notebook socket;
    `base_url` is another Daphne of the same database and Redis."""

    async def open_as(username, wire=None, base_url=None):
        base_url = base_url or daphne
        page = watch_errors(await (await new_context()).new_page())
        if wire is not None:
            await page.route_web_socket(re.compile(r"/ws/notebooks/"), wire.attach)
        await log_in(page, base_url, username)
        await page.goto(f"{base_url}/notebooks/{notebook.pk}/")
        await expect(page.locator("#notebook")).to_have_attribute("data-synced", "true", timeout=TIMEOUT_MS)
        return page

    return open_as


async def log_in(page, base_url, username, button="button[type=submit]"):
    await page.goto(f"{base_url}/accounts/login/")
    await page.fill("input[name=username]", username)
    await page.fill("input[name=password]", PASSWORDS[username])
    await page.click(button)
    await page.wait_for_url(f"{base_url}/")


async def make_cells(notebook, *cells):
    """Cells saved before any page opens (the kernel loads them on first connect): each a
    Python cell's code, or a (type, code) pair."""

    def build():
        for i, cell in enumerate(cells):
            cell_type, code = cell if isinstance(cell, tuple) else ("python", cell)
            notebook.cells.create(position=(i + 1) * POSITION_STEP, type=cell_type, code=code)
        notebook.revision += 1
        notebook.save(update_fields=["revision"])

    await database_sync_to_async(build)()


def cells(page):
    return page.locator("#cells .cell.live")


async def run_all(page, count):
    await page.click("#run-all")
    for i in range(count):
        await expect(cells(page).nth(i).locator(".cell-status")).to_have_text("success")
