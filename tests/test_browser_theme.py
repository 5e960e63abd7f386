"""Themes (docs/frontend.md, "Themes"): every visible text of a notebook page (cells of each
status, tables, a toast, the panels, a cell's open menu) and of the list page meets WCAG contrast
(4.5:1, 3:1 for large text) in light and dark, chosen by the system (Playwright's color_scheme) or
by the header's toggle, which is kept on the account across a reload; the preference view refuses
bad values.

Async Playwright with the shared Daphne and per-module Chromium of tests/async_pages.py.
"""
import pytest
from channels.db import database_sync_to_async
from playwright.async_api import expect

from notebooks_app.models import UserPreference
from tests.async_pages import TIMEOUT_MS, cells, chromium, daphne, make_cells, watch_errors  # noqa: F401 (fixtures)
from tests.async_pages import log_in as log_in_as
from tests.waiting import eventually

expect.set_options(timeout=TIMEOUT_MS)


async def cell_action(cell, selector):
    """Click one of a cell's actions (.delete-cell, .move-up, ...) in its "⋯" menu, opened first."""
    await cell.locator(".cell-menu summary").click()
    await cell.locator(f".cell-menu-items {selector}").click()

# In the page: each visible element with text of its own, its colour against what is behind it
# (ancestors' backgrounds composed until an opaque one; opacity of the element and its ancestors
# applied), and the WCAG ratio it needs. Disabled controls are exempt (WCAG 1.4.3).
CONTRAST_FAILURES = """async () => {
  // Colours and opacities as they end, not halfway through a transition (a theme switch, a
  // hover-revealed button fading in).
  await Promise.all(document.getAnimations().map((animation) => animation.finished.catch(() => null)));
  const parse = (text) => {
    const m = /rgba?\\(([^)]+)\\)/.exec(text);
    if (!m) throw new Error(`unexpected colour ${text}`);
    const [r, g, b, a = 1] = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return { r, g, b, a };
  };
  const over = (top, below) => ({
    r: top.r * top.a + below.r * (1 - top.a), g: top.g * top.a + below.g * (1 - top.a),
    b: top.b * top.a + below.b * (1 - top.a), a: 1,
  });
  const luminance = ({ r, g, b }) => {
    const channel = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
  };
  const ratio = (x, y) => { const [l1, l2] = [luminance(x), luminance(y)].sort((p, q) => q - p); return (l1 + 0.05) / (l2 + 0.05); };
  const background = (element) => {
    const layers = [];
    for (let node = element; node; node = node.parentElement) {
      const color = parse(getComputedStyle(node).backgroundColor);
      if (color.a > 0) layers.push(color);
      if (color.a >= 1) break;
    }
    return layers.reverse().reduce((below, layer) => over(layer, below), { r: 255, g: 255, b: 255, a: 1 });
  };
  const opacity = (element) => {
    let product = 1;
    for (let node = element; node; node = node.parentElement) product *= Number(getComputedStyle(node).opacity);
    return product;
  };
  const failures = [];
  let checked = 0;
  for (const element of document.body.querySelectorAll("*")) {
    if (element.closest("script, style, noscript, select, .katex-mathml, .presence-tag, :disabled")) continue;
    const own = [...element.childNodes].some((node) => node.nodeType === Node.TEXT_NODE && node.textContent.trim());
    if (!own || !element.checkVisibility({ opacityProperty: true, visibilityProperty: true, contentVisibilityAuto: true })) continue;
    const rect = element.getBoundingClientRect();
    if (rect.width < 1 || rect.height < 1) continue;
    const alpha = opacity(element);
    if (alpha < 0.1) continue;
    const style = getComputedStyle(element);
    const behind = background(element);
    const fg = parse(style.color);
    const shown = over({ ...fg, a: fg.a * alpha }, behind);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
    const needed = large ? 3 : 4.5;
    const got = ratio(shown, behind);
    checked++;
    if (got < needed) {
      const name = element.tagName.toLowerCase() + (element.id ? `#${element.id}` : "") + [...element.classList].map((c) => `.${c}`).join("");
      failures.push(`${name} "${element.textContent.trim().slice(0, 40)}": ${got.toFixed(2)} < ${needed} (${style.color} on rgb(${Math.round(behind.r)}, ${Math.round(behind.g)}, ${Math.round(behind.b)}))`);
    }
  }
  return { checked, failures };
}"""

RESOLVED_THEME = """async () => {
  const src = document.querySelector('script[type=module][src*="/theme."]').src;
  return (await import(src)).resolvedTheme();
}"""


async def assert_readable(page, what):
    result = await page.evaluate(CONTRAST_FAILURES)
    assert result["checked"] > 20, f"{what}: only {result['checked']} texts found"
    assert not result["failures"], f"{what}: {len(result['failures'])} texts below WCAG contrast:\n" + "\n".join(result["failures"])


async def log_in(chromium, base_url, username, color_scheme):
    context = await chromium.new_context(viewport={"width": 1200, "height": 1800}, color_scheme=color_scheme)
    page = watch_errors(await context.new_page())
    await log_in_as(page, base_url, username, button="form[action='/accounts/login/'] button")
    return context, page


async def notebook_of_every_status(page, base_url, notebook):
    """Cells that end success, error, blocked (a name defined twice) and stale (an upstream edited
    after the run), a markdown table, an input table, a fresh idle cell and the delete toast."""
    await make_cells(
        notebook,
        "a = 1",
        "b = a + 1\nprint('b is', b)\nb",
        "1 / 0",
        "c = 1",
        "c = 2",
        ("markdown", "| name | value |\n|---|---|\n| *a* | {a} |\n\nSome `code` and a [link](https://example.com)."),
        "from notebook import ui\nimport pandas as pd\npick = ui.table(pd.DataFrame({'n': [1, 20, 300]}))",
        "gone = 0",
    )
    await page.goto(f"{base_url}/notebooks/{notebook.pk}/")
    await expect(page.locator("#notebook")).to_have_attribute("data-synced", "true")
    await page.click("#run-all")
    statuses = cells(page).locator(".cell-status")
    await expect(statuses).to_have_text(["success", "success", "error", "blocked", "blocked", "success", "success", "success"])
    # An edit of the first cell makes its dependent stale.
    await cells(page).first.locator(".cell-editor").click()
    await page.keyboard.press("End")
    await page.keyboard.type("0")
    await expect(statuses.nth(1)).to_have_text("stale")
    await cell_action(cells(page).last, ".delete-cell")
    await expect(page.locator(".toast-deleted")).to_be_visible()
    await page.click("#add-python-cell")
    await expect(statuses.last).to_have_text("idle")
    await page.locator("#history .history-toggle").click()
    await expect(page.locator("#history .history-event").first).to_be_visible()
    await expect(page.locator(".widget-table")).to_be_visible()
    await expect(page.locator(".output-markdown table")).to_be_visible()
    await page.locator("body").click(position={"x": 5, "y": 5})  # no focus ring on a cell


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio(loop_scope="module")  # the module's Chromium (tests/async_pages.py)
async def test_every_text_is_readable_in_the_systems_scheme(chromium, daphne, notebook, scheme):
    context, page = await log_in(chromium, daphne, "alice", scheme)
    await expect(page.locator("html")).to_have_attribute("data-theme", "system")
    assert await page.evaluate(RESOLVED_THEME) == scheme
    await assert_readable(page, f"list page, system {scheme}")
    await notebook_of_every_status(page, daphne, notebook)
    await assert_readable(page, f"notebook page, system {scheme}")
    # A cell's open "⋯" menu too (its disabled "Move up" aside).
    await cells(page).first.locator(".cell-menu summary").click()
    await expect(cells(page).first.locator(".cell-menu-items .delete-cell")).to_be_visible()
    await assert_readable(page, f"a cell's open menu, system {scheme}")
    assert page.errors == []
    await context.close()


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio(loop_scope="module")  # the module's Chromium (tests/async_pages.py)
async def test_the_toggle_switches_at_once_is_kept_on_the_account_and_every_text_stays_readable(chromium, daphne, notebook, users):
    context, page = await log_in(chromium, daphne, "alice", "light")
    await page.evaluate("() => { window.themeChanges = []; document.addEventListener('themechange', (e) => themeChanges.push(e.detail)); }")
    await page.click(".theme-toggle button[value=dark]")
    await page.wait_for_function("() => window.themeChanges.length > 0")
    assert await page.evaluate("() => window.themeChanges") == [{"theme": "dark", "resolved": "dark"}]
    await expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    await expect(page.locator(".theme-toggle button[value=dark]")).to_have_attribute("aria-pressed", "true")
    await eventually(lambda: preference_of(users["alice"]), what="the stored theme")
    assert await preference_of(users["alice"]) == "dark"
    await assert_readable(page, "list page, dark by the toggle")
    await notebook_of_every_status(page, daphne, notebook)
    await assert_readable(page, "notebook page, dark by the toggle")
    # The server renders the choice: a reload (and another page) starts dark.
    await page.reload()
    await expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    assert await page.evaluate(RESOLVED_THEME) == "dark"
    # Light by the toggle, on a system that prefers dark.
    await page.emulate_media(color_scheme="dark")
    await page.click(".theme-toggle button[value=light]")
    await expect(page.locator("html")).to_have_attribute("data-theme", "light")
    assert await page.evaluate(RESOLVED_THEME) == "light"
    await expect(cells(page).first).to_be_visible()
    await assert_readable(page, "notebook page, light by the toggle on a dark system")
    await eventually(lambda: preference_is(users["alice"], "light"), what="the stored light theme")
    assert page.errors == []
    await context.close()


@database_sync_to_async
def preference_of(user):
    return UserPreference.objects.filter(user=user).values_list("theme", flat=True).first()


async def preference_is(user, theme):
    return await preference_of(user) == theme


@pytest.mark.django_db
def test_the_theme_view_stores_a_known_theme_and_refuses_anything_else(client, users):
    client.force_login(users["bob"])
    response = client.post("/preferences/theme/", {"theme": "purple"}, HTTP_ACCEPT="application/json")
    assert response.status_code == 400
    assert response.json()["error"] == "Unknown theme 'purple': choose one of light, dark, system."
    assert client.post("/preferences/theme/", {}).status_code == 400
    assert not UserPreference.objects.filter(user=users["bob"]).exists()
    response = client.post("/preferences/theme/", {"theme": "dark"}, HTTP_ACCEPT="application/json")
    assert response.json() == {"theme": "dark"}
    assert users["bob"].preference.theme == "dark"
    # Without JavaScript the form posts and goes back; a foreign `next` goes to the list instead.
    response = client.post("/preferences/theme/", {"theme": "light", "next": "https://evil.example/"})
    assert response.status_code == 302 and response["Location"] == "/"
    assert UserPreference.objects.get(user=users["bob"]).theme == "light"
    assert 'data-theme="light"' in client.get("/").content.decode()
    assert client.get("/preferences/theme/").status_code == 405


@pytest.mark.django_db
def test_a_signed_out_visitor_keeps_the_theme_in_the_browser_only(client):
    response = client.post("/preferences/theme/", {"theme": "dark"})
    assert response.status_code == 403
    page = client.get("/accounts/login/").content.decode()
    assert 'data-theme="system" data-theme-store="local"' in page
