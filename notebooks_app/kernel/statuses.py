"""Cell statuses as clients see them: a status set on a cell is marked for persisting and
announced (`cell_status`), results made out of date turn `stale`, the graph's blocked set becomes
`blocked` statuses, a finished run is announced, and a lost namespace (`kernel_restarted`) turns
every result that lived in it stale.

It changes cells and announces; it must not run anything, touch the store, or decide what runs.
"""
from ..constants import STATUS_BLOCKED, STATUS_IDLE, STATUS_STALE, STATUS_SUCCESS, STATUS_ERROR
from .cell_state import TRANSIENT
from .outputs import bounded_error


class CellStatuses:
    def __init__(self, *, model, events, persister):
        self.model = model
        self.events = events
        self.persister = persister

    def set(self, cell, status, *, emit=True):
        cell.status = status
        if status not in TRANSIENT:
            self.persister.dirty.add(cell.id)
        if not emit:
            return
        if status in (STATUS_BLOCKED, STATUS_STALE):
            self.events.emit({"type": "cell_status", "cellId": cell.id, "status": status, "error": cell.error})
        else:
            # The hot path of a cascade (queued, running, success, error): encoded from a template.
            self.events.emit_status(cell, status, cell.run_by if status in TRANSIENT else "")

    def mark_stale(self, cell_ids):
        """Results of `cell_ids` are out of date.  A cell that has none (never run, `idle`)
        stays `idle`; a crashed cell keeps its `KernelDied` error."""
        model = self.model
        # In notebook order, so every client sees the statuses change top to bottom.
        for cell_id in model.in_order(cell_ids):
            cell = model.cells.get(cell_id)
            model.ran_ok.discard(cell_id)
            if cell is None or cell.status in (STATUS_BLOCKED, STATUS_STALE, STATUS_IDLE):
                continue
            if cell_id in model.crashed:
                continue
            self.set(cell, STATUS_STALE)

    def refresh_blocked(self, emit=True):
        """Bring cell statuses in line with the graph's blocked set.

        Returns (newly blocked ids, newly unblocked ids); the caller removes the names of
        newly blocked cells from the execution process."""
        model = self.model
        block, unblock = model.blocked_changes()
        newly_blocked, unblocked = [], []
        for cell, error in block:
            if cell.status != STATUS_BLOCKED:
                newly_blocked.append(cell.id)
            # A blocked cell shows no results of older code (clients clear them too).
            cell.error, cell.outputs, cell.stdout = error, [], ""
            model.ran_ok.discard(cell.id)
            model.unblocked.discard(cell.id)
            self.set(cell, STATUS_BLOCKED, emit=emit)
        for cell in unblock:
            cell.error = None
            self.set(cell, STATUS_STALE, emit=emit)
            unblocked.append(cell.id)
            model.unblocked.add(cell.id)
        return newly_blocked, unblocked

    def finish(self, cell, status, outputs, error):
        """Announce a finished run's outputs, error and final status."""
        cell.outputs, cell.error = outputs, bounded_error(error)
        error = cell.error
        if outputs:
            self.events.emit({"type": "cell_output", "cellId": cell.id, "outputs": outputs})
        if error is not None:
            self.events.emit({"type": "cell_error", "cellId": cell.id, "error": error})
        if status == STATUS_SUCCESS:
            self.model.ran_ok.add(cell.id)
        else:
            self.model.ran_ok.discard(cell.id)
        self.set(cell, status)

    def namespace_gone(self, reason, *, except_cell=None, cause=None):
        """The execution process is gone (died, or stopped): every result that lived in its
        namespace is stale, and clients hear why (`kernel_restarted`; `cause` for the
        lifecycle's stops, lifecycle.py, whose `reason` is a sentence of its own)."""
        self.model.ran_ok.clear()
        self.events.emit({"type": "kernel_restarted", "reason": reason, **({"cause": cause} if cause else {})})
        for cell in self.model.ordered_cells():
            if cell.id != except_cell and cell.status in (STATUS_SUCCESS, STATUS_ERROR):
                self.set(cell, STATUS_STALE)
