"""The page's ordering rules in Chromium, with frames lost or added on the wire on purpose:
a gap in `seq` makes the page ask for `sync` and show the state that comes back, and a
`kernel_error` does the same; and a role changed while the page is open.

Async Playwright, so these run beside the other async tests, before tests/test_browser.py
starts the sync API (which keeps its own loop on the main thread to the end of the session).
Daphne serves the production ASGI app; the kernel worker is the real `runworker` process.
"""
import json

from channels.db import database_sync_to_async
from playwright.async_api import expect

from tests.async_pages import BROWSER_MODULE, TIMEOUT_MS, chromium, daphne, new_context, open_page  # noqa: F401 (fixtures)
from tests.waiting import eventually

pytestmark = BROWSER_MODULE


class Wire:
    """Sits on a page's notebook socket: forwards every frame, except one it is told to lose,
    and can slip in a frame of its own. Records what the page sent."""

    def __init__(self):
        self.lose_next = None  # a server event type: the next frame holding one in seq order is lost
        self.lost = []
        self.sent_by_page = []
        self.states = 0  # notebook_state frames passed to the page
        self.last_seq = None
        self.page_side = None
        self.hold = None  # predicate on a frame's events: such frames wait in `held` for release()
        self.held = []

    def attach(self, route):
        self.page_side = route
        server = route.connect_to_server()
        route.on_message(lambda message: (self.sent_by_page.append(json.loads(message)), server.send(message)))
        server.on_message(self.from_server)

    def from_server(self, message):
        frame = json.loads(message)
        events = frame["events"] if frame.get("type") == "batch" else [frame]
        # Early announcements (no seq) pass: losing one is no gap, and its change comes again.
        if self.lose_next and any(e.get("type") == self.lose_next and not e.get("early") for e in events):
            self.lose_next = None
            self.lost.append(frame)
            return
        if self.hold and self.hold(events):
            self.held.append(message)
            return
        for event in events:
            if event.get("type") == "notebook_state":
                self.states += 1
            if isinstance(event.get("seq"), int):
                self.last_seq = event["seq"]
        self.page_side.send(message)

    def release(self, messages):
        """Pass on held frames, in the order given."""
        for message in messages:
            self.held.remove(message)
            self.page_side.send(message)

    def syncs(self):
        return [m for m in self.sent_by_page if m.get("type") == "sync"]


async def cell_ids(page):
    return await page.locator("#cells .cell.live").evaluate_all("cells => cells.map(c => c.dataset.cellId)")


async def shows_cells(page, expected):
    """`eventually` the page holds these cells in this order."""
    await eventually(lambda: has_cells(page, expected), timeout=TIMEOUT_MS / 1000, what=f"the cells {expected}")


async def has_cells(page, expected):
    return await cell_ids(page) == expected


async def test_a_lost_frame_shows_as_a_seq_gap_and_the_page_resyncs(open_page):
    wire = Wire()
    alice, bob = await open_page("alice", wire), await open_page("bob")
    syncs_before = len(wire.syncs())
    wire.lose_next = "cell_created"
    await bob.click("#add-python-cell")
    await expect(bob.locator("#cells .cell.live")).to_have_count(1, timeout=TIMEOUT_MS)
    # The frame in seq order is lost: alice's page shows the cell from its early announcement
    # (docs/protocol.md), and nothing tells it yet that it missed an event. (Bob's page may show
    # the cell before the frame reaches alice's wire.)
    await eventually(lambda: len(wire.lost) == 1, timeout=TIMEOUT_MS / 1000, what="the cell_created in seq order lost on its way to alice")
    await expect(alice.locator("#cells .cell.live")).to_have_count(1)
    # The next event skips a seq: the page asks for the state and shows both cells.
    await bob.click("#add-python-cell")
    await expect(bob.locator("#cells .cell.live")).to_have_count(2, timeout=TIMEOUT_MS)
    await expect(alice.locator("#cells .cell.live")).to_have_count(2, timeout=TIMEOUT_MS)
    assert await cell_ids(alice) == await cell_ids(bob)
    assert len(wire.syncs()) == syncs_before + 1
    # After the state, events apply in order again: no further sync.
    await bob.click("#add-python-cell")
    await expect(alice.locator("#cells .cell.live")).to_have_count(3, timeout=TIMEOUT_MS)
    assert await cell_ids(alice) == await cell_ids(bob)
    assert len(wire.syncs()) == syncs_before + 1


async def test_a_kernel_error_tells_the_user_and_the_page_resyncs(open_page):
    wire = Wire()
    alice = await open_page("alice", wire)
    syncs_before = len(wire.syncs())
    states_before = wire.states
    # The kernel could not apply a message (the next event in order): the page cannot trust
    # what it holds.
    wire.page_side.send(json.dumps({"type": "kernel_error", "message": "something broke", "seq": wire.last_seq + 1}))
    await expect(alice.locator(".toast")).to_contain_text("something broke", timeout=TIMEOUT_MS)
    await eventually(lambda: len(wire.syncs()) == syncs_before + 1, what="the page's sync")
    await eventually(lambda: wire.states == states_before + 1, what="the state that answers it")
    await expect(alice.locator("#notebook")).to_have_attribute("data-synced", "true")


async def test_a_role_change_while_open_reloads_the_page_with_that_roles_controls(open_page, notebook, users):
    from notebooks_app import operations

    bob = await open_page("bob")
    await expect(bob.locator("#run-all")).to_be_visible()
    await database_sync_to_async(operations.share_notebook)(notebook.pk, users["alice"], member=users["bob"], role="viewer")
    await expect(bob.locator(".role")).to_have_text("viewer", timeout=TIMEOUT_MS)
    await expect(bob.locator("#run-all")).to_have_count(0)
    await expect(bob.locator("#notebook")).to_have_attribute("data-can-edit", "false")
    await expect(bob.locator("#notebook")).to_have_attribute("data-synced", "true", timeout=TIMEOUT_MS)


def events_of(message):
    frame = json.loads(message)
    return frame["events"] if frame.get("type") == "batch" else [frame]


def early(message):
    return any(e.get("early") for e in events_of(message))


def held_in_order(wire, kind):
    """How many `kind` events in seq order the wire holds (a page gets them batched or not)."""
    return sum(e["type"] == kind and not e.get("early") for m in wire.held for e in events_of(m))


async def test_early_announcements_show_at_once_and_the_order_in_seq_order_wins(open_page, notebook, users):
    """docs/protocol.md, "Early announcements": a create or delete shows before the kernel
    orders it, even when the early frames arrive out of order; the events in seq order then put
    every cell where the server has it, without a resync."""
    from notebooks_app import operations
    from notebooks_app.models import Cell

    create = database_sync_to_async(operations.create_cell)
    a = await create(notebook.pk, users["alice"], code="a = 1")
    b = await create(notebook.pk, users["alice"], code="b = 2")
    wire = Wire()
    alice = await open_page("alice", wire)
    await expect(alice.locator("#cells .cell.live")).to_have_count(2, timeout=TIMEOUT_MS)
    syncs_before = len(wire.syncs())

    wire.hold = lambda events: any(e.get("early") or isinstance(e.get("seq"), int) for e in events)
    x = await create(notebook.pk, users["bob"], code="x = a * 10", after_cell_id=str(a.pk))
    y = await create(notebook.pk, users["bob"], code="y = b * 10")
    await eventually(lambda: sum(early(m) for m in wire.held) == 2 and held_in_order(wire, "cell_created") == 2, what="both announcements, early and in order, held")
    # The early ones in the wrong order (y's index counts x, which this page does not hold yet).
    wire.release([m for m in wire.held if early(m)][::-1])
    await expect(alice.locator("#cells .cell.live")).to_have_count(4, timeout=TIMEOUT_MS)
    assert await cell_ids(alice) == [str(a.pk), str(x.pk), str(b.pk), str(y.pk)]
    # Typing into a cell the kernel has not confirmed yet: kept on the page, sent once it is.
    await alice.locator(f'.cell.live[data-cell-id="{x.pk}"] .cell-editor').click()
    await expect(alice.locator(f'.cell.live[data-cell-id="{x.pk}"] .cm-editor.cm-focused')).to_have_count(1)
    await alice.keyboard.press("End")
    await alice.keyboard.type(" + 1")
    await alice.wait_for_timeout(300)
    assert not [m for m in wire.sent_by_page if m.get("type") == "text_update"]
    wire.hold = None
    wire.release(list(wire.held))
    await shows_cells(alice, [str(a.pk), str(x.pk), str(b.pk), str(y.pk)])
    await eventually(
        database_sync_to_async(lambda: Cell.objects.get(pk=x.pk).code == "x = a * 10 + 1"), what="the typing, sent once x was confirmed, saved"
    )

    # Indexes in seq order do not count cells the page holds from early announcements: y moved
    # after x (index 2 in seq order), then z created after a, announced early before the move
    # reaches the page (its early announcement held too).
    wire.hold = lambda events: any(isinstance(e.get("seq"), int) or e.get("type") == "cell_moved" for e in events)
    await database_sync_to_async(operations.move_cell)(notebook.pk, users["bob"], cell_id=str(y.pk), after_cell_id=str(x.pk))
    z = await create(notebook.pk, users["bob"], code="z = 0", after_cell_id=str(a.pk))
    await expect(alice.locator("#cells .cell.live")).to_have_count(5, timeout=TIMEOUT_MS)
    assert await cell_ids(alice) == [str(a.pk), str(z.pk), str(x.pk), str(b.pk), str(y.pk)]
    await eventually(lambda: held_in_order(wire, "cell_moved") == 1 and held_in_order(wire, "cell_created") == 1, what="the move and z in seq order held")
    wire.hold = None
    wire.release(list(wire.held))
    expected = [str(pk) for pk in await database_sync_to_async(lambda: list(Cell.objects.filter(notebook=notebook).order_by("position").values_list("id", flat=True)))()]
    assert expected == [str(a.pk), str(z.pk), str(x.pk), str(y.pk), str(b.pk)]
    await shows_cells(alice, expected)
    assert len(wire.syncs()) == syncs_before  # no gap, no resync: the order came from the events

    # A delete shows at once too; the one in seq order then finds nothing to do.
    wire.hold = lambda events: any(isinstance(e.get("seq"), int) for e in events)
    await database_sync_to_async(operations.delete_cell)(notebook.pk, users["bob"], cell_id=str(x.pk))
    await expect(alice.locator(f'.cell.live[data-cell-id="{x.pk}"]')).to_have_count(0, timeout=TIMEOUT_MS)
    wire.hold = None
    wire.release(list(wire.held))
    await shows_cells(alice, [str(a.pk), str(z.pk), str(y.pk), str(b.pk)])
    assert len(wire.syncs()) == syncs_before



async def two_cells_on_a_watched_page(open_page, notebook, users):
    """Cells a (`a = 1`) and b (`b = a + 1`), then alice's page with a Wire on its socket:
    (a's id, b's id, the wire, the page)."""
    from notebooks_app import operations

    create = database_sync_to_async(operations.create_cell)
    a = await create(notebook.pk, users["alice"], code="a = 1")
    b = await create(notebook.pk, users["alice"], code="b = a + 1")
    wire = Wire()
    page = await open_page("alice", wire)
    return str(a.pk), str(b.pk), wire, page


def cell_status(page, cell_id):
    return page.locator(f'.cell.live[data-cell-id="{cell_id}"] .cell-status')


def cell_text(page, cell_id):
    return page.locator(f'.cell.live[data-cell-id="{cell_id}"] .cm-content')


async def test_early_moves_and_edits_show_at_once_and_late_ones_are_dropped(open_page, notebook, users):
    """docs/protocol.md, "Early announcements": a move shows at once after the cell it now
    follows, an edit shows its cell stale at once (its text follows with the kernel's
    text_update); an early announcement that comes after its change in seq order (its revision
    seen) is dropped, so it cannot undo a later change."""
    from notebooks_app import operations
    from notebooks_app.models import Cell

    move = database_sync_to_async(operations.move_cell)
    a_id, b_id, wire, alice = await two_cells_on_a_watched_page(open_page, notebook, users)
    await alice.locator("#run-all").click()
    await expect(cell_status(alice, b_id)).to_have_text("success", timeout=TIMEOUT_MS)
    await expect(cell_status(alice, a_id)).to_have_text("success")
    syncs_before = len(wire.syncs())

    # Nothing in seq order reaches the page: what it shows comes from the early announcements.
    wire.hold = lambda events: any(isinstance(e.get("seq"), int) for e in events)
    await move(notebook.pk, users["bob"], cell_id=b_id, after_cell_id=None)
    await shows_cells(alice, [b_id, a_id])
    await database_sync_to_async(operations.update_cell)(notebook.pk, users["bob"], cell_id=a_id, code="a = 2")
    await expect(cell_status(alice, a_id)).to_have_text("stale", timeout=TIMEOUT_MS)
    await expect(cell_text(alice, a_id)).to_have_text("a = 1")  # the shared text is the kernel's to change
    await expect(cell_status(alice, b_id)).to_have_text("success")  # its dependents: the kernel's graph
    wire.hold = None
    wire.release(list(wire.held))
    await expect(cell_text(alice, a_id)).to_have_text("a = 2", timeout=TIMEOUT_MS)
    await expect(cell_status(alice, b_id)).to_have_text("stale", timeout=TIMEOUT_MS)
    await shows_cells(alice, [b_id, a_id])

    # Early announcements held back until their changes came in seq order, and later ones after
    # them: a to the top, b's edit then its run, b back to the top. Applied late, the first two
    # would put a above b again and show b stale.
    wire.hold = lambda events: any(e.get("early") for e in events)
    await move(notebook.pk, users["bob"], cell_id=a_id, after_cell_id=None)
    await shows_cells(alice, [a_id, b_id])
    await database_sync_to_async(operations.update_cell)(notebook.pk, users["bob"], cell_id=b_id, code="b = a + 2")
    await expect(cell_text(alice, b_id)).to_have_text("b = a + 2", timeout=TIMEOUT_MS)
    await eventually(lambda: sum(early(m) for m in wire.held) == 2, what="the two early announcements held")
    wire.hold = None
    await alice.locator("#run-all").click()
    await expect(cell_status(alice, b_id)).to_have_text("success", timeout=TIMEOUT_MS)
    await move(notebook.pk, users["bob"], cell_id=b_id, after_cell_id=None)
    await shows_cells(alice, [b_id, a_id])
    wire.release(list(wire.held))
    await alice.wait_for_timeout(300)
    assert await cell_ids(alice) == [b_id, a_id]
    await expect(cell_status(alice, b_id)).to_have_text("success")  # not the late edit's `stale`
    expected = await database_sync_to_async(lambda: [str(pk) for pk in Cell.objects.filter(notebook=notebook).order_by("position").values_list("id", flat=True)])()
    assert expected == [b_id, a_id]
    assert len(wire.syncs()) == syncs_before


async def test_an_early_restore_shows_a_cell_this_page_saw_deleted(open_page, notebook, users):
    """A restored cell keeps its id: its early `cell_created` comes at a revision above the
    deletion this page saw in seq order, so the page shows it at once; a late early delete of
    it (a revision seen) does not take it away again."""
    from notebooks_app import history, operations

    a_id, b_id, wire, alice = await two_cells_on_a_watched_page(open_page, notebook, users)
    await shows_cells(alice, [a_id, b_id])
    syncs_before = len(wire.syncs())

    wire.hold = lambda events: any(e.get("early") for e in events)  # the delete's early frame comes late
    await database_sync_to_async(operations.delete_cell)(notebook.pk, users["bob"], cell_id=b_id)
    await shows_cells(alice, [a_id])
    await eventually(lambda: sum(early(m) for m in wire.held) == 1, what="the early delete held")
    late_delete = list(wire.held)
    wire.hold = lambda events: any(isinstance(e.get("seq"), int) for e in events)  # now nothing in seq order
    await database_sync_to_async(history.restore_cell)(notebook.pk, users["bob"], cell_id=b_id)
    await shows_cells(alice, [a_id, b_id])  # from its early announcement
    wire.hold = None
    wire.release([m for m in wire.held if m not in late_delete])
    await expect(alice.locator(f'.cell.live[data-cell-id="{b_id}"] .cell-status')).to_have_text("success", timeout=TIMEOUT_MS)  # the restore runs it
    wire.release(late_delete)
    await alice.wait_for_timeout(300)
    assert await cell_ids(alice) == [a_id, b_id]
    assert len(wire.syncs()) == syncs_before
