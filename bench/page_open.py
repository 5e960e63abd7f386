"""Opening a big notebook in Chromium: first screen and editable, cold and warm.

    .venv/bin/python -m bench.page_open [--cells 10000] [--repeat R] [--quick]

The notebook: `--cells` cells, a chain each with a 2 KB `text/plain` output inline, and every
33rd cell one 100 KB output stored apart (OutputBlob): 50 MB of outputs for 10,000 cells, as
tests/test_browser_big.py opens. Headless Chromium (Debian's, `CHROMIUM_PATH`) logged in through
the login page opens `/notebooks/<id>/` in a fresh browser context for each sample:

* cold: the kernel worker restarted first (it loads the notebook, whose analysis is stored);
* warm: the worker holds the notebook already.

Figures, from the navigation's start: the first screen (the server-rendered first cells painted:
`first-contentful-paint`), the state's frames received, **editable** (the page synced with the
state, a frame drawn and a task run after it: what a click or a keystroke waits for; timed in the
page, so that the lag of this process hearing of it is not counted), the JS heap, and how many
outputs the page fetched. The floor of a page is no server work at all, so
ratios are to the first screen of the same sample (the HTML alone).
"""
import asyncio
import hashlib
import os
import sys
import time

from .harness import Cluster, Report, parse_args
from .open import restart_worker, wait_for_bookkeeping

# Editable, timed in the page: #notebook's data-synced turns true, then a frame, then a task.
# Watches the whole document from its start (an init script runs before any of the page's): the
# page may sync before DOMContentLoaded, when the early socket's frames came first (a small notebook).
EDITABLE_PROBE = """
const benchObserver = new MutationObserver(() => {
  const root = document.getElementById("notebook");
  if (!root || root.dataset.synced !== "true") return;
  benchObserver.disconnect();
  const synced = performance.now();
  requestAnimationFrame(() => setTimeout(() => { window.benchEditable = { synced, editable: performance.now() }; }));
});
benchObserver.observe(document, { subtree: true, attributes: true, attributeFilter: ["data-synced"] });
"""


def big_notebook(cluster, cells):
    """Rows as tests/test_browser_big.py builds them (its 50 MB of outputs), analysed already."""
    from django.urls import reverse

    from notebooks_app.constants import POSITION_STEP
    from notebooks_app.models import Cell, Notebook, OutputBlob

    notebook = Notebook.objects.create(name=f"page open {cells}", owner=cluster.user, revision=1)
    inline = "x" * 2_000
    rows = Cell.objects.bulk_create(
        [
            Cell(notebook=notebook, position=(i + 1) * POSITION_STEP, code="v0 = 0" if i == 0 else f"v{i} = v{i - 1} + 1", status="success", outputs=[{"mimeType": "text/plain", "data": f"{i} {inline}"}])
            for i in range(cells)
        ],
        batch_size=1000,
    )
    for i, row in enumerate(rows):
        if i % 33 == 0:
            data = f"{i} " + "y" * 100_000
            digest = hashlib.sha256(b"text/plain\0" + data.encode()).hexdigest()
            OutputBlob.objects.create(cell=row, digest=digest, mime_type="text/plain", data=data)
            row.outputs = [*row.outputs, {"mimeType": "text/plain", "ref": digest, "size": len(data), "url": reverse("notebooks:output", args=[notebook.pk, digest])}]
            row.save(update_fields=["outputs"])
    return str(notebook.pk)


async def open_page(browser, cluster, notebook_id, password):
    """One sample in a fresh context: {firstScreen, stateFirst, stateLast, editable, heapMB, fetched}."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = await context.new_page()
        base = cluster.urls[0]
        await page.goto(f"{base}/accounts/login/")
        await page.fill("input[name=username]", cluster.user.get_username())
        await page.fill("input[name=password]", password)
        await page.click("button[type=submit]")
        await page.wait_for_url(f"{base}/")
        await page.add_init_script(EDITABLE_PROBE)
        cdp = await context.new_cdp_session(page)
        await cdp.send("Performance.enable")
        frames = []
        page.on("websocket", lambda socket: socket.on("framereceived", lambda frame: frames.append(time.monotonic()) if "notebook_state" in frame[:200] else None))
        started = time.monotonic()
        await page.goto(f"{base}/notebooks/{notebook_id}/", wait_until="commit")
        await page.wait_for_function("() => window.benchEditable", polling=100, timeout=120_000)
        timing = await page.evaluate("""() => ({
            ...window.benchEditable,
            firstScreen: (performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime || null,
            fetched: performance.getEntriesByType('resource').filter((e) => e.name.includes('/outputs/')).length,
        })""")
        metrics = {m["name"]: m["value"] for m in (await cdp.send("Performance.getMetrics"))["metrics"]}
        return {
            **timing,
            "stateFirst": (frames[0] - started) * 1000 if frames else None,
            "stateLast": (frames[-1] - started) * 1000 if frames else None,
            "heapMB": metrics["JSHeapUsedSize"] / 2**20,
        }
    finally:
        await context.close()


async def measure(cluster, args, password):
    from playwright.async_api import async_playwright

    report = Report("open a big notebook in Chromium", None, floor_note="ratios to the same sample's first screen (the server-rendered HTML painted)")
    repeat = args.repeat or (1 if args.quick else 3)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"), args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"], headless=True)
        try:
            for count in args.cells:
                notebook_id = await asyncio.to_thread(big_notebook, cluster, count)
                await asyncio.to_thread(restart_worker, cluster)
                await open_page(browser, cluster, notebook_id, password)  # the first open ever: the analysis is stored
                await asyncio.to_thread(wait_for_bookkeeping, notebook_id)
                samples = {"cold": [], "warm": []}
                for _ in range(repeat):
                    await asyncio.to_thread(restart_worker, cluster)
                    samples["cold"].append(await open_page(browser, cluster, notebook_id, password))
                    samples["warm"].append(await open_page(browser, cluster, notebook_id, password))
                for case, runs in samples.items():
                    report.row(f"{count} cells, {case}: first screen (server-rendered cells painted)", [r["firstScreen"] or 0 for r in runs])
                    report.row(f"{count} cells, {case}: state's frames received (first)", [r["stateFirst"] or 0 for r in runs])
                    report.row(f"{count} cells, {case}: state's frames received (last)", [r["stateLast"] or 0 for r in runs])
                    report.row(f"{count} cells, {case}: editable (state shown, a frame and a task after it)", [r["editable"] for r in runs], note=f"{sum(r['editable'] / (r['firstScreen'] or 1) for r in runs) / len(runs):.1f}x the first screen")
                    report.row(f"{count} cells, {case}: JS heap", [r["heapMB"] for r in runs], unit="MB", note=f"{max(r['fetched'] for r in runs)} outputs fetched at most")
        finally:
            await browser.close()


def main(argv=None):
    args = parse_args("A big notebook opened in Chromium: first screen and editable, cold and warm.", argv, cells="10000")
    if args.quick:
        args.cells = [300]
    with Cluster("page-open") as cluster:
        from .harness import PASSWORD

        asyncio.run(measure(cluster, args, PASSWORD))


if __name__ == "__main__":
    sys.exit(main())
