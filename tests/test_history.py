"""History: an exact log of who changed what, restores, per-person undo/redo, versions.

Through the real consumer and worker on PostgreSQL (the production shape): what every client
sees, the log's rows, and the cells in the database.
"""
import io
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.core.management import call_command
from django.utils import timezone

from notebooks_app.models import Cell, NotebookEvent, NotebookVersion
from tests.conftest import create, run_and_wait, text_output

pytestmark = pytest.mark.django_db(transaction=True)


@database_sync_to_async
def log(notebook):
    return [(e.user.username if e.user else None, e.kind, str(e.cell_id) if e.cell_id else None, e.is_undo) for e in NotebookEvent.objects.filter(notebook=notebook).select_related("user").order_by("id")]


@database_sync_to_async
def db_code(cell_id):
    cell = Cell.objects.filter(pk=cell_id).first()
    return cell.code if cell else None


async def chain(client):
    a = await create(client, "a = 2")
    b = await create(client, "b = a * 10\nb")
    c = await create(client, "c = b + 1\nc")
    await client.send(type="run_all")
    await client.wait_status(c, "success")
    return a, b, c


async def test_restoring_a_deleted_cell_reruns_what_failed_without_it(ws, notebook, users):
    alice, bob = await ws(users["alice"], notebook), await ws(users["bob"], notebook)
    a, b, c = await chain(alice)
    await alice.request(type="delete_cell", cellId=a)
    await bob.wait_status(c, "error")
    assert bob.state[b]["error"]["ename"] == "NameError"
    reply = await bob.request(type="restore_cell", cellId=a)
    assert reply["type"] == "cell_created" and reply["cellId"] == a and reply["index"] == 0
    for client in (alice, bob):
        await client.wait_status(c, "success")
        assert client.order.index(a) == 0 and client.state[a]["code"] == "a = 2"
        assert text_output(client, c) == "21"
    assert (await log(notebook))[-2:] == [("alice", "deleted", a, False), ("bob", "restored", a, False)]


async def test_restoring_a_cell_whose_names_another_cell_now_defines_blocks_both(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    first = await create(alice, "x = 1")
    await alice.request(type="delete_cell", cellId=first)
    second = await create(alice, "x = 2")
    await alice.request(type="restore_cell", cellId=first)
    await alice.wait_for(lambda e: alice.state.get(first, {}).get("status") == "blocked" and alice.state[second]["status"] == "blocked", what="both blocked")
    assert alice.state[first]["error"]["ename"] == "MultipleDefinitionError"


async def test_undo_and_redo_are_per_person(ws, notebook, users):
    alice, bob = await ws(users["alice"], notebook), await ws(users["bob"], notebook)
    mine = await create(alice, "mine = 1")
    theirs = await create(bob, "theirs = 1")
    await alice.request(type="cell_update", cellId=mine, code="mine = 2")
    await bob.request(type="cell_update", cellId=theirs, code="theirs = 2")
    # Alice's undo takes back her own edit, not bob's newer one.
    reply = await alice.request(type="undo")
    assert reply["type"] == "cell_updated" and reply["cellId"] == mine and reply["code"] == "mine = 1"
    assert await db_code(theirs) == "theirs = 2"
    # Bob's undo takes back his edit; alice's state is untouched by it.
    reply = await bob.request(type="undo")
    assert reply["cellId"] == theirs and reply["code"] == "theirs = 1"
    assert await db_code(mine) == "mine = 1"
    # Alice undoes her creation, then redoes both of her undos, in order.
    reply = await alice.request(type="undo")
    assert reply["type"] == "cell_deleted" and reply["cellId"] == mine
    assert (await alice.request(type="redo"))["type"] == "cell_created"
    reply = await alice.request(type="redo")
    assert reply["type"] == "cell_updated" and reply["code"] == "mine = 2"
    assert (await alice.request(type="redo"))["code"] == "nothing_to_undo"
    assert await db_code(mine) == "mine = 2" and await db_code(theirs) == "theirs = 1"
    # A new change clears the redo stack.
    await alice.request(type="undo")
    await alice.request(type="cell_update", cellId=mine, code="mine = 3")
    assert (await alice.request(type="redo"))["code"] == "nothing_to_undo"


async def test_undo_is_refused_when_it_would_discard_someone_elses_change(ws, notebook, users):
    alice, bob = await ws(users["alice"], notebook), await ws(users["bob"], notebook)
    cell = await create(alice, "v = 1")
    await bob.request(type="cell_update", cellId=cell, code="v = 'bob'")
    reply = await alice.request(type="undo")  # her creation: bob has edited the cell since
    assert reply["type"] == "error" and reply["code"] == "conflict"
    assert await db_code(cell) == "v = 'bob'"


async def test_undo_of_a_move_moves_it_back(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    first, second, third = [await create(alice, f"m{i} = {i}") for i in range(3)]
    await alice.request(type="move_cell", cellId=third, afterCellId=None)
    assert alice.order == [third, first, second]
    reply = await alice.request(type="undo")
    assert reply["type"] == "cell_moved"
    assert alice.order == [first, second, third]


async def test_viewer_reads_history_but_cannot_restore_or_undo(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    cell = await create(alice, "gone = 1")
    await alice.request(type="delete_cell", cellId=cell)
    carol = await ws(users["carol"], notebook)
    page = await carol.request(type="history", limit=10)
    assert page["type"] == "history" and [e["kind"] for e in page["events"]][:2] == ["deleted", "created"]
    assert page["events"][0]["restorable"] and page["events"][0]["by"] == "alice" and page["events"][0]["before"]["code"] == "gone = 1"
    for message in ({"type": "restore_cell", "cellId": cell}, {"type": "undo"}, {"type": "redo"}, {"type": "save_version", "name": "v"}):
        reply = await carol.request(**message)
        assert reply["type"] == "error" and reply["code"] == "forbidden", message
    assert await db_code(cell) is None


async def test_the_log_has_one_event_per_change_with_its_author_and_no_password(ws, notebook, users):
    alice, bob = await ws(users["alice"], notebook), await ws(users["bob"], notebook)
    cell = await create(alice, "x = 1")
    for code in ("x = 2", "x = 3", "x = 4"):  # one person's quick edits: one event
        await alice.request(type="cell_update", cellId=cell, code=code)
    await bob.request(type="cell_update", cellId=cell, code="x = 5")
    await bob.request(type="update_db_connection", connectionString="postgresql://u:S3cret-pw@db.example/x")
    events = await log(notebook)
    assert events == [
        ("alice", "created", cell, False),
        ("alice", "edited", cell, False),
        ("bob", "edited", cell, False),
        ("bob", "connection", None, False),
    ]
    rows = await database_sync_to_async(lambda: list(NotebookEvent.objects.filter(notebook=notebook).values_list("before", "after")))()
    assert "S3cret-pw" not in repr(rows)
    edit = await database_sync_to_async(lambda: NotebookEvent.objects.filter(notebook=notebook, kind="edited").order_by("id").first())()
    assert edit.before["code"] == "x = 1" and edit.after["code"] == "x = 4"


async def test_restoring_a_version_of_100_cells_is_one_cascade(ws, notebook, users):
    alice = await ws(users["alice"], notebook, batch=True)
    bob = await ws(users["bob"], notebook)
    cells = [await create(alice, f"v{i} = {i}" if i == 0 else f"v{i} = v{i - 1} + 1") for i in range(100)]
    reply = await alice.request(type="save_version", name="before the mess")
    assert reply["type"] == "version_saved"
    version_id = reply["versionId"]
    await alice.request(type="delete_cell", cellId=cells[0])
    await alice.request(type="cell_update", cellId=cells[50], code="v50 = -1")
    extra = await create(alice, "extra = 1")
    await bob.wait_for(lambda e: e.get("cellId") == extra and e["type"] == "cell_created")
    await alice.request(type="restore_version", versionId=version_id)
    await bob.wait_state()  # the restored notebook, as one state; its cascade follows
    since = len(bob.events)
    await bob.wait_for(lambda e: e["type"] == "cell_status" and e["cellId"] == cells[-1] and e["status"] in ("success", "error"), timeout=120)
    assert bob.order == cells and extra not in bob.state
    assert text_output(bob, cells[-1]) is None or bob.state[cells[-1]]["status"] == "success"
    runs = [e["cellId"] for e in bob.events[since:] if e["type"] == "cell_status" and e["status"] == "running"]
    assert sorted(runs) == sorted(cells) and len(runs) == 100  # one cascade, each cell once
    queued_batches = [i for i, e in enumerate(bob.events[since:]) if e["type"] == "cell_status" and e["status"] == "queued"]
    assert queued_batches == list(range(queued_batches[0], queued_batches[0] + len(queued_batches)))
    codes = await database_sync_to_async(lambda: list(Cell.objects.filter(notebook=notebook).order_by("position").values_list("code", flat=True)))()
    assert codes[0] == "v0 = 0" and codes[50] == "v50 = v49 + 1" and len(codes) == 100
    history = await alice.request(type="history", limit=1)
    assert history["events"][0]["kind"] == "version_restored" and history["versions"][0]["name"] == "before the mess"


async def test_a_deleted_cell_comes_back_with_its_run_result(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    cell = await create(alice, "40 + 2")
    await run_and_wait(alice, cell)
    await alice.request(type="delete_cell", cellId=cell)
    await alice.request(type="undo")
    await alice.wait_status(cell, "success")
    assert text_output(alice, cell) == "42"


def test_prune_history_drops_old_events_but_keeps_versions_and_restorable_deletions(notebook, users):
    cell = Cell.objects.create(notebook=notebook, code="keep me")
    old = timezone.now() - timedelta(days=200)
    NotebookEvent.objects.create(notebook=notebook, user=users["alice"], kind="created", cell_id=cell.pk, created_at=old)
    deletion = NotebookEvent.objects.create(notebook=notebook, user=users["alice"], kind="deleted", cell_id=cell.pk, before={"code": "keep me", "type": "python"}, created_at=old)
    recent = NotebookEvent.objects.create(notebook=notebook, user=users["bob"], kind="edited", cell_id=cell.pk)
    NotebookVersion.objects.create(notebook=notebook, name="v1", cells=[], created_at=old)
    out = io.StringIO()
    call_command("prune_history", "--older-than", "90d", stdout=out)
    assert "deleted 1 history event" in out.getvalue()
    assert set(NotebookEvent.objects.values_list("pk", flat=True)) == {deletion.pk, recent.pk}
    assert NotebookVersion.objects.count() == 1
    with pytest.raises(Exception, match="90d"):
        call_command("prune_history", "--older-than", "soon")
