"""Helpers shared by the async Playwright tests (fixtures in tests/test_browser_resync.py)."""
from channels.db import database_sync_to_async
from playwright.async_api import expect

from notebooks_app.constants import POSITION_STEP


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
