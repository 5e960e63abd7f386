"""The shared text of a cell on its own (pycrdt): merging, replacing, compacting."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Text

from notebooks_app.kernel.shared_text import CellText, UpdateRejected, new_state


def page_doc(cell):
    """A page's copy of the cell's document, as it starts from a notebook_state."""
    doc = Doc()
    doc.apply_update(cell.state())
    return doc, doc.get("code", type=Text)


def type_at_both_ends(server, start, end):
    """Two pages type at once, one `start` at the text's start, the other `end` at its end; the
    server merges both, then each page takes the server's state. Returns the pages' texts."""
    (a, a_text), (b, b_text) = page_doc(server), page_doc(server)
    base_a, base_b = a.get_state(), b.get_state()
    a_text.insert(0, start)
    b_text.insert(len(str(b_text).encode()), end)
    for update in (a.get_update(base_a), b.get_update(base_b)):
        assert server.apply(update)
    for doc in (a, b):
        doc.apply_update(server.state())
    return str(a_text), str(b_text)


def test_concurrent_edits_from_two_pages_both_survive():
    server = CellText("total = price * qty\n")
    pages = type_at_both_ends(server, "# alice\n", "print(total)\n")
    assert str(server) == "# alice\ntotal = price * qty\nprint(total)\n"
    assert pages == (str(server), str(server))


def test_replace_is_a_small_edit_that_merges_with_concurrent_typing():
    server = CellText("naïve = 1\nother = 2\n")
    page, text = page_doc(server)
    base = page.get_state()
    text.insert(len("naïve = 1\n".encode()), "# typed\n")
    update = server.replace("naïve = 10\nother = 2\n")
    assert update is not None and len(update) < 60
    server.apply(page.get_update(base))
    page.apply_update(update)
    assert str(server) == str(text) == "naïve = 10\n# typed\nother = 2\n"
    assert server.replace(str(server)) is None


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40), st.text(max_size=40))
def test_replace_reaches_any_text(old, new):
    cell = CellText(old)
    cell.replace(new)
    assert str(cell) == new
    page, text = page_doc(cell)
    assert str(text) == new


def test_stored_state_is_kept_when_it_matches_the_code_and_replaced_when_not():
    cell = CellText("a = 1")
    same = CellText("a = 1", state=cell.state(), generation=3)
    assert same.generation == 3 and same.state() == cell.state()
    changed = CellText("a = 2", state=cell.state(), generation=3)
    assert str(changed) == "a = 2" and changed.generation == 4


@pytest.mark.parametrize("code", ["", "x = 1"])
def test_a_new_cells_state_is_a_document_of_its_code_that_two_pages_type_into(code):
    """new_state: the empty cell's two constant bytes are a document like any other (the kernel
    adopts them, two pages type into them and merge)."""
    state = new_state(code)
    if not code:  # the same bytes a new empty document gives (one with code has its own client id)
        assert state == CellText("").state()
    server = CellText(code, state=state)
    assert str(server) == code and server.state() == state  # adopted as stored, not made anew
    pages = type_at_both_ends(server, "a", "b")
    assert sorted(str(server)) == sorted("a" + code + "b")  # in an empty cell, either order
    assert pages == (str(server), str(server))


def test_compaction_keeps_the_text_and_drops_the_history():
    cell = CellText("")
    page, text = page_doc(cell)
    for i in range(300):  # keystrokes interleaved with deletes from one page
        base = page.get_state()
        text.insert(0, f"{i % 10}")
        if i % 3 == 0:
            del text[0:1]
        cell.apply(page.get_update(base))
    compact = cell.compacted()
    assert str(compact) == str(cell) and compact.generation == cell.generation + 1
    assert compact.history_size() < cell.history_size()


def test_bad_or_oversized_updates_are_rejected_and_change_nothing():
    cell = CellText("x = 1")
    with pytest.raises(UpdateRejected):
        cell.apply(b"\x00\x01garbage", max_bytes=100)
    page, text = page_doc(cell)
    base = page.get_state()
    text.insert(0, "y" * 200)
    with pytest.raises(UpdateRejected, match="longer than 100 bytes"):
        cell.apply(page.get_update(base), max_bytes=100)
    assert str(cell) == "x = 1"


# --- through the real consumer and worker ------------------------------------------------

import asyncio  # noqa: E402
import base64  # noqa: E402

from channels.db import database_sync_to_async  # noqa: E402

from notebooks_app.models import Cell  # noqa: E402
from tests.conftest import create  # noqa: E402
from tests.waiting import eventually  # noqa: E402


class TypingPage:
    """A NotebookClient plus the pycrdt documents a page keeps of each cell's shared text."""

    def __init__(self, client):
        self.client = client
        self.docs = {}

    def doc(self, cell_id):
        if cell_id not in self.docs:
            cell = self.client.state[cell_id]
            doc = Doc()
            doc.apply_update(base64.b64decode(cell["ydoc"]))
            self.docs[cell_id] = (doc, doc.get("code", type=Text), cell["ygen"])
        return self.docs[cell_id]

    def text(self, cell_id):
        return str(self.doc(cell_id)[1])

    async def type(self, cell_id, index, characters):
        """Insert `characters` at `index` (code points) and send the update, as a page does."""
        doc, text, generation = self.doc(cell_id)
        before = doc.get_state()
        text.insert(len(str(text)[:index].encode()), characters)
        update = base64.b64encode(doc.get_update(before)).decode()
        await self.client.send(type="text_update", cellId=cell_id, update=update, generation=generation)

    def absorb(self):
        """Apply every text_update the page has received so far (its own included)."""
        for event in self.client.events[getattr(self, "_seen", 0):]:
            if event["type"] == "text_update" and event["cellId"] in self.docs:
                self.docs[event["cellId"]][0].apply_update(base64.b64decode(event["update"]))
        self._seen = len(self.client.events)


async def settle(pages, cell_id, expected_updates):
    """Wait until every page has received `expected_updates` text updates of the cell."""
    for page in pages:
        await page.client.wait_for(
            lambda e: sum(1 for x in page.client.events if x["type"] == "text_update" and x["cellId"] == cell_id) >= expected_updates,
            what=f"{expected_updates} text updates",
        )
        page.absorb()


@pytest.mark.django_db(transaction=True)
async def test_two_editors_typing_at_once_keep_every_keystroke(ws, notebook, users):
    alice = TypingPage(await ws(users["alice"], notebook))
    cell_id = await create(alice.client, "x = 1\n")
    bob = TypingPage(await ws(users["bob"], notebook))
    alice.doc(cell_id), bob.doc(cell_id)
    # Interleaved keystrokes: alice at the start, bob at the end, then both at the same place.
    for i in range(20):
        await alice.type(cell_id, i, "a")
        await bob.type(cell_id, len(bob.text(cell_id)), "b")
    await settle([alice, bob], cell_id, 40)
    for i in range(10):
        await alice.type(cell_id, 0, "A")
        await bob.type(cell_id, 0, "B")
    await settle([alice, bob], cell_id, 60)
    merged = alice.text(cell_id)
    assert merged == bob.text(cell_id)
    assert merged.count("a") == 20 and merged.count("b") == 20 and merged.count("A") == 10 and merged.count("B") == 10
    assert "x = 1\n" in merged

    async def saved():
        return (await database_sync_to_async(lambda: Cell.objects.get(pk=cell_id).code)()) == merged

    assert await eventually(saved, what="the merged text in the database")
    updated = await alice.client.wait_for(lambda e: e["type"] == "cell_updated" and e["cellId"] == cell_id and e["code"] == merged)
    assert updated[-1]["code"] == merged


@pytest.mark.django_db(transaction=True)
async def test_a_script_replacing_the_code_reaches_typing_pages_as_an_edit(ws, notebook, users):
    alice = TypingPage(await ws(users["alice"], notebook))
    cell_id = await create(alice.client, "value = 1\n")
    alice.doc(cell_id)
    script = await ws(users["bob"], notebook)
    reply = await script.request(type="cell_update", cellId=cell_id, code="value = 2\n")
    assert reply["type"] == "cell_updated"
    await alice.client.wait_for(lambda e: e["type"] == "text_update" and e["cellId"] == cell_id)
    alice.absorb()
    assert alice.text(cell_id) == "value = 2\n"
    await alice.type(cell_id, 0, "# note\n")
    await settle([alice], cell_id, 2)
    assert alice.text(cell_id) == "# note\nvalue = 2\n"


@pytest.mark.django_db(transaction=True)
async def test_a_viewers_text_update_is_refused_and_changes_nothing(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    cell_id = await create(alice, "safe = True\n")
    carol = TypingPage(await ws(users["carol"], notebook))
    await carol.type(cell_id, 0, "import os; os.system('x')\n")
    error = await carol.client.wait_for(lambda e: e["type"] == "error")
    assert error[-1]["code"] == "forbidden"
    await alice.request(type="sync")  # anything the kernel had relayed would be before this
    assert not [e for e in alice.events if e["type"] == "text_update"]
    assert (await database_sync_to_async(lambda: Cell.objects.get(pk=cell_id).code)()) == "safe = True\n"


@pytest.mark.django_db(transaction=True)
async def test_typing_into_a_cell_someone_deleted_tells_the_typist(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    cell_id = await create(alice, "doomed = 1\n")
    bob = TypingPage(await ws(users["bob"], notebook))
    bob.doc(cell_id)
    await alice.request(type="delete_cell", cellId=cell_id)
    await bob.client.wait_for(lambda e: e["type"] == "cell_deleted")
    await bob.type(cell_id, 0, "typing...")
    notice = await bob.client.wait_for(lambda e: e["type"] == "error" and e.get("code") == "unknown_cell")
    assert "deleted while you were typing" in notice[-1]["message"]
    await alice.request(type="sync")
    assert not [e for e in alice.replies if e.get("code") == "unknown_cell"]  # only the typist hears of it


@pytest.mark.django_db(transaction=True)
async def test_an_update_for_an_old_generation_gets_the_current_document(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    cell_id = await create(alice, "g = 1\n")
    cell = alice.state[cell_id]
    update = base64.b64encode(b"\x00\x00").decode()
    await alice.send(type="text_update", cellId=cell_id, update=update, generation=cell["ygen"] + 7)
    reset = await alice.wait_for(lambda e: e["type"] == "text_reset")
    assert reset[-1]["cellId"] == cell_id and reset[-1]["ygen"] == cell["ygen"] and reset[-1]["ydoc"]


@pytest.mark.django_db(transaction=True)
async def test_presence_shows_who_is_here_where_and_who_left(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    alice.watch_presence = True
    bob = await ws(users["bob"], notebook)
    joined = await alice.wait_for(lambda e: e["type"] == "presence" and e["user"]["name"] == "bob")
    assert joined[-1].get("joined") and joined[-1]["user"]["role"] == "editor" and joined[-1]["user"]["color"].startswith("#")
    cell_id = await create(alice, "p = 1")
    await bob.send(type="presence", cellId=cell_id, cursor={"anchor": "opaque", "head": "opaque"})
    where = await alice.wait_for(lambda e: e["type"] == "presence" and e["user"]["name"] == "bob" and e.get("cellId") == cell_id)
    assert where[-1]["cursor"] == {"anchor": "opaque", "head": "opaque"}
    await bob.close()
    gone = await alice.wait_for(lambda e: e["type"] == "presence" and e["user"]["name"] == "bob" and e.get("left"))
    assert gone[-1]["socket"] == where[-1]["socket"]


@pytest.mark.django_db(transaction=True)
async def test_running_a_cell_says_who_ran_it(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    cell_id = await create(alice, "1 + 1")
    bob = await ws(users["bob"], notebook)
    await bob.send(type="run_cell", cellId=cell_id)
    running = await alice.wait_for(lambda e: e["type"] == "cell_status" and e["cellId"] == cell_id and e["status"] == "running")
    assert running[-1]["by"] == "bob"
    await alice.wait_status(cell_id, "success")
    fresh = await ws(users["carol"], notebook)
    assert fresh.state[cell_id]["runBy"] == "bob"
