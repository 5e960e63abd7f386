"""Inputs, markdown cells and the app view in Chromium (docs/protocol.md "Inputs" and "Markdown
cells", docs/frontend.md): a slider moved on one page moves on another with its dependent output
and prose (math typeset by KaTeX), a dropdown and a table selection drive dependent cells, and
the app view shows a viewer outputs and disabled inputs but no code.

Async Playwright with the shared Daphne and per-module Chromium of tests/async_pages.py.
"""
from playwright.async_api import expect

from tests.async_pages import BROWSER_MODULE, TIMEOUT_MS, cells, chromium, daphne, make_cells, new_context, open_page, run_all  # noqa: F401 (fixtures)

pytestmark = BROWSER_MODULE

expect.set_options(timeout=TIMEOUT_MS)

SLIDER = "from notebook import ui\nlevel = ui.slider(0, 10, value=3, label='Level')"


async def test_a_slider_moved_on_one_page_moves_on_another_with_its_readers(open_page, notebook):
    await make_cells(notebook, ("python", SLIDER), ("python", "level.value * 10"), ("markdown", "Level is **{level.value}**, and $x^2$ grows."))
    alice, bob = await open_page("alice"), await open_page("bob")
    await run_all(alice, 3)
    prose = cells(bob).nth(2).locator(".output-markdown")
    await expect(prose).to_contain_text("Level is 3")
    await expect(prose.locator(".katex")).to_have_count(1)
    await expect(cells(bob).nth(2).locator(".cell-editor")).to_be_hidden()  # rendered, not editing
    slider = cells(alice).first.locator("input.widget-slider")
    await slider.focus()
    await alice.keyboard.press("ArrowRight")
    await alice.keyboard.press("ArrowRight")
    await expect(cells(bob).first.locator("input.widget-slider")).to_have_value("5")
    await expect(cells(bob).first.locator(".widget-value")).to_have_text("5")
    await expect(cells(bob).nth(1).locator(".output-text")).to_have_text("50")
    await expect(prose).to_contain_text("Level is 5")
    await expect(prose.locator(".katex")).to_have_count(1)
    await expect(slider).to_have_value("5")


async def test_a_dropdown_and_a_table_selection_drive_their_readers(open_page, notebook):
    await make_cells(
        notebook,
        ("python", "from notebook import ui\ncity = ui.dropdown(['Oslo', 'Rome'], value='Oslo')"),
        ("python", "city.value.upper()"),
        ("python", "import pandas as pd\npick = ui.table(pd.DataFrame({'n': [1, 20, 300]}))"),
        ("python", "int(pick.selected['n'].sum())"),
    )
    alice = await open_page("alice")
    await run_all(alice, 4)
    await cells(alice).first.locator("select.widget-dropdown").select_option("Rome")
    await expect(cells(alice).nth(1).locator(".output-text")).to_have_text("'ROME'")
    boxes = cells(alice).nth(2).locator("input.widget-row-select")
    await expect(boxes).to_have_count(3)
    await boxes.nth(1).check()
    await expect(cells(alice).nth(3).locator(".output-text")).to_have_text("20")
    await boxes.nth(2).check()
    await expect(cells(alice).nth(3).locator(".output-text")).to_have_text("320")


async def test_markdown_cell_edits_on_double_click_and_renders_on_shift_enter(open_page, notebook):
    await make_cells(notebook, ("markdown", "# Title"))
    alice = await open_page("alice")
    await run_all(alice, 1)
    cell = cells(alice).first
    await expect(cell.locator(".output-markdown h1")).to_have_text("Title")
    await cell.locator(".output-markdown").dblclick()
    await expect(cell.locator(".cm-content")).to_be_focused()
    await alice.keyboard.press("End")
    await alice.keyboard.insert_text(" and $\\sqrt{2}$")
    await alice.keyboard.press("Control+Enter")
    await expect(cell.locator(".cell-editor")).to_be_hidden()
    await expect(cell.locator(".output-markdown h1 .katex")).to_have_count(1)


async def test_app_view_shows_a_viewer_outputs_and_disabled_inputs_but_no_code(open_page, notebook, daphne):  # noqa: F811
    await make_cells(notebook, ("python", SLIDER), ("python", "secret_code = 1\nlevel.value + secret_code"), ("markdown", "Level {level.value}"))
    alice = await open_page("alice")
    await run_all(alice, 3)
    await expect(alice.locator("#app-link")).to_have_attribute("href", f"/notebooks/{notebook.pk}/app/")
    carol = await open_page("carol")
    await carol.goto(f"{daphne}/notebooks/{notebook.pk}/app/")
    await expect(carol.locator("#notebook")).to_have_attribute("data-synced", "true")
    await expect(carol.locator("input.widget-slider")).to_be_disabled()
    await expect(carol.locator(".output-text")).to_have_text("4")
    await expect(carol.locator(".output-markdown")).to_have_text("Level 3")
    await expect(carol.locator("#cells")).not_to_contain_text("level.value + secret_code")
    await expect(carol.locator(".cell-header").first).to_be_hidden()
    await expect(carol.locator(".cm-editor")).to_have_count(0)
    # Live: alice moves the slider, the app view follows.
    await cells(alice).first.locator("input.widget-slider").focus()
    await alice.keyboard.press("ArrowRight")
    await expect(carol.locator("input.widget-slider")).to_have_value("4")
    await expect(carol.locator(".output-text")).to_have_text("5")
