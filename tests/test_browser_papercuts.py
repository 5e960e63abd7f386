"""The page's papercuts (issue 33, item 7) in Chromium: dark mode reaches HTML outputs (a
DataFrame's frame turns dark with light text), a cell's header stays one line at 1,280 px (its
actions but Run in a "⋯" menu that opens over the next cell, deletes, and closes on Escape), a new
notebook opens with its one empty cell focused, "Restart kernel" tells everyone, and the
"+ Python cell / + SQL cell / + Markdown" buttons take every click right after a run.

Async Playwright with the shared Daphne and per-module Chromium of tests/async_pages.py.
"""
import re

from playwright.async_api import Error as PlaywrightError
from playwright.async_api import expect

from tests.async_pages import BROWSER_MODULE, TIMEOUT_MS, cells, chromium, daphne, log_in, make_cells, new_context, open_page, run_all, watch_errors  # noqa: F401 (fixtures)
from tests.waiting import eventually

pytestmark = BROWSER_MODULE
expect.set_options(timeout=TIMEOUT_MS)

# The relative luminance (WCAG) of a computed CSS colour, and the contrast of two.
LUMINANCE = """(color) => {
  const [r, g, b] = color.match(/[\\d.]+/g).slice(0, 3).map((v) => {
    v = Number(v) / 255;
    return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
  });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}"""


def contrast(a, b):
    light, dark = max(a, b), min(a, b)
    return (light + 0.05) / (dark + 0.05)


async def output_frame_is_dark(page):
    """Whether the DataFrame's frame, as the page holds it now, is dark: asked afresh each time,
    since the page may replace the frame (a cell rendered again once the state is whole), and
    a replaced frame's document never changes again."""
    handle = await page.locator("iframe.output-html").first.element_handle()
    frame = await handle.content_frame() if handle else None
    try:
        return frame is not None and await frame.evaluate("document.documentElement.dataset.theme") == "dark"
    except PlaywrightError:  # detached while asked
        return False


async def frame_colours(page):
    """The luminance of the DataFrame frame's background and of a cell's text in it."""
    frame = await (await page.locator("iframe.output-html").first.element_handle()).content_frame()
    await frame.wait_for_selector("table.dataframe td")
    return await frame.evaluate(
        f"""() => {{
          const luminance = {LUMINANCE};
          const background = getComputedStyle(document.body).backgroundColor;
          const text = getComputedStyle(document.querySelector("table.dataframe td")).color;
          return [background, luminance(background), luminance(text)];
        }}"""
    )


async def test_dark_mode_reaches_a_dataframe_output(open_page, notebook):
    await make_cells(notebook, "import pandas as pd\npd.DataFrame({'city': ['Oslo', 'Lima'], 'people': [709_000, 10_000_000]})")
    alice = await open_page("alice")
    await alice.click("form.theme-toggle button[value=light]")
    await run_all(alice, 1)
    await expect(alice.locator("iframe.output-html")).to_have_attribute("data-sized", "true")
    _, background, text = await frame_colours(alice)
    assert background > 0.8 and text < 0.1
    await alice.click("form.theme-toggle button[value=dark]")
    await alice.wait_for_function("() => document.documentElement.dataset.theme === 'dark'")
    await eventually(lambda: output_frame_is_dark(alice), timeout=TIMEOUT_MS / 1000, what="the output's frame dark")
    colour, background, text = await frame_colours(alice)
    assert background < 0.05, colour
    assert contrast(background, text) >= 7  # WCAG AAA for body text
    # A frame made while the page is dark starts dark.
    await alice.reload()
    await expect(alice.locator("#notebook")).to_have_attribute("data-synced", "true")
    await eventually(lambda: output_frame_is_dark(alice), timeout=TIMEOUT_MS / 1000, what="the output's frame, made dark")
    _, background, _ = await frame_colours(alice)
    assert background < 0.05


async def test_cell_headers_stay_one_line_at_1280_px(new_context, daphne, notebook):
    await make_cells(
        notebook,
        "base_price = 10\nquantity_sold = 3\ndiscount_rate = 0.1",
        "total_revenue = base_price * quantity_sold\naverage_price = total_revenue / quantity_sold\nnet_revenue = total_revenue * (1 - discount_rate)\nrows_seen = 3",
        ("sql", "SELECT {base_price} AS price, {quantity_sold} AS quantity"),
        ("markdown", "# Revenue is {net_revenue}"),
    )
    page = watch_errors(await (await new_context(viewport={"width": 1280, "height": 800})).new_page())
    await log_in(page, daphne, "alice")
    await page.goto(f"{daphne}/notebooks/{notebook.pk}/")
    await expect(page.locator("#notebook")).to_have_attribute("data-synced", "true")
    await run_all(page, 3)
    for i in range(4):
        header = cells(page).nth(i).locator(".cell-header")
        await expect(header.locator(".run-cell")).to_be_visible()
        await expect(header.locator(".cell-status")).not_to_have_text(re.compile("running|queued"))
        wrapped = await header.evaluate(
            """(header) => {
              const shown = (e) => e.offsetParent && e.getClientRects().length && !e.closest("details:not([open]) > :not(summary)");
              const leaves = [...header.querySelectorAll("*")].filter((e) => !e.children.length && shown(e));
              const tall = leaves.filter((e) => {
                const style = getComputedStyle(e);
                const inner = e.getBoundingClientRect().height - ["paddingTop", "paddingBottom", "borderTopWidth", "borderBottomWidth"].reduce((sum, p) => sum + parseFloat(style[p]), 0);
                return inner > 1.5 * parseFloat(style.fontSize) * 1.4;
              });
              const rects = leaves.map((e) => e.getBoundingClientRect());
              const oneRow = Math.max(...rects.map((r) => r.top)) < Math.min(...rects.map((r) => r.bottom));
              return [tall.map((e) => e.outerHTML.slice(0, 60)), oneRow];
            }"""
        )
        assert wrapped == [[], True], (i, wrapped)
    # Names cut short keep all of them in their title.
    title = await cells(page).nth(1).locator(".cell-names").get_attribute("title")
    assert all(name in title for name in ("total_revenue", "average_price", "net_revenue", "rows_seen", "discount_rate")), title
    await cell_menu_opens_over_the_next_cell_and_closes(page)


MENU_ITEMS = [
    "Add Python cell above", "Add SQL cell above", "Add Markdown cell above",
    "Add Python cell below", "Add SQL cell below", "Add Markdown cell below",
    "Move up", "Move down", "Delete",
]

# Each item of the open menu is what the page shows at its centre (not clipped by the header, not
# under the next cell), and the menu reaches below its own cell: over the next one.
MENU_ON_TOP = """(list) => {
  const cell = list.closest(".cell").getBoundingClientRect();
  const hidden = [...list.querySelectorAll("button")].filter((button) => {
    const r = button.getBoundingClientRect();
    return document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2) !== button;
  });
  return [hidden.map((b) => b.textContent), list.getBoundingClientRect().bottom > cell.bottom];
}"""


async def cell_menu_opens_over_the_next_cell_and_closes(page):
    """Everything but Run is in the cell's "⋯" menu: drawn over the next cell, one open at a time,
    closed by a choice, Escape (the focus back on its summary) or a click elsewhere."""
    cell = cells(page).nth(1)
    menu, items = cell.locator("details.cell-menu"), cell.locator(".cell-menu-items")
    summary = menu.locator("summary")
    await expect(summary).to_have_text("⋯")
    await expect(summary).to_have_attribute("aria-label", "More actions for this cell")
    await expect(items).to_be_hidden()
    await summary.click()
    await expect(items.locator("button")).to_have_text(MENU_ITEMS)
    for button in await items.locator("button").all():
        await expect(button).to_be_visible()
    assert await items.evaluate(MENU_ON_TOP) == [[], True]
    await expect(items.locator(".move-up")).to_be_enabled()
    # Escape closes it and gives the focus back to its summary.
    await page.keyboard.press("Escape")
    await expect(items).to_be_hidden()
    await expect(menu).not_to_have_attribute("open", "")
    await expect(summary).to_be_focused()
    # From the keyboard: Enter opens it on its first item, End / Home move, Escape closes it.
    await page.keyboard.press("Enter")
    await expect(items.locator("button").first).to_be_focused()
    await page.keyboard.press("End")
    await expect(items.locator(".delete-cell")).to_be_focused()
    await page.keyboard.press("Escape")
    await expect(items).to_be_hidden()
    await expect(summary).to_be_focused()
    await expect(cells(page)).to_have_count(4)  # Escape on the item deleted nothing
    # One open at a time; a click elsewhere closes it. The first cell cannot move up.
    await summary.click()
    await expect(items).to_be_visible()
    first = cells(page).first
    await first.locator(".cell-menu summary").click()
    await expect(first.locator(".cell-menu-items .move-up")).to_be_visible()
    await expect(first.locator(".cell-menu-items .move-up")).to_be_disabled()
    await expect(items).to_be_hidden()
    await expect(page.locator("details.cell-menu[open]")).to_have_count(1)
    await page.locator("body").click(position={"x": 5, "y": 300})
    await expect(page.locator("details.cell-menu[open]")).to_have_count(0)
    # Delete, from the menu: the cell is gone, the menu with it.
    last = cells(page).last
    deleted = await last.get_attribute("data-cell-id")
    await last.locator(".cell-menu summary").click()
    await last.locator(".cell-menu-items .delete-cell").click()
    await expect(cells(page)).to_have_count(3)
    await expect(page.locator(f'#cells .cell[data-cell-id="{deleted}"]')).to_have_count(0)
    await expect(page.locator(".toast-deleted")).to_be_visible()
    await expect(page.locator("details.cell-menu[open]")).to_have_count(0)
    assert page.errors == []


async def test_a_new_notebook_opens_with_its_empty_cell_focused(new_context, daphne, notebook):
    page = watch_errors(await (await new_context()).new_page())
    await log_in(page, daphne, "bob")
    await page.fill("input[name=name]", "First steps")
    await page.click("text=Create notebook")
    await expect(page.locator("#notebook")).to_have_attribute("data-synced", "true")
    await expect(cells(page)).to_have_count(1)
    await expect(cells(page).first.locator(".cm-content")).to_be_focused()
    await page.keyboard.type("21 * 2")
    await page.keyboard.press("Shift+Enter")
    await expect(cells(page).first.locator(".output-text")).to_have_text("42")


async def test_restart_kernel_turns_results_stale_for_everyone(open_page, notebook):
    await make_cells(notebook, "x = 41\nx + 1")
    alice, bob = await open_page("alice"), await open_page("bob")
    await run_all(alice, 1)
    await expect(cells(bob).first.locator(".cell-status")).to_have_text("success")
    bob.once("dialog", lambda dialog: dialog.accept())
    await bob.click("#restart-kernel")
    for page in (alice, bob):
        await expect(cells(page).first.locator(".cell-status")).to_have_text("stale")
        await expect(page.locator(".toast")).to_contain_text("restarted by bob")
    await run_all(alice, 1)
    await expect(cells(alice).first.locator(".output-text")).to_have_text("42")


async def test_add_at_end_takes_every_click_right_after_a_run(open_page, notebook):
    await make_cells(notebook, "import time\ntime.sleep(0.05)\n'ran'")
    alice = await open_page("alice")
    buttons = ["#add-python-cell", "#add-sql-cell", "#add-markdown-cell"]
    for i in range(20):
        await cells(alice).first.locator(".run-cell").click()
        # Playwright refuses a click another element would receive (it waits, then fails).
        await alice.click(buttons[i % 3], timeout=5_000)
        await expect(cells(alice)).to_have_count(i + 2)
    await expect(cells(alice).first.locator(".output-text")).to_have_text("'ran'")
    types = await cells(alice).evaluate_all("(cells) => cells.map((cell) => cell.dataset.cellType)")
    assert types[1:] == [re.sub(r"#add-(\w+)-cell", r"\1", buttons[i % 3]) for i in range(20)]
