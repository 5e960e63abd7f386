"""Jupyter's keyboard habits in Chromium (docs/frontend.md, "Keyboard"): Esc leaves the editor
for command mode, where a, b, d d, z, m, y, j/k, the arrows, Enter and Shift+Enter act on the
selected cell; letters typed in an editor stay text; a viewer only moves around; `?` lists every
shortcut, the same list as the docs.

Async Playwright with the shared Daphne and per-module Chromium of tests/async_pages.py.
"""
import re

from playwright.async_api import expect

from tests.async_pages import BROWSER_MODULE, TIMEOUT_MS, cells, chromium, daphne, make_cells, new_context, open_page  # noqa: F401 (fixtures)
from tests.waiting import eventually
from tests.live import ROOT
from tests.test_browser_resync import Wire

pytestmark = BROWSER_MODULE

expect.set_options(timeout=TIMEOUT_MS)


async def command_mode_on(page, index):
    """Click into cell `index`'s code, then Esc: command mode with that cell selected."""
    await cells(page).nth(index).locator(".cell-editor").click()
    await expect(cells(page).nth(index).locator(".cm-editor.cm-focused")).to_have_count(1)
    await page.keyboard.press("Escape")
    await expect(page.locator("body")).to_have_class(re.compile(r"\bcommand-mode\b"))
    await expect(cells(page).nth(index)).to_have_class(re.compile(r"\bselected\b"))


async def selected_index(page):
    return await page.evaluate("() => [...document.querySelectorAll('#cells .cell.live')].findIndex((c) => c.classList.contains('selected'))")


async def focused_cell_id(page):
    return await page.evaluate("() => document.activeElement?.closest('.cell.live')?.dataset.cellId ?? null")


async def test_escape_leaves_the_editor_and_b_then_a_insert_cells_around_the_selected_one(open_page, notebook):
    await make_cells(notebook, "x = 1", "y = 2")
    page = await open_page("alice")
    first, second = [await cells(page).nth(i).get_attribute("data-cell-id") for i in range(2)]
    await command_mode_on(page, 0)
    assert await page.evaluate("() => !document.activeElement.closest('.cm-editor')")
    await page.keyboard.press("b")
    await expect(cells(page)).to_have_count(3)
    # The new cell is below the first one, selected, and the page is still in command mode.
    await expect(cells(page).nth(1)).to_have_class(re.compile(r"\bselected\b"))
    added = await cells(page).nth(1).get_attribute("data-cell-id")
    assert added not in (first, second)
    await expect(page.locator("body")).to_have_class(re.compile(r"\bcommand-mode\b"))
    await page.keyboard.press("a")
    await expect(cells(page)).to_have_count(4)
    ids = [await cells(page).nth(i).get_attribute("data-cell-id") for i in range(4)]
    assert ids[0] == first and ids[2] == added and ids[3] == second
    await expect(cells(page).nth(1)).to_have_class(re.compile(r"\bselected\b"))


async def test_dd_deletes_the_selected_cell_with_the_undo_toast_and_z_brings_it_back(open_page, notebook):
    await make_cells(notebook, "x = 1", "y = 2", "z = 3")
    page = await open_page("alice")
    doomed = await cells(page).nth(1).get_attribute("data-cell-id")
    await command_mode_on(page, 1)
    await page.keyboard.press("d")
    await page.keyboard.press("d")
    await expect(cells(page)).to_have_count(2)
    await expect(page.locator(f'.cell.live[data-cell-id="{doomed}"]')).to_have_count(0)
    # One toast: the early announcement of the delete shows it, the one in seq order does not
    # (two toasts were two deletes: see test_one_d_right_after_the_page_loads_deletes_nothing).
    await expect(page.locator(".toast-deleted .undo-delete")).to_have_count(1)
    await expect(page.locator(".toast-deleted .undo-delete")).to_be_visible()
    await expect(cells(page).nth(1)).to_have_class(re.compile(r"\bselected\b"))  # the next cell
    await page.keyboard.press("z")
    await expect(cells(page)).to_have_count(3)
    await expect(cells(page).nth(1)).to_have_attribute("data-cell-id", doomed)


async def test_j_k_and_the_arrows_move_the_selection_and_enter_edits_where_letters_stay_text(open_page, notebook):
    await make_cells(notebook, "x = 1", "y = 2", "z = 3")
    page = await open_page("alice")
    await command_mode_on(page, 0)
    for key, index in [("j", 1), ("ArrowDown", 2), ("j", 2), ("k", 1), ("ArrowUp", 0), ("ArrowDown", 1)]:
        await page.keyboard.press(key)
        await expect(cells(page).nth(index)).to_have_class(re.compile(r"\bselected\b"))
        assert await selected_index(page) == index
    await page.keyboard.press("Enter")
    editor = cells(page).nth(1).locator(".cm-editor")
    await expect(editor).to_have_class(re.compile(r"\bcm-focused\b"))
    await expect(page.locator("body")).not_to_have_class(re.compile(r"\bcommand-mode\b"))
    # In the editor, command letters are text: nothing is inserted, deleted or switched.
    await page.keyboard.type(" # abddmyzjk")
    await expect(editor.locator(".cm-content")).to_have_text("y = 2 # abddmyzjk")
    await expect(cells(page)).to_have_count(3)
    await expect(cells(page).nth(1)).to_have_attribute("data-cell-type", "python")


async def test_m_and_y_switch_the_selected_cell_between_markdown_and_python(open_page, notebook):
    await make_cells(notebook, "x = 1", "Some *prose*")
    page = await open_page("alice")
    await command_mode_on(page, 1)
    await page.keyboard.press("m")
    await expect(cells(page).nth(1)).to_have_attribute("data-cell-type", "markdown")
    await expect(cells(page)).to_have_count(2)
    await expect(cells(page).nth(1)).to_have_class(re.compile(r"\bselected\b"))
    await page.keyboard.press("y")
    await expect(cells(page).nth(1)).to_have_attribute("data-cell-type", "python")
    await expect(cells(page)).to_have_count(2)
    code = cells(page).nth(1).locator(".cm-content, .cell-code-preview")
    await expect(code).to_have_text("Some *prose*")


async def test_shift_enter_in_command_mode_runs_the_cell_and_selects_the_next(open_page, notebook):
    await make_cells(notebook, "a = 2", "a * 3")
    page = await open_page("alice")
    await command_mode_on(page, 0)
    await page.keyboard.press("Shift+Enter")
    await expect(cells(page).first.locator(".cell-status")).to_have_text("success")
    await expect(cells(page).nth(1)).to_have_class(re.compile(r"\bselected\b"))
    await expect(page.locator("body")).to_have_class(re.compile(r"\bcommand-mode\b"))


def documented_shortcuts():
    """The rows of the table in docs/frontend.md's "Keyboard" section: (mode, keys, what)."""
    text = (ROOT / "docs" / "frontend.md").read_text()
    section = text.split("## Keyboard", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| mode")]
    return [tuple(part.strip().replace("`", "") for part in row.strip("|").split(" | ")) for row in rows]


async def test_question_mark_lists_every_shortcut_as_the_docs_do_and_escape_closes_it(open_page, notebook):
    await make_cells(notebook, "x = 1")
    page = await open_page("alice")
    await page.locator("body").click(position={"x": 5, "y": 300})
    await page.keyboard.press("?")
    dialog = page.get_by_role("dialog", name="Keyboard shortcuts")
    await expect(dialog).to_be_visible()
    await expect(dialog).to_have_attribute("aria-modal", "true")
    shown = await dialog.locator("tr.shortcut").evaluate_all(
        "(rows) => rows.map((row) => [row.dataset.mode, row.querySelector('th').textContent, row.querySelector('td').textContent])")
    assert [tuple(row) for row in shown] == documented_shortcuts()
    await page.keyboard.press("Escape")
    await expect(dialog).to_be_hidden()
    # The header's button opens it too; Close shuts it and the focus goes back to the button.
    await page.click("#keyboard-shortcuts")
    await expect(dialog.locator(".shortcuts-close")).to_be_focused()
    await dialog.locator(".shortcuts-close").click()
    await expect(dialog).to_be_hidden()
    await expect(page.locator("#keyboard-shortcuts")).to_be_focused()
    # A letter typed while the dialog is open is not a command.
    assert await cells(page).count() == 1


async def test_a_viewer_moves_around_but_cannot_insert_or_delete(open_page, notebook):
    await make_cells(notebook, "x = 1", "y = 2")
    wire = Wire()
    page = await open_page("carol", wire=wire)
    # A viewer's editors take no focus: a click on a cell's header selects it in command mode.
    await cells(page).nth(0).locator(".cell-type").click()
    await expect(page.locator("body")).to_have_class(re.compile(r"\bcommand-mode\b"))
    await expect(cells(page).nth(0)).to_have_class(re.compile(r"\bselected\b"))
    await page.keyboard.press("j")
    await expect(cells(page).nth(1)).to_have_class(re.compile(r"\bselected\b"))
    for key in ["b", "a", "d", "d", "m", "z", "Shift+Enter"]:
        await page.keyboard.press(key)
    # Something a viewer may send, sent after those keys: everything before it has been sent too.
    await page.click("#history .history-toggle")
    await expect(page.locator("#history .history-body")).to_be_visible()
    await eventually(lambda: any(m.get("type") == "history" for m in wire.sent_by_page), what="the history request")
    sent = [m["type"] for m in wire.sent_by_page]
    assert not {"create_cell", "delete_cell", "undo", "run_cell"} & set(sent), sent
    await expect(cells(page)).to_have_count(2)



async def test_one_d_right_after_the_page_loads_deletes_nothing(open_page, notebook):
    """`d d` is two presses within 800 ms, timed with performance.now(), which counts from the
    page's load: a first `d` early in a page's life (0.7 s after load in a clean-clone run) was
    taken for the second of a pair, deleted the cell, and the real second `d` deleted the next
    one. The clock is held at 100 ms here, so every press is "early"."""
    await make_cells(notebook, "x = 1", "y = 2", "z = 3")
    wire = Wire()
    page = await open_page("alice", wire)
    await page.add_init_script("performance.now = () => 100;")
    await page.reload()
    await expect(page.locator("#notebook")).to_have_attribute("data-synced", "true")
    await command_mode_on(page, 1)
    await page.keyboard.press("d")
    await page.wait_for_timeout(500)
    assert [m for m in wire.sent_by_page if m.get("type") == "delete_cell"] == []
    await expect(cells(page)).to_have_count(3)
    await page.keyboard.press("d")  # the second of the pair
    await expect(cells(page)).to_have_count(2)
    assert len([m for m in wire.sent_by_page if m.get("type") == "delete_cell"]) == 1
