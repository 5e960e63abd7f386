"""The live notebook page in headless Chromium, against the production shape as the README
starts it: Daphne on `notebookproject.asgi:application` with DEBUG off (static files served by
WhiteNoise from the collected STATIC_ROOT), Redis, and the real `runworker kernel` process.
One test runs `scripts/run` instead: the embedded default, as a newcomer starts it.

Two browser contexts (two users) open one notebook; each test does something in one page
and asserts what both pages show. Playwright's sync API runs in plain test functions.
"""
import contextlib
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connections
from playwright.sync_api import expect, sync_playwright

from tests.conftest import BROWSER_PASSWORDS
from tests.live import ROOT, Server, free_port, stop, wait_http
from tests.waiting import eventually

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync",
]
TIMEOUT_MS = 20_000
SCREENSHOT = ROOT / "docs" / "screenshot-two-pages.png"

expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="module")
def browser(browser_server):
    # After the server (and so the test database): Playwright's loop must not exist while
    # pytest-django creates or drops the database with sync calls. For this module only: its
    # loop counts as running on this thread until Playwright stops, and the async tests a
    # pytest-xdist worker runs after this module need the thread without one.
    with sync_playwright() as playwright:
        executable = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")  # never a downloaded browser
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(autouse=True)
def _sync_orm_beside_playwright(monkeypatch):
    # Playwright's sync API keeps an event loop on this thread; the ORM calls made by the
    # fixtures and tests are plain sync code that Django would otherwise refuse.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture(autouse=True)
def _close_thread_connections():
    """Overrides conftest's: no consumer runs in this process, and async_to_sync cannot run
    beside Playwright's loop. Only this thread's connections need closing."""
    yield
    connections.close_all()


@pytest.fixture
def live(browser_server, live_kernel, browser_passwords, notebook):
    """The session's Daphne (conftest), with this test's users able to log in."""
    return browser_server


@pytest.fixture
def open_page(browser, live, notebook):
    """Factory: open_page("bob") -> a logged-in page on the shared notebook, showing its live state."""
    contexts = []

    def open_as(username, base_url=None):
        base_url = base_url or live.url
        context = browser.new_context(viewport={"width": 1100, "height": 900})
        contexts.append(context)
        page = context.new_page()
        page.errors = []
        page.on("pageerror", lambda error: page.errors.append(str(error)))
        page.static = []  # every /static/ response, for the tests of static file serving
        page.on("response", lambda response: page.static.append(response) if "/static/" in response.url else None)
        if os.environ.get("BROWSER_TEST_FRAMES"):  # debugging aid: print every WebSocket frame
            page.on("websocket", lambda ws: (ws.on("framesent", lambda f: print(username, ">", f[:300])), ws.on("framereceived", lambda f: print(username, "<", f[:300]))))
        page.goto(f"{base_url}/accounts/login/")
        page.fill("input[name=username]", username)
        page.fill("input[name=password]", BROWSER_PASSWORDS[username])
        page.click("button[type=submit]")
        page.wait_for_url(f"{base_url}/")
        page.goto(f"{base_url}/notebooks/{notebook.pk}/")
        expect(page.locator("#notebook")).to_have_attribute("data-synced", "true")
        expect(page.locator("#connection-indicator")).to_have_attribute("data-state", "connected")
        return page

    yield open_as
    for context in contexts:
        for page in context.pages:
            assert page.errors == [], f"JavaScript errors on the page: {page.errors}"
        context.close()


def make_cells(notebook, *codes):
    """Cells saved before any page opens (the kernel loads them on first connect)."""
    from notebooks_app.constants import POSITION_STEP

    cells = [notebook.cells.create(position=(i + 1) * POSITION_STEP, type="python", code=code) for i, code in enumerate(codes)]
    notebook.revision += 1
    notebook.save(update_fields=["revision"])
    return cells


def cells(page):
    return page.locator("#cells .cell.live")


def cell_action(cell, selector):
    """Click one of a cell's actions (.delete-cell, .move-up, ...) in its "⋯" menu, opened first."""
    cell.locator(".cell-menu summary").click()
    cell.locator(f".cell-menu-items {selector}").click()


def set_code(page, cell, code):
    """Replace a cell's code the way a user pasting it would (typing would auto-indent)."""
    cell.locator(".cm-content").click()
    page.keyboard.press("Control+a")
    page.keyboard.insert_text(code)


# The text of an editor's lines without the other people's cursors drawn in them (their names).
EDITOR_LINES = """(content) => [...content.querySelectorAll('.cm-line')].map((line) => {
    const copy = line.cloneNode(true);
    for (const caret of copy.querySelectorAll('.cm-ySelectionCaret')) caret.remove();
    return copy.textContent;
}).join('\\n')"""


def expect_code(cell, code):
    """The cell's editor shows `code` (CodeMirror draws one .cm-line per line). The locator is
    resolved again at each try, as expect() does: the cell it names may move meanwhile."""

    def shown():
        return cell.locator(".cm-content").evaluate(EDITOR_LINES, timeout=TIMEOUT_MS)

    try:
        eventually(lambda: shown() == code, TIMEOUT_MS / 1000, f"the editor to show {code!r}", interval=0.05).wait()
    except AssertionError as timeout:
        raise AssertionError(f"{timeout}; it shows {shown()!r}") from None


def expect_output(cell, text):
    expect(cell.locator(".cell-outputs .output-text")).to_have_text(text)
    expect(cell.locator(".cell-status")).to_have_text("success")


def record_statuses(page):
    """Collect every status the page applies from now on, in window.__statuses[cellId]
    (a cascade's statuses often arrive in one batch, so the DOM shows only the last)."""
    page.evaluate("""() => {
        window.__statuses = {};
        document.getElementById('notebook').addEventListener('notebook:event', ({detail}) => {
            if (detail.type === 'cell_status') (window.__statuses[detail.cellId] ||= []).push(detail.status);
        });
    }""")


def test_added_cell_runs_and_its_output_appears_in_both_pages(open_page):
    alice, bob = open_page("alice"), open_page("bob")
    alice.click("#add-python-cell")
    expect(cells(alice)).to_have_count(1)
    expect(cells(bob)).to_have_count(1)
    expect(cells(alice).first.locator(".cm-content")).to_be_focused()
    alice.keyboard.insert_text("x = 6 * 7\nx")
    alice.keyboard.press("Control+Enter")
    for page in (alice, bob):
        expect_output(cells(page).first, "42")
        expect(cells(page).first.locator(".cell-names .writes")).to_contain_text("x")
    expect_code(cells(bob).first, "x = 6 * 7\nx")
    # Shift+Enter on the last cell runs it and opens a new cell below, focused only here.
    alice.keyboard.press("Shift+Enter")
    expect(cells(alice)).to_have_count(2)
    expect(cells(bob)).to_have_count(2)
    expect(cells(alice).nth(1).locator(".cm-content")).to_be_focused()
    expect(cells(bob).nth(1).locator(".cm-content")).not_to_be_focused()


def test_run_all_then_delete_reruns_dependents_with_name_errors(open_page, notebook):
    make_cells(notebook, "a = 5\na", "b = a * 2\nb", "c = b + 1\nc")
    alice, bob = open_page("alice"), open_page("bob")
    alice.click("#run-all")
    for page in (alice, bob):
        for index, value in enumerate(["5", "10", "11"]):
            expect_output(cells(page).nth(index), value)
    record_statuses(bob)
    cell_action(cells(alice).first, ".delete-cell")
    for page in (alice, bob):
        expect(cells(page)).to_have_count(2)
        first, second = cells(page).nth(0), cells(page).nth(1)
        expect(first.locator(".cell-status")).to_have_text("error")
        expect(second.locator(".cell-status")).to_have_text("error")
        expect(first.locator(".cell-error")).to_contain_text("NameError")
        expect(first.locator(".cell-error")).to_contain_text("'a'")
        expect(second.locator(".cell-error")).to_contain_text("NameError")
        expect(second.locator(".cell-error")).to_contain_text("'b'")
        expect(first.locator(".cell-outputs")).to_be_empty()
    seen = bob.evaluate("window.__statuses")
    assert len(seen) == 2 and all(statuses[-2:] == ["running", "error"] for statuses in seen.values()), seen


def test_cell_added_below_the_first_appears_second_in_both_pages(open_page, notebook):
    make_cells(notebook, "one = 1", "two = 2", "three = 3")
    alice, bob = open_page("alice"), open_page("bob")
    first = cells(alice).first
    first.locator(".cell-menu summary").click()
    first.locator(".add-cell-below[data-cell-type=python]").click()
    for page in (alice, bob):
        expect(cells(page)).to_have_count(4)
        expect_code(cells(page).nth(1), "")
        expect_code(cells(page).nth(2), "two = 2")
    expect(cells(alice).nth(1).locator(".cm-content")).to_be_focused()  # in the tab that asked
    expect(cells(bob).nth(1).locator(".cm-content")).not_to_be_focused()
    alice.keyboard.insert_text("four = 4")
    alice.keyboard.press("ArrowUp")  # first line: moves to the previous cell
    expect(cells(alice).nth(0).locator(".cm-content")).to_be_focused()
    expect_code(cells(bob).nth(1), "four = 4")  # sent on blur


def test_cells_move_and_insert_above_the_first_in_both_pages(open_page, notebook):
    make_cells(notebook, "one = 1", "two = 2", "three = 3")
    alice, bob = open_page("alice"), open_page("bob")
    expect(cells(alice).first.locator(".move-up")).to_be_disabled()
    expect(cells(alice).last.locator(".move-down")).to_be_disabled()
    cell_action(cells(alice).first, ".move-down")
    for page in (alice, bob):
        for index, code in enumerate(["two = 2", "one = 1", "three = 3"]):
            expect_code(cells(page).nth(index), code)
    cell_action(cells(bob).last, ".move-up")
    expect_code(cells(bob).nth(1), "three = 3")
    cell_action(cells(bob).nth(1), ".move-up")  # "three" again, now second: to the top
    for page in (alice, bob):
        for index, code in enumerate(["three = 3", "two = 2", "one = 1"]):
            expect_code(cells(page).nth(index), code)
    first = cells(alice).first
    first.locator(".cell-menu summary").click()
    first.locator(".add-cell-above[data-cell-type=sql]").click()
    for page in (alice, bob):
        expect(cells(page)).to_have_count(4)
        expect(cells(page).first).to_have_attribute("data-cell-type", "sql")
    expect(cells(alice).first.locator(".cm-content")).to_be_focused()


def test_deleting_the_only_cell_clears_its_code(open_page, notebook):
    make_cells(notebook, "lonely = 1")
    alice, bob = open_page("alice"), open_page("bob")
    cell_action(cells(alice).first, ".delete-cell")
    for page in (alice, bob):
        expect_code(cells(page).first, "")
        expect(cells(page)).to_have_count(1)
    eventually(lambda: notebook.cells.get().code == "", TIMEOUT_MS / 1000, "the cleared code saved (0.3 s after the typing)", interval=0.05).wait()


def test_stdout_streams_while_the_cell_runs(open_page, notebook):
    make_cells(notebook, "import time\nfor i in range(4):\n    print(i, flush=True)\n    time.sleep(0.5)")
    alice, bob = open_page("alice"), open_page("bob")
    cells(alice).first.locator(".run-cell").click()
    for page in (alice, bob):
        # Some lines are on screen while the status still says running.
        page.wait_for_function(
            """() => {
                const cell = document.querySelector('#cells .cell.live');
                const stdout = cell.querySelector('.cell-stdout').textContent;
                return cell.querySelector('.cell-status').textContent === 'running'
                    && stdout.includes('1') && !stdout.includes('3');
            }""",
            timeout=TIMEOUT_MS,
        )
        expect(cells(page).first.locator(".cell-elapsed")).to_be_visible()
    for page in (alice, bob):
        expect(cells(page).first.locator(".cell-status")).to_have_text("success")
        expect(cells(page).first.locator(".cell-stdout")).to_have_text("0\n1\n2\n3\n")


def test_stop_interrupts_the_running_cell(open_page, notebook):
    make_cells(notebook, "import time\nfor i in range(100):\n    print(i, flush=True)\n    time.sleep(0.2)")
    alice, bob = open_page("alice"), open_page("bob")
    cells(alice).first.locator(".run-cell").click()
    expect(cells(bob).first.locator(".cell-stdout")).to_contain_text("2")
    alice.click("#interrupt")
    for page in (alice, bob):
        expect(cells(page).first.locator(".cell-status")).to_have_text("error")
        expect(cells(page).first.locator(".cell-error")).to_contain_text("KeyboardInterrupt")


def test_html_output_cannot_touch_the_page(open_page, notebook):
    payload = "<script>parent.window.PWNED = 1; window.top.PWNED = 1</script><b>bold</b>"
    make_cells(notebook, f"class H:\n    def _repr_html_(self):\n        return {payload!r}\nH()")
    alice, bob = open_page("alice"), open_page("bob")
    cells(alice).first.locator(".run-cell").click()
    for page in (alice, bob):
        frame = cells(page).first.locator("iframe.output-html")
        expect(frame).to_have_attribute("sandbox", "allow-scripts")
        expect(page.frame_locator("iframe.output-html").locator("b")).to_have_text("bold")
        assert page.evaluate("window.PWNED") is None
        assert page.evaluate("window.top.PWNED") is None
        # The output's script ran in its opaque-origin frame and was refused there (that error is
        # the frame's, reported by Chromium with the page's): nothing else went wrong.
        expect(page.frame_locator("iframe.output-html").locator(".notebook-frame-errors")).to_contain_text("cross-origin frame")
        assert all('Blocked a frame with origin "null"' in error for error in page.errors), page.errors
        page.errors.clear()


@contextlib.contextmanager
def bob_cut_off(open_page, name):
    """alice on the main server, bob on a second one that is then killed: bob's page is
    reconnecting. Yields (alice, bob, second server)."""
    second = Server(f"browser-daphne-{name}-{os.getpid()}.log").start()
    try:
        alice, bob = open_page("alice"), open_page("bob", base_url=second.url)
        second.kill()
        expect(bob.locator("#connection-indicator")).to_have_attribute("data-state", "reconnecting")
        yield alice, bob, second
    finally:
        second.stop()


def test_page_reconnects_and_catches_up_after_its_server_restarts(open_page, notebook):
    make_cells(notebook, "n = 1\nn")
    with bob_cut_off(open_page, "b") as (alice, bob, second):
        # While bob's server is down, alice changes the notebook through hers.
        set_code(alice, cells(alice).first, "n = 2\nn")
        alice.keyboard.press("Control+Enter")
        expect_output(cells(alice).first, "2")
        alice.click("#add-python-cell")
        expect(cells(alice)).to_have_count(2)
        second.start()
        expect(bob.locator("#connection-indicator")).to_have_attribute("data-state", "connected")
        expect(cells(bob)).to_have_count(2)
        expect_code(cells(bob).first, "n = 2\nn")
        expect_output(cells(bob).first, "2")


def test_edit_made_while_away_is_merged_after_reconnecting(open_page, notebook):
    (cell,) = make_cells(notebook, "m = 1\n")
    type(cell).objects.filter(pk=cell.pk).update(status="success")  # it has results: an edit makes them stale
    with bob_cut_off(open_page, "c") as (alice, bob, second):
        cells(bob).first.locator(".cm-content").click()
        bob.keyboard.press("Control+End")
        bob.keyboard.insert_text("typed = 'while away'")
        cells(alice).first.locator(".cm-content").click()
        alice.keyboard.press("Control+Home")
        alice.keyboard.insert_text("# saved by alice meanwhile\n")
        expect(cells(alice).first.locator(".cell-status")).to_have_text("stale")
        second.start()
        # The shared text merges both: what bob typed offline joins what alice saved.
        merged = "# saved by alice meanwhile\nm = 1\ntyped = 'while away'"
        expect_code(cells(alice).first, merged)
        expect_code(cells(bob).first, merged)


def test_viewer_sees_a_read_only_page_that_updates_live(open_page, notebook):
    make_cells(notebook, "v = 1\nv")
    alice, carol = open_page("alice"), open_page("carol")
    for hook in ("#run-all", "#interrupt", "#add-python-cell", ".run-cell", ".delete-cell", ".add-cell-below", ".insert-below"):
        expect(carol.locator(hook)).to_have_count(0)
    expect(cells(carol).first.locator(".cm-content")).to_have_attribute("contenteditable", "false")
    expect(carol.locator("#db-settings input")).to_have_count(0)
    set_code(alice, cells(alice).first, "v = 41 + 1\nv")
    alice.keyboard.press("Control+Enter")
    expect_code(cells(carol).first, "v = 41 + 1\nv")
    expect_output(cells(carol).first, "42")


CURSOR = "(selector) => {const v = window.__cm.findFromDOM(document.querySelector(selector)); return [v.hasFocus, v.state.selection.main.head];}"


def test_remote_edit_does_not_move_the_cursor_in_another_cell(open_page, notebook):
    first, _ = make_cells(notebook, "left = 1", "right = 2")
    alice, bob = open_page("alice"), open_page("bob")
    bob.evaluate("async () => { window.__cm = (await import('/static/notebooks/vendor/codemirror.bundle.js')).EditorView; }")
    bob_first = f'.cell[data-cell-id="{first.pk}"] .cm-editor'
    cells(bob).first.locator(".cm-content").click()
    bob.keyboard.press("End")
    bob.keyboard.press("ArrowLeft")
    assert bob.evaluate(CURSOR, bob_first) == [True, len("left = 1") - 1]
    set_code(alice, cells(alice).nth(1), "right = 'changed by alice'")
    cells(alice).first.locator(".cm-content").click()  # blur: alice's edit is sent
    expect_code(cells(bob).nth(1), "right = 'changed by alice'")
    assert bob.evaluate(CURSOR, bob_first) == [True, len("left = 1") - 1]
    bob.keyboard.type("0")
    expect_code(cells(bob).first, "left = 01")


def test_database_connection_is_masked_and_errors_show_by_the_field(open_page):
    alice, bob = open_page("alice"), open_page("bob")
    alice.fill("#db-settings .db-input", "mysql://nope")
    alice.click("#db-settings .db-save")
    expect(alice.locator("#db-settings .db-error")).to_contain_text("postgresql://")
    alice.fill("#db-settings .db-input", "postgresql://ann:s3cret@db.example:5432/sales")
    alice.click("#db-settings .db-save")
    for page in (alice, bob):
        expect(page.locator("#db-settings .db-display")).to_contain_text("db.example")
        expect(page.locator("#db-settings .db-display")).not_to_contain_text("s3cret")
    expect(alice.locator("#db-settings .db-error")).to_be_hidden()


def test_two_pages_screenshot(open_page, notebook, tmp_path):
    make_cells(notebook, "rate = 0.05\nyears = 10", "principal = 1_000", "final = principal * (1 + rate) ** years\nround(final, 2)",
               "import plotly.express as px\nt = list(range(years + 1))\npx.area(x=t, y=[principal * (1 + rate) ** y for y in t], labels={'x': 'year', 'y': 'balance'}, height=250)",
               "for year in range(1, 4):\n    print(year, round(principal * (1 + rate) ** year, 2))")
    alice, bob = open_page("alice"), open_page("bob")
    alice.click("#run-all")
    for page in (alice, bob):
        expect_output(cells(page).nth(2), "1628.89")
        expect(cells(page).nth(4).locator(".cell-status")).to_have_text("success")
    bob.locator(".cell-names button.name", has_text="rate").first.click()
    expect(bob.locator(".cell.name-uses")).to_have_count(3)
    shots = [tmp_path / "alice.png", tmp_path / "bob.png"]
    for page in (alice, bob):
        page.mouse.move(0, 0)
        page.evaluate("document.activeElement.blur()")
        page.set_viewport_size({"width": 1100, "height": 640})
    # bob looks at the chart (drawn by plotly.js in its frame, docs/frontend.md#outputs).
    chart = cells(bob).nth(3)
    chart.locator(".output-chart-frame").scroll_into_view_if_needed()
    expect(chart.locator(".output-chart")).to_have_attribute("data-state", "loaded")
    expect(bob.frame_locator(".output-chart-frame").locator("svg.main-svg").first).to_be_visible()
    chart.evaluate("node => node.scrollIntoView({block: 'end'})")
    alice.screenshot(path=shots[0])
    bob.screenshot(path=shots[1])
    from PIL import Image

    left, right = (Image.open(path) for path in shots)
    for image in (left, right):
        # What the README shows: the whole viewport, drawn (not a blank or half-loaded page).
        assert image.size == (1100, 640)
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 50
    if os.environ.get("UPDATE_SCREENSHOT"):
        combined = Image.new("RGB", (left.width + right.width + 16, max(left.height, right.height)), "#c5cad6")
        combined.paste(left, (0, 0))
        combined.paste(right, (left.width + 16, 0))
        combined.save(SCREENSHOT, optimize=True)


HASHED_NAME = re.compile(r"\.[0-9a-f]{12}\.(js|css|svg|woff2)$")
FAR_FUTURE = "max-age=315360000, public, immutable"


def test_static_files_are_hashed_compressed_and_cached_for_good(open_page, notebook):
    """WhiteNoise serves every script and stylesheet of the page under its hashed name, down to
    the modules that other modules import (their import paths are rewritten at collectstatic)."""
    make_cells(notebook, "x = 1")
    alice = open_page("alice")
    expect(cells(alice).first.locator(".cm-editor")).to_have_count(1)  # the editor bundle loaded
    manifest = json.loads((Path(settings.STATIC_ROOT) / "staticfiles.json").read_text())["paths"]
    loaded = {response.url.split("/static/", 1)[1]: response for response in alice.static}
    originals = {name for name, hashed in manifest.items() if hashed in loaded}
    assert {
        "notebooks/notebook.js", "notebooks/notebook.css", "notebooks/js/app.js", "notebooks/js/dom.js",
        "notebooks/js/editor.js", "notebooks/vendor/codemirror.bundle.js",
    } <= originals, sorted(loaded)
    for path, response in loaded.items():
        assert HASHED_NAME.search(path) and path in manifest.values(), f"{path} is not a hashed name"
        assert response.status == 200, path
        assert response.header_value("cache-control") == FAR_FUTURE, path
    bundle = loaded[manifest["notebooks/vendor/codemirror.bundle.js"]]
    assert bundle.header_value("content-encoding") == "gzip"


def test_scripts_run_serves_a_notebook_that_computes_and_plots_on_its_port(browser, tmp_path):
    """The embedded default as a newcomer starts it: `scripts/run PORT` (DEBUG on, SQLite, no
    Redis, the kernel inside the server). Every link it prints is on PORT; the demo notebook
    runs, and matplotlib (a runtime requirement) draws."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    hidden = ("DATABASE_URL", "REDIS_URL", "DEBUG", "DJANGO_ALLOW_ASYNC_UNSAFE")
    env = {key: value for key, value in os.environ.items() if key not in hidden}
    env.update(SQLITE_PATH=str(tmp_path / "db.sqlite3"), STATIC_ROOT=str(tmp_path / "static"))
    log_path = tmp_path / "scripts-run.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(ROOT / "scripts" / "run"), str(port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    context = None
    try:
        wait_http(f"{base_url}/accounts/login/", seconds=120, proc=proc)
        printed = log_path.read_text()
        assert {found for found in re.findall(r"https?://[\w.\[\]:-]+:(\d+)", printed)} == {str(port)}, printed
        notebook_url = re.search(rf"Notebook: ({re.escape(base_url)}/notebooks/[0-9a-f-]+/)", printed).group(1)
        context = browser.new_context(viewport={"width": 1100, "height": 900})
        page = context.new_page()
        errors, static = [], []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("response", lambda response: static.append(response) if "/static/" in response.url else None)
        page.goto(f"{base_url}/accounts/login/")
        page.fill("input[name=username]", "demo")
        page.fill("input[name=password]", "demo-notebook")
        page.click("button[type=submit]")
        page.wait_for_url(f"{base_url}/")
        page.goto(notebook_url)
        expect(page.locator("#notebook")).to_have_attribute("data-synced", "true")
        expect(page.locator("#connection-indicator")).to_have_attribute("data-state", "connected")
        cells(page).nth(2).locator(".run-cell").click()
        expect_output(cells(page).nth(2), "1628.89")
        page.click("#add-python-cell")
        expect(cells(page)).to_have_count(5)
        expect(cells(page).last.locator(".cm-content")).to_be_focused()
        page.keyboard.insert_text("import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nNone")
        page.keyboard.press("Control+Enter")
        expect(cells(page).last.locator("img.output-image")).to_be_visible()
        expect(cells(page).last.locator(".cell-status")).to_have_text("success")
        failed = [(response.url, response.status) for response in static if response.status not in (200, 304)]
        assert static and not failed, failed  # 304: revalidated (DEBUG serves static/ uncached)
        assert errors == [], errors
    finally:
        if context is not None:
            context.close()
        stop(proc)
