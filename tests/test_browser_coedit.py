"""Several people typing into one cell at once, in Chromium (docs/protocol.md, "Shared text"):
every page and the database end with the same text holding every typed character, also for a
page whose server went away mid-typing and for pages on different Daphnes; presence shows who
is here and in which cell, with their cursor; a cell says who ran it.

Async Playwright with the shared Daphne, per-module Chromium and page fixtures of tests/async_pages.py.
"""
import asyncio
import os
import re

import pytest_asyncio
from channels.db import database_sync_to_async
from playwright.async_api import expect

from notebooks_app.constants import POSITION_STEP
from notebooks_app.models import Cell
from tests.async_pages import BROWSER_MODULE, TIMEOUT_MS, chromium, daphne, new_context, open_page  # noqa: F401 (fixtures)
from tests.waiting import eventually
from tests.live import Server

pytestmark = BROWSER_MODULE

EDITOR_TEXT = """async (selector) => {
    const { EditorView } = await import('/static/notebooks/vendor/codemirror.bundle.js');
    return EditorView.findFromDOM(document.querySelector(selector)).state.doc.toString();
}"""


@pytest_asyncio.fixture(loop_scope="module")
async def second_daphne(daphne):  # noqa: F811
    """Another Daphne on the same database, Redis and worker: {url, start(), kill()}."""

    class Second(Server):
        async def start(self):
            await asyncio.to_thread(Server.start, self)

        async def kill(self):
            await asyncio.to_thread(Server.kill, self)

    second = Second(f"browser-coedit-daphne-{os.getpid()}.log")
    await second.start()
    yield second
    await asyncio.to_thread(second.stop)


@database_sync_to_async
def make_cell(notebook, code, position=1):
    cell = notebook.cells.create(position=position * POSITION_STEP, type="python", code=code)
    notebook.revision += 1
    notebook.save(update_fields=["revision"])
    return str(cell.pk)


# Where another person's cursor is drawn in an editor: [line number from 0, the text before it].
CARET_PLACE = """(selector) => {
    const caret = document.querySelector(selector + ' .cm-ySelectionCaret');
    const line = caret.closest('.cm-line');
    const before = document.createRange();
    before.setStart(line, 0);
    before.setEndBefore(caret);
    return [[...line.parentNode.querySelectorAll('.cm-line')].indexOf(line), before.toString()];
}"""


def editor(cell_id):
    return f'.cell[data-cell-id="{cell_id}"] .cm-editor'


async def text_of(page, cell_id):
    return await page.evaluate(EDITOR_TEXT, editor(cell_id))


async def typed(page, cell_id, char):
    return char in await text_of(page, cell_id)


async def place_cursor(page, cell_id, where):
    """Focus the cell's editor with the cursor at its start or end."""
    await page.locator(f'{editor(cell_id)} .cm-content').click()
    await page.keyboard.press("Control+Home" if where == "start" else "Control+End")


async def type_slowly(page, text):
    await page.keyboard.type(text, delay=15)


async def converged(pages, cell_id, expected_counts, base):
    """Every page shows the same text, holding `base` and every typed character; then the
    database holds it too (saved 0.3 s after the typing stops). Returns the text."""
    async def same_everywhere():
        texts = [await text_of(page, cell_id) for page in pages]
        if len(set(texts)) != 1:
            return None
        text = texts[0]
        if base not in text or any(text.count(char) != count for char, count in expected_counts.items()):
            return None
        return text

    text = await eventually(same_everywhere, timeout=TIMEOUT_MS / 1000, what="the same text on every page")

    async def saved():
        return await database_sync_to_async(lambda: Cell.objects.get(pk=cell_id).code)() == text

    await eventually(saved, timeout=TIMEOUT_MS / 1000, what="the merged text in the database")
    return text


async def test_two_pages_typing_at_once_keep_every_keystroke(open_page, notebook):
    cell_id = await make_cell(notebook, "x = 1\n")
    alice, bob = await open_page("alice"), await open_page("bob")
    # Different places: alice at the start, bob at the end, typing at the same time.
    await place_cursor(alice, cell_id, "start")
    await place_cursor(bob, cell_id, "end")
    await asyncio.gather(type_slowly(alice, "a" * 15), type_slowly(bob, "b" * 15))
    # The same place: both at the very start.
    await asyncio.gather(place_cursor(alice, cell_id, "start"), place_cursor(bob, cell_id, "start"))
    await asyncio.gather(type_slowly(alice, "A" * 10), type_slowly(bob, "B" * 10))
    text = await converged([alice, bob], cell_id, {"a": 15, "b": 15, "A": 10, "B": 10}, "x = 1\n")
    assert re.fullmatch(r"[AB]{20}a{15}x = 1\nb{15}", text), text


async def test_three_pages_typing_at_the_same_place_converge(open_page, notebook):
    cell_id = await make_cell(notebook, "")
    pages = [await open_page("alice"), await open_page("bob"), await open_page("alice")]
    for page in pages:
        await place_cursor(page, cell_id, "start")
    await asyncio.gather(*(type_slowly(page, char * 12) for page, char in zip(pages, "pqr")))
    await converged(pages, cell_id, {"p": 12, "q": 12, "r": 12}, "")


async def test_a_page_on_another_daphne_that_goes_away_mid_typing_converges(open_page, notebook, second_daphne):
    cell_id = await make_cell(notebook, "y = 2\n")
    alice, bob = await open_page("alice"), await open_page("bob", base_url=second_daphne.url)
    await place_cursor(alice, cell_id, "start")
    await place_cursor(bob, cell_id, "end")
    # Two Daphnes: the typing of each reaches the other.
    await asyncio.gather(type_slowly(alice, "a" * 5), type_slowly(bob, "b" * 5))
    await converged([alice, bob], cell_id, {"a": 5, "b": 5}, "y = 2\n")
    # Bob's server dies while both type; bob goes on typing offline.
    typing = asyncio.gather(type_slowly(alice, "c" * 20), type_slowly(bob, "d" * 20))
    # Let the typing begin: the server goes away in the middle of it.
    await eventually(lambda: typed(bob, cell_id, "d"), timeout=TIMEOUT_MS / 1000, what="bob's typing to begin")
    await second_daphne.kill()
    await typing
    await expect(bob.locator("#connection-indicator")).not_to_have_attribute("data-state", "connected")
    await type_slowly(bob, "e" * 5)
    await second_daphne.start()
    await bob.evaluate("() => window.dispatchEvent(new Event('online'))")  # do not wait for the backoff
    await expect(bob.locator("#connection-indicator")).to_have_attribute("data-state", "connected", timeout=TIMEOUT_MS)
    await converged([alice, bob], cell_id, {"a": 5, "b": 5, "c": 20, "d": 20, "e": 5}, "y = 2\n")


async def test_presence_shows_who_is_here_and_where_and_who_ran_a_cell(open_page, notebook):
    first = await make_cell(notebook, "p = 1", 1)
    second = await make_cell(notebook, "q = p + 1\nq", 2)
    alice = await open_page("alice")
    await expect(alice.locator("#presence .presence-alone")).to_have_text("Only you")
    bob = await open_page("bob")
    await expect(alice.locator('#presence .presence-person[data-user="bob"]')).to_contain_text("editor")
    await expect(bob.locator('#presence .presence-person[data-user="alice"]')).to_contain_text("owner")
    # Bob goes into the second cell: alice sees his tag on it and his cursor in its editor.
    await place_cursor(bob, second, "end")
    await expect(alice.locator(f'.cell[data-cell-id="{second}"] .presence-tag[data-user="bob"]')).to_be_visible()
    await expect(alice.locator(f'.cell[data-cell-id="{first}"] .presence-tag')).to_have_count(0)
    await expect(alice.locator(f"{editor(second)} .cm-ySelectionInfo")).to_have_text("bob")
    # The cursor is a Yjs position: a line alice types above it moves it along, after the same "q".
    await alice.wait_for_function(f"(selector) => JSON.stringify(({CARET_PLACE})(selector)) === '[1,\"q\"]'", arg=editor(second))
    await place_cursor(alice, second, "start")
    await expect(bob.locator(f'.cell[data-cell-id="{second}"] .presence-tag[data-user="alice"]')).to_be_visible()
    await alice.keyboard.insert_text("# above\n")
    await alice.wait_for_function(f"(selector) => JSON.stringify(({CARET_PLACE})(selector)) === '[2,\"q\"]'", arg=editor(second))
    await bob.keyboard.press("Control+Enter")
    await expect(alice.locator(f'.cell[data-cell-id="{second}"] .cell-run-by')).to_have_text("run by bob", timeout=TIMEOUT_MS)
    await expect(alice.locator(f'.cell[data-cell-id="{first}"] .cell-run-by')).to_have_text("run by bob")
    await bob.close()
    await expect(alice.locator("#presence .presence-alone")).to_have_text("Only you")
    await expect(alice.locator(f'.cell[data-cell-id="{second}"] .presence-tag')).to_have_count(0)
