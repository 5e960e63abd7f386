"""History, cell numbers and the Stop button in Chromium (docs/history.md, docs/frontend.md):
the "Cell deleted · Undo" toast restores that cell and its dependents run again on another page,
Ctrl+Z outside an editor undoes the page's own last change, the history panel lists the changes
and restores a deleted cell, Stop is disabled while nothing runs, and cells are numbered.

Async Playwright with the shared Daphne and per-module Chromium of tests/async_pages.py.
"""
import re

from playwright.async_api import expect

from tests.async_pages import BROWSER_MODULE, TIMEOUT_MS, cells, chromium, daphne, make_cells, new_context, open_page, run_all  # noqa: F401 (fixtures)

pytestmark = BROWSER_MODULE

expect.set_options(timeout=TIMEOUT_MS)


async def cell_action(cell, selector):
    """Click one of a cell's actions (.delete-cell, .move-up, ...) in its "⋯" menu, opened first."""
    await cell.locator(".cell-menu summary").click()
    await cell.locator(f".cell-menu-items {selector}").click()


async def test_undo_in_the_delete_toast_restores_the_cell_and_its_dependents_run_again(open_page, notebook):
    await make_cells(notebook, "a = 20", "b = a + 1\nb")
    alice, bob = await open_page("alice"), await open_page("bob")
    await run_all(alice, 2)
    await cell_action(cells(alice).first, ".delete-cell")
    await expect(cells(bob)).to_have_count(1)
    await expect(cells(bob).first.locator(".cell-status")).to_have_text("error")
    # Only the page that deleted it offers the undo.
    await expect(bob.locator(".toast-deleted")).to_have_count(0)
    await alice.locator(".toast-deleted .undo-delete").click()
    await expect(alice.locator(".toast-deleted")).to_have_count(0)
    for page in (alice, bob):
        await expect(cells(page)).to_have_count(2)
        await expect(cells(page).nth(1).locator(".output-text")).to_have_text("21")
        await expect(cells(page).nth(1).locator(".cell-status")).to_have_text("success")


async def test_ctrl_z_undoes_this_pages_move_and_cell_numbers_follow(open_page, notebook):
    await make_cells(notebook, "x = 1", "y = 2", "z = 3")
    alice, bob = await open_page("alice"), await open_page("bob")
    for page in (alice, bob):
        await expect(cells(page).locator(".cell-number")).to_have_text(["[1]", "[2]", "[3]"])
    first = await cells(alice).first.get_attribute("data-cell-id")
    await cell_action(cells(alice).first, ".move-down")
    await expect(cells(bob).nth(1)).to_have_attribute("data-cell-id", first)
    await expect(cells(bob).nth(1).locator(".cell-number")).to_have_text("[2]")
    await expect(cells(bob).first.locator(".cell-number")).to_have_text("[1]")
    # Ctrl+Z on the page (not in an editor) undoes alice's move; bob has nothing to undo.
    await alice.locator("body").click(position={"x": 5, "y": 300})
    await alice.keyboard.press("Control+z")
    await expect(cells(bob).first).to_have_attribute("data-cell-id", first)
    await expect(cells(bob).first.locator(".cell-number")).to_have_text("[1]")
    await bob.locator("body").click(position={"x": 5, "y": 300})
    await bob.keyboard.press("Control+z")
    await expect(bob.locator(".toast-error")).to_contain_text("undo")
    # Redo moves it down again.
    await alice.keyboard.press("Control+Shift+z")
    await expect(cells(bob).nth(1)).to_have_attribute("data-cell-id", first)


async def test_history_panel_lists_changes_and_restores_a_deleted_cell(open_page, notebook):
    await make_cells(notebook, "p = 3", "p * 2")
    alice, carol = await open_page("alice"), await open_page("carol")
    await run_all(alice, 2)
    deleted = await cells(alice).first.get_attribute("data-cell-id")
    await cell_action(cells(alice).first, ".delete-cell")
    await expect(cells(alice)).to_have_count(1)
    await alice.locator("#history .history-toggle").click()
    event = alice.locator(f'#history .history-event[data-kind="deleted"][data-cell-id="{deleted}"]')
    await expect(event).to_contain_text("alice")
    await expect(event).to_contain_text("p = 3")
    # The viewer reads the same timeline, without controls.
    await carol.locator("#history .history-toggle").click()
    await expect(carol.locator('#history .history-event[data-kind="deleted"]')).to_have_count(1)
    await expect(carol.locator("#history .restore-cell, #history .save-version")).to_have_count(0)
    await event.locator(".restore-cell").click()
    for page in (alice, carol):
        await expect(cells(page)).to_have_count(2)
        await expect(cells(page).nth(1).locator(".output-text")).to_have_text("6")
    # The open panel refreshes: the restore is listed, and the deletion is no longer restorable.
    await expect(alice.locator('#history .history-event[data-kind="restored"]')).to_have_count(1)
    await expect(event.locator(".restore-cell")).to_have_count(0)
    # A saved version shows in the list.
    await alice.fill("#history .version-name", "before tuning")
    await alice.click("#history .save-version-button")
    await expect(alice.locator("#history .history-version")).to_contain_text("before tuning")


async def test_stop_is_disabled_until_a_cell_runs_and_the_run_time_stays(open_page, notebook):
    await make_cells(notebook, "import time\ntime.sleep(1.5)\n'done'")
    alice = await open_page("alice")
    stop = alice.locator("#interrupt")
    await expect(stop).to_be_disabled()
    await alice.click("#run-all")
    await expect(stop).to_be_enabled()
    await expect(cells(alice).first.locator(".cell-status")).to_have_text("success")
    await expect(stop).to_be_disabled()
    await expect(cells(alice).first.locator(".cell-elapsed")).to_be_visible()
    await expect(cells(alice).first.locator(".cell-elapsed")).to_have_text(re.compile(r"^[12]\.\d s$"))
