"""Interactive charts and HTML with scripts in Chromium, with no network beyond our server
(docs/frontend.md#outputs): plotly, altair and bokeh charts are drawn by the vendored renderers
and answer the mouse; a folium map's Leaflet runs in its frame; a hostile output's script changes
its own frame but cannot read the cookies, reach the page, navigate it or use the API with the
user's session; frames take the height of their content.

Async Playwright with the shared Daphne and per-module Chromium of tests/async_pages.py.
"""
import re
from urllib.parse import urlsplit

from playwright.async_api import expect

from tests.async_pages import BROWSER_MODULE, TIMEOUT_MS, cells, chromium, daphne, make_cells, new_context, open_page, run_all  # noqa: F401 (fixtures)
from tests.test_charts import ALTAIR, BOKEH, FOLIUM, PLOTLY

pytestmark = BROWSER_MODULE

expect.set_options(timeout=TIMEOUT_MS)

# Map tiles are the one thing an output may fetch from the internet; offline they just fail.
TILE_HOSTS = re.compile(r"(^|\.)tile\.openstreetmap\.org$")


async def offline(page):
    """Every request leaving our server is refused and recorded (as if the machine had no network)."""
    outside = []

    async def refuse(route):
        host = urlsplit(route.request.url).hostname or ""
        if host in ("127.0.0.1", "localhost") or route.request.url.startswith(("data:", "blob:", "about:")):
            await route.continue_()
        else:
            outside.append(route.request.url)
            await route.abort("internetdisconnected")

    await page.context.route("**/*", refuse)
    return outside


async def test_plotly_altair_and_bokeh_charts_draw_and_answer_the_mouse_offline(open_page, notebook):
    await make_cells(notebook, ("python", PLOTLY), ("python", ALTAIR), ("python", BOKEH))
    alice = await open_page("alice")
    outside = await offline(alice)
    await run_all(alice, 3)
    for index in range(3):
        await expect(cells(alice).nth(index).locator(".output-chart")).to_have_attribute("data-state", "loaded")

    plotly = alice.frame_locator(f"#cell-{await cell_id(alice, 0)} iframe.output-chart-frame")
    await expect(plotly.locator("svg.main-svg").first).to_be_visible()
    await expect(plotly.locator(".gtitle")).to_have_text("Points")
    await centre(cells(alice).first.locator("iframe.output-chart-frame"))
    await hover_until(alice, plotly.locator(".scatterlayer .point").nth(2), plotly.locator(".hoverlayer .hovertext"))
    await expect(plotly.locator(".hoverlayer .hovertext")).to_contain_text("9")

    vega = alice.frame_locator(f"#cell-{await cell_id(alice, 1)} iframe.output-chart-frame")
    symbols = vega.locator("g.mark-symbol path")
    await expect(symbols).to_have_count(3)
    await centre(cells(alice).nth(1).locator("iframe.output-chart-frame"))
    await hover_until(alice, symbols.nth(2), vega.locator("#vg-tooltip-element.visible"))
    await expect(vega.locator("#vg-tooltip-element")).to_contain_text("9")

    bokeh = alice.frame_locator(f"#cell-{await cell_id(alice, 2)} iframe.output-chart-frame")
    await expect(bokeh.locator("canvas").first).to_be_visible()

    drawn = await cells(alice).locator(".output-chart").evaluate_all("boxes => boxes.map(b => [b.dataset.mimeType, Number(b.dataset.drawnMs)])")
    print("charts drawn (ms from the cell coming into view, renderer loaded on first use):", drawn)
    # Each frame is as tall as its chart, not a fixed guess.
    heights = await cells(alice).locator("iframe.output-chart-frame").evaluate_all("frames => frames.map(f => f.getBoundingClientRect().height)")
    assert all(300 <= height <= 800 for height in heights), heights
    assert outside == [], f"outputs reached the internet: {outside}"


async def test_a_folium_map_runs_its_leaflet_in_its_frame_offline(open_page, notebook):
    await make_cells(notebook, ("python", FOLIUM))
    alice = await open_page("alice")
    outside = await offline(alice)
    await run_all(alice, 1)
    frame = cells(alice).first.locator("iframe.output-html-ref")
    await expect(frame).to_have_attribute("sandbox", "allow-scripts")
    folium_frame = alice.frame_locator("iframe.output-html-ref").frame_locator("iframe")
    await expect(folium_frame.locator(".leaflet-container")).to_be_visible()
    await expect(folium_frame.locator(".leaflet-control-zoom-in")).to_be_visible()
    await expect(frame).to_have_attribute("data-sized", "true")
    assert 200 <= (await frame.bounding_box())["height"] <= 1200
    assert all(TILE_HOSTS.search(urlsplit(url).hostname or "") for url in outside), outside


HOSTILE = r'''
class Hostile:
    def _repr_html_(self):
        return """<p id="own">before</p><p id="cookie"></p><p id="parent"></p><p id="storage"></p>
<p id="api"></p><p id="beacon"></p><p id="top"></p>
<script>
const say = (id, text) => { document.getElementById(id).textContent = text; };
say("own", "changed by its own script");
try { say("cookie", "cookie: " + JSON.stringify(document.cookie)); } catch (e) { say("cookie", "cookie refused: " + e.name); }
try { say("parent", "parent: " + parent.document.title); } catch (e) { say("parent", "parent refused: " + e.name); }
try { say("storage", "storage: " + localStorage.length); } catch (e) { say("storage", "storage refused: " + e.name); }
fetch("/", {credentials: "include"}).then(r => r.text()).then(t => say("api", "api answered " + t.length))
  .catch(e => say("api", "api refused: " + e.name));
try { say("beacon", "beacon: " + navigator.sendBeacon("/notebooks/", "x")); } catch (e) { say("beacon", "beacon refused: " + e.name); }
try { top.location.href = "/accounts/logout/"; say("top", "top navigated?"); } catch (e) { say("top", "top refused: " + e.name); }
</script>"""
Hostile()
'''


async def test_an_output_script_changes_its_frame_but_reaches_nothing_of_the_page(open_page, notebook):
    await make_cells(notebook, ("python", HOSTILE.strip()))
    alice = await open_page("alice")
    outside = await offline(alice)
    api_calls = []
    alice.on("request", lambda request: api_calls.append(request) if request.frame != alice.main_frame and urlsplit(request.url).path in ("/", "/notebooks/") else None)
    await run_all(alice, 1)
    frame = alice.frame_locator("iframe.output-html-ref")
    await expect(frame.locator("#own")).to_have_text("changed by its own script")
    await expect(frame.locator("#cookie")).to_contain_text("cookie refused")
    await expect(frame.locator("#parent")).to_contain_text("parent refused")
    await expect(frame.locator("#storage")).to_contain_text("storage refused")
    await expect(frame.locator("#api")).to_contain_text("api refused")
    await expect(frame.locator("#beacon")).to_contain_text("beacon")  # queued, then blocked: no request below
    await expect(frame.locator("#top")).to_contain_text("top refused")
    # The frame says what its policy blocked, in the frame.
    await expect(frame.locator(".notebook-frame-errors")).to_contain_text("cannot make network requests")
    # The page is where it was, still signed in and live.
    assert urlsplit(alice.url).path == f"/notebooks/{notebook.pk}/"
    await expect(alice.locator("#connection-indicator")).to_have_attribute("data-state", "connected")
    assert api_calls == [], [request.url for request in api_calls]
    assert outside == []


async def test_html_frames_take_the_height_of_their_content(open_page, notebook):
    await make_cells(notebook, ("python", "import pandas as pd\npd.DataFrame({'n': range(40)})"), ("python", "class Tall:\n    def _repr_html_(self):\n        return '<div style=\"height:700px;background:#eee\">tall</div><script>1</script>'\nTall()"))
    alice = await open_page("alice")
    await run_all(alice, 2)
    table = cells(alice).first.locator("iframe.output-html")
    await expect(table).to_have_attribute("data-sized", "true")
    box = await table.bounding_box()
    rows = await alice.frame_locator(f"#cell-{await cell_id(alice, 0)} iframe.output-html").locator("tr").count()
    assert rows == 41 and box["height"] > 41 * 15, box  # every row shown, no inner scrolling
    tall = cells(alice).nth(1).locator("iframe.output-html-ref")
    await expect(tall).to_have_attribute("data-sized", "true")
    assert 700 <= (await tall.bounding_box())["height"] <= 760


async def hover_until(page, target, shown, attempts=5):
    """Hover `target` until `shown` appears: a chart still settling (its frame resized, an
    animation) can move the mark between the hover's aim and the mouse's arrival."""
    for _ in range(attempts - 1):
        await page.mouse.move(0, 0)
        await target.hover(force=True)
        try:
            await expect(shown).to_be_visible(timeout=3000)
            return
        except AssertionError:
            continue
    await target.hover(force=True)
    await expect(shown).to_be_visible()


async def centre(locator):
    """In the middle of the viewport, away from the sticky header (the mouse goes where it is)."""
    await locator.evaluate("node => node.scrollIntoView({block: 'center'})")


async def cell_id(page, index):
    return await cells(page).nth(index).get_attribute("data-cell-id")


async def test_html_frames_are_dark_when_the_page_is(open_page, notebook):
    await make_cells(notebook, ("python", "import pandas as pd\npd.DataFrame({'n': [1, 2]})"))
    alice = await open_page("alice")
    await run_all(alice, 1)
    frame = alice.frame_locator("iframe.output-html")
    await expect(frame.locator("td").first).to_have_css("color", "rgb(29, 36, 51)")
    await alice.emulate_media(color_scheme="dark")  # the page follows the system: "system" theme
    await expect(frame.locator("td").first).to_have_css("color", "rgb(227, 231, 239)")
    await alice.emulate_media(color_scheme="light")
    await expect(frame.locator("td").first).to_have_css("color", "rgb(29, 36, 51)")
