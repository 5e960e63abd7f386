"""Completion and inspection in Chromium (docs/frontend.md "Completion"): typing `df.gro` after a
DataFrame cell ran opens the popup with `groupby`, Enter accepts it; hovering a name and Shift+Tab
show its signature and docstring.

Async Playwright with the shared Daphne and per-module Chromium of tests/async_pages.py.
"""
from playwright.async_api import expect

from tests.async_pages import BROWSER_MODULE, TIMEOUT_MS, cells, chromium, daphne, make_cells, new_context, open_page, run_all  # noqa: F401 (fixtures)

pytestmark = BROWSER_MODULE

expect.set_options(timeout=TIMEOUT_MS)

FRAME = "import pandas as pd\ndf = pd.DataFrame({'region': ['n', 's'], 'amount': [1, 2]})"
HELPER = "def scale(values, factor=2):\n    'Multiply every value by factor.'\n    return [v * factor for v in values]"


async def test_typing_after_a_dot_offers_the_live_attributes_and_enter_accepts(open_page, notebook):
    await make_cells(notebook, FRAME, "")
    alice = await open_page("alice")
    await run_all(alice, 1)
    editor = cells(alice).nth(1).locator(".cm-content")
    await editor.click()
    await alice.keyboard.type("df.gro")
    popup = alice.locator(".cm-tooltip-autocomplete")
    await expect(popup.locator("li", has_text="groupby")).to_be_visible()
    await expect(popup.locator("li[aria-selected]")).to_have_text("groupby")
    # As a person reads the list first: CodeMirror ignores Enter for 75 ms after the list opens
    # or changes (`interactionDelay`), and a later answer (the live one after a static `busy`
    # one) changes it; pressed at once, Enter was a new line (one clean-clone run).
    await alice.wait_for_timeout(300)
    await expect(popup.locator("li[aria-selected]")).to_have_text("groupby")
    await alice.keyboard.press("Enter")
    await expect(editor).to_have_text("df.groupby")
    await expect(popup).to_have_count(0)


async def test_hover_and_shift_tab_show_the_signature_and_docstring(open_page, notebook):
    await make_cells(notebook, HELPER, "scale([1, 2])")
    alice = await open_page("alice")
    await run_all(alice, 2)
    editor = cells(alice).nth(1).locator(".cm-content")
    await editor.locator(".cm-line").first.hover(position={"x": 12, "y": 8})  # over "scale", not the line's blank end
    tooltip = alice.locator(".cm-inspection")
    await expect(tooltip.locator(".cm-inspection-signature")).to_have_text("scale(values, factor=2)")
    await expect(tooltip.locator(".cm-inspection-doc")).to_have_text("Multiply every value by factor.")
    await alice.mouse.move(0, 0)
    await expect(tooltip).to_have_count(0)
    await editor.click()
    await alice.keyboard.press("End")
    await alice.keyboard.press("ArrowLeft")  # inside the call's parentheses
    await alice.keyboard.press("Shift+Tab")
    await expect(tooltip.locator(".cm-inspection-signature")).to_have_text("scale(values, factor=2)")
    await alice.keyboard.press("Escape")
    await expect(tooltip).to_have_count(0)
