"""Big notebooks in Chromium (docs/frontend.md, "Big notebooks"): outputs by reference load when
their cell comes near the viewport, a notebook of 10,000 cells opens without freezing the tab
(its socket opened before its modules load; far cells, editors and outputs are built lazily; the
timing and memory are printed, not asserted beyond sanity bounds), and a page whose socket keeps failing backs off and then stops with a Reload
button.

Async Playwright with the shared Daphne and per-module Chromium of tests/async_pages.py: the cells are rows written with the ORM before the page opens, and a revision bump
makes the kernel worker load them.
"""
import base64
import hashlib
import random
import re
import struct
import time
import zlib

import pytest
from channels.db import database_sync_to_async
from django.urls import reverse
from playwright.async_api import expect

from notebooks_app.constants import POSITION_STEP
from notebooks_app.models import Cell, Notebook, OutputBlob
from tests.async_pages import BROWSER_MODULE, TIMEOUT_MS, chromium, daphne, log_in, new_context, watch_errors  # noqa: F401 (fixtures)

pytestmark = BROWSER_MODULE

BIG_CELLS = 10_000


def png(width, height, seed=1):
    """A PNG of random pixels: it does not compress, so its size is about 3 bytes a pixel."""
    noise = random.Random(seed)
    rows = b"".join(b"\0" + noise.randbytes(width * 3) for _ in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 1)) + chunk(b"IEND", b"")


def reference(notebook, cell, mime_type, data):
    """Store `data` as the kernel does for an output over OUTPUT_INLINE_LIMIT; the output as sent."""
    digest = hashlib.sha256(mime_type.encode() + b"\0" + data.encode()).hexdigest()
    OutputBlob.objects.create(cell=cell, digest=digest, mime_type=mime_type, data=data)
    size = len(data) * 3 // 4 if mime_type.startswith("image/") else len(data.encode())
    return {"mimeType": mime_type, "ref": digest, "size": size, "url": reverse("notebooks:output", args=[notebook.pk, digest])}


def fill(notebook, cells):
    """Rows for `cells` (dicts of Cell fields, plus `refs`: [(mime type, data)] stored apart)."""
    rows = Cell.objects.bulk_create(
        [Cell(notebook=notebook, position=(i + 1) * POSITION_STEP, **{k: v for k, v in c.items() if k != "refs"}) for i, c in enumerate(cells)]
    )
    for row, cell in zip(rows, cells):
        if cell.get("refs"):
            row.outputs = [*row.outputs, *(reference(notebook, row, mime, data) for mime, data in cell["refs"])]
            row.save(update_fields=["outputs"])
    Notebook.objects.filter(pk=notebook.pk).update(revision=notebook.revision + 1)
    return [str(row.pk) for row in rows]


@pytest.fixture
def new_page(new_context):  # noqa: F811
    async def make():
        page = watch_errors(await (await new_context()).new_page())
        page.set_default_timeout(TIMEOUT_MS)
        return page

    return make


def cell(page, cell_id):
    return page.locator(f"#cell-{cell_id}.live")


async def test_large_outputs_load_by_reference_and_the_image_when_scrolled_to(new_page, daphne, notebook):  # noqa: F811
    image = png(820, 820)
    assert len(image) > 2_000_000
    html = "<table>" + "<tr><td>row</td></tr>" * 4_000 + "</table>"

    def build():
        texts = [{"code": f"'{i}' * 300_000", "status": "success", "refs": [("text/plain", str(i) * 300_000)]} for i in range(5)]
        texts[4]["stdout"] = "a line of output\n" * 6_000  # 102,000 characters: a tail and a link
        fillers = [{"code": "\n".join(f"filler_{i}_{line} = {line}" for line in range(12))} for i in range(20)]
        last = [
            {"code": "Big()", "status": "success", "refs": [("text/html", html)]},
            {"code": "fig", "status": "success", "refs": [("image/png", base64.b64encode(image).decode())]},
        ]
        return fill(notebook, texts + fillers + last)

    ids = await database_sync_to_async(build)()
    page = await new_page()
    image_requests = []
    page.on("request", lambda request: image_requests.append(request.url) if "/outputs/" in request.url and request.resource_type == "image" else None)
    await log_in(page, daphne, "bob")
    await page.goto(f"{daphne}/notebooks/{notebook.pk}/")
    await expect(page.locator("#notebook")).to_have_attribute("data-synced", "true", timeout=TIMEOUT_MS)

    for i in range(5):  # near the top: fetched at once, shown like an inline output
        text = cell(page, ids[i]).locator(".output-ref[data-state=loaded] pre.output-text")
        await expect(text).to_have_count(1, timeout=TIMEOUT_MS)
        assert await text.evaluate("pre => pre.textContent.length") == 300_000
    stdout = cell(page, ids[4]).locator(".cell-stdout")
    await expect(stdout.locator("a.stdout-more")).to_have_text("whole output (102,000 characters)")
    assert await stdout.locator("pre").evaluate("pre => pre.textContent.length") == 64 * 1024

    # Far below: a placeholder with its size, nothing fetched, until it is scrolled to.
    picture = cell(page, ids[-1]).locator(".output-ref")
    await expect(picture).to_have_attribute("data-state", "waiting")
    await expect(picture).to_contain_text(re.compile(r"image/png output, \d\.\d MB"))
    assert image_requests == []
    await picture.scroll_into_view_if_needed()
    await expect(picture).to_have_attribute("data-state", "loaded", timeout=TIMEOUT_MS)
    assert await picture.locator("img").evaluate("img => img.naturalWidth") == 820
    assert len(image_requests) == 1

    frame = cell(page, ids[-2]).locator("iframe.output-html")
    await frame.scroll_into_view_if_needed()
    assert await frame.get_attribute("sandbox") == "allow-scripts"  # never allow-same-origin
    assert (await frame.get_attribute("src")).endswith("/")
    await expect(page.frame_locator(f'.cell[data-cell-id="{ids[-2]}"] iframe.output-html').locator("td").first).to_have_text("row", timeout=TIMEOUT_MS)


async def test_an_output_that_fails_to_load_says_so_and_can_be_retried(new_page, daphne, notebook):  # noqa: F811
    ids = await database_sync_to_async(fill)(notebook, [{"code": "big", "status": "success", "refs": [("text/plain", "t" * 100_000)]}])
    page = await new_page()
    failing = {"on": True}

    async def outputs(route):
        if failing["on"]:
            await route.fulfill(status=503, body="down")
        else:
            await route.continue_()

    await page.route(re.compile(r"/outputs/"), outputs)
    await log_in(page, daphne, "bob")
    await page.goto(f"{daphne}/notebooks/{notebook.pk}/")
    box = cell(page, ids[0]).locator(".output-ref")
    await expect(box).to_have_attribute("data-state", "failed", timeout=TIMEOUT_MS)
    await expect(box).to_contain_text("Could not load this text/plain output, 97.7 KB (HTTP 503)")
    failing["on"] = False
    await box.locator("button.retry-output").click()
    await expect(box.locator("pre.output-text")).to_have_text("t" * 100_000, timeout=TIMEOUT_MS)


async def test_a_notebook_of_10000_cells_opens_without_freezing_and_scrolls_to_its_end(new_page, daphne, notebook, capsys):  # noqa: F811
    """10,000 cells, each with a 2 KB output inline, and 300 outputs of 100 KB by reference
    (50 MB in all). Prints how long the page took and how much memory it holds."""
    def build():
        inline = "x" * 2_000
        return fill(notebook, [
            {
                "code": f"v{i} = {i}\nprint(v{i})",
                "status": "success",
                "outputs": [{"mimeType": "text/plain", "data": f"{i} {inline}"}],
                "refs": [("text/plain", f"{i} " + "y" * 100_000)] if i % 33 == 0 and i < 9_900 else [],
            }
            for i in range(BIG_CELLS)
        ])

    ids = await database_sync_to_async(build)()
    page = await new_page()
    await log_in(page, daphne, "bob")
    cdp = await page.context.new_cdp_session(page)
    await cdp.send("Performance.enable")
    state_frames = []  # when the state's frames reached the browser: the server's share of the time
    sockets = []

    def opened(socket):
        sockets.append(socket)
        socket.on("framereceived", lambda frame: state_frames.append(time.monotonic()) if "notebook_state" in frame[:200] else None)

    page.on("websocket", opened)
    started = time.monotonic()
    await page.goto(f"{daphne}/notebooks/{notebook.pk}/", wait_until="commit")
    await page.wait_for_function("() => document.getElementById('notebook')?.dataset.synced === 'true'", polling=50, timeout=60_000)
    # Responsive: a frame is drawn and a task runs after it.
    timing = await page.evaluate("""() => new Promise((resolve) => {
        const synced = performance.now();
        requestAnimationFrame(() => setTimeout(() => resolve({
            synced, responsive: performance.now(),
            html: performance.getEntriesByType('navigation')[0].responseEnd,
            domContentLoaded: performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd,
        })));
    })""")
    metrics = {m["name"]: m["value"] for m in (await cdp.send("Performance.getMetrics"))["metrics"]}
    counts = await page.evaluate("""() => ({
        cells: document.querySelectorAll('#cells .cell.live').length,
        editors: document.querySelectorAll('.cm-editor').length,
        frames: document.querySelectorAll('iframe').length,
        fetched: performance.getEntriesByType('resource').filter((e) => e.name.includes('/outputs/')).length,
    })""")
    with capsys.disabled():
        print(
            f"\n10,000 cells, 50 MB of outputs: HTML received {timing['html']:.0f} ms, DOMContentLoaded"
            f" {timing['domContentLoaded']:.0f} ms, state frames received {(state_frames[0] - started) * 1000:.0f}"
            f" - {(state_frames[-1] - started) * 1000:.0f} ms ({len(state_frames)}), state shown {timing['synced']:.0f} ms, responsive"
            f" {timing['responsive']:.0f} ms after navigation; JS heap {metrics['JSHeapUsedSize'] / 2**20:.0f} MB"
            f" (of {metrics['JSHeapTotalSize'] / 2**20:.0f}), {metrics['Nodes']:.0f} DOM nodes,"
            f" {counts['editors']} editors, {counts['fetched']} outputs fetched"
        )
    assert counts["cells"] == BIG_CELLS
    assert counts["editors"] < 100 and counts["fetched"] < 20  # built and fetched near the viewport only
    assert timing["responsive"] - timing["synced"] < 5_000  # a sanity bound, not a benchmark
    # One socket: the one early_socket.js opened before the modules loaded, adopted by the page.
    assert len(sockets) == 1 and await page.evaluate("() => window.notebookEarlySocket === null")

    # Jump to the end. Waited for with sparse polling: Playwright's locators check visibility on
    # every poll, which forces a style and layout pass of the whole page each time.
    scrolled = time.monotonic()
    await cell(page, ids[-1]).evaluate("cell => cell.scrollIntoView()")
    last = f"#cell-{ids[-1]}"
    await page.wait_for_function(f"() => document.querySelector('{last} .cm-line')?.textContent === 'v9999 = 9999'", polling=250, timeout=90_000)
    with capsys.disabled():
        print(f"the last cell's editor {(time.monotonic() - scrolled) * 1000:.0f} ms after jumping to the end")
    # Its outputs were left out of the state (a later cell's: outputsRef) and fetched as it came near.
    await page.wait_for_function(f"() => document.querySelector('{last} .cell-outputs .output-text')?.textContent.includes('9999 xxx')", polling=250, timeout=30_000)
    # Keyboard navigation reaches a cell whose editor may not exist yet: it is made on the way.
    await page.locator(f"{last} .cm-content").focus()
    await page.keyboard.press("Control+Home")
    await page.keyboard.press("ArrowUp")
    previous = f"#cell-{ids[-2]}"
    await page.wait_for_function(f"() => document.activeElement?.closest('.cell') === document.querySelector('{previous}')", polling=250, timeout=30_000)
    assert await page.evaluate(f"() => document.activeElement.matches('{previous} .cm-content')")
    # The cells far from both ends were built while the page was idle: none is left empty.
    await page.wait_for_function("() => !document.querySelector('#cells > .cell.live:empty')", polling=500, timeout=60_000)
    middle = cell(page, ids[BIG_CELLS // 2])
    await expect(middle.locator(".cell-code-preview")).to_have_text(f"v{BIG_CELLS // 2} = {BIG_CELLS // 2}\nprint(v{BIG_CELLS // 2})")
    await expect(middle.locator(".cell-number")).to_have_text(f"[{BIG_CELLS // 2 + 1}]")
