"""Transactional notebook edits: one function per user-visible change.

Each function checks permission (permissions.py), locks the notebook row, changes
rows, bumps `revision` and tells the kernel with `transaction.on_commit`, so the
kernel worker (and through it every client) never hears of a change that rolled
back.  Sharing is an edit like the others: its event (the member's open sockets
re-check their access) also goes out on commit.  Used by the WebSocket consumer
and the views.  Runs synchronously: callers in async code wrap it in
`database_sync_to_async`.

create_cell, delete_cell, update_cell (new code) and move_cell (and history.py's restore, undo
and redo, through the same changes) are one statement each on PostgreSQL, written once at the
end of this module (NewCell, GoneCell, EditedCell, MovedCell) and run by the ORM thread here
(run_change) or by the event loop (edit_lane.py): outside a transaction they commit in one
pipeline of their own and then send the kernel message (send_on_commit runs it at once: the
change has committed).  An undo's or redo's statement also marks the event it reverts.  Other
modules use the public names here, never the private ones.
"""
import base64
import datetime
import uuid

from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.db.models import Min, OuterRef, Subquery
from django.db.models.fields import AutoFieldMixin
from django.utils import timezone

from . import kernel_client, permissions, vault
from .importing import ImportedCell
from .kernel import ui
from .kernel.analysis import analyze_python
from .kernel.shared_text import CellText, code_key, new_state
from .constants import CELL_PYTHON, CELL_SQL, NOTEBOOK_NAME_MAX, POSITION_STEP, STATUS_IDLE, STATUS_STALE
from .models import (
    EVENT_CONNECTION,
    EVENT_CREATED,
    EVENT_DELETED,
    EVENT_EDITED,
    EVENT_MOVED,
    EVENT_RESTORED,
    EVENT_EGRESS,
    EVENT_KERNEL_RESTARTED,
    EVENT_RENAMED,
    EVENT_SECRET_DELETED,
    EVENT_SECRET_SET,
    EVENT_SHARED,
    EVENT_UNSHARED,
    EDIT_COALESCE_SECONDS,
    Cell,
    Membership,
    Notebook,
    NotebookEvent,
    NotebookSecret,
    OutputBlob,
    cell_message,
)
from .permissions import EDIT, MANAGE, MEMBER_ROLES, ROLE_OWNER, SHARE, PermissionDenied
from .secrets import mask_connection_string


# How long an edit waits for another one holding its notebook's row (PostgreSQL). Daphne runs
# every socket's ORM work on one thread, so a longer wait would stall them all; past it the
# database raises OperationalError, which the consumer answers with `busy` (the page retries).
LOCK_TIMEOUT_MS = 2000


class OperationError(Exception):
    """A refused or impossible edit; `code` is the protocol's error code."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def get_notebook(queryset, notebook_id, user, *, action):
    """The notebook if `user` may do `action` on it; OperationError otherwise."""
    try:
        notebook = queryset.get(pk=notebook_id)
    except (Notebook.DoesNotExist, ValueError):
        notebook = None
    try:
        permissions.check(notebook.role_of(user) if notebook is not None else None, action)
    except PermissionDenied as exc:
        raise OperationError(exc.code, exc.message) from None
    return notebook


def lock_notebook(notebook_id, user, *, action=EDIT):
    if connection.vendor == "postgresql":  # SQLite has its own busy timeout (settings)
        with connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL lock_timeout = {int(LOCK_TIMEOUT_MS)}")
    return get_notebook(Notebook.objects.select_for_update(), notebook_id, user, action=action)


def tell_kernel(notebook, kind, *, revision, request_id, **fields):
    """Send `kernel.<kind>` for this notebook once the transaction commits."""
    message = {"type": f"kernel.{kind}", "notebook": str(notebook.pk), "revision": revision, "requestId": request_id, **fields}
    kernel_client.send_on_commit(notebook.pk, message)


def record_event(notebook, user, kind, *, revert=None, **fields):
    """The change's history event, in its transaction; `revert`: (event, is_undo) for an undo
    or redo (history.py)."""
    reverts, is_undo = revert or (None, False)
    return NotebookEvent.objects.record(notebook, user, kind, reverts=reverts, is_undo=is_undo, **fields)


def cell_snapshot(notebook, cell):
    """What restoring a cell needs: its fields and its neighbours at the time."""
    # Both neighbours in one round trip: it runs inside every create, delete and move.
    around = Cell.objects.filter(notebook=OuterRef("pk"))
    previous, following = (
        Notebook.objects.filter(pk=notebook.pk)
        .annotate(
            before=Subquery(around.filter(position__lt=cell.position).order_by("-position").values("id")[:1]),
            after=Subquery(around.filter(position__gt=cell.position).order_by("position").values("id")[:1]),
        )
        .values_list("before", "after")
        .first()
    )
    return _snapshot(cell, previous, following)


def _snapshot(cell, previous, following):
    """A history snapshot (SNAPSHOT_FIELDS; the statements below build the same in SQL)."""
    snapshot = {key: str(getattr(cell, field)) for key, field in SNAPSHOT_FIELDS.items()}
    return {**snapshot, "previous": str(previous) if previous else None, "next": str(following) if following else None}


def _get_cell(notebook, cell_id):
    try:
        return notebook.cells.get(pk=cell_id)
    except (Cell.DoesNotExist, ValueError, TypeError):
        raise OperationError("unknown_cell", f"There is no cell {cell_id} in this notebook.") from None


def bump_revision(notebook):
    notebook.revision += 1
    notebook.save(update_fields=["revision", "updated_at"])
    return notebook.revision


def _renumber(notebook_id):
    """Spread every cell POSITION_STEP apart (two passes keep the unique constraint true)."""
    rows = list(Cell.objects.filter(notebook_id=notebook_id).order_by("position").values_list("id", "position"))
    for cell_id, position in rows:
        Cell.objects.filter(pk=cell_id).update(position=-position - 1)
    for index, (cell_id, _) in enumerate(rows):
        Cell.objects.filter(pk=cell_id).update(position=(index + 1) * POSITION_STEP)
    return {str(cell_id): (index + 1) * POSITION_STEP for index, (cell_id, _) in enumerate(rows)}


def _position_after(notebook, after_cell_id):
    """(position for a new cell, positions of every cell if they had to be renumbered)."""
    after = None
    if after_cell_id:
        after = notebook.cells.filter(pk=after_cell_id).values_list("position", flat=True).first()
    if after is None:
        return Cell.end_position(notebook.pk), None
    nxt = notebook.cells.filter(position__gt=after).order_by("position").values_list("position", flat=True).first()
    if nxt is None:
        return after + POSITION_STEP, None
    if nxt - after >= 2:
        return (after + nxt) // 2, None
    positions = _renumber(notebook.pk)
    after = positions[str(after_cell_id)]
    return after + POSITION_STEP // 2, positions


def _position_at_top(notebook):
    """(position before every cell, positions of every cell if they had to be renumbered)."""
    first = notebook.cells.aggregate(m=Min("position"))["m"]
    if first is None:
        return POSITION_STEP, None
    if first >= 2:
        return first // 2, None
    positions = _renumber(notebook.pk)
    return POSITION_STEP // 2, positions


def _position_before(notebook, before_cell_id):
    """Like _position_after, for "just above this cell" (unknown: appended)."""
    before = notebook.cells.filter(pk=before_cell_id).values_list("position", flat=True).first()
    if before is None:
        return _position_after(notebook, None)
    previous = notebook.cells.filter(position__lt=before).order_by("-position").values_list("id", flat=True).first()
    return _position_after(notebook, previous) if previous is not None else _position_at_top(notebook)


def default_result_variable(notebook):
    """The first free df_<n>: not another SQL cell's result nor a name a cell defines."""
    used = set()
    for result_variable, writes, cell_type, code in notebook.cells.values_list("result_variable", "writes", "type", "code"):
        used.add(result_variable)
        used.update(writes or [])
        if cell_type == CELL_PYTHON and not writes and "df_" in code:
            # Created a moment ago: the kernel has not stored its analysis yet (it does so after
            # announcing it), so read its names here rather than hand out one it defines.
            used.update(analyze_python(code).writes)
    return _first_free_df(used)


def create_notebook(user, name):
    """A new notebook owned by `user` holding one empty Python cell (with its `created` event,
    in one transaction, as an import makes them), which the page focuses: one starts typing."""
    return import_notebook(user, name=name, cells=[ImportedCell(type=CELL_PYTHON, code="")])


def import_notebook(user, *, name, cells, requirements=()):
    """A new notebook owned by `user` holding `cells` (importing.ImportedCell, in order), in
    one transaction with a `created` event per cell, so history and undo see an import as the
    cells it made. No kernel message: the kernel loads a notebook when a page first opens it.

    Each row is stored with what the kernel would otherwise work out on that first open: the
    cell's analysis (the kernel's own, kernel/session.py CellState.analyse, keyed so the kernel
    takes it) and its shared text's state; 10,000 imported cells then open as fast as any
    stored notebook (docs/performance.md)."""
    from .kernel.session import CellState

    name = (name or "").strip()[:NOTEBOOK_NAME_MAX] or "Imported notebook"
    with transaction.atomic():
        # Its packages are resolved and installed when it first runs (kernel/package_builds.py).
        notebook = Notebook.objects.create(owner=user, name=name, revision=1, requirements=list(requirements))
        used = {cell.result_variable for cell in cells if cell.result_variable}
        rows = []
        for index, imported in enumerate(cells):
            result_variable = imported.result_variable
            if imported.type == CELL_SQL and not result_variable:
                result_variable = _first_free_df(used)
                used.add(result_variable)
            position = (index + 1) * POSITION_STEP
            state = CellState(id="", type=imported.type, code=imported.code, position=position, result_variable=result_variable)
            state.analyse()
            rows.append(
                Cell(
                    notebook=notebook,
                    position=position,
                    type=imported.type,
                    code=imported.code,
                    result_variable=result_variable,
                    status=STATUS_IDLE,
                    reads=state.reads,
                    writes=state.writes,
                    analysis=state.analysis,
                    ydoc=CellText(imported.code).state(),
                    ydoc_key=code_key(imported.code),
                )
            )
        _insert_all(Cell, rows)
        events = []
        for index, cell in enumerate(rows):
            snapshot = _snapshot(cell, rows[index - 1].pk if index else None, rows[index + 1].pk if index + 1 < len(rows) else None)
            events.append(NotebookEvent(notebook=notebook, user=user, kind=EVENT_CREATED, cell_id=cell.pk, after=snapshot))
        _insert_all(NotebookEvent, events)
    return notebook


def _insert_all(model, objs):
    """`model.objects.bulk_create(objs)` without reading anything back (an AutoField pk stays
    None), through `COPY` on PostgreSQL.

    bulk_create binds its values client-side (Django's default with psycopg 3): every value is
    quoted in Python, then the server parses a 1,000-row literal INSERT. That was ~5 s of the
    ~8 s a 10,000-cell import took (cProfile). COPY takes each field's own database value
    (`get_db_prep_save`, as bulk_create does) in one stream. Runs in the caller's transaction."""
    db = connections[DEFAULT_DB_ALIAS]  # the wrapper itself: the `connection` proxy costs a lookup per attribute, per value
    if db.vendor != "postgresql" or not objs:
        model.objects.bulk_create(objs, batch_size=1000)
        return
    import psycopg

    fields = [f for f in model._meta.concrete_fields if not isinstance(f, AutoFieldMixin)]  # the database numbers those
    rows = [[f.get_db_prep_save(f.pre_save(obj, True), db) for f in fields] for obj in objs]
    if any(hasattr(value, "resolve_expression") for row in rows for value in row):  # a database default, an F(): SQL's to compute
        model.objects.bulk_create(objs, batch_size=1000)
        return
    columns = ", ".join(db.ops.quote_name(f.column) for f in fields)
    db.ensure_connection()
    with db.wrap_database_errors, psycopg.Cursor(db.connection) as cursor:
        with cursor.copy(f"COPY {db.ops.quote_name(model._meta.db_table)} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
    for obj in objs:
        obj._state.adding, obj._state.db = False, db.alias


def _first_free_df(used):
    n = 1
    while f"df_{n}" in used:
        n += 1
    return f"df_{n}"


def rename_notebook(notebook_id, user, *, name, request_id=None):
    """The owner renames the notebook; every open page hears `notebook_renamed`."""
    name = (name or "").strip()
    if not name or len(name) > NOTEBOOK_NAME_MAX:
        raise OperationError("invalid_field", f"A notebook's name is 1 to {NOTEBOOK_NAME_MAX} characters.")
    return _set_owned_setting(notebook_id, user, field="name", value=name, event=EVENT_RENAMED, kind="rename", request_id=request_id)


def _set_owned_setting(notebook_id, user, *, field, value, event, kind, request_id=None):
    """One of the settings only the owner changes (`field` of the notebook row): the history
    event (before and after, under the message's name for it), a revision, and `kernel.<kind>`
    carrying the new value."""
    name = {"name": "name", "egress_allowlist": "allowlist"}[field]
    with transaction.atomic():
        notebook = lock_notebook(notebook_id, user, action=MANAGE)
        record_event(notebook, user, event, before={name: getattr(notebook, field)}, after={name: value})
        setattr(notebook, field, value)
        notebook.revision += 1
        notebook.save(update_fields=[field, "revision", "updated_at"])
        tell_kernel(notebook, kind, revision=notebook.revision, request_id=request_id, **{name: value})
    return notebook


def delete_notebook(notebook_id, user):
    """The owner deletes the notebook with its cells; its open pages are told and closed, and
    the kernel drops its session (its namespace and execution process)."""
    with transaction.atomic():
        notebook = lock_notebook(notebook_id, user, action=MANAGE)
        name = notebook.name
        notebook.delete()
        kernel_client.notebook_deleted_on_commit(notebook_id)
    return name


def create_cell(notebook_id, user, *, cell_type=CELL_PYTHON, after_cell_id=None, before_cell_id=None, code="", request_id=None, revert=None):
    """A new cell just after `after_cell_id`, or just above `before_cell_id` (unknown or
    neither: at the end)."""
    new = NewCell(notebook_id, cell_type=cell_type, after_cell_id=after_cell_id, before_cell_id=before_cell_id, code=code, request_id=request_id, revert=revert)
    return add_cell(notebook_id, user, new)


def add_cell(notebook_id, user, new):
    """Put `new` (a NewCell: create_cell's, or history.restore_cell's with the deleted cell's id
    and fields) into the notebook on this thread; returns the cell. In a caller's transaction
    (undo, restore) it is part of it and the kernel hears of it on commit."""
    if connection.vendor != "postgresql":
        return _add_cell_portable(notebook_id, user, new)
    run_change(notebook_id, user, new)
    return new.cell()


def delete_cell(notebook_id, user, *, cell_id, request_id=None, revert=None):
    gone = GoneCell(notebook_id, cell_id=cell_id, request_id=request_id, revert=revert)
    if connection.vendor != "postgresql":
        return _delete_cell_portable(notebook_id, user, gone)
    run_change(notebook_id, user, gone)


def move_cell(notebook_id, user, *, cell_id, after_cell_id, request_id=None, revert=None):
    """Put a cell just after another one (None: first). Order only: the graph is unchanged.
    On PostgreSQL: MovedCell's statement (run_change); otherwise the ORM, placing it the same way."""
    if connection.vendor == "postgresql":
        moved = MovedCell(notebook_id, cell_id=cell_id, after_cell_id=after_cell_id, request_id=request_id, revert=revert)
        run_change(notebook_id, user, moved)
        return moved.position
    with transaction.atomic():
        notebook = lock_notebook(notebook_id, user)
        cell = _get_cell(notebook, cell_id)
        if after_cell_id is not None:
            if str(after_cell_id) == str(cell.pk):
                raise OperationError("invalid_field", "A cell cannot be moved after itself.")
            _get_cell(notebook, after_cell_id)
            position, renumbered = _position_after(notebook, after_cell_id)
        else:
            position, renumbered = _position_at_top(notebook)
        was_after = cell_snapshot(notebook, cell)["previous"]
        record_event(notebook, user, EVENT_MOVED, cell_id=cell.pk, before={"after": was_after}, after={"after": str(after_cell_id) if after_cell_id else None}, revert=revert)
        # The new position is free (strictly between two cells, after the last or before the
        # first), so one UPDATE keeps the unique constraint.
        Cell.objects.filter(pk=cell.pk).update(position=position)
        revision = bump_revision(notebook)
        tell_kernel(notebook, "move_cell", revision=revision, request_id=request_id, cellId=str(cell.pk), position=position, positions=renumbered)
    return position


def update_cell(notebook_id, user, *, cell_id, code=None, result_variable=None, request_id=None, revert=None):
    """Save new code (and, for SQL cells, a new result variable); the kernel re-analyses it.
    New code alone, on PostgreSQL: EditedCell's statement (run_change); otherwise the ORM."""
    if connection.vendor == "postgresql" and code is not None and result_variable is None:
        edited = EditedCell(notebook_id, cell_id=cell_id, code=code, request_id=request_id, revert=revert)
        run_change(notebook_id, user, edited)
        return Cell.objects.get(pk=edited.key)
    with transaction.atomic():
        notebook = lock_notebook(notebook_id, user)
        cell = _get_cell(notebook, cell_id)
        old_code, old_result_variable = cell.code, cell.result_variable
        fields = []
        if code is not None and code != cell.code:
            cell.code = code
            fields.append("code")
        if result_variable is not None and result_variable != cell.result_variable:
            if cell.type != CELL_SQL:
                raise OperationError("invalid_field", "Only SQL cells have a result variable.")
            cell.result_variable = result_variable
            fields.append("result_variable")
        if fields:
            before = {"code": old_code, "resultVariable": old_result_variable}
            record_event(notebook, user, EVENT_EDITED, cell_id=cell.pk, before=before, after={"code": cell.code, "resultVariable": cell.result_variable}, revert=revert)
            cell.status = STATUS_STALE
            cell.save(update_fields=[*fields, "status", "updated_at"])
            revision = bump_revision(notebook)
        else:
            revision = notebook.revision
        tell_kernel(
            notebook,
            "update_cell",
            revision=revision,
            request_id=request_id,
            cellId=str(cell.pk),
            code=cell.code,
            resultVariable=cell.result_variable,
            changed=bool(fields),
        )
    return cell


def set_input(notebook_id, user, *, cell_id, index=0, value, request_id=None):
    """Someone moved a widget: the value is checked against the definition everyone was shown,
    persisted (a reload or restart keeps it), then the kernel sets it and re-runs its readers."""
    widget_id = f"{cell_id}:{index}"
    with transaction.atomic():
        notebook = lock_notebook(notebook_id, user)
        cell = _get_cell(notebook, cell_id)
        definition = next((o["data"] for o in cell.outputs or [] if o.get("mimeType") == ui.UI_MIME and o.get("data", {}).get("id") == widget_id), None)
        if definition is None:
            raise OperationError("invalid_field", f"Cell {cell_id} shows no input number {index}; run it first.")
        try:
            value = ui.check(definition["kind"], definition.get("props") or {}, value)
        except ui.InvalidValue as exc:
            raise OperationError("invalid_field", f"That value does not fit the {definition['kind']}: {exc}.") from None
        cell.inputs = {**(cell.inputs or {}), widget_id: value}
        cell.save(update_fields=["inputs"])
        message = {"type": "kernel.set_input", "notebook": str(notebook.pk), "cellId": str(cell.pk), "widgetId": widget_id, "value": value, "requestId": request_id}
        kernel_client.send_on_commit(notebook.pk, {**message, "by": user.get_username()})
    return value


def update_db_connection(notebook_id, user, *, connection_string, request_id=None):
    with transaction.atomic():
        notebook = lock_notebook(notebook_id, user)
        # The password never goes into the history: only what the page shows of the connection.
        record_event(notebook, user, EVENT_CONNECTION, before={"display": notebook.db_connection_display}, after={"display": mask_connection_string(connection_string)})
        notebook.connection_string = connection_string  # encrypted (vault.py)
        notebook.save(update_fields=["db_connection", "updated_at"])
        revision = bump_revision(notebook)
        tell_kernel(
            notebook,
            "db_connection",
            revision=revision,
            request_id=request_id,
            connected=bool(connection_string),
            display=mask_connection_string(connection_string),
        )
    return notebook


def set_secret(notebook_id, user, *, name, value, request_id=None):
    """Add or replace the notebook's secret `name` (protocol.validate_secret_name checked it):
    stored encrypted (vault.py); the history records who set which name, never the value; the
    kernel restarts the execution process with it (kernel/edits.py)."""
    with transaction.atomic():
        notebook = lock_notebook(notebook_id, user)
        existed = notebook.secrets.filter(name=name).exists()
        NotebookSecret.objects.update_or_create(notebook=notebook, name=name, defaults={"value": vault.encrypt(value), "updated_by": user})
        record_event(notebook, user, EVENT_SECRET_SET, before={"name": name} if existed else None, after={"name": name})
        _secrets_changed(notebook, request_id)


def delete_secret(notebook_id, user, *, name, request_id=None):
    """Remove the notebook's secret `name`; its value is gone for good (nothing keeps it)."""
    with transaction.atomic():
        notebook = lock_notebook(notebook_id, user)
        deleted, _ = notebook.secrets.filter(name=name).delete()
        if not deleted:
            raise OperationError("invalid_field", f"This notebook has no secret {name}.")
        record_event(notebook, user, EVENT_SECRET_DELETED, before={"name": name}, after=None)
        _secrets_changed(notebook, request_id)


def _secrets_changed(notebook, request_id):
    revision = bump_revision(notebook)
    tell_kernel(notebook, "secrets", revision=revision, request_id=request_id, names=list(notebook.secrets.values_list("name", flat=True)))


def check_kernel_command(notebook_id, user, *, cell_id=None):
    """For messages that change no rows (run, interrupt): may `user` edit, and is the cell
    there? Returns the notebook's revision, which the kernel message carries."""
    notebook = get_notebook(Notebook.objects.only("id", "owner_id", "revision"), notebook_id, user, action=EDIT)
    if cell_id is not None and not notebook.cells.filter(pk=cell_id).exists():
        raise OperationError("unknown_cell", f"There is no cell {cell_id} in this notebook.")
    return notebook.revision


def restart_kernel(notebook_id, user, *, request_id=None):
    """An editor restarts the notebook's execution process: a history event, then (on commit)
    the kernel drops the process, every result that lived in it turns stale and everyone hears
    `kernel_restarted` with "restarted by <user>". No rows change, so no revision."""
    with transaction.atomic():
        notebook = get_notebook(Notebook.objects.only("id", "owner_id", "revision"), notebook_id, user, action=EDIT)
        record_event(notebook, user, EVENT_KERNEL_RESTARTED)
        tell_kernel(notebook, "restart_kernel", revision=notebook.revision, request_id=request_id, reason=f"restarted by {user.get_username()}")


# --- sharing ---------------------------------------------------------------------------


def share_notebook(notebook_id, user, *, member, role):
    """Give `member` access with `role`, or change their role; their open sockets are told."""
    if role not in dict(MEMBER_ROLES):
        raise OperationError("invalid_field", f"Unknown role {role!r}; a member is one of {', '.join(dict(MEMBER_ROLES))}.")
    with transaction.atomic():
        notebook = lock_notebook(notebook_id, user, action=SHARE)
        if member.pk == notebook.owner_id:
            raise OperationError("invalid_field", "The owner already has full access.")
        previous = notebook.memberships.filter(user=member).values_list("role", flat=True).first()
        membership, _ = Membership.objects.update_or_create(notebook=notebook, user=member, defaults={"role": role})
        record_event(notebook, user, EVENT_SHARED, before={"user": member.get_username(), "role": previous}, after={"user": member.get_username(), "role": role})
        kernel_client.notify_access_changed_on_commit(notebook.pk, member.pk)
    return membership


def unshare_notebook(notebook_id, user, *, member):
    """Take `member`'s access away; their open sockets are closed. False if they had none."""
    with transaction.atomic():
        notebook = lock_notebook(notebook_id, user, action=SHARE)
        role = notebook.memberships.filter(user=member).values_list("role", flat=True).first()
        removed = notebook.memberships.filter(user=member).delete()[0] > 0
        if removed:
            record_event(notebook, user, EVENT_UNSHARED, before={"user": member.get_username(), "role": role})
            kernel_client.notify_access_changed_on_commit(notebook.pk, member.pk)
    return removed


# --- create, delete, update, move: one statement each (docs/performance.md, "Edits") --------------
# An edit's time is mostly round trips to PostgreSQL, each a process switch on a busy machine.
# Done through the ORM, a create_cell took eleven (the pool's health check, BEGIN, the lock
# timeout, the lock, the position, the INSERT, the history snapshot, the event's INSERT, the
# revision bump, COMMIT). Here an edit is two statements: the lock, then one statement that
# checks the caller may edit, places, inserts (or deletes), records the history event and bumps
# the revision. The lock must be a statement of its own: under READ COMMITTED the next
# statement's snapshot then sees every change committed before the lock was granted, so
# positions are read fresh. Both transports run these same statements: the ORM thread
# (run_change: outside a transaction, BEGIN, both statements and COMMIT go to the server as one
# pipeline, one round trip; inside a caller's transaction, a statement at a time) and the event
# loop (edit_lane.py, the same pipeline over a connection of its own). SQLite has no
# data-modifying CTEs: there the same changes are made through the ORM (_add_cell_portable and
# _delete_cell_portable, whose kernel messages the same NewCell / GoneCell build; update_cell's
# and move_cell's own paths). Table and column names come from the models (edit_sql, which
# history.py's READ_SQL uses too).


class _Table:
    """A model's table for the SQL below: `{cell}` is its quoted name, `{cell.position}` a
    field's quoted column."""

    def __init__(self, model):
        quote = connection.ops.quote_name
        self.name = quote(model._meta.db_table)
        self.columns = {field.name: quote(field.column) for field in model._meta.concrete_fields}

    def __format__(self, spec):
        return self.name

    def __getattr__(self, name):
        try:
            return self.__dict__["columns"][name]
        except KeyError:
            raise AttributeError(name) from None


def _sql_names():
    return {"notebook": _Table(Notebook), "membership": _Table(Membership), "cell": _Table(Cell), "event": _Table(NotebookEvent), "blob": _Table(OutputBlob)}


_N = _sql_names()


def edit_sql(template, **fragments):
    """`template` with its {notebook}, {cell.position}, ... names and the `fragments` (SQL
    already complete) filled in."""
    return template.format_map({**_N, **fragments})


def _columns_and_values(model, values):
    """(`col, ...`, `value, ...`) for an INSERT of `model` with `values` (field name -> SQL),
    which must name every concrete field but an auto-numbered id: a field added to the model then
    fails here, at import, rather than being left NULL by the statements below."""
    fields = [f for f in model._meta.concrete_fields if not isinstance(f, AutoFieldMixin)]
    missing = {f.name for f in fields} - set(values)
    if missing:
        raise ImproperlyConfigured(f"operations.py: no value for {model.__name__}.{', '.join(sorted(missing))} in the edit's INSERT")
    return ", ".join(connection.ops.quote_name(f.column) for f in fields), ", ".join(values[f.name] for f in fields)


# A history snapshot's fields (history.restore_cell reads them back): key -> Cell field. Built
# in Python by _snapshot and in SQL by _snapshot_sql, each with the cell's neighbours.
SNAPSHOT_FIELDS = {"id": "id", "type": "type", "code": "code", "resultVariable": "result_variable"}


def _snapshot_sql(row, previous, following):
    fields = ", ".join(f"'{key}', {row}.{getattr(_N['cell'], field)}::text" for key, field in SNAPSHOT_FIELDS.items())
    return f"jsonb_build_object({fields}, 'previous', ({previous})::text, 'next', ({following})::text)"


def _event_insert(row, *, before, after):
    """INSERT ... SELECT of a cell's history event, `row` being the cell's row."""
    columns, values = _columns_and_values(
        NotebookEvent,
        {
            "notebook": "%(notebook)s",
            "user": "%(user)s",
            "created_at": "%(now)s",
            "kind": "%(kind)s",
            "cell_id": f"{row}.{_N['cell'].id}",
            "before": before,
            "after": after,
            "reverts": "%(reverts)s",
            "is_undo": "%(is_undo)s",
            "reverted": "false",
        },
    )
    return f"INSERT INTO {_N['event']:} ({columns})\n    SELECT {values}"


def _undone_sql(done):
    """An undo's or redo's target (`reverts`) marked reverted, once the CTE `done` shows the
    change was made (history.py)."""
    return edit_sql(
        """undone AS (
    UPDATE {event} SET {event.reverted} = true WHERE {event.id} = %(reverts)s AND EXISTS (SELECT 1 FROM {done})
)""",
        done=done,
    )


def _bump_sql(changed):
    """The revision bump, once the CTE `changed` shows a row was written."""
    return edit_sql(
        """bumped AS (
    UPDATE {notebook} SET {notebook.revision} = {notebook.revision} + 1, {notebook.updated_at} = %(now)s
    WHERE {notebook.id} = %(notebook)s AND EXISTS (SELECT 1 FROM {changed})
    RETURNING {notebook.revision}
)""",
        changed=changed,
    )


_LOCK_SQL = edit_sql(
    """SELECT n.{notebook.owner}, (SELECT m.{membership.role} FROM {membership} m WHERE m.{membership.notebook} = n.{notebook.id} AND m.{membership.user} = %(user)s),
       n.{notebook.revision}
FROM {notebook} n WHERE n.{notebook.id} = %(notebook)s FOR UPDATE OF n"""
)

# The caller may edit: re-checked inside the changing statement, so a refused edit changes nothing
# even though, pipelined, it is sent before the lock's answer is read. And a change decided
# before the lock (`decided_at`: the revision it was read at, history.py's restore, undo and
# redo on the edit lane) finds the notebook still at that revision, or changes nothing
# (edit_row says so).
_MAY_EDIT = edit_sql(
    """EXISTS (
    SELECT 1 FROM {notebook} n WHERE n.{notebook.id} = %(notebook)s AND (n.{notebook.owner} = %(user)s OR EXISTS (
        SELECT 1 FROM {membership} m WHERE m.{membership.notebook} = n.{notebook.id} AND m.{membership.user} = %(user)s AND m.{membership.role} = ANY(%(roles)s)))
      AND (%(decided_at)s::bigint IS NULL OR n.{notebook.revision} = %(decided_at)s)
)"""
)

_CELL_COLUMNS, _CELL_VALUES = _columns_and_values(
    Cell,
    {
        "id": "%(cell)s",
        "notebook": "%(notebook)s",
        "position": "placed.position",
        "type": "%(type)s",
        "code": "%(code)s",
        "result_variable": "%(result_variable)s",
        "status": "%(status)s",
        "outputs": "'[]'::jsonb",
        "stdout": "''",
        "reads": "'[]'::jsonb",
        "writes": "'[]'::jsonb",
        "analysis": "NULL",
        "error": "NULL",
        "ydoc": "%(ydoc)s",
        "ydoc_generation": "0",
        "ydoc_key": "%(ydoc_key)s",
        "inputs": "'{}'::jsonb",
        "created_at": "%(now)s",
        "updated_at": "%(now)s",
    },
)

# The placement: after `after` if it is a cell of the notebook, else just above `before` if it
# is one, else at the end; halfway between the two neighbours, or NULL (nothing is written) when
# they are too close and the notebook's positions must be spread first (run_change does).
_CREATE_SQL = edit_sql(
    """WITH
after_cell AS (
    SELECT {cell.id} AS id, {cell.position} AS position FROM {cell} WHERE {cell.notebook} = %(notebook)s AND {cell.id} = %(after)s
),
before_cell AS (
    SELECT {cell.id} AS id, {cell.position} AS position FROM {cell}
    WHERE {cell.notebook} = %(notebook)s AND {cell.id} = %(before)s AND NOT EXISTS (SELECT 1 FROM after_cell)
),
previous_cell AS (
    SELECT id, position FROM after_cell
    UNION ALL (
        SELECT c.{cell.id}, c.{cell.position} FROM {cell} c, before_cell b
        WHERE c.{cell.notebook} = %(notebook)s AND c.{cell.position} < b.position ORDER BY c.{cell.position} DESC LIMIT 1
    )
    UNION ALL (
        SELECT {cell.id}, {cell.position} FROM {cell}
        WHERE {cell.notebook} = %(notebook)s AND NOT EXISTS (SELECT 1 FROM after_cell) AND NOT EXISTS (SELECT 1 FROM before_cell)
        ORDER BY {cell.position} DESC LIMIT 1
    )
),
next_cell AS (
    SELECT id, position FROM before_cell
    UNION ALL (
        SELECT c.{cell.id}, c.{cell.position} FROM {cell} c, previous_cell p
        WHERE NOT EXISTS (SELECT 1 FROM before_cell) AND c.{cell.notebook} = %(notebook)s AND c.{cell.position} > p.position
        ORDER BY c.{cell.position} LIMIT 1
    )
),
placed AS (
    SELECT
        CASE
            WHEN p.position IS NULL AND n.position IS NULL THEN %(step)s
            WHEN n.position IS NULL THEN p.position + %(step)s
            WHEN p.position IS NULL THEN CASE WHEN n.position >= 2 THEN n.position / 2 END
            WHEN n.position - p.position >= 2 THEN (p.position + n.position) / 2
        END AS position,
        p.id AS previous, n.id AS following
    FROM (SELECT 1) AS one LEFT JOIN previous_cell p ON true LEFT JOIN next_cell n ON true
),
inserted AS (
    INSERT INTO {cell} ({cell_columns})
    SELECT {cell_values}
    FROM placed WHERE placed.position IS NOT NULL AND {may_edit}
    RETURNING {cell.id}, {cell.position}, {cell.type}, {cell.code}, {cell.result_variable}
),
recorded AS (
    {record}
    FROM placed, inserted i
),
{undone},
{bump}
SELECT (SELECT {cell.position} FROM inserted), (SELECT {notebook.revision} FROM bumped),
       (SELECT count(*) FROM {cell} c, inserted i WHERE c.{cell.notebook} = %(notebook)s AND c.{cell.position} < i.{cell.position})""",
    cell_columns=_CELL_COLUMNS,
    cell_values=_CELL_VALUES,
    may_edit=_MAY_EDIT,
    record=_event_insert("i", before="NULL", after=_snapshot_sql("i", "placed.previous", "placed.following")),
    undone=_undone_sql("inserted"),
    bump=_bump_sql("inserted"),
)

_DELETE_SQL = edit_sql(
    """WITH
target AS (
    SELECT {cell.id}, {cell.position}, {cell.type}, {cell.code}, {cell.result_variable} FROM {cell}
    WHERE {cell.notebook} = %(notebook)s AND {cell.id} = %(cell)s AND {may_edit}
),
previous AS (
    SELECT c.{cell.id} AS id FROM {cell} c, target t
    WHERE c.{cell.notebook} = %(notebook)s AND c.{cell.position} < t.{cell.position} ORDER BY c.{cell.position} DESC LIMIT 1
),
following AS (
    SELECT c.{cell.id} AS id FROM {cell} c, target t
    WHERE c.{cell.notebook} = %(notebook)s AND c.{cell.position} > t.{cell.position} ORDER BY c.{cell.position} LIMIT 1
),
recorded AS (
    {record}
    FROM target t
),
blobs AS (
    DELETE FROM {blob} WHERE {blob.cell} IN (SELECT {cell.id} FROM target)
),
removed AS (
    DELETE FROM {cell} WHERE {cell.id} IN (SELECT {cell.id} FROM target) RETURNING {cell.id}
),
{undone},
{bump}
SELECT (SELECT {notebook.revision} FROM bumped)""",
    may_edit=_MAY_EDIT,
    record=_event_insert("t", before=_snapshot_sql("t", "SELECT id FROM previous", "SELECT id FROM following"), after="NULL"),
    undone=_undone_sql("removed"),
    bump=_bump_sql("removed"),
)

# New code for a cell: the row (status stale), its history event (or, for the same person's
# edit of the same cell within EDIT_COALESCE_SECONDS, the previous event's `after` moved on:
# models.NotebookEventQuerySet.record, in SQL) and the bump, when the code differs.
_UPDATE_SQL = edit_sql(
    """WITH
target AS (
    SELECT {cell.id}, {cell.code}, {cell.result_variable} FROM {cell}
    WHERE {cell.notebook} = %(notebook)s AND {cell.id} = %(cell)s AND {may_edit}
),
changed AS (
    UPDATE {cell} SET {cell.code} = %(code)s, {cell.status} = %(stale)s, {cell.updated_at} = %(now)s
    WHERE {cell.id} IN (SELECT {cell.id} FROM target WHERE {cell.code} IS DISTINCT FROM %(code)s)
    RETURNING {cell.id}
),
coalesced AS (
    UPDATE {event} SET {event.after} = jsonb_build_object('code', %(code)s::text, 'resultVariable', (SELECT {cell.result_variable} FROM target))
    WHERE {event.id} = (SELECT {event.id} FROM {event} WHERE {event.notebook} = %(notebook)s ORDER BY {event.id} DESC LIMIT 1)
      AND EXISTS (SELECT 1 FROM changed) AND %(reverts)s::bigint IS NULL
      AND {event.kind} = %(kind)s AND {event.user} = %(user)s AND {event.cell_id} = %(cell)s AND {event.created_at} > %(recent)s
      AND NOT {event.is_undo} AND NOT {event.reverted} AND {event.reverts} IS NULL
    RETURNING {event.id}
),
recorded AS (
    {record}
    FROM target t, changed WHERE NOT EXISTS (SELECT 1 FROM coalesced)
),
{undone},
{bump}
SELECT EXISTS (SELECT 1 FROM target), (SELECT {cell.result_variable} FROM target), EXISTS (SELECT 1 FROM changed),
       COALESCE((SELECT {notebook.revision} FROM bumped), (SELECT {notebook.revision} FROM {notebook} WHERE {notebook.id} = %(notebook)s))""",
    may_edit=_MAY_EDIT,
    record=_event_insert(
        "t",
        before=f"jsonb_build_object('code', t.{_N['cell'].code}, 'resultVariable', t.{_N['cell'].result_variable})",
        after=f"jsonb_build_object('code', %(code)s::text, 'resultVariable', t.{_N['cell'].result_variable})",
    ),
    undone=_undone_sql("target"),  # an undone edit whose text is already back is undone all the same
    bump=_bump_sql("changed"),
)

# A cell put just after another (or first): placed as _position_after / _position_at_top place it
# (halfway to the next cell, the moved one included; NULL when there is no room: run_change
# spreads the positions and runs it again), its event (the cell it followed, the one it follows
# now) and the bump.
_MOVE_SQL = edit_sql(
    """WITH
target AS (
    SELECT {cell.id}, {cell.position} FROM {cell}
    WHERE {cell.notebook} = %(notebook)s AND {cell.id} = %(cell)s AND {may_edit}
),
after_cell AS (
    SELECT {cell.position} AS position FROM {cell} WHERE {cell.notebook} = %(notebook)s AND {cell.id} = %(after)s
),
was_after AS (
    SELECT c.{cell.id} AS id FROM {cell} c, target t
    WHERE c.{cell.notebook} = %(notebook)s AND c.{cell.position} < t.{cell.position} ORDER BY c.{cell.position} DESC LIMIT 1
),
next_position AS (
    SELECT min(c.{cell.position}) AS position FROM {cell} c
    WHERE c.{cell.notebook} = %(notebook)s AND (%(after)s::uuid IS NULL OR c.{cell.position} > (SELECT position FROM after_cell))
),
placed AS (
    SELECT CASE
        WHEN %(after)s::uuid IS NULL THEN CASE WHEN n.position IS NULL THEN %(step)s WHEN n.position >= 2 THEN n.position / 2 END
        WHEN n.position IS NULL THEN a.position + %(step)s
        WHEN n.position - a.position >= 2 THEN (a.position + n.position) / 2
    END AS position
    FROM next_position n LEFT JOIN after_cell a ON true
    WHERE %(after)s::uuid IS NULL OR a.position IS NOT NULL
),
moved AS (
    UPDATE {cell} SET {cell.position} = (SELECT position FROM placed)
    WHERE {cell.id} IN (SELECT {cell.id} FROM target) AND (SELECT position FROM placed) IS NOT NULL
      AND %(after)s::uuid IS DISTINCT FROM %(cell)s::uuid
    RETURNING {cell.id}, {cell.position}
),
recorded AS (
    {record}
    FROM moved t
),
{undone},
{bump}
SELECT EXISTS (SELECT 1 FROM target), %(after)s::uuid IS NULL OR EXISTS (SELECT 1 FROM after_cell),
       (SELECT {cell.position} FROM moved), (SELECT {notebook.revision} FROM bumped)""",
    may_edit=_MAY_EDIT,
    record=_event_insert("t", before="jsonb_build_object('after', (SELECT id FROM was_after)::text)", after="jsonb_build_object('after', %(after_text)s::text)"),
    undone=_undone_sql("moved"),
    bump=_bump_sql("moved"),
)

_EDIT_ROLES = [role for role, actions in permissions.ALLOWED.items() if EDIT in actions and role != ROLE_OWNER]


def as_uuid(value):
    try:
        return uuid.UUID(str(value)) if value else None
    except ValueError:
        return None


def edit_statements(notebook_id, user, change):
    """A change's statements, (sql, params) each, to run in order outside a transaction: BEGIN,
    the lock timeout, the notebook's lock, the change's statement (which re-checks `_MAY_EDIT`),
    COMMIT. The answer's rows go to edit_row. Refusals (not_found / forbidden) are raised here."""
    notebook = as_uuid(notebook_id)
    if notebook is None or user is None or not user.is_authenticated:
        permissions_refusal(None)
    params = {**change.params, "notebook": notebook, "user": user.pk, "roles": _EDIT_ROLES, "decided_at": change.decided_at}
    lock_params = {"notebook": notebook, "user": user.pk}
    return [("BEGIN", None), (f"SET LOCAL lock_timeout = {int(LOCK_TIMEOUT_MS)}", None), (_LOCK_SQL, lock_params), (change.sql, params), ("COMMIT", None)]


def edit_row(user, rows, change):
    """The change's row of an edit_statements answer (each statement's first row), the caller's
    right to edit checked (refused: nothing was written, the statement re-checked it); None when
    the change was decided at a revision the notebook has left (`decided_at`: nothing was written,
    the statement re-checked that too)."""
    lock_row, row = rows[2:4]
    _check_edit(user, lock_row)
    if change.decided_at is not None and lock_row[2] != change.decided_at:
        return None
    return row


def run_change(notebook_id, user, change):
    """A NewCell, GoneCell, EditedCell or MovedCell made on this thread through Django's
    connection (PostgreSQL), then its kernel message sent (on commit). Outside a transaction, in
    one round trip; inside one (undo, restore), or when the change needs Python between the lock
    and its statement (a SQL cell's result variable, positions to spread), a statement at a time.
    Decided with the notebook locked (no `decided_at`: that is the edit lane's)."""
    if not connection.in_atomic_block and not change.prepares:
        if change.made(edit_row(user, _one_round_trip(edit_statements(notebook_id, user, change)), change)):
            kernel_client.send_on_commit(notebook_id, change.message, announce=change.early)  # outside a transaction: sent now, it has committed
            return
    _, timeout, lock, _, _ = edit_statements(notebook_id, user, change)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(*timeout)
        cursor.execute(*lock)
        _check_edit(user, cursor.fetchone())
        change.prepare(notebook_id)
        statement = edit_statements(notebook_id, user, change)[3]  # with what prepare() chose
        cursor.execute(*statement)
        if not change.made(cursor.fetchone()):
            # No room between the neighbours: the positions are spread, and then there is.
            change.positions = _renumber(notebook_id)
            cursor.execute(*statement)
            change.made(cursor.fetchone())
        kernel_client.send_on_commit(notebook_id, change.message, announce=change.early)


def _one_round_trip(statements):
    """`statements` (sql, params) pipelined: sent together, answered together; each one's first
    row (or None). On an error the transaction the pipeline opened is rolled back."""
    import psycopg

    connection.ensure_connection()
    raw = connection.connection
    try:
        with connection.wrap_database_errors:
            cursors = []
            with raw.pipeline():
                for sql, params in statements:
                    cursor = psycopg.Cursor(raw)  # server-side binding: the extended protocol a pipeline needs
                    # Prepared once per pooled connection (settings.py, prepare_threshold):
                    # planning the edit's CTEs cost more than running them.
                    cursor.execute(sql, params, prepare=True if params is not None else None)
                    cursors.append(cursor)
            rows = [cursor.fetchone() if cursor.description else None for cursor in cursors]
            for cursor in cursors:
                cursor.close()
            return rows
    except BaseException:
        if raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            try:
                raw.execute("ROLLBACK")
            except Exception:
                pass  # a broken connection: the pool discards it
        raise


def permissions_refusal(role):
    try:
        permissions.check(role, EDIT)
    except PermissionDenied as exc:
        raise OperationError(exc.code, exc.message) from None


def _check_edit(user, lock_row):
    role = None
    if lock_row is not None:
        owner_id, member_role = lock_row[:2]
        role = ROLE_OWNER if owner_id == user.pk else member_role
    if not permissions.may(role, EDIT):
        permissions_refusal(role)


# A cell created or edited with more code than this (a paste, an import) is announced by the
# worker only: an early announcement carries the code (a new cell's twice: text and shared text)
# beside the worker's own, to every socket.
EARLY_CODE_LIMIT = 16 * 1024


class NewCell:
    """A new cell: its statement's parameters, then, from the statement's row, the cell and
    what the kernel and the sockets are told. Run on the ORM thread (add_cell) or on the event
    loop (edit_lane.py, which takes only those that need nothing between the lock and the
    statement: `on_the_lane`). history.restored makes one with the deleted cell's id and
    fields (`kind` restored, `run`: the kernel runs it and what failed without it)."""

    decided_at = None  # the revision it was decided at, when before the lock (edit_row)

    @property
    def sql(self):
        return _CREATE_SQL  # looked up when used: bench/history.py swaps it to time the log

    def __init__(self, notebook_id, *, cell_type=CELL_PYTHON, after_cell_id=None, before_cell_id=None, code="", request_id=None, revert=None, cell_id=None, result_variable="", kind=EVENT_CREATED, run=False):
        reverts, is_undo = revert or (None, False)
        self.notebook_id, self.cell_type, self.code, self.request_id, self.revert = notebook_id, cell_type, code, request_id, revert
        self.result_variable, self.kind, self.run = result_variable or "", kind, run
        self.cell_id, self.now = as_uuid(cell_id) or uuid.uuid4(), timezone.now()
        # The cell's shared text is made here, stored with the row and announced with it: the
        # kernel adopts this very document (kernel/session.py, on_create_cell).
        self.ydoc = new_state(code)
        self.after, self.before = as_uuid(after_cell_id), as_uuid(before_cell_id)  # unknown or not an id: appended
        self.params = {
            "after": self.after,
            "before": self.before,
            "step": POSITION_STEP,
            "cell": self.cell_id,
            "type": cell_type,
            "code": code,
            "result_variable": self.result_variable,
            "status": STATUS_IDLE,
            "now": self.now,
            "kind": kind,
            "reverts": getattr(reverts, "pk", reverts),
            "is_undo": is_undo,
            "ydoc": self.ydoc,
            "ydoc_key": code_key(code),
        }
        # A SQL cell's result variable is chosen with the notebook locked (prepare).
        self.prepares = cell_type == CELL_SQL and not self.result_variable
        self.position = self.positions = self.message = self.early = None

    @property
    def on_the_lane(self):
        """Whether the event loop takes it (edit_lane.py): what is announced early (made()). A
        restored cell is, wherever its snapshot places it."""
        if self.kind == EVENT_RESTORED:
            return not self.prepares
        return not self.prepares and self.before is None and self.kind == EVENT_CREATED and not self.run

    def prepare(self, notebook_id):
        """Work done with the notebook locked, before the statement (run_change)."""
        if self.prepares:
            self.result_variable = self.params["result_variable"] = default_result_variable(Notebook(pk=notebook_id))

    def made(self, row):
        """From the statement's row: False when nothing was written (the neighbours are too
        close: the notebook's positions must be spread first, which run_change does)."""
        position, revision, index = row
        if position is None:
            return False
        self.position = position
        ydoc_b64 = base64.b64encode(self.ydoc).decode("ascii")
        fields = cell_message(self.cell_id, self.cell_type, self.code, self.result_variable)
        self.message = {"type": "kernel.create_cell", "notebook": str(self.notebook_id), "revision": revision, "requestId": self.request_id, "cell": fields, "position": position, "positions": self.positions, "ydoc": ydoc_b64}
        if self.run:
            self.message["run"] = True
        if self.on_the_lane and self.positions is None and len(self.code) <= EARLY_CODE_LIMIT:
            self.early = {"type": "cell_created", "cellId": str(self.cell_id), "cell": {**fields, "ydoc": ydoc_b64, "ygen": 0}, "index": index, "revision": revision, "requestId": self.request_id, "early": True}
        return True

    def cell(self):
        """The cell made (after made()), as the row the INSERT wrote, for add_cell's callers."""
        cell = Cell(
            id=self.cell_id,
            notebook_id=self.notebook_id,
            position=self.position,
            type=self.cell_type,
            code=self.code,
            result_variable=self.result_variable,
            status=STATUS_IDLE,
            ydoc=self.ydoc,
            ydoc_key=self.params["ydoc_key"],
            created_at=self.now,
            updated_at=self.now,
        )
        cell._state.adding = False
        cell._state.db = DEFAULT_DB_ALIAS
        return cell


class _OneStatement:
    """A change that is one statement after the lock with nothing to prepare between them
    (GoneCell, EditedCell, MovedCell): the edit lane takes it."""

    prepares = False
    on_the_lane = True
    early = None
    decided_at = None  # as NewCell's
    statement = None  # the name of its SQL in this module, looked up when used (as NewCell.sql)

    @property
    def sql(self):
        return globals()[self.statement]

    def prepare(self, notebook_id):
        pass


class GoneCell(_OneStatement):
    """A deleted cell (the lock, then snapshot + event + delete + bump in one statement), as
    NewCell."""

    statement = "_DELETE_SQL"

    def __init__(self, notebook_id, *, cell_id, request_id=None, revert=None):
        reverts, is_undo = revert or (None, False)
        self.notebook_id, self.cell_id, self.request_id, self.revert = notebook_id, cell_id, request_id, revert
        self.key = as_uuid(cell_id)
        self.params = {"cell": self.key, "now": timezone.now(), "kind": EVENT_DELETED, "reverts": getattr(reverts, "pk", reverts), "is_undo": is_undo}
        self.message = self.early = None

    def made(self, row):
        (revision,) = row
        if self.key is None or revision is None:
            raise OperationError("unknown_cell", f"There is no cell {self.cell_id} in this notebook.")
        self.message = {"type": "kernel.delete_cell", "notebook": str(self.notebook_id), "revision": revision, "requestId": self.request_id, "cellId": str(self.cell_id)}
        self.early = {"type": "cell_deleted", "cellId": str(self.cell_id), "revision": revision, "requestId": self.request_id, "early": True}
        return True


class EditedCell(_OneStatement):
    """New code for a cell (the lock, then row + event + bump in one statement: _UPDATE_SQL), as
    NewCell. Announced early when the code changed (docs/protocol.md, "Early announcements"):
    the code at its revision, without the analysis or the statuses (the kernel's `cell_updated`
    and `cell_status` bring them) and without touching the shared text, which only the kernel edits
    (its document holds typing the database may not have yet: kernel/cell_texts.py replaces
    the text and relays the update). A SQL cell's new result variable, and SQLite, take
    update_cell's ORM path."""

    statement = "_UPDATE_SQL"

    def __init__(self, notebook_id, *, cell_id, code, request_id=None, revert=None):
        reverts, is_undo = revert or (None, False)
        self.notebook_id, self.cell_id, self.code, self.request_id, self.revert = notebook_id, cell_id, code, request_id, revert
        self.key = as_uuid(cell_id)
        now = timezone.now()
        self.params = {
            "cell": self.key,
            "code": code,
            "stale": STATUS_STALE,
            "now": now,
            "recent": now - datetime.timedelta(seconds=EDIT_COALESCE_SECONDS),
            "kind": EVENT_EDITED,
            "reverts": getattr(reverts, "pk", reverts),
            "is_undo": is_undo,
        }
        self.message = self.result_variable = None

    def made(self, row):
        found, self.result_variable, changed, revision = row
        if self.key is None or not found:
            raise OperationError("unknown_cell", f"There is no cell {self.cell_id} in this notebook.")
        self.message = {
            "type": "kernel.update_cell",
            "notebook": str(self.notebook_id),
            "revision": revision,
            "requestId": self.request_id,
            "cellId": str(self.key),
            "code": self.code,
            "resultVariable": self.result_variable,
            "changed": changed,
        }
        if changed and len(self.code) <= EARLY_CODE_LIMIT:
            self.early = {"type": "cell_updated", "cellId": str(self.key), "code": self.code, "resultVariable": self.result_variable, "revision": revision, "requestId": self.request_id, "early": True}
        return True


class MovedCell(_OneStatement):
    """A cell put just after another one (the lock, then placement + event + bump in one
    statement: _MOVE_SQL), as NewCell. Announced early by the cell it now follows (`after`, null
    for the top): a page places it there in its own order, which may still lack changes in
    `seq` order that the committed `index` counts."""

    statement = "_MOVE_SQL"

    def __init__(self, notebook_id, *, cell_id, after_cell_id, request_id=None, revert=None):
        reverts, is_undo = revert or (None, False)
        self.notebook_id, self.cell_id, self.after_cell_id, self.request_id = notebook_id, cell_id, after_cell_id, request_id
        self.key, self.after = as_uuid(cell_id), as_uuid(after_cell_id)
        self.params = {
            "cell": self.key,
            "after": self.after,
            "after_text": str(after_cell_id) if after_cell_id else None,
            "step": POSITION_STEP,
            "now": timezone.now(),
            "kind": EVENT_MOVED,
            "reverts": getattr(reverts, "pk", reverts),
            "is_undo": is_undo,
        }
        self.positions = self.position = self.message = None

    def made(self, row):
        """False when there was no room (positions to spread first: run_change)."""
        found, after_found, position, revision = row
        if self.key is None or not found:
            raise OperationError("unknown_cell", f"There is no cell {self.cell_id} in this notebook.")
        if self.after_cell_id is not None and str(self.after_cell_id) == str(self.cell_id):
            raise OperationError("invalid_field", "A cell cannot be moved after itself.")
        if self.after_cell_id is not None and (self.after is None or not after_found):
            raise OperationError("unknown_cell", f"There is no cell {self.after_cell_id} in this notebook.")
        if position is None:
            return False
        self.position = position
        self.message = {"type": "kernel.move_cell", "notebook": str(self.notebook_id), "revision": revision, "requestId": self.request_id, "cellId": str(self.key), "position": position, "positions": self.positions}
        self.early = {"type": "cell_moved", "cellId": str(self.key), "after": str(self.after) if self.after else None, "revision": revision, "requestId": self.request_id, "early": True}
        return True


def _add_cell_portable(notebook_id, user, new):
    """add_cell through the ORM (SQLite): the placement of move_cell, then the row, its event and
    the bump; the kernel message is NewCell's, without an early announcement."""
    with transaction.atomic():
        notebook = lock_notebook(notebook_id, user)
        new.prepare(notebook.pk)
        if new.after and notebook.cells.filter(pk=new.after).exists():
            position, new.positions = _position_after(notebook, new.after)
        elif new.before:
            position, new.positions = _position_before(notebook, new.before)
        else:
            position, new.positions = _position_after(notebook, None)
        new.position = position
        cell = new.cell()
        cell._state.adding = True
        cell.save(force_insert=True)
        record_event(notebook, user, new.kind, cell_id=cell.pk, after=cell_snapshot(notebook, cell), revert=new.revert)
        new.made((position, bump_revision(notebook), 0))
        kernel_client.send_on_commit(notebook.pk, new.message)
    return cell


def _delete_cell_portable(notebook_id, user, gone):
    """delete_cell through the ORM (SQLite); the kernel message is GoneCell's, without an early
    announcement."""
    with transaction.atomic():
        notebook = lock_notebook(notebook_id, user)
        cell = _get_cell(notebook, gone.cell_id)
        record_event(notebook, user, EVENT_DELETED, cell_id=cell.pk, before=cell_snapshot(notebook, cell), revert=gone.revert)
        cell.delete()
        gone.made((bump_revision(notebook),))
        kernel_client.send_on_commit(notebook.pk, gone.message)


def set_egress_allowlist(notebook_id, user, *, allowlist):
    """The owner's egress allowlist (kernel/egress.py): where the notebook's cells may connect
    when the server gives notebooks outbound network. Stored, in the history, and the kernel
    restarts the execution process on it."""
    from .kernel.egress import AllowlistError, parse_allowlist

    try:
        allowlist = parse_allowlist(allowlist)
    except AllowlistError as exc:
        raise OperationError("invalid_field", f"{exc}.") from None
    return _set_owned_setting(notebook_id, user, field="egress_allowlist", value=allowlist, event=EVENT_EGRESS, kind="egress")
