"""The kernel lifecycle as the page shows it (docs/operations.md, "Kernel lifecycle";
static/notebooks/js/kernel_state.js), in Chromium against the production shape: a Daphne of this
test's own (DEBUG off, WhiteNoise) and a kernel worker of its own with small limits, both of a
fleet of the test's own (KERNEL_FLEET), on the test database and Redis.

* an idle stop: the header's badge says "kernel: stopped", a notice says why and when, on every
  page open; results stay, marked stale; the history lists the stop by "server"; the next run of
  a cell starts the kernel, reruns what it needs and hides the notice;
* a run over a full worker: the badge and the notice say it waits, 1st in line; it runs once the
  busy notebook's cell ends.

Async Playwright with the per-module Chromium of tests/async_pages.py.
"""
import asyncio
import os
import re
import time

import pytest
from channels.db import database_sync_to_async
from playwright.async_api import expect

from tests.async_pages import BROWSER_MODULE, TIMEOUT_MS, cells, chromium, log_in, make_cells, new_context, watch_errors  # noqa: F401 (fixtures)
from tests.client import NotebookClient
from tests.conftest import BROWSER_PASSWORDS, WorkerProcess, database_url_for_tests
from tests.live import ROOT, free_port, login, start_daphne, stop
from tests.waiting import eventually

pytestmark = [*BROWSER_MODULE, pytest.mark.slow, pytest.mark.timeout(300)]

expect.set_options(timeout=TIMEOUT_MS)

IDLE_STOP_MS = 15_000  # KERNEL_IDLE_MINUTES=0.05 is 3 s; the lifecycle looks every second or so


@pytest.fixture
def lifecycle_server(browser_passwords):
    """Factory: `await lifecycle_server(**worker_environment)` -> the base URL of a Daphne of a
    fleet of this test's own, served by one kernel worker with those settings."""
    fleet = f"browserlife{os.getpid()}x{time.monotonic_ns() % 10**6}"
    started = {"workers": [], "daphnes": []}

    def start(environment):
        env = {"KERNEL_FLEET": fleet, **{key: str(value) for key, value in environment.items()}}
        started["workers"].append(WorkerProcess([fleet], extra_env=env).start())
        daphne_env = dict(os.environ, DATABASE_URL=database_url_for_tests(), KERNEL_FLEET=fleet)
        daphne_env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        port = free_port()
        (ROOT / "var").mkdir(exist_ok=True)
        started["daphnes"].append(start_daphne(port, daphne_env, ROOT / "var" / f"browser-lifecycle-daphne-{fleet}.log"))
        return f"http://127.0.0.1:{port}"

    async def start_async(**environment):
        return await asyncio.to_thread(start, environment)

    yield start_async
    for proc in started["daphnes"]:
        stop(proc)
    for worker in started["workers"]:
        worker.kill()


@pytest.fixture
def open_page(new_context):
    """Factory: `await open_page(base_url, "bob", notebook)` -> a page logged in as bob on that
    notebook, showing its live state (its JavaScript errors fail the test: `new_context`)."""

    async def open_as(base_url, username, notebook):
        page = watch_errors(await (await new_context()).new_page())
        await log_in(page, base_url, username)
        await page.goto(f"{base_url}/notebooks/{notebook.pk}/")
        await expect(page.locator("#notebook")).to_have_attribute("data-synced", "true")
        return page

    return open_as


def badge(page):
    return page.locator("#kernel-state")


def notice(page):
    return page.locator("#kernel-notice")


async def shows_one_line(pill):
    """The badge is one pill of one line, as high as the connection indicator beside it (the
    header at 1,100 px is crowded: its text once broke over two lines)."""
    box = await pill.bounding_box()
    beside = await pill.page.locator("#connection-indicator").bounding_box()
    assert box and beside and abs(box["height"] - beside["height"]) < 2, (box, beside)


def history_stops(notebook):
    from notebooks_app.models import EVENT_KERNEL_STOPPED, NotebookEvent

    return list(NotebookEvent.objects.filter(notebook=notebook, kind=EVENT_KERNEL_STOPPED).values_list("after", flat=True))


async def test_an_idle_stop_is_shown_on_every_page_and_the_next_run_starts_the_kernel(lifecycle_server, open_page, notebook):
    url = await lifecycle_server(KERNEL_IDLE_MINUTES=0.05)  # 3 s
    await make_cells(notebook, "x = 20", "x + 1")
    alice, bob = await open_page(url, "alice", notebook), await open_page(url, "bob", notebook)
    for page in (alice, bob):
        await expect(badge(page)).to_have_text("kernel: not started")
        await expect(notice(page)).to_be_hidden()

    await alice.click("#run-all")
    # Running from the start to 3 s after the last cell ends: seen before the stop.
    await expect(badge(alice)).to_have_text("kernel: running")
    await expect(badge(alice)).to_have_attribute("data-state", "running")
    for index in range(2):
        await expect(cells(alice).nth(index).locator(".cell-status")).to_have_text("success")
    await expect(cells(alice).nth(1).locator(".output-text")).to_have_text("21")

    # Nothing touched: the kernel stops after its idle time, and every page says so.
    for page in (alice, bob):
        await expect(badge(page)).to_have_text("kernel: stopped", timeout=IDLE_STOP_MS)
        await expect(badge(page)).to_have_attribute("data-state", "stopped")
        await shows_one_line(badge(page))
        await expect(badge(page)).to_have_attribute("title", re.compile(r"^Kernel stopped after 0\.05 min idle"))
        await expect(notice(page)).to_be_visible()
        await expect(notice(page)).to_contain_text("Kernel stopped after 0.05 min idle: the next run starts it and reruns what that cell needs")
        await expect(notice(page)).to_have_text(re.compile(r"\(stopped at \d{1,2}:\d{2}( [AP]M)?\)\.$"))
        # The results stay, marked stale.
        for index in range(2):
            await expect(cells(page).nth(index)).to_have_class(re.compile(r"\bstatus-stale\b"))
            await expect(cells(page).nth(index).locator(".cell-status")).to_have_text("stale")
        await expect(cells(page).nth(1).locator(".output-text")).to_have_text("21")
        await expect(cells(page).nth(1).locator(".output-text")).to_be_visible()

    # The history lists the stop, by "server", with its reason (the line is written just after
    # the stop is announced).
    await eventually(database_sync_to_async(lambda: history_stops(notebook)), what="the kernel_stopped line in the history")
    await alice.locator("#history .history-toggle").click()
    stopped = alice.locator('#history .history-event[data-kind="kernel_stopped"]')
    await expect(stopped).to_have_count(1)
    await expect(stopped.locator(".history-who")).to_have_text("server")
    await expect(stopped.locator(".history-what")).to_have_text("Kernel stopped after 0.05 min idle: the next run starts it and reruns what that cell needs")

    # The next run of the second cell starts the kernel, reruns x = 20 first, and the notice goes.
    # (Checked in the order it happens: 3 s after the cell ends, the kernel stops again.)
    await cells(alice).nth(1).locator(".run-cell").click()
    for page in (alice, bob):
        await expect(badge(page)).to_have_text("kernel: running")
        await expect(notice(page)).to_be_hidden()
    for page in (alice, bob):
        await expect(cells(page).nth(1).locator(".cell-status")).to_have_text("success")
        await expect(cells(page).nth(1).locator(".output-text")).to_have_text("21")


async def test_a_run_over_a_full_worker_waits_pending_first_in_line_then_runs(lifecycle_server, open_page, notebook, users):
    from notebooks_app.models import Notebook

    url = await lifecycle_server(KERNEL_MAX_PROCESSES=1, KERNEL_USER_MAX=0)
    busy = await database_sync_to_async(Notebook.objects.create)(name="busy", owner=users["alice"])
    await make_cells(busy, "import time\ntime.sleep(6)\n'a'")
    await make_cells(notebook, "'b'")
    page = await open_page(url, "alice", notebook)

    # Notebook A takes the worker's one kernel, over the protocol.
    cookie = await asyncio.to_thread(login, url, "alice", BROWSER_PASSWORDS["alice"])
    client = await NotebookClient(busy.pk, cookie, server=url, timeout=30).connect()
    try:
        [slow] = client.order
        await client.send(type="run_cell", cellId=slow)
        await client.wait_for(lambda e: e["type"] == "kernel_status" and e["state"] == "running", what="A's kernel running")
        await client.wait_status(slow, "running")  # (after its kernel started: queued until then)

        # Notebook B's run waits for a place, and the page says so.
        await cells(page).first.locator(".run-cell").click()
        await expect(badge(page)).to_have_text("kernel: pending (1st in line)")
        await expect(badge(page)).to_have_attribute("data-state", "pending")
        await expect(notice(page)).to_be_visible()
        await expect(notice(page)).to_have_text("Waiting for a kernel, 1st in line: this server's 1 kernels are all busy; it starts when one is free.")
        await shows_one_line(badge(page))
        await expect(cells(page).first.locator(".cell-status")).not_to_have_text("success")  # B waits while A runs

        # A's cell ends; B's runs on the freed place.
        await client.wait_status(slow, "success", timeout=30)
        await expect(badge(page)).to_have_text("kernel: running")
        await expect(notice(page)).to_be_hidden()
        await expect(cells(page).first.locator(".cell-status")).to_have_text("success")
        await expect(cells(page).first.locator(".output-text")).to_have_text("'b'")
    finally:
        await client.close()
