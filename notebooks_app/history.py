"""The notebook's history as actions: restore a deleted cell, undo and redo one's own changes,
save a named version and go back to it, and read the timeline.

Every change is already an append-only `NotebookEvent` (operations.py writes it in the change's
transaction).  Undo and redo are derived from that log per person, never kept in memory: undo
takes the person's newest change that is not undone and applies its inverse through the same
operations (so the kernel, every page and the log hear of it like any edit); redo takes their
newest undo, as long as they made no new change after it.  Nothing here undoes someone else's
change, and an undo that would discard someone else's later work is refused.

What a restore or an undo depends on is read as `Facts` and decided once (`restorable`,
`inverse`): here with the notebook locked, on the ORM thread; by the edit lane (edit_lane.py:
restore, undo and redo) in one read before its lock (`read_statement`), its change then written
only if the notebook is still at the revision it read (operations.edit_row).
"""
import json
from collections import namedtuple

from django.db import transaction
from django.db.models import F

from .constants import CELL_SQL, POSITION_STEP, STATUS_IDLE, STATUS_STALE
from .models import (
    EVENT_CREATED,
    EVENT_DELETED,
    EVENT_EDITED,
    EVENT_MOVED,
    EVENT_RESTORED,
    EVENT_VERSION_RESTORED,
    EVENT_VERSION_SAVED,
    Cell,
    Notebook,
    NotebookEvent,
    NotebookVersion,
)
from . import operations
from .operations import OperationError, delete_cell, move_cell, update_cell
from .permissions import VIEW
from .protocol import CONFLICT, NOTHING_TO_UNDO

UNDOABLE = (EVENT_CREATED, EVENT_DELETED, EVENT_RESTORED, EVENT_MOVED, EVENT_EDITED)
HISTORY_PAGE_MAX = 100
PREVIEW_CHARS = 2000  # of code in a history event (the timeline shows a preview)


# What restoring a cell, or undoing (redoing) an event, depends on: the notebook's `revision`;
# the event (`target` id, `kind`, `before`, `after`; None when restoring); its cell's id and row
# (`cell`: type, code, result variable; None when not in the notebook); whether someone else has
# changed that cell since the event (`others`); the snapshot of its newest deletion (`deleted`);
# whether the cell a moved one followed is still there (`after_present`).
Facts = namedtuple("Facts", "revision target kind cell_id before after cell others deleted after_present")

_READ_SQL = """WITH
target AS (
    SELECT e.{event.id} AS id, e.{event.kind} AS kind, e.{event.cell_id} AS cell_id, e.{event.before} AS before, e.{event.after} AS after
    FROM {event} e
    WHERE %(cell)s::uuid IS NULL AND e.{event.notebook} = %(notebook)s AND e.{event.user} = %(user)s AND e.{event.kind} = ANY(%(undoable)s)
      AND <which>
    ORDER BY e.{event.id} DESC LIMIT 1
),
subject AS (
    SELECT COALESCE(%(cell)s::uuid, (SELECT cell_id FROM target)) AS cell_id
)
SELECT n.{notebook.revision}, t.id, t.kind, s.cell_id, t.before, t.after, c.{cell.type}, c.{cell.code}, c.{cell.result_variable},
       EXISTS (
           SELECT 1 FROM {event} e WHERE e.{event.notebook} = n.{notebook.id} AND e.{event.cell_id} = s.cell_id AND e.{event.id} > t.id
             AND e.{event.user} IS DISTINCT FROM %(user)s
       ),
       (SELECT e.{event.before} FROM {event} e WHERE e.{event.notebook} = n.{notebook.id} AND e.{event.cell_id} = s.cell_id AND e.{event.kind} = %(deleted)s ORDER BY e.{event.id} DESC LIMIT 1),
       EXISTS (SELECT 1 FROM {cell} a WHERE a.{cell.notebook} = n.{notebook.id} AND a.{cell.id}::text = t.before ->> 'after')
FROM {notebook} n CROSS JOIN subject s LEFT JOIN target t ON true
    LEFT JOIN {cell} c ON c.{cell.notebook} = n.{notebook.id} AND c.{cell.id} = s.cell_id
WHERE n.{notebook.id} = %(notebook)s"""
# Undo's target: the person's newest change not undone yet (an undo is not one).
READ_SQL = operations.edit_sql(_READ_SQL.replace("<which>", "NOT e.{event.is_undo} AND NOT e.{event.reverted}"))
# Redo's: their newest undo not redone yet, made after their newest new change (neither an undo
# nor a redo), as redo() finds it walking back.
REDO_READ_SQL = operations.edit_sql(
    _READ_SQL.replace(
        "<which>",
        """e.{event.is_undo} AND NOT e.{event.reverted}
      AND e.{event.id} > COALESCE((
          SELECT max(p.{event.id}) FROM {event} p WHERE p.{event.notebook} = %(notebook)s AND p.{event.user} = %(user)s
            AND p.{event.kind} = ANY(%(undoable)s) AND NOT p.{event.is_undo} AND p.{event.reverts} IS NULL
      ), 0)""",
    )
)


def read_statement(notebook_id, user, *, cell_id=None, redo=False):
    """READ_SQL with its parameters: the facts of restoring `cell_id`, or (None) of undoing
    `user`'s newest change (`redo`: of redoing their newest undo, REDO_READ_SQL); its row goes
    to facts_from_row. Reads anything: what it finds is only acted on through a change that
    checks the caller may edit."""
    params = {"notebook": operations.as_uuid(notebook_id), "user": user.pk, "cell": operations.as_uuid(cell_id), "undoable": list(UNDOABLE), "deleted": EVENT_DELETED}
    return (REDO_READ_SQL if redo else READ_SQL), params


def facts_from_row(row):
    """READ_SQL's row as Facts (None: no such notebook)."""
    if row is None:
        return None
    revision, target, kind, cell_id, before, after, cell_type, code, result_variable, others, deleted, after_present = row
    cell = (cell_type, code, result_variable) if cell_type is not None else None
    before, after, deleted = (_json(value) for value in (before, after, deleted))
    return Facts(revision, target, kind, str(cell_id) if cell_id else None, before, after, cell, others, deleted, after_present)


def _json(value):
    """A jsonb column's value: Django's connections load it as text (JSONField decodes it)."""
    return json.loads(value) if isinstance(value, str) else value


def restorable(cell_id, *, present, deleted):
    """The snapshot a deleted cell comes back from (`deleted`, its newest deletion's); refused
    when the cell is in the notebook (`present`) or no deletion of it was recorded."""
    if present:
        raise OperationError("invalid_field", "That cell is in the notebook: there is nothing to restore.")
    if not deleted:
        raise OperationError("unknown_cell", f"No deleted cell {cell_id} is in this notebook's history.")
    return deleted


def restored(notebook_id, cell_id, snapshot, *, request_id=None, revert=None):
    """The cell a restore puts back (an operations.NewCell): its id, type, code and result
    variable, after the cell that was before it, or above the one that was after it, or last."""
    return operations.NewCell(
        notebook_id,
        cell_id=cell_id,
        cell_type=snapshot["type"],
        code=snapshot["code"],
        result_variable=snapshot.get("resultVariable") or "",
        after_cell_id=snapshot.get("previous"),
        before_cell_id=snapshot.get("next"),
        kind=EVENT_RESTORED,
        run=True,
        request_id=request_id,
        revert=revert,
    )


def inverse(facts):
    """What undoes (or redoes) the event of `facts`: ("delete" | "restore" | "move" | "update",
    its fields), or `conflict` when it would discard someone else's work or its cell is gone."""
    kind, cell = facts.kind, facts.cell
    if kind in (EVENT_CREATED, EVENT_RESTORED):
        if facts.others:
            raise OperationError(CONFLICT, "Someone else has changed that cell since; removing it would discard their work.")
        if cell is None:
            raise OperationError(CONFLICT, "That cell has been deleted since: there is nothing to undo.")
        return "delete", {"cell_id": facts.cell_id}
    if kind == EVENT_DELETED:
        return "restore", {"cell_id": facts.cell_id}  # restorable() decides
    if kind == EVENT_MOVED:
        if cell is None:
            raise OperationError(CONFLICT, "That cell has been deleted since: there is nothing to move back.")
        after = (facts.before or {}).get("after")
        return "move", {"cell_id": facts.cell_id, "after_cell_id": after if after and facts.after_present else None}
    if cell is None:  # EVENT_EDITED
        raise OperationError(CONFLICT, "That cell has been deleted since: there is nothing to undo.")
    cell_type, code, result_variable = cell
    after, before = facts.after or {}, facts.before or {}
    if code != after.get("code") or result_variable != (after.get("resultVariable") or ""):
        raise OperationError(CONFLICT, "That cell has changed since your edit; undoing it would discard the newer text.")
    result_variable = (before.get("resultVariable") or None) if cell_type == CELL_SQL else None
    return "update", {"cell_id": facts.cell_id, "code": before.get("code", code), "result_variable": result_variable}


def inverse_change(notebook_id, facts, *, request_id=None, redo=False):
    """inverse() as the change that undoes the event of `facts` (an operations.GoneCell, NewCell,
    MovedCell or EditedCell), marked as its undo (`redo`: the event is an undo, and the change
    its redo), for the edit lane; None for what only the ORM thread does (a SQL cell's result
    variable: update_cell)."""
    operation, fields = inverse(facts)
    revert = (facts.target, not redo)
    if operation == "restore":
        snapshot = restorable(facts.cell_id, present=facts.cell is not None, deleted=facts.deleted)
        return restored(notebook_id, facts.cell_id, snapshot, request_id=request_id, revert=revert)
    if operation == "update" and fields.pop("result_variable") is not None:
        return None
    change = {"delete": operations.GoneCell, "move": operations.MovedCell, "update": operations.EditedCell}[operation]
    return change(notebook_id, **fields, request_id=request_id, revert=revert)


def restore_cell(notebook_id, user, *, cell_id, request_id=None, revert=None):
    """Bring a deleted cell back, with its id, type, code and result variable, next to its old
    neighbours (or at the end); the kernel then runs it and what depends on it."""
    with transaction.atomic():
        notebook = operations.lock_notebook(notebook_id, user)
        deleted = NotebookEvent.objects.filter(notebook=notebook, cell_id=cell_id, kind=EVENT_DELETED).order_by("-id").values_list("before", flat=True).first()
        snapshot = restorable(cell_id, present=notebook.cells.filter(pk=cell_id).exists(), deleted=deleted)
        return operations.add_cell(notebook.pk, user, restored(notebook.pk, cell_id, snapshot, request_id=request_id, revert=revert))


def undo(notebook_id, user, *, request_id=None):
    """Undo `user`'s newest change that is not undone yet (never anyone else's)."""
    with transaction.atomic():
        notebook = operations.lock_notebook(notebook_id, user)
        target = NotebookEvent.objects.filter(notebook=notebook, user=user, kind__in=UNDOABLE, is_undo=False, reverted=False).order_by("-id").first()
        if target is None:
            raise OperationError(NOTHING_TO_UNDO, "You have no change here left to undo.")
        _apply_inverse(notebook, user, target, request_id=request_id, revert=(target, True))
        NotebookEvent.objects.filter(pk=target.pk).update(reverted=True)
    return target


def redo(notebook_id, user, *, request_id=None):
    """Redo `user`'s newest undo, unless they made a new change since."""
    with transaction.atomic():
        notebook = operations.lock_notebook(notebook_id, user)
        target = None
        for event in NotebookEvent.objects.filter(notebook=notebook, user=user, kind__in=UNDOABLE).order_by("-id")[:500]:
            if event.is_undo and not event.reverted:
                target = event
                break
            if event.is_undo or event.reverts_id is not None:
                continue  # an undo already redone, or a redo: look further back
            break  # a new change: the redo stack is empty
        if target is None:
            raise OperationError(NOTHING_TO_UNDO, "You have nothing here to redo.")
        _apply_inverse(notebook, user, target, request_id=request_id, revert=(target, False))
        NotebookEvent.objects.filter(pk=target.pk).update(reverted=True)
    return target


def _apply_inverse(notebook, user, event, *, request_id, revert):
    operation, fields = inverse(_facts_of(notebook, user, event))
    _OPERATIONS[operation](notebook.pk, user, **fields, request_id=request_id, revert=revert)


def _facts_of(notebook, user, event):
    """Facts of undoing `event`, read through the ORM with the notebook locked (a restore's
    snapshot is restore_cell's to read)."""
    cell_id = event.cell_id
    cell = notebook.cells.filter(pk=cell_id).values_list("type", "code", "result_variable").first()
    others = event.kind in (EVENT_CREATED, EVENT_RESTORED) and NotebookEvent.objects.filter(notebook=notebook, cell_id=cell_id, id__gt=event.pk).exclude(user=user).exists()
    after = (event.before or {}).get("after") if event.kind == EVENT_MOVED else None
    after_present = bool(after) and notebook.cells.filter(pk=after).exists()
    return Facts(notebook.revision, event.pk, event.kind, str(cell_id) if cell_id else None, event.before, event.after, cell, others, None, after_present)


_OPERATIONS = {"delete": delete_cell, "restore": restore_cell, "move": move_cell, "update": update_cell}  # inverse()'s, on this thread


def save_version(notebook_id, user, *, name, request_id=None):
    """A named snapshot of every cell, to come back to."""
    name = (name or "").strip()
    with transaction.atomic():
        notebook = operations.lock_notebook(notebook_id, user)
        cells = [
            {"id": str(c["id"]), "type": c["type"], "code": c["code"], "resultVariable": c["result_variable"]}
            for c in notebook.cells.order_by("position").values("id", "type", "code", "result_variable")
        ]
        version = NotebookVersion.objects.create(notebook=notebook, name=name, user=user, cells=cells)
        operations.record_event(notebook, user, EVENT_VERSION_SAVED, after={"versionId": version.pk, "name": name, "cells": len(cells)})
    return version


def restore_version(notebook_id, user, *, version_id, request_id=None):
    """The notebook back to a saved version as one recorded change: cells removed, added and
    edited to match, in the version's order; the kernel reloads and runs what changed, once."""
    with transaction.atomic():
        notebook = operations.lock_notebook(notebook_id, user)
        version = NotebookVersion.objects.filter(notebook=notebook, pk=version_id).first()
        if version is None:
            raise OperationError("invalid_field", f"This notebook has no version {version_id}.")
        current = {str(cell.pk): cell for cell in notebook.cells.all()}
        wanted = {c["id"] for c in version.cells}
        removed = [cell_id for cell_id in current if cell_id not in wanted]
        Cell.objects.filter(notebook=notebook, pk__in=removed).delete()
        # Out of the way of the unique (notebook, position) while cells take their new places.
        Cell.objects.filter(notebook=notebook).update(position=-F("position") - 1)
        changed = []
        for index, saved in enumerate(version.cells):
            position = (index + 1) * POSITION_STEP
            fields = {"type": saved["type"], "code": saved["code"], "result_variable": saved.get("resultVariable") or ""}
            cell = current.get(saved["id"])
            if cell is None:
                Cell.objects.create(id=saved["id"], notebook=notebook, position=position, status=STATUS_IDLE, **fields)
                changed.append(saved["id"])
            elif (cell.type, cell.code, cell.result_variable) != (fields["type"], fields["code"], fields["result_variable"]):
                Cell.objects.filter(pk=cell.pk).update(position=position, status=STATUS_STALE, **fields)
                changed.append(saved["id"])
            else:
                Cell.objects.filter(pk=cell.pk).update(position=position)
        after = {"versionId": version.pk, "name": version.name, "removed": len(removed), "changed": len(changed)}
        operations.record_event(notebook, user, EVENT_VERSION_RESTORED, before={"cells": len(current)}, after=after)
        revision = operations.bump_revision(notebook)
        operations.tell_kernel(notebook, "version_restored", revision=revision, request_id=request_id, changed=changed)
    return version


def page(notebook_id, user, *, before=None, limit=50):
    """Events newest first (`before`: an event id, for the next page) and, on the first page,
    the saved versions; for anyone who may view the notebook."""
    notebook = operations.get_notebook(Notebook.objects.all(), notebook_id, user, action=VIEW)
    limit = max(1, min(int(limit or 50), HISTORY_PAGE_MAX))
    events = NotebookEvent.objects.filter(notebook=notebook).select_related("user")
    if before is not None:
        events = events.filter(id__lt=before)
    rows = list(events.order_by("-id")[: limit + 1])
    present = set(notebook.cells.filter(pk__in=[e.cell_id for e in rows if e.cell_id]).values_list("id", flat=True))
    result = {"events": [_event_message(e, present) for e in rows[:limit]], "more": len(rows) > limit}
    if before is None:
        result["versions"] = [
            {"id": v.pk, "name": v.name, "by": v.user.get_username() if v.user else None, "at": v.created_at.isoformat(), "cells": len(v.cells)}
            for v in notebook.versions.select_related("user")[:50]
        ]
    return result


def _event_message(event, present_cells):
    return {
        "id": event.pk,
        "kind": event.kind,
        "summary": event.get_kind_display(),
        "by": event.user.get_username() if event.user else None,
        "at": event.created_at.isoformat(),
        "cellId": str(event.cell_id) if event.cell_id else None,
        "before": _preview(event.before),
        "after": _preview(event.after),
        "undo": event.is_undo,
        "undone": event.reverted,
        "restorable": event.kind == EVENT_DELETED and event.cell_id not in present_cells,
    }


def _preview(data):
    """Event data with code cut to PREVIEW_CHARS, so a page of history fits in a frame."""
    if not isinstance(data, dict) or len(str(data.get("code", ""))) <= PREVIEW_CHARS:
        return data
    return {**data, "code": data["code"][:PREVIEW_CHARS], "codeTruncated": True}
