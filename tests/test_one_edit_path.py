"""One way to create, edit, move and delete a cell: whichever transport runs an edit (the ORM thread,
outside or inside a caller's transaction, or the event loop's edit lane), the same edits leave the
same rows, the same history events and the same kernel messages (operations.NewCell / GoneCell /
EditedCell / MovedCell)."""
import asyncio

import pytest
from channels.db import database_sync_to_async
from django.db import transaction

from notebooks_app import edit_lane, operations
from notebooks_app.constants import POSITION_STEP
from notebooks_app.models import Cell, NotebookEvent

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
]


def orm_thread(user, operation, fields):
    return getattr(operations, f"{operation}_cell")(fields.pop("notebook_id"), user, **fields)


def orm_thread_in_a_transaction(user, operation, fields):
    with transaction.atomic():  # as an undo calls them
        return orm_thread(user, operation, fields)


async def event_loop_lane(user, operation, fields):
    """As the consumer does: the lane first, the ORM thread for what the lane leaves."""
    lane_fields = {k: v for k, v in fields.items() if k != "notebook_id"}
    if operation == "create":
        lane_fields.setdefault("cell_type", "python")  # the consumer's default
    if not await getattr(edit_lane, f"{operation}_cell")(fields["notebook_id"], user, **lane_fields):
        await database_sync_to_async(orm_thread)(user, operation, fields)


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


def run_edits(path, notebook, users, sent):
    """EDITS through `path`; the cells' ids by label."""
    ids = {}

    def fields_of(fields):
        fields = {k: ids[v[1:]] if isinstance(v, str) and v.startswith("@") else v for k, v in fields.items() if k != "label"}
        return {**fields, "notebook_id": notebook.pk}

    async def lane():
        try:
            for who, operation, fields in EDITS:
                await event_loop_lane(users[who], operation, fields_of(fields))
                if operation == "create":
                    ids[fields["label"]] = sent[-1][0]["cell"]["id"]
        finally:
            await edit_lane.close()

    if path is event_loop_lane:
        asyncio.run(lane())
    else:
        for who, operation, fields in EDITS:
            path(users[who], operation, fields_of(fields))
            if operation == "create":
                ids[fields["label"]] = sent[-1][0]["cell"]["id"]
    return ids


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
    events = NotebookEvent.objects.filter(notebook=notebook).order_by("id").values_list("kind", "cell_id", "user__username", "before", "after", "reverts_id", "is_undo", "reverted")
    return {
        "rows": labelled(list(rows), names),
        "every row has its shared text": all(ydocs),
        "events": labelled(list(events), names),
        "kernel": labelled([message for message, _ in sent], names),
        "early": labelled([announce for _, announce in sent], names),
        "revision": notebook.__class__.objects.get(pk=notebook.pk).revision,
    }


PATHS = [orm_thread, orm_thread_in_a_transaction, event_loop_lane]


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.__name__)
def test_every_transport_makes_the_same_rows_events_and_messages(path, notebook, users, sent):
    ids = run_edits(path, notebook, users, sent)
    got = outcome(notebook, ids, sent)

    # What the ORM thread does, written out once: every path must match it.
    assert [row[0] for row in got["rows"]] == ["q", "b", "z"]
    assert [row[1] for row in got["rows"]] == [POSITION_STEP // 2, 2 * POSITION_STEP, 5 * POSITION_STEP // 2]
    assert got["rows"][0][2:5] == ["sql", "SELECT 1", "df_9"]
    assert got["rows"][1][3] == "b = 5" and got["rows"][1][5] == "stale" and got["rows"][0][5] == "stale"
    assert got["every row has its shared text"] and got["revision"] == 13
    assert [(kind, cell, who) for kind, cell, who, *_ in got["events"]] == [
        ("created", "a", "alice"),
        ("created", "b", "alice"),
        ("created", "m", "bob"),
        ("created", "q", "alice"),
        ("created", "z", "alice"),
        ("edited", "b", "alice"),
        ("edited", "b", "bob"),
        ("edited", "q", "alice"),
        ("moved", "z", "bob"),
        ("moved", "q", "alice"),
        ("deleted", "m", "bob"),
        ("deleted", "a", "alice"),
    ]
    assert got["events"][2][4] == {"id": "m", "type": "markdown", "code": "# m", "resultVariable": "", "previous": "a", "next": "b"}
    assert got["events"][4][4] == {"id": "z", "type": "python", "code": "z = 0", "resultVariable": "", "previous": None, "next": "a"}
    assert got["events"][5][3:5] == [{"code": "b = 2", "resultVariable": ""}, {"code": "b = 4", "resultVariable": ""}]
    assert got["events"][6][3:5] == [{"code": "b = 4", "resultVariable": ""}, {"code": "b = 5", "resultVariable": ""}]
    assert got["events"][7][3:5] == [{"code": "SELECT 1", "resultVariable": "df_1"}, {"code": "SELECT 1", "resultVariable": "df_9"}]
    assert got["events"][8][3:5] == [{"after": None}, {"after": "b"}]
    assert got["events"][9][3:5] == [{"after": "z"}, {"after": None}]
    assert got["events"][11][3] == {"id": "a", "type": "python", "code": "a = 1", "resultVariable": "", "previous": "q", "next": "b"}
    assert [m["revision"] for m in got["kernel"]] == [1, 2, 3, 4, 5, 6, 7, 8, 8, 9, 10, 11, 12, 13]
    moves = [{k: m[k] for k in ("type", "cellId", "position", "positions", "requestId")} for m in got["kernel"][10:12]]
    assert moves == [
        {"type": "kernel.move_cell", "cellId": "z", "position": 5 * POSITION_STEP // 2, "positions": None, "requestId": "v1"},
        {"type": "kernel.move_cell", "cellId": "q", "position": POSITION_STEP // 2, "positions": None, "requestId": "v2"},
    ]
    updates = [{k: m[k] for k in ("cellId", "code", "resultVariable", "changed", "requestId")} for m in got["kernel"][5:10]]
    assert updates == [
        {"cellId": "b", "code": "b = 3", "resultVariable": "", "changed": True, "requestId": "u1"},
        {"cellId": "b", "code": "b = 4", "resultVariable": "", "changed": True, "requestId": "u2"},
        {"cellId": "b", "code": "b = 5", "resultVariable": "", "changed": True, "requestId": "u3"},
        {"cellId": "b", "code": "b = 5", "resultVariable": "", "changed": False, "requestId": "u4"},
        {"cellId": "q", "code": "SELECT 1", "resultVariable": "df_9", "changed": True, "requestId": "u5"},
    ]
    assert got["kernel"][3]["cell"]["resultVariable"] == "df_1" and got["kernel"][4]["position"] == POSITION_STEP // 2
    # Announced early: what the lane can take (a Python or markdown cell placed after another or
    # at the end, a delete); the rest only by the worker, in order.
    assert [bool(early) for early in got["early"]] == [True, True, True, False, False, *[False] * 7, True, True]
    assert got["early"][2]["index"] == 1


def test_the_transports_agree_with_each_other(users, sent):
    """The three outcomes, side by side (each on a notebook of its own)."""
    from notebooks_app.models import Notebook

    outcomes = []
    for path in PATHS:
        fresh = Notebook.objects.create(name=path.__name__, owner=users["alice"])
        fresh.memberships.create(user=users["bob"], role="editor")
        sent.clear()
        ids = run_edits(path, fresh, users, sent)
        outcomes.append(outcome(fresh, ids, sent))
    assert outcomes[0] == outcomes[1] == outcomes[2]
