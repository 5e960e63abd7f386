"""One way to create, edit, move, delete and restore a cell, and to undo: whichever transport runs
an edit (the ORM thread, outside or inside a caller's transaction, or the event loop's edit lane),
the same edits leave the same rows, the same history events, the same kernel messages and the
same refusals (operations.NewCell / GoneCell / EditedCell / MovedCell, history.Facts)."""
import asyncio

import pytest
from channels.db import database_sync_to_async
from django.db import transaction

from notebooks_app import edit_lane, history, operations
from notebooks_app.constants import POSITION_STEP
from notebooks_app.models import Cell, NotebookEvent
from notebooks_app.operations import OperationError

pytestmark = pytest.mark.django_db(transaction=True)

# (who, operation, fields); "@a" names the cell the edit labelled "a" made.
EDITS = [
    ("alice", "create", {"label": "a", "code": "a = 1", "request_id": "r1"}),
    ("alice", "create", {"label": "b", "code": "b = 2", "after_cell_id": "@a", "request_id": "r2"}),
    ("bob", "create", {"label": "m", "cell_type": "markdown", "code": "# m", "after_cell_id": "@a", "request_id": "r3"}),
    ("alice", "create", {"label": "q", "cell_type": "sql", "code": "SELECT 1", "request_id": "r4"}),  # the lane leaves it to the thread
    ("alice", "create", {"label": "z", "code": "z = 0", "before_cell_id": "@a", "request_id": "r5"}),  # and this one
    ("alice", "update", {"cell_id": "@b", "code": "b = 3", "request_id": "u1"}),  # a new event
    ("alice", "update", {"cell_id": "@b", "code": "b = 4", "request_id": "u2"}),  # the same one, coalesced
    ("bob", "update", {"cell_id": "@b", "code": "b = 5", "request_id": "u3"}),  # someone else: a new one
    ("bob", "update", {"cell_id": "@b", "code": "b = 5", "request_id": "u4"}),  # the same code: no event, no revision
    ("alice", "update", {"cell_id": "@q", "result_variable": "df_9", "request_id": "u5"}),  # the lane leaves it to the thread
    ("bob", "move", {"cell_id": "@z", "after_cell_id": "@b", "request_id": "v1"}),  # halfway to the next cell
    ("alice", "move", {"cell_id": "@q", "after_cell_id": None, "request_id": "v2"}),  # to the top
    ("bob", "delete", {"cell_id": "@m", "request_id": "r6"}),
    ("alice", "delete", {"cell_id": "@a", "request_id": "r7"}),
    ("carol", "restore", {"cell_id": "@m", "request_id": "s0"}),  # a viewer: refused, nothing written
    ("bob", "restore", {"cell_id": "@m", "request_id": "s1"}),  # its previous cell is gone: above its next one
    ("alice", "restore", {"cell_id": "@a", "request_id": "s2"}),
    ("alice", "restore", {"cell_id": "@a", "request_id": "s3"}),  # it is there: refused
    ("alice", "undo", {"request_id": "x1"}),  # of her restore: a delete
    ("alice", "undo", {"request_id": "x2"}),  # of her delete: a restore
    ("alice", "undo", {"request_id": "x3"}),  # of her move: back after the cell it followed
    ("alice", "undo", {"request_id": "x4"}),  # of a SQL cell's result variable: the lane leaves it to the thread
    ("alice", "undo", {"request_id": "x5"}),  # of her edit, which bob has edited since: a conflict
    ("bob", "undo", {"request_id": "y1"}),
    ("bob", "undo", {"request_id": "y2"}),
    ("bob", "undo", {"request_id": "y3"}),  # of his move: back to the top
    ("bob", "undo", {"request_id": "y4"}),  # of his edit: the text before it
]

# Undo and redo, back and forth: each redo takes the newest undo that is not redone yet, until
# the person makes a new change.
REDOS = [
    ("alice", "create", {"label": "a", "code": "a = 1", "request_id": "r1"}),
    ("alice", "create", {"label": "b", "code": "b = a", "request_id": "r2"}),
    ("alice", "update", {"cell_id": "@b", "code": "b = a + 1", "request_id": "u1"}),
    ("alice", "move", {"cell_id": "@a", "after_cell_id": "@b", "request_id": "v1"}),
    ("alice", "delete", {"cell_id": "@a", "request_id": "d1"}),
    ("alice", "redo", {"request_id": "n0"}),  # nothing undone yet: refused
    ("alice", "undo", {"request_id": "x1"}),  # the delete: a restore
    ("alice", "undo", {"request_id": "x2"}),  # the move: back to the top
    ("alice", "undo", {"request_id": "x3"}),  # the edit: the text before it
    ("alice", "redo", {"request_id": "y1"}),  # the edit again
    ("alice", "redo", {"request_id": "y2"}),  # the move again
    ("alice", "undo", {"request_id": "x4"}),  # that redo of the move: back to the top
    ("alice", "redo", {"request_id": "y3"}),  # that undo: the move once more
    ("bob", "redo", {"request_id": "n1"}),  # bob undid nothing: refused
    ("bob", "update", {"cell_id": "@a", "code": "a = 2", "request_id": "u2"}),
    ("alice", "redo", {"request_id": "y4"}),  # the delete, of a cell bob has changed since: a conflict
    ("alice", "create", {"label": "c", "code": "c = 3", "request_id": "r3"}),  # a new change
    ("alice", "redo", {"request_id": "n2"}),  # so nothing is left to redo
    ("alice", "undo", {"request_id": "x5"}),  # the create: a delete
    ("alice", "redo", {"request_id": "y5"}),  # the create again: a restore
]

ORM = {"create": operations.create_cell, "update": operations.update_cell, "move": operations.move_cell, "delete": operations.delete_cell, "restore": history.restore_cell, "undo": history.undo, "redo": history.redo}
LANE = {"create": edit_lane.create_cell, "update": edit_lane.update_cell, "move": edit_lane.move_cell, "delete": edit_lane.delete_cell, "restore": edit_lane.restore_cell, "undo": edit_lane.undo, "redo": edit_lane.redo}


def orm_thread(user, operation, fields):
    return ORM[operation](fields.pop("notebook_id"), user, **fields)


def orm_thread_in_a_transaction(user, operation, fields):
    with transaction.atomic():  # as an undo calls them
        return orm_thread(user, operation, fields)


async def event_loop_lane(user, operation, fields):
    """As the consumer does: the lane first, the ORM thread for what the lane leaves. True when
    the lane did it."""
    lane_fields = {k: v for k, v in fields.items() if k != "notebook_id"}
    if operation == "create":
        lane_fields.setdefault("cell_type", "python")  # the consumer's default
    if await LANE[operation](fields["notebook_id"], user, **lane_fields):
        return True
    await database_sync_to_async(orm_thread)(user, operation, fields)
    return False


@pytest.fixture
def sent(monkeypatch):
    """What the kernel and the sockets were told, whichever way it left."""
    out = []

    def on_commit(notebook_id, message, announce=None):
        out.append((message, announce))

    async def committed(notebook_id, message, announce=None):
        out.append((message, announce))

    monkeypatch.setattr(operations.kernel_client, "send_on_commit", on_commit)
    monkeypatch.setattr(operations.kernel_client, "send_committed", committed)
    return out


def run_edits(path, notebook, users, sent, edits=EDITS):
    """`edits` through `path`: the cells' ids by label, the refusals (request id: code) and the
    request ids the lane did itself."""
    ids, refused, on_the_lane = {}, {}, []

    def fields_of(fields):
        fields = {k: ids[v[1:]] if isinstance(v, str) and v.startswith("@") else v for k, v in fields.items() if k != "label"}
        return {**fields, "notebook_id": notebook.pk}

    def made(operation, fields):
        if operation == "create":
            ids[fields["label"]] = sent[-1][0]["cell"]["id"]

    async def lane():
        try:
            for who, operation, fields in edits:
                try:
                    if await event_loop_lane(users[who], operation, fields_of(fields)):
                        on_the_lane.append(fields["request_id"])
                except OperationError as exc:
                    refused[fields["request_id"]] = exc.code
                    continue
                made(operation, fields)
        finally:
            await edit_lane.close()

    if path is event_loop_lane:
        asyncio.run(lane())
    else:
        for who, operation, fields in edits:
            try:
                path(users[who], operation, fields_of(fields))
            except OperationError as exc:
                refused[fields["request_id"]] = exc.code
                continue
            made(operation, fields)
    return ids, refused, on_the_lane


def labelled(value, names):
    """`value` with every id replaced by its label, and shared-text states by a mark."""
    if isinstance(value, dict):
        return {k: ("<ydoc>" if k == "ydoc" and v else labelled(v, names)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [labelled(v, names) for v in value]
    return names.get(str(value), value)


def outcome(notebook, ids, sent):
    names = {cell_id: label for label, cell_id in ids.items()}
    names[str(notebook.pk)] = "notebook"
    rows = Cell.objects.filter(notebook=notebook).order_by("position").values_list(
        "id", "position", "type", "code", "result_variable", "status", "outputs", "reads", "writes", "inputs", "ydoc_key", "ydoc_generation"
    )
    ydocs = list(Cell.objects.filter(notebook=notebook).values_list("ydoc", flat=True))
    events = list(NotebookEvent.objects.filter(notebook=notebook).order_by("id").values_list("id", "kind", "cell_id", "user__username", "before", "after", "reverts_id", "is_undo", "reverted"))
    number = {event[0]: index for index, event in enumerate(events)}  # `reverts` as the index of the event it names
    events = [(*event[1:6], number.get(event[6]), *event[7:]) for event in events]
    return {
        "rows": labelled(list(rows), names),
        "every row has its shared text": all(ydocs),
        "events": labelled(events, names),
        "kernel": labelled([message for message, _ in sent], names),
        "early": labelled([announce for _, announce in sent], names),
        "revision": notebook.__class__.objects.get(pk=notebook.pk).revision,
    }


PATHS = [orm_thread, orm_thread_in_a_transaction, event_loop_lane]


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.__name__)
def test_every_transport_makes_the_same_rows_events_and_messages(path, notebook, users, sent):
    ids, refused, on_the_lane = run_edits(path, notebook, users, sent)
    got = outcome(notebook, ids, sent)

    # What the ORM thread does, written out once: every path must match it.
    step = POSITION_STEP
    assert [row[0] for row in got["rows"]] == ["z", "a", "m", "b", "q"]
    assert [row[1] for row in got["rows"]] == [step * 7 // 16, step * 7 // 8, step * 23 // 16, 2 * step, step * 7 // 2]
    assert got["rows"][4][2:5] == ["sql", "SELECT 1", "df_1"]
    assert got["rows"][3][3] == "b = 4" and got["rows"][3][5] == "stale" and got["rows"][4][5] == "stale"
    assert got["rows"][1][2:6] == ["python", "a = 1", "", "idle"] and got["rows"][2][2:4] == ["markdown", "# m"]
    assert got["every row has its shared text"] and got["revision"] == 23
    assert refused == {"s0": "forbidden", "s3": "invalid_field", "x5": "conflict"}
    assert [(kind, cell, who, reverts, is_undo, reverted) for kind, cell, who, _, _, reverts, is_undo, reverted in got["events"]] == [
        ("created", "a", "alice", None, False, False),
        ("created", "b", "alice", None, False, False),
        ("created", "m", "bob", None, False, False),
        ("created", "q", "alice", None, False, False),
        ("created", "z", "alice", None, False, False),
        ("edited", "b", "alice", None, False, False),
        ("edited", "b", "bob", None, False, True),  # 6: undone by y4
        ("edited", "q", "alice", None, False, True),  # 7: undone by x4
        ("moved", "z", "bob", None, False, True),  # 8: undone by y3
        ("moved", "q", "alice", None, False, True),  # 9: undone by x3
        ("deleted", "m", "bob", None, False, True),  # 10: undone by y2
        ("deleted", "a", "alice", None, False, True),  # 11: undone by x2
        ("restored", "m", "bob", None, False, True),  # 12: undone by y1
        ("restored", "a", "alice", None, False, True),  # 13: undone by x1
        ("deleted", "a", "alice", 13, True, False),
        ("restored", "a", "alice", 11, True, False),
        ("moved", "q", "alice", 9, True, False),
        ("edited", "q", "alice", 7, True, False),
        ("deleted", "m", "bob", 12, True, False),
        ("restored", "m", "bob", 10, True, False),
        ("moved", "z", "bob", 8, True, False),
        ("edited", "b", "bob", 6, True, False),
    ]
    events = got["events"]
    assert events[2][4] == {"id": "m", "type": "markdown", "code": "# m", "resultVariable": "", "previous": "a", "next": "b"}
    assert events[4][4] == {"id": "z", "type": "python", "code": "z = 0", "resultVariable": "", "previous": None, "next": "a"}
    assert events[5][3:5] == [{"code": "b = 2", "resultVariable": ""}, {"code": "b = 4", "resultVariable": ""}]
    assert events[6][3:5] == [{"code": "b = 4", "resultVariable": ""}, {"code": "b = 5", "resultVariable": ""}]
    assert events[7][3:5] == [{"code": "SELECT 1", "resultVariable": "df_1"}, {"code": "SELECT 1", "resultVariable": "df_9"}]
    assert events[8][3:5] == [{"after": None}, {"after": "b"}]
    assert events[9][3:5] == [{"after": "z"}, {"after": None}]
    assert events[10][3] == {"id": "m", "type": "markdown", "code": "# m", "resultVariable": "", "previous": "a", "next": "b"}
    assert events[11][3] == {"id": "a", "type": "python", "code": "a = 1", "resultVariable": "", "previous": "q", "next": "b"}
    assert events[12][4] == {"id": "m", "type": "markdown", "code": "# m", "resultVariable": "", "previous": "q", "next": "b"}
    assert events[13][4] == {"id": "a", "type": "python", "code": "a = 1", "resultVariable": "", "previous": "q", "next": "m"}
    assert events[15][4]["previous"] == "q" and events[19][4]["previous"] == "a"  # back from their newest deletions' snapshots
    assert events[16][3:5] == [{"after": None}, {"after": "z"}] and events[20][3:5] == [{"after": "b"}, {"after": None}]
    assert events[17][3:5] == [{"code": "SELECT 1", "resultVariable": "df_9"}, {"code": "SELECT 1", "resultVariable": "df_1"}]
    assert events[21][3:5] == [{"code": "b = 5", "resultVariable": ""}, {"code": "b = 4", "resultVariable": ""}]
    assert [m["revision"] for m in got["kernel"]] == [1, 2, 3, 4, 5, 6, 7, 8, 8, 9, 10, 11, 12, 13, *range(14, 24)]
    moves = [{k: m[k] for k in ("type", "cellId", "position", "positions", "requestId")} for m in got["kernel"] if m["type"] == "kernel.move_cell"]
    assert moves == [
        {"type": "kernel.move_cell", "cellId": "z", "position": 5 * step // 2, "positions": None, "requestId": "v1"},
        {"type": "kernel.move_cell", "cellId": "q", "position": step // 2, "positions": None, "requestId": "v2"},
        {"type": "kernel.move_cell", "cellId": "q", "position": 7 * step // 2, "positions": None, "requestId": "x3"},
        {"type": "kernel.move_cell", "cellId": "z", "position": 7 * step // 16, "positions": None, "requestId": "y3"},
    ]
    updates = [{k: m[k] for k in ("cellId", "code", "resultVariable", "changed", "requestId")} for m in got["kernel"] if m["type"] == "kernel.update_cell"]
    assert updates == [
        {"cellId": "b", "code": "b = 3", "resultVariable": "", "changed": True, "requestId": "u1"},
        {"cellId": "b", "code": "b = 4", "resultVariable": "", "changed": True, "requestId": "u2"},
        {"cellId": "b", "code": "b = 5", "resultVariable": "", "changed": True, "requestId": "u3"},
        {"cellId": "b", "code": "b = 5", "resultVariable": "", "changed": False, "requestId": "u4"},
        {"cellId": "q", "code": "SELECT 1", "resultVariable": "df_9", "changed": True, "requestId": "u5"},
        {"cellId": "q", "code": "SELECT 1", "resultVariable": "df_1", "changed": True, "requestId": "x4"},
        {"cellId": "b", "code": "b = 4", "resultVariable": "", "changed": True, "requestId": "y4"},
    ]
    assert got["kernel"][3]["cell"]["resultVariable"] == "df_1" and got["kernel"][4]["position"] == step // 2
    restores = [(m["requestId"], m["cell"]["id"], m["position"], m.get("run")) for m in got["kernel"] if m["type"] == "kernel.create_cell" and m.get("run")]
    assert restores == [("s1", "m", 5 * step // 4, True), ("s2", "a", 7 * step // 8, True), ("x2", "a", 7 * step // 8, True), ("y2", "m", 23 * step // 16, True)]
    # Announced early: what the lane can take (a Python or markdown cell placed after another or
    # at the end, a restored cell wherever it goes, a delete, new code that changed the cell, a
    # move); the rest only by the worker, in order. Each at the revision it made.
    creates, updates, moves = [True, True, True, False, False], [True, True, True, False, False], [True, True]
    assert [bool(early) for early in got["early"]] == [*creates, *updates, *moves, True, True, True, True, True, True, True, False, True, True, True, True]
    assert [early["revision"] for early in got["early"] if early] == [1, 2, 3, 6, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17, 18, 20, 21, 22, 23]
    assert got["early"][2]["index"] == 1 and got["early"][14]["index"] == 1 and got["early"][15]["cell"]["code"] == "a = 1"
    assert got["early"][5] == {"type": "cell_updated", "cellId": "b", "code": "b = 3", "resultVariable": "", "revision": 6, "requestId": "u1", "early": True}
    assert got["early"][10] == {"type": "cell_moved", "cellId": "z", "after": "b", "revision": 10, "requestId": "v1", "early": True}
    assert got["early"][11]["after"] is None and got["early"][18]["after"] == "z" and got["early"][22]["after"] is None and got["early"][23]["code"] == "b = 4"
    if path is event_loop_lane:
        assert on_the_lane == ["r1", "r2", "r3", "u1", "u2", "u3", "u4", "v1", "v2", "r6", "r7", "s1", "s2", "x1", "x2", "x3", "y1", "y2", "y3", "y4"]


def test_the_transports_agree_with_each_other(users, sent):
    """The three outcomes, side by side (each on a notebook of its own)."""
    from notebooks_app.models import Notebook

    outcomes = []
    for path in PATHS:
        fresh = Notebook.objects.create(name=path.__name__, owner=users["alice"])
        fresh.memberships.create(user=users["bob"], role="editor")
        fresh.memberships.create(user=users["carol"], role="viewer")
        sent.clear()
        ids, refused, _ = run_edits(path, fresh, users, sent)
        outcomes.append((outcome(fresh, ids, sent), refused))
    assert outcomes[0] == outcomes[1] == outcomes[2]


@pytest.mark.parametrize("operation", ["restore", "undo"])
def test_a_restore_or_undo_read_before_someone_elses_edit_writes_nothing(operation, notebook, users, sent, monkeypatch):
    """The lane reads what a restore or an undo depends on before it takes the lock: when the
    notebook has changed in between, its statement writes nothing and the lane answers False, so
    that the ORM thread decides again with the notebook locked (as the consumer then does)."""
    alice, bob = users["alice"], users["bob"]
    cell = operations.create_cell(notebook.pk, alice, code="x = 1")
    other = operations.create_cell(notebook.pk, bob, code="y = 1")
    operations.delete_cell(notebook.pk, alice, cell_id=str(cell.pk))
    read = edit_lane._facts

    async def read_then_bob_edits(*args, **kwargs):
        facts = await read(*args, **kwargs)
        await database_sync_to_async(operations.update_cell)(notebook.pk, bob, cell_id=str(other.pk), code="y = 2")
        return facts

    monkeypatch.setattr(edit_lane, "_facts", read_then_bob_edits)
    fields = {"cell_id": str(cell.pk)} if operation == "restore" else {}

    async def on_the_lane():
        try:
            return await LANE[operation](notebook.pk, alice, request_id="late", **fields)
        finally:
            await edit_lane.close()

    assert asyncio.run(on_the_lane()) is False
    assert not Cell.objects.filter(pk=cell.pk).exists() and NotebookEvent.objects.filter(notebook=notebook).count() == 4  # bob's edit, nothing else
    assert [m["requestId"] for m, _ in sent][-1] is None  # bob's; no message for the restore
    ORM[operation](notebook.pk, alice, request_id="late", **fields)
    assert Cell.objects.get(pk=cell.pk).code == "x = 1" and sent[-1][0]["requestId"] == "late"


def test_redo_takes_every_path_alike(users, sent):
    """REDOS through each path, each on a notebook of its own: the same rows, events, kernel
    messages and early announcements, the same refusals; the lane makes every redo it can."""
    from notebooks_app.models import Notebook

    outcomes = []
    for path in PATHS:
        fresh = Notebook.objects.create(name=path.__name__, owner=users["alice"])
        fresh.memberships.create(user=users["bob"], role="editor")
        sent.clear()
        ids, refused, on_the_lane = run_edits(path, fresh, users, sent, REDOS)
        outcomes.append((outcome(fresh, ids, sent), refused))
    assert outcomes[0] == outcomes[1] == outcomes[2]
    got, refused = outcomes[0]
    assert refused == {"n0": "nothing_to_undo", "n1": "nothing_to_undo", "y4": "conflict", "n2": "nothing_to_undo"}
    assert [row[:4] for row in got["rows"]] == [["b", 2 * POSITION_STEP, "python", "b = a + 1"], ["a", 3 * POSITION_STEP, "python", "a = 2"], ["c", 4 * POSITION_STEP, "python", "c = 3"]]
    redos = [(kind, cell, reverts, is_undo, reverted) for kind, cell, who, _, _, reverts, is_undo, reverted in got["events"] if reverts is not None and not is_undo]
    assert redos == [("edited", "b", 7, False, False), ("moved", "a", 6, False, True), ("moved", "a", 10, False, False), ("restored", "c", 14, False, False)]
    assert [m["requestId"] for m, early in zip(got["kernel"], got["early"]) if early and m["requestId"].startswith("y")] == ["y1", "y2", "y3", "y5"]
    assert on_the_lane == [rid for _, _, f in REDOS if (rid := f["request_id"])[0] in "ruvdxy" and rid not in ("y4",)]
