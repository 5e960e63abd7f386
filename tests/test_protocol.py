"""The WebSocket protocol end to end: real consumer, Redis channel layer, PostgreSQL, kernel worker process."""
import asyncio
import json
import random

import threading

import pytest
from channels.db import database_sync_to_async
from django.db import connections, transaction

from notebooks_app import operations
from notebooks_app.consumers import CLOSE_FORBIDDEN, CLOSE_NOT_FOUND, RATE_BURST
from notebooks_app.models import Cell, Notebook
from tests.client import NotebookClient
from tests.conftest import create, db_cell, db_cells, revision, run_and_wait, session_cookie, text_output
from tests.waiting import EVENT_TIMEOUT, eventually

pytestmark = pytest.mark.django_db(transaction=True)


# --- connecting ------------------------------------------------------------------------


async def test_anonymous_is_refused_with_4403(live_kernel, notebook):
    client = NotebookClient(notebook.pk)
    await client.connect(wait_state=False)
    with pytest.raises(ConnectionError):
        await client.next(5)
    assert client.close_code == CLOSE_FORBIDDEN


@pytest.mark.parametrize("who", ["stranger", "unknown"])
async def test_stranger_and_unknown_notebook_are_refused_with_4404(live_kernel, notebook, users, who):
    cookie = await database_sync_to_async(session_cookie)(users["dave"] if who == "stranger" else users["alice"])
    target = notebook.pk if who == "stranger" else "00000000-0000-0000-0000-000000000000"
    client = NotebookClient(target, cookie)
    await client.connect(wait_state=False)
    with pytest.raises(ConnectionError):
        await client.next(5)
    assert client.close_code == CLOSE_NOT_FOUND


async def test_foreign_origin_is_refused(live_kernel, notebook, users):
    from channels.testing import WebsocketCommunicator

    from notebookproject.asgi import application

    cookie = await database_sync_to_async(session_cookie)(users["alice"])
    comm = WebsocketCommunicator(application, f"/ws/notebooks/{notebook.pk}/", headers=[(b"origin", b"http://evil.example"), (b"cookie", cookie.encode())])
    connected, _ = await comm.connect()
    assert not connected


async def test_script_client_without_origin_header_is_served(live_kernel, notebook, users):
    """Only browsers can be used for cross-site hijacking, and they always send Origin."""
    from channels.testing import WebsocketCommunicator

    from notebookproject.asgi import application

    cookie = await database_sync_to_async(session_cookie)(users["alice"])
    comm = WebsocketCommunicator(application, f"/ws/notebooks/{notebook.pk}/", headers=[(b"host", b"testserver"), (b"cookie", cookie.encode())])
    connected, _ = await comm.connect()
    assert connected
    assert json.loads(await comm.receive_from(10))["type"] == "notebook_state"
    await comm.disconnect()


async def test_connect_sends_state_with_cells_in_order(ws, notebook, users):
    await database_sync_to_async(Cell.objects.create)(notebook=notebook, position=2, code="b = 2", status="success", outputs=[{"mimeType": "text/plain", "data": "2"}])
    await database_sync_to_async(Cell.objects.create)(notebook=notebook, position=1, code="a = 1")
    client = await ws(users["carol"], notebook)
    assert [client.state[c]["code"] for c in client.order] == ["a = 1", "b = 2"]
    assert client.state[client.order[1]]["outputs"] == [{"mimeType": "text/plain", "data": "2"}]
    assert client.state[client.order[0]]["writes"] == ["a"]


# --- the seed scenarios -------------------------------------------------------------------


async def test_create_update_run_without_reload_seen_by_second_client(ws, notebook, users):
    alice, bob = await ws(users["alice"], notebook), await ws(users["bob"], notebook)
    cell_id = await create(alice)
    await bob.wait_for(lambda e: e["type"] == "cell_created" and e["cellId"] == cell_id)
    reply = await alice.request(type="cell_update", cellId=cell_id, code="x = 21\nx * 2")
    assert reply["type"] == "cell_updated" and reply["writes"] == ["x"]
    await run_and_wait(alice, cell_id)
    await bob.wait_status(cell_id, "success")
    assert text_output(alice, cell_id) == text_output(bob, cell_id) == "42"
    cell = await db_cell(cell_id)
    assert (cell.code, cell.status, cell.outputs, cell.writes) == ("x = 21\nx * 2", "success", [{"mimeType": "text/plain", "data": "42"}], ["x"])


async def make_chain(client):
    ids = [await create(client, "a = 5\na"), None, None]
    ids[1] = await create(client, "b = a * 2\nb", afterCellId=ids[0])
    ids[2] = await create(client, "c = b + 1\nc", afterCellId=ids[1])
    return ids


async def test_chain_runs_then_delete_cascades_name_errors(ws, notebook, users):
    alice, bob = await ws(users["alice"], notebook), await ws(users["bob"], notebook)
    a, b, c = await make_chain(alice)
    await alice.send(type="run_all")
    await bob.wait_status(c, "success")
    await alice.wait_status(c, "success")
    assert [text_output(bob, x) for x in (a, b, c)] == ["5", "10", "11"]

    start = len(bob.events)
    await alice.send(type="delete_cell", cellId=a)
    await bob.wait_status(c, "error")
    tail = [(e["type"], e.get("cellId"), e.get("status")) for e in bob.events[start:] if e["type"] in ("cell_deleted", "cell_status")]
    assert tail.index(("cell_deleted", a, None)) < tail.index(("cell_status", b, "running")) < tail.index(("cell_status", b, "error")) < tail.index(("cell_status", c, "running")) < tail.index(("cell_status", c, "error"))
    assert bob.state[b]["error"]["ename"] == "NameError" and "'a'" in bob.state[b]["error"]["evalue"]
    assert bob.state[c]["error"]["ename"] == "NameError" and "'b'" in bob.state[c]["error"]["evalue"]
    assert a not in bob.state and bob.order == [b, c]
    await alice.wait_status(c, "error")
    assert alice.events == bob.events
    assert await db_cells(notebook) == [__import__("uuid").UUID(x) for x in (b, c)]
    assert (await db_cell(c)).error["ename"] == "NameError"


async def test_create_after_first_of_three_lands_second_everywhere(ws, notebook, users):
    alice, bob = await ws(users["alice"], notebook), await ws(users["bob"], notebook)
    first = await create(alice, "p = 1")
    await create(alice, "q = 2")
    await create(alice, "r = 3")
    reply = await alice.request(type="create_cell", afterCellId=first, code="inserted = 1")
    assert reply["index"] == 1
    await bob.wait_for(lambda e: e["type"] == "cell_created" and e["cellId"] == reply["cellId"])
    assert alice.order[1] == bob.order[1] == reply["cellId"]
    assert str((await db_cells(notebook))[1]) == reply["cellId"]


async def test_create_after_unknown_or_absent_cell_appends(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    first = await create(alice, "p = 1")
    reply = await alice.request(type="create_cell", afterCellId="00000000-0000-0000-0000-000000000001")
    assert reply["index"] == 1
    reply = await alice.request(type="create_cell", afterCellId=None)
    assert reply["index"] == 2 and alice.order[0] == first


async def test_many_inserts_at_one_place_keep_order(ws, notebook, users):
    """Repeated inserts after the same cell exhaust the gap and renumber; order stays right."""
    alice = await ws(users["alice"], notebook)
    first = await create(alice, "first = 1")
    await create(alice, "last = 1")
    for i in range(12):
        reply = await alice.request(type="create_cell", afterCellId=first, code=f"n{i} = {i}")
        assert reply["index"] == 1
    expected = ["first = 1", *[f"n{i} = {i}" for i in reversed(range(12))], "last = 1"]
    assert [alice.state[c]["code"] for c in alice.order] == expected
    rows = await database_sync_to_async(lambda: list(Cell.objects.filter(notebook=notebook).order_by("position").values_list("code", flat=True)))()
    assert rows == expected


async def test_delete_without_dependents_has_no_cascade(ws, notebook, users):
    alice, bob = await ws(users["alice"], notebook), await ws(users["bob"], notebook)
    lonely = await create(alice, "lonely = 1")
    other = await create(alice, "other = 2")
    await run_and_wait(alice, other)
    await bob.wait_status(other, "success")
    reply = await alice.request(type="delete_cell", cellId=lonely)
    assert reply["type"] == "cell_deleted"
    await bob.wait_for(lambda e: e["type"] == "cell_deleted")
    await bob.expect_silence(0.7)


async def test_a_cell_created_while_a_long_cell_runs_shows_at_once(ws, notebook, users):
    """Early announcements (docs/protocol.md): the kernel applies a create after the running
    cascade, but every socket hears of the new cell while the cell still runs; the
    announcement in seq order follows the cascade."""
    alice, bob = await ws(users["alice"], notebook), await ws(users["bob"], notebook)
    bob.watch_early = True
    slow = await create(alice, "import time\ntime.sleep(3)\ndone = 1")
    await alice.send(type="run_cell", cellId=slow)
    await bob.wait_for(lambda e: e["type"] == "cell_status" and e["cellId"] == slow and e["status"] == "running")
    await alice.send(type="create_cell", code="meanwhile = 2", requestId="during")
    seen = await bob.wait_for(lambda e: e.get("requestId") == "during", what="the new cell")
    assert seen[-1]["type"] == "cell_created" and seen[-1]["early"] and seen[-1]["cell"]["code"] == "meanwhile = 2"
    assert not any(e["type"] == "cell_status" and e["cellId"] == slow and e["status"] == "success" for e in seen)
    seen = await bob.wait_for(lambda e: e["type"] == "cell_created" and not e.get("early"), what="the create in seq order")
    statuses = [e["status"] for e in seen if e["type"] == "cell_status" and e["cellId"] == slow]
    assert statuses[-1] == "success"  # applied after the cascade
    assert bob.order[-1] == seen[-1]["cellId"] and bob.state[seen[-1]["cellId"]]["code"] == "meanwhile = 2"


async def test_delete_unknown_cell_errors_to_sender_only(ws, notebook, users):
    alice, bob = await ws(users["alice"], notebook), await ws(users["bob"], notebook)
    before = await revision(notebook)
    reply = await alice.request(type="delete_cell", cellId="00000000-0000-0000-0000-000000000002")
    assert reply["type"] == "error" and reply["code"] == "unknown_cell"
    await bob.expect_silence(0.5)
    assert await revision(notebook) == before


async def test_cell_of_another_notebook_is_unknown(ws, notebook, users):
    other = await database_sync_to_async(Notebook.objects.create)(name="other", owner=users["alice"])
    foreign = await database_sync_to_async(Cell.objects.create)(notebook=other, position=1, code="secret = 1")
    alice = await ws(users["alice"], notebook)
    for message in ({"type": "delete_cell", "cellId": str(foreign.pk)}, {"type": "run_cell", "cellId": str(foreign.pk)}, {"type": "cell_update", "cellId": str(foreign.pk), "code": "x"}):
        reply = await alice.request(**message)
        assert reply["code"] == "unknown_cell"
    assert (await db_cell(foreign.pk)).code == "secret = 1"


async def test_update_marks_cell_and_descendants_stale(ws, notebook, users):
    alice, bob = await ws(users["alice"], notebook), await ws(users["bob"], notebook)
    a, b, c = await make_chain(alice)
    await alice.send(type="run_all")
    await alice.wait_status(c, "success")
    await alice.send(type="cell_update", cellId=a, code="a = 7\na")
    await bob.wait_status(c, "stale")
    assert [bob.state[x]["status"] for x in (a, b, c)] == ["stale", "stale", "stale"]
    await run_and_wait(alice, a)
    await alice.wait_status(c, "success")
    assert [text_output(alice, x) for x in (a, b, c)] == ["7", "14", "15"]


async def test_run_cell_runs_stale_ancestors_first(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    a, b, c = await make_chain(alice)
    seen = await run_and_wait(alice, c)
    running = [e["cellId"] for e in seen if e["type"] == "cell_status" and e["status"] == "running"]
    assert running == [a, b, c]
    assert text_output(alice, c) == "11"
    # Now everything ran: running c again runs only c.
    seen = await run_and_wait(alice, c)
    assert [e["cellId"] for e in seen if e["type"] == "cell_status" and e["status"] == "running"] == [c]


async def test_stdout_streams_and_persists(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    cell = await create(alice, "for i in range(3):\n    print('line', i)")
    seen = await run_and_wait(alice, cell)
    assert "".join(e["text"] for e in seen if e["type"] == "cell_stdout") == "line 0\nline 1\nline 2\n"
    row = await eventually(lambda: _persisted(cell), what="the cell's final state in the database")
    assert row.stdout == "line 0\nline 1\nline 2\n"


async def _persisted(cell_id):
    row = await db_cell(cell_id)
    return row if row.status == "success" else None


async def test_update_db_connection_masks_password(ws, notebook, users):
    alice, bob = await ws(users["alice"], notebook), await ws(users["bob"], notebook)
    reply = await alice.request(type="update_db_connection", connectionString="postgresql://ann:hunter2@127.0.0.1:5999/sales")
    assert reply["type"] == "db_connection_updated" and reply["connected"] is True
    assert reply["display"] == "postgresql://ann:****@127.0.0.1:5999/sales"
    seen = await bob.wait_for(lambda e: e["type"] == "db_connection_updated")
    assert "hunter2" not in json.dumps(seen)
    stored = await database_sync_to_async(Notebook.objects.get)(pk=notebook.pk)
    assert stored.connection_string.endswith("/sales") and "hunter2" not in stored.db_connection  # stored encrypted


@pytest.mark.parametrize("value", ["mysql://x@y/z", "postgresql://", "sqlite:///", "postgresql://u@h:notaport/db", 42])
async def test_bad_connection_string_is_refused(ws, notebook, users, value):
    alice = await ws(users["alice"], notebook)
    reply = await alice.request(type="update_db_connection", connectionString=value)
    assert reply["type"] == "error" and reply["code"] == "invalid_field"
    assert (await database_sync_to_async(Notebook.objects.get)(pk=notebook.pk)).db_connection == ""


async def test_interrupt_stops_a_running_cell_and_notebook_still_runs(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    keep = await create(alice, "kept = 'still here'")
    await run_and_wait(alice, keep)
    loop = await create(alice, "while True:\n    pass")
    await alice.send(type="run_cell", cellId=loop)
    await alice.wait_status(loop, "running")
    await alice.send(type="interrupt")
    await alice.wait_status(loop, "error")
    assert alice.state[loop]["error"]["ename"] == "KeyboardInterrupt"
    check = await create(alice, "kept")
    await run_and_wait(alice, check)
    assert text_output(alice, check) == "'still here'"


# --- moving cells ----------------------------------------------------------------------------


async def test_move_cell_reorders_every_client_and_the_database(ws, notebook, users):
    alice, bob = await ws(users["alice"], notebook), await ws(users["bob"], notebook)
    a, b, c = [await create(alice, code) for code in ("a = 1", "b = a + 1", "c = b + 1")]
    reply = await alice.request(type="move_cell", cellId=c, afterCellId=None)
    assert reply["type"] == "cell_moved" and reply["index"] == 0
    await bob.wait_for(lambda e: e["type"] == "cell_moved")
    assert alice.order == bob.order == [str(x) for x in await db_cells(notebook)] == [c, a, b]
    reply = await bob.request(type="move_cell", cellId=c, afterCellId=b)
    assert reply["index"] == 2
    await alice.wait_for(lambda e: e["type"] == "cell_moved" and e["index"] == 2)
    assert alice.order == bob.order == [str(x) for x in await db_cells(notebook)] == [a, b, c]
    # Order is not dependency: the chain still runs parents first wherever they stand.
    await alice.request(type="move_cell", cellId=a, afterCellId=c)
    await run_and_wait(alice, c)
    assert [text_output(alice, x) for x in (a, b, c)] == [None, None, None]
    assert alice.state[c]["status"] == "success"


async def test_many_moves_to_the_top_renumber_positions(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    a, b, c = [await create(alice, f"m{i} = {i}") for i in range(3)]  # at 1024, 2048, 3072
    for _ in range(14):
        await alice.request(type="move_cell", cellId=alice.order[-1], afterCellId=None)
    # Ten moves halve the gap above the first cell down to position 1 (c 512, b 256, a 128,
    # c 64, ... c 1); the eleventh finds no gap, renumbers c, a, b to 1024, 2048, 3072 and
    # puts b at 512; three more halvings: a 256, c 128, b 64.
    positions = await database_sync_to_async(lambda: dict(Cell.objects.filter(notebook=notebook).values_list("id", "position")))()
    assert {str(k): v for k, v in positions.items()} == {b: 64, c: 128, a: 256}
    assert alice.order == [b, c, a]


async def test_create_cell_before_the_first(ws, notebook, users):
    alice, bob = await ws(users["alice"], notebook), await ws(users["bob"], notebook)
    first = await create(alice, "x = 1")
    reply = await alice.request(type="create_cell", beforeCellId=first, code="y = 2")
    assert reply["type"] == "cell_created" and reply["index"] == 0
    await bob.wait_for(lambda e: e["type"] == "cell_created" and e["cellId"] == reply["cellId"])
    assert alice.order == bob.order == [str(x) for x in await db_cells(notebook)]


@pytest.mark.parametrize(
    "fields, code",
    [
        ({"afterCellId": "SELF"}, "invalid_field"),
        ({"afterCellId": "00000000-0000-0000-0000-000000000000"}, "unknown_cell"),
        ({}, "invalid_field"),
    ],
)
async def test_bad_moves_change_nothing(ws, notebook, users, fields, code):
    alice, bob = await ws(users["alice"], notebook), await ws(users["bob"], notebook)
    a, b = await create(alice, "a = 1"), await create(alice, "b = 2")
    await bob.wait_for(lambda e: e["type"] == "cell_created" and e["cellId"] == b)
    before = await revision(notebook)
    fields = {k: (a if v == "SELF" else v) for k, v in fields.items()}
    reply = await alice.request(type="move_cell", cellId=a, **fields)
    assert reply["type"] == "error" and reply["code"] == code
    await bob.expect_silence(0.5)
    assert await revision(notebook) == before and [str(x) for x in await db_cells(notebook)] == [a, b]


# --- viewers and refusals --------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        {"type": "create_cell"},
        {"type": "delete_cell", "cellId": "CELL"},
        {"type": "cell_update", "cellId": "CELL", "code": "x = 1"},
        {"type": "run_cell", "cellId": "CELL"},
        {"type": "run_all"},
        {"type": "interrupt"},
        {"type": "update_db_connection", "connectionString": ""},
        {"type": "move_cell", "cellId": "CELL", "afterCellId": None},
    ],
)
async def test_viewer_may_change_nothing(ws, notebook, users, message):
    cell = await database_sync_to_async(Cell.objects.create)(notebook=notebook, position=1, code="v = 1")
    carol, alice = await ws(users["carol"], notebook), await ws(users["alice"], notebook)
    before = await revision(notebook)
    message = {k: (str(cell.pk) if v == "CELL" else v) for k, v in message.items()}
    reply = await carol.request(**message)
    assert reply["type"] == "error" and reply["code"] == "forbidden"
    await alice.expect_silence(0.5)
    assert await revision(notebook) == before
    assert (await db_cell(cell.pk)).code == "v = 1"


async def test_viewer_receives_everything_live(ws, notebook, users):
    carol, alice = await ws(users["carol"], notebook), await ws(users["alice"], notebook)
    cell = await create(alice, "seen = 'by carol'\nseen")
    await run_and_wait(alice, cell)
    await carol.wait_status(cell, "success")
    assert text_output(carol, cell) == "'by carol'"


async def test_removed_member_is_disconnected(ws, notebook, users):
    bob = await ws(users["bob"], notebook)
    await database_sync_to_async(operations.unshare_notebook)(notebook.pk, users["alice"], member=users["bob"])
    seen = []
    with pytest.raises(ConnectionError):
        while True:
            seen.append(await bob.next(5))
    assert bob.close_code == CLOSE_FORBIDDEN and seen[-1]["code"] == "forbidden"


async def test_role_change_while_connected_is_told_and_enforced(ws, notebook, users):
    bob, carol, alice = await ws(users["bob"], notebook), await ws(users["carol"], notebook), await ws(users["alice"], notebook)
    await database_sync_to_async(operations.share_notebook)(notebook.pk, users["alice"], member=users["bob"], role="viewer")
    assert (await bob.next(5)) == {"type": "access_changed", "role": "viewer"}
    reply = await bob.request(type="create_cell", code="x = 1")
    assert reply["type"] == "error" and reply["code"] == "forbidden"
    await database_sync_to_async(operations.share_notebook)(notebook.pk, users["alice"], member=users["carol"], role="editor")
    assert (await carol.next(5)) == {"type": "access_changed", "role": "editor"}
    assert (await carol.request(type="create_cell", code="y = 1"))["type"] == "cell_created"
    # Only the member whose role changed hears of it.
    await alice.wait_for(lambda e: e["type"] == "cell_created")
    assert not [r for r in alice.replies if r["type"] == "access_changed"]


async def test_an_edit_that_waits_too_long_for_the_notebook_is_told_busy_and_changes_nothing(ws, notebook, users, monkeypatch):
    monkeypatch.setattr(operations, "LOCK_TIMEOUT_MS", 200)
    alice, bob = await ws(users["alice"], notebook), await ws(users["bob"], notebook)
    cell = await create(alice, "x = 1")
    await bob.wait_for(lambda e: e["type"] == "cell_created")
    locked, release = threading.Event(), threading.Event()

    def hold_the_notebook_row():  # another edit, in another process, that takes its time
        try:
            with transaction.atomic():
                Notebook.objects.select_for_update().get(pk=notebook.pk)
                locked.set()
                release.wait(EVENT_TIMEOUT)
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold_the_notebook_row)
    holder.start()
    try:
        assert await asyncio.to_thread(locked.wait, EVENT_TIMEOUT)
        before = await revision(notebook)
        reply = await alice.request(type="cell_update", cellId=cell, code="x = 2")
    finally:
        release.set()
        await asyncio.to_thread(holder.join, EVENT_TIMEOUT)
    assert reply["type"] == "error" and reply["code"] == "busy"
    await bob.expect_silence(0.3)
    assert await revision(notebook) == before and (await db_cell(cell)).code == "x = 1"
    # The page retries a busy edit; once the row is free it goes through.
    assert (await alice.request(type="cell_update", cellId=cell, code="x = 2"))["type"] == "cell_updated"


async def test_a_missed_event_shows_as_a_seq_gap_and_sync_brings_the_state_with_it(ws, notebook, users):
    alice, bob = await ws(users["alice"], notebook), await ws(users["bob"], notebook)
    bob.resync_on_gap = True
    bob.drop_next(lambda e: e["type"] == "cell_created")  # lost on its way to bob
    first = await create(alice, "first = 1")
    second = await create(alice, "second = 2")
    # The next event after the lost one skips a seq: bob asks for the state, which has both.
    await bob.wait_state()
    assert bob.resyncs == 1
    assert bob.order == [first, second] and bob.state[first]["code"] == "first = 1"
    assert bob.seq >= alice.seq
    # Events after the state apply in order again, none twice.
    third = await create(alice, "third = 3")
    await bob.wait_for(lambda e: e["type"] == "cell_created" and e["cellId"] == third)
    assert bob.order == alice.order == [first, second, third] and bob.resyncs == 1


async def test_a_role_changed_in_the_admin_is_told_to_the_member_too(ws, notebook, users, django_user_model):
    bob = await ws(users["bob"], notebook)

    def change_in_admin():
        from django.test import Client

        from notebooks_app.models import Membership

        admin = Client()
        admin.force_login(django_user_model.objects.create_superuser("root", "root@example.com", "root-pass-123"))
        membership = Membership.objects.get(notebook=notebook, user=users["bob"])
        data = {"notebook": str(notebook.pk), "user": users["bob"].pk, "role": "viewer"}
        return admin.post(f"/admin/notebooks_app/membership/{membership.pk}/change/", data).status_code

    assert await database_sync_to_async(change_in_admin)() == 302
    assert (await bob.next(5)) == {"type": "access_changed", "role": "viewer"}


# --- bad input: an error to the sender, socket open, nothing changed ------------------------

BAD_FRAMES = [
    ("not json", "invalid_json"),
    ("[1, 2]", "invalid_message"),
    ('"create_cell"', "invalid_message"),
    ("{}", "invalid_message"),
    ('{"type": 5}', "invalid_message"),
    ('{"type": "explode"}', "unknown_type"),
    ('{"type": "delete_cell"}', "invalid_field"),
    ('{"type": "delete_cell", "cellId": 7}', "invalid_field"),
    ('{"type": "delete_cell", "cellId": "not-a-uuid"}', "invalid_field"),
    ('{"type": "create_cell", "cellType": "rust"}', "invalid_field"),
    ('{"type": "create_cell", "code": ["x"]}', "invalid_field"),
    ('{"type": "create_cell", "afterCellId": 12}', "invalid_field"),
    ('{"type": "create_cell", "extra": 1}', "invalid_field"),
    ('{"type": "cell_update", "cellId": "00000000-0000-0000-0000-000000000000"}', "invalid_field"),
    ('{"type": "cell_update", "cellId": "00000000-0000-0000-0000-000000000000", "resultVariable": "1abc"}', "invalid_field"),
    ('{"type": "run_cell", "cellId": null}', "invalid_field"),
    ('{"type": "create_cell", "requestId": {"a": 1}}', "invalid_field"),
    ('{"type": "update_db_connection"}', "invalid_field"),
]


@pytest.mark.parametrize("frame, code", BAD_FRAMES)
async def test_bad_input_gets_error_and_changes_nothing(ws, notebook, users, frame, code):
    cell = await database_sync_to_async(Cell.objects.create)(notebook=notebook, position=1, code="safe = 1")
    alice, bob = await ws(users["alice"], notebook), await ws(users["bob"], notebook)
    before = await revision(notebook)
    await alice.send_raw(frame)
    reply = await alice.next(5)
    assert reply["type"] == "error" and reply["code"] == code, reply
    assert reply["message"]
    await bob.expect_silence(0.3)
    # The socket stays open and works.
    assert (await alice.request(type="sync"))["type"] == "notebook_state"
    assert await revision(notebook) == before
    assert (await db_cell(cell.pk)).code == "safe = 1"


async def test_frames_are_handled_without_a_thread_hop_per_message(ws, notebook, users, monkeypatch):
    """Channels (4.2+) awaits aclose_old_connections(), a hop to the sync thread, before every
    message a consumer handles; NotebookConsumer.dispatch leaves it out (its database work goes
    through database_sync_to_async, which closes old connections itself). Frames that touch
    the database and frames that do not are answered all the same."""
    import channels.consumer

    alice = await ws(users["alice"], notebook)
    hops = []

    async def counted():
        hops.append(1)

    monkeypatch.setattr(channels.consumer, "aclose_old_connections", counted)
    await alice.send_raw('{"type": "explode", "requestId": "x"}')
    assert (await alice.next(5))["code"] == "unknown_type"
    assert (await alice.request(type="create_cell", code="hop = 1"))["type"] == "cell_created"
    assert (await alice.request(type="sync"))["type"] == "notebook_state"
    assert hops == []
    assert await database_sync_to_async(Cell.objects.filter(notebook=notebook, code="hop = 1").count)() == 1


async def test_error_echoes_request_id(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    await alice.send(type="delete_cell", cellId="bad", requestId="mine-1")
    reply = await alice.next(5)
    assert reply == {"type": "error", "code": "invalid_field", "message": reply["message"], "requestId": "mine-1"}


async def test_binary_frame_is_refused(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    await alice.send_raw(b"\x00\x01")
    assert (await alice.next(5))["code"] == "invalid_message"


async def test_code_over_the_cap_is_refused(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    reply = await alice.request(type="create_cell", code="x" * (256 * 1024 + 1))
    assert reply["code"] == "too_large"
    assert await db_cells(notebook) == []


async def test_flood_is_rate_limited_and_socket_survives(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    flood = RATE_BURST * 4
    # Cheap frames (answered at once, whatever the machine's load) after one sync: the bucket
    # empties faster than it refills, however slowly the server gets to them.
    await alice.send(type="sync", requestId="first")
    for i in range(flood):
        await alice.send(type="no_such_type", requestId=i)
    codes = []
    for _ in range(flood + 1):
        frame = await alice.next(10)
        codes.append(frame.get("code", frame["type"]))
    assert "rate_limited" in codes and "notebook_state" in codes and "unknown_type" in codes

    async def served():  # the bucket refills: a later message is served again
        return (await alice.request(type="sync"))["type"] == "notebook_state"

    assert await eventually(served, what="a sync served after the flood")


# --- many clients, one truth ------------------------------------------------------------------------


async def test_concurrent_clients_converge(ws, notebook, users):
    """4 clients x 50 random create/delete/update operations: identical cells everywhere."""
    clients = [await ws(users[name], notebook) for name in ("alice", "bob", "alice", "bob")]
    rng = random.Random(7)

    async def worker(client, n):
        for i in range(50):
            cells = list(client.order)
            op = rng.random()
            if op < 0.5 or not cells:
                await client.send(type="create_cell", afterCellId=rng.choice(cells) if cells and rng.random() < 0.5 else None, code=f"v{n}_{i} = {i}")
            elif op < 0.75:
                await client.send(type="delete_cell", cellId=rng.choice(cells))
            else:
                await client.send(type="cell_update", cellId=rng.choice(cells), code=f"u{n}_{i} = {i}")
            # Fold whatever has arrived so the next choice is from a fresh view.
            while True:
                try:
                    await client.next(0.01)
                except asyncio.TimeoutError:
                    break
            await asyncio.sleep(rng.random() * 0.02)

    await asyncio.gather(*(worker(c, n) for n, c in enumerate(clients)))
    # Drain: messages sent without waiting may still be on their way through a consumer's
    # transaction to the kernel; fold events until every client matches the database.
    async def drain(client):
        while True:
            try:
                await client.next(0.3)
            except asyncio.TimeoutError:
                return

    async def every_client_has_the_database():
        await asyncio.gather(*(drain(client) for client in clients))
        db = [str(c) for c in await db_cells(notebook)]
        return db if all(client.order == db for client in clients) else None

    db = await eventually(every_client_has_the_database, timeout=30, what="every client's cells in the database's order")
    for client in clients:
        assert client.order == db
    codes = await database_sync_to_async(lambda: dict(Cell.objects.filter(notebook=notebook).values_list("id", "code")))()
    for client in clients:
        assert {c: client.state[c]["code"] for c in client.order} == {str(k): v for k, v in codes.items()}
    # Every client saw the same event sequence.
    sequences = [[(e["seq"], e["type"], e.get("cellId")) for e in client.events] for client in clients]
    assert all(s == sequences[0] for s in sequences)


async def test_reconnecting_client_gets_the_assembled_state(ws, notebook, users):
    alice, bob = await ws(users["alice"], notebook), await ws(users["bob"], notebook)
    a, b, c = await make_chain(alice)
    await alice.send(type="run_all")
    await bob.wait_status(c, "success")
    await alice.request(type="delete_cell", cellId=b)
    await bob.wait_status(c, "error")
    await alice.wait_status(c, "error")
    fresh = await ws(users["alice"], notebook)
    assert fresh.order == bob.order
    assert fresh.state == bob.state


@pytest.mark.slow  # its 6.5 s of silence must elapse
async def test_idle_connection_and_worker_survive_a_quiet_spell(ws, notebook, users):
    """Longer than the channel layer's 5 s blocking read (redis-py 8 socket timeout regression)."""
    alice = await ws(users["alice"], notebook)
    await alice.expect_silence(6.5)
    cell_id = await create(alice, "quiet = 1\nquiet")
    await run_and_wait(alice, cell_id)
    assert text_output(alice, cell_id) == "1"


async def test_cascade_events_are_single_frames_unless_the_client_asks_for_batches(ws, notebook, users):
    plain, batched = await ws(users["alice"], notebook), await ws(users["bob"], notebook, batch=True)
    root = await create(plain, "root = 1")
    leaves = [await create(plain, f"leaf_{i} = root + {i}") for i in range(10)]
    await batched.wait_for(lambda e: e["type"] == "cell_created" and e["cellId"] == leaves[-1])
    before_plain, before_batched = plain.frames, batched.frames
    await plain.send(type="run_cell", cellId=root)
    for client in (plain, batched):
        await client.wait_for(lambda e: e["type"] == "cell_status" and e["cellId"] == leaves[-1] and e["status"] == "success")
    plain_frames, batched_frames = plain.frames - before_plain, batched.frames - before_batched
    # 11 cells x (running, output, success) at least, each its own frame for the plain client.
    assert plain_frames >= 33
    assert batched_frames < plain_frames
    assert [e["seq"] for e in plain.events] == [e["seq"] for e in batched.events]
