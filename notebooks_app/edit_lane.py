"""create_cell, delete_cell, update_cell, move_cell, restore_cell, undo and redo on the event loop: the
edit lane (docs/performance.md, "Edits").

On PostgreSQL each is one pipeline of SQL (operations.NewCell / GoneCell / EditedCell / MovedCell and
operations.edit_statements); a restore, an undo and a redo first read what they depend on (one
statement, history.read_statement), then write their change in that pipeline, which changes
nothing if the notebook has moved past the revision they read (operations.edit_row). Through
database_sync_to_async that pipeline crosses to the ORM thread and back: two thread wake-ups per edit, ~0.6 ms each on a 2-core VM, a quarter of the edit's hops. Here the same statements go
over an asyncio psycopg connection of the event loop's own, then the kernel's message and the
early announcement leave from the loop as before (kernel_client.send_then_announce).

One connection per event loop. The consumer runs a process's operations one at a time
(`in_order`), the lane's and the ORM thread's alike, as the one ORM thread always did: each
commits, then sends the kernel its message, so the kernel gets a process's edits in the order of
their revisions (a message that skips a revision makes the kernel reload the notebook and
resync every page). Whatever the lane cannot do (SQLite; a change that needs Python between the
lock and its statement or is not announced early: a SQL cell, a new cell placed above another,
positions to spread, `NewCell.on_the_lane`; a SQL cell's result variable; a restore, undo or redo
that is refused, or whose notebook changed between its read and its lock) returns False with
nothing written, and the thread does it (operations.run_change, history.py: the same statements,
decided with the notebook locked).

The connection is checked as the pool's are (notebookproject/db_pool.py): replaced when its
socket shows the server closed it, checked with a round trip after a rest. Errors are Django's
(the consumer tells them apart as for the ORM path): a refused or lost connection is
`OperationalError`, a lock wait over the timeout too (then `busy`).
"""
import asyncio
import time
import weakref

import psycopg
from django.conf import settings
from django.db import connections

from notebookproject import db_pool

from . import history, kernel_client, operations
from .operations import OperationError

_lanes = weakref.WeakKeyDictionary()  # event loop -> _Lane
_order_locks = weakref.WeakKeyDictionary()  # event loop -> asyncio.Lock
_params = None  # the connection's parameters, Django's (_connect_params)


def in_order():
    """The lock a process's operations take one at a time (see above)."""
    loop = asyncio.get_running_loop()
    lock = _order_locks.get(loop)
    if lock is None:
        lock = _order_locks[loop] = asyncio.Lock()
    return lock


def enabled():
    return settings.EDIT_LANE and connections["default"].vendor == "postgresql"


class _Lane:
    """An event loop's connection, (re)made on demand and checked before each use."""

    def __init__(self):
        self.conn = None
        self.rested_since = 0.0

    async def connection(self):
        if self.conn is not None and db_pool.unusable(self.conn):
            await self.drop()
        if self.conn is not None and time.monotonic() - self.rested_since > db_pool.FULL_CHECK_AFTER:
            try:
                await self.conn.execute("")  # the round trip a rested connection gets
            except psycopg.Error:
                await self.drop()
        if self.conn is None:
            self.conn = await psycopg.AsyncConnection.connect(**_connect_params())
        return self.conn

    async def drop(self):
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                await conn.close()
            except psycopg.Error:
                pass


def _connect_params():
    """Django's connection parameters for the default database, for an asyncio connection."""
    global _params
    if _params is None:
        params = connections["default"].get_connection_params()
        params.pop("cursor_factory", None)  # Django's is a sync cursor
        params["autocommit"] = True
        params.setdefault("connect_timeout", max(1, int(settings.DATABASES["default"]["OPTIONS"].get("pool", {}).get("timeout", 5))))
        _params = params
    return _params


async def _run(statements):
    """The pipeline's rows (each statement's first row or None). The caller holds in_order(), so
    the loop's connection serves one edit at a time."""
    loop = asyncio.get_running_loop()
    lane = _lanes.get(loop)
    if lane is None:
        lane = _lanes[loop] = _Lane()
    try:
        with connections["default"].wrap_database_errors:  # psycopg's errors as Django's
            conn = await lane.connection()
            try:
                cursors = []
                async with conn.pipeline():
                    for sql, params in statements:
                        cursor = conn.cursor()
                        await cursor.execute(sql, params, prepare=True if params is not None else None)
                        cursors.append(cursor)
                rows = [await cursor.fetchone() if cursor.description else None for cursor in cursors]
                for cursor in cursors:
                    await cursor.close()
                return rows
            except BaseException:
                if conn.broken or conn.closed:
                    await lane.drop()
                elif conn.pgconn.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    try:
                        await conn.execute("ROLLBACK")
                    except psycopg.Error:
                        await lane.drop()
                raise
    finally:
        lane.rested_since = time.monotonic()


async def _edit(notebook_id, user, change):
    """`change` (an operations.NewCell, GoneCell, EditedCell or MovedCell) over the loop's connection, then its kernel
    message and early announcement; False when it needs the ORM thread after all (nothing was
    written)."""
    if not enabled() or not change.on_the_lane:
        return False
    rows = await _run(operations.edit_statements(notebook_id, user, change))
    row = operations.edit_row(user, rows, change)
    if row is None or not change.made(row):
        return False
    await kernel_client.send_committed(notebook_id, change.message, change.early)
    return True


async def create_cell(notebook_id, user, *, cell_type, after_cell_id=None, before_cell_id=None, code="", request_id=None):
    """operations.create_cell on the lane; False when it must take the ORM thread instead."""
    new = operations.NewCell(notebook_id, cell_type=cell_type, after_cell_id=after_cell_id, before_cell_id=before_cell_id, code=code, request_id=request_id)
    return await _edit(notebook_id, user, new)


async def delete_cell(notebook_id, user, *, cell_id, request_id=None):
    """operations.delete_cell on the lane; False when it must take the ORM thread instead."""
    return await _edit(notebook_id, user, operations.GoneCell(notebook_id, cell_id=cell_id, request_id=request_id))


async def update_cell(notebook_id, user, *, cell_id, code=None, result_variable=None, request_id=None):
    """operations.update_cell on the lane (new code); False when it must take the ORM thread
    instead (a SQL cell's result variable)."""
    if code is None or result_variable is not None:
        return False
    return await _edit(notebook_id, user, operations.EditedCell(notebook_id, cell_id=cell_id, code=code, request_id=request_id))


async def move_cell(notebook_id, user, *, cell_id, after_cell_id, request_id=None):
    """operations.move_cell on the lane; False when it must take the ORM thread instead (no
    room between the neighbours: positions to spread)."""
    return await _edit(notebook_id, user, operations.MovedCell(notebook_id, cell_id=cell_id, after_cell_id=after_cell_id, request_id=request_id))


async def restore_cell(notebook_id, user, *, cell_id, request_id=None):
    """history.restore_cell on the lane (announced early, as a create); False when it must take
    the ORM thread instead (refused: the thread says why)."""
    if not enabled() or operations.as_uuid(cell_id) is None:
        return False
    facts = await _facts(notebook_id, user, cell_id=cell_id)
    if facts is None:
        return False
    try:
        snapshot = history.restorable(cell_id, present=facts.cell is not None, deleted=facts.deleted)
    except OperationError:
        return False
    return await _edit_as_read(notebook_id, user, history.restored(notebook_id, cell_id, snapshot, request_id=request_id), facts)


async def undo(notebook_id, user, *, request_id=None):
    """history.undo on the lane: the inverse of the sender's newest change (a delete, a restore,
    a move back, the text before an edit), the undone event marked in the same statement; False
    when it must take the ORM thread instead (nothing to undo, a conflict, a SQL cell's result
    variable)."""
    return await _revert(notebook_id, user, request_id=request_id, redo=False)


async def redo(notebook_id, user, *, request_id=None):
    """history.redo on the lane: the sender's newest undo made again (its inverse), the undo
    marked redone in the same statement; False as for undo."""
    return await _revert(notebook_id, user, request_id=request_id, redo=True)


async def _revert(notebook_id, user, *, request_id, redo):
    """The inverse of the event an undo (or a redo) targets, decided from one read."""
    if not enabled():
        return False
    facts = await _facts(notebook_id, user, redo=redo)
    if facts is None or facts.target is None:
        return False
    try:
        change = history.inverse_change(notebook_id, facts, request_id=request_id, redo=redo)
    except OperationError:
        return False
    return change is not None and await _edit_as_read(notebook_id, user, change, facts)


async def _facts(notebook_id, user, *, cell_id=None, redo=False):
    """history.Facts, read in one statement outside a transaction (None: no such notebook)."""
    (row,) = await _run([history.read_statement(notebook_id, user, cell_id=cell_id, redo=redo)])
    return history.facts_from_row(row)


async def _edit_as_read(notebook_id, user, change, facts):
    """_edit for a change decided from `facts`: written only at the revision they were read at."""
    change.decided_at = facts.revision
    return await _edit(notebook_id, user, change)


async def close():
    """Close this event loop's connection (tests; a process's loop keeps its own until exit)."""
    lane = _lanes.pop(asyncio.get_running_loop(), None)
    if lane is not None:
        await lane.drop()
