"""The notebook's history as actions: restore a deleted cell, undo and redo one's own changes,
save a named version and go back to it, and read the timeline.

Every change is already an append-only `NotebookEvent` (operations.py writes it in the change's
transaction).  Undo and redo are derived from that log per person, never kept in memory: undo
takes the person's newest change that is not undone and applies its inverse through the same
operations (so the kernel, every page and the log hear of it like any edit); redo takes their
newest undo, as long as they made no new change after it.  Nothing here undoes someone else's
change, and an undo that would discard someone else's later work is refused.
"""
from django.db import transaction
from django.db.models import F

from .constants import POSITION_STEP, STATUS_IDLE, STATUS_STALE
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


def restore_cell(notebook_id, user, *, cell_id, request_id=None, revert=None):
    """Bring a deleted cell back, with its id, type, code and result variable, next to its old
    neighbours (or at the end); the kernel then runs it and what depends on it."""
    with transaction.atomic():
        notebook = operations.lock_notebook(notebook_id, user)
        if notebook.cells.filter(pk=cell_id).exists():
            raise OperationError("invalid_field", "That cell is in the notebook: there is nothing to restore.")
        deleted = NotebookEvent.objects.filter(notebook=notebook, cell_id=cell_id, kind=EVENT_DELETED).order_by("-id").first()
        if deleted is None or not deleted.before:
            raise OperationError("unknown_cell", f"No deleted cell {cell_id} is in this notebook's history.")
        snapshot = deleted.before
        restored = operations.NewCell(
            notebook.pk,
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
        return operations.add_cell(notebook.pk, user, restored)


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
    cell_id = event.cell_id
    if event.kind in (EVENT_CREATED, EVENT_RESTORED):
        others = NotebookEvent.objects.filter(notebook=notebook, cell_id=cell_id, id__gt=event.pk).exclude(user=user)
        if others.exists():
            raise OperationError(CONFLICT, "Someone else has changed that cell since; removing it would discard their work.")
        if not notebook.cells.filter(pk=cell_id).exists():
            raise OperationError(CONFLICT, "That cell has been deleted since: there is nothing to undo.")
        delete_cell(notebook.pk, user, cell_id=cell_id, request_id=request_id, revert=revert)
    elif event.kind == EVENT_DELETED:
        restore_cell(notebook.pk, user, cell_id=cell_id, request_id=request_id, revert=revert)
    elif event.kind == EVENT_MOVED:
        if not notebook.cells.filter(pk=cell_id).exists():
            raise OperationError(CONFLICT, "That cell has been deleted since: there is nothing to move back.")
        after = (event.before or {}).get("after")
        if after and not notebook.cells.filter(pk=after).exists():
            after = None
        move_cell(notebook.pk, user, cell_id=cell_id, after_cell_id=after, request_id=request_id, revert=revert)
    elif event.kind == EVENT_EDITED:
        cell = notebook.cells.filter(pk=cell_id).first()
        if cell is None:
            raise OperationError(CONFLICT, "That cell has been deleted since: there is nothing to undo.")
        after, before = event.after or {}, event.before or {}
        if cell.code != after.get("code") or cell.result_variable != (after.get("resultVariable") or ""):
            raise OperationError(CONFLICT, "That cell has changed since your edit; undoing it would discard the newer text.")
        update_cell(
            notebook.pk,
            user,
            cell_id=cell_id,
            code=before.get("code", cell.code),
            result_variable=(before.get("resultVariable") or None) if cell.type == "sql" else None,
            request_id=request_id,
            revert=revert,
        )


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
