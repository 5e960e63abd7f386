"""Runs asked for over the API, each a `NotebookRun` row with an id (docs/api.md#runs).

A run without parameters (`queue_run`) is what the page's Run button does: a cell, or every cell,
on the notebook's shared kernel, checked by operations.check_kernel_command and queued to the
kernel worker with the very message the consumer sends (kernel_client.command_message), which
also carries the run's id. Its results reach every open page and the notebook as any run's do,
and the session keeps its row (`kind: shared`: kernel/shared_runs.py).

A run with parameters (`start_copy_run`, `kind: copy`): its parameters are checked against the
notebook's named inputs (kernel/parameters.py) before the row is written, then `kernel.run_copy`
goes to the notebook's kernel channel, and the worker that owns the notebook carries it out in a
process of its own (kernel/copy_runs.py), writing the row.

`cancel_run` ends a queued or running run of either kind: its row says `cancelled` at once, and
the worker is told (`kernel.cancel_run`), which stops the copy's process or interrupts the shared
run's cascade as Stop does.
"""
import logging
from dataclasses import dataclass

from asgiref.sync import async_to_sync
from django.utils import timezone

from .. import kernel_client, operations, permissions, protocol, run_store
from ..constants import RUN_CANCELLED, RUN_KIND_COPY, RUN_KIND_SHARED, RUN_QUEUED, RUN_RUNNING, RUN_SOURCE_API
from ..kernel.copy_runs import CANCEL_RUN
from ..kernel.parameters import InvalidParameters, resolve
from ..layers import REDIS_ERRORS
from ..models import Notebook, NotebookRun

logger = logging.getLogger(__name__)

RUN_CELL = "run_cell"
RUN_ALL = "run_all"


@dataclass(frozen=True)
class QueuedRun:
    kind: str  # RUN_CELL or RUN_ALL
    notebook_id: str
    cell_id: str | None
    request_id: str  # the requestId of the events the run causes
    revision: int  # the notebook's revision the run was queued at
    run: NotebookRun  # its row (kind shared)

    def describe(self):
        return {"queued": self.kind, "notebookId": self.notebook_id, "cellId": self.cell_id, "requestId": self.request_id, "revision": self.revision}


def queue_run(notebook_id, user, *, cell_id=None, request_id, source=RUN_SOURCE_API):
    """Check that `user` may run the notebook (and that the cell is there), record the run
    (`queued`, kind shared), then queue it with its id; OperationError (not_found, forbidden,
    unknown_cell) as for the WebSocket's run_cell, and then nothing is written. Redis out of
    reach: the row says the run never started (run_store.send)."""
    kind = RUN_CELL if cell_id else RUN_ALL
    revision = operations.check_kernel_command(notebook_id, user, cell_id=cell_id)
    run = NotebookRun.objects.create(notebook_id=notebook_id, started_by=user, source=source, kind=RUN_KIND_SHARED)
    message = kernel_client.command_message(notebook_id, kind, revision=revision, request_id=request_id, cell_id=cell_id, by=user.get_username())
    run_store.send(run, {**message, "run": str(run.pk)})
    return QueuedRun(kind=kind, notebook_id=str(notebook_id), cell_id=cell_id, request_id=request_id, revision=revision, run=run)


def start_copy_run(notebook_id, user, *, parameters, source=RUN_SOURCE_API):
    """A run of the whole notebook with `parameters` ({input name: value}) in a process of its
    own: checked (OperationError not_found / forbidden as for run_all; invalid_field for a
    parameter that is no named input or a value that does not fit it, and then nothing is
    written), recorded `queued`, and sent to the notebook's kernel worker. The NotebookRun."""
    notebook = operations.get_notebook(Notebook.objects.only("id", "owner_id"), notebook_id, user, action=permissions.EDIT)
    try:
        resolve(notebook.named_inputs(), parameters)
    except InvalidParameters as exc:
        raise operations.OperationError(protocol.INVALID_FIELD, f"parameters: {exc}.") from None
    run = NotebookRun.objects.create(notebook=notebook, started_by=user, source=source, kind=RUN_KIND_COPY, parameters=parameters)
    run_store.send_run(run)
    return run


def visible_run(run_id, user, *, action=permissions.VIEW):
    """The run if `user` may do `action` on its notebook (a run of a notebook one cannot see is
    not_found, as the notebook is)."""
    run = NotebookRun.objects.select_related("notebook", "started_by").filter(pk=run_id).first()
    if run is None:
        raise operations.OperationError(protocol.NOT_FOUND, "No run here.")
    operations.get_notebook(Notebook.objects.only("id", "owner_id"), run.notebook_id, user, action=action)
    return run


def cancel_run(run_id, user):
    """An editor stops a run: a queued one never starts, a running one's process is stopped or,
    on the shared kernel, its cascade interrupted (its worker is told); one that has ended stays
    as it ended. The run as it is now."""
    run = visible_run(run_id, user, action=permissions.EDIT)
    ended = NotebookRun.objects.filter(pk=run.pk, status__in=[RUN_QUEUED, RUN_RUNNING]).update(
        status=RUN_CANCELLED, error=f"Cancelled by {user.get_username()}.", finished_at=timezone.now()
    )
    if ended:
        try:
            async_to_sync(kernel_client.send)(run.notebook_id, {"type": CANCEL_RUN, "notebook": str(run.notebook_id), "run": str(run.pk)})
        except REDIS_ERRORS as exc:  # the row says cancelled; a worker that runs it notices at its end
            logger.warning("could not tell the kernel worker to stop run %s (%s)", run.pk, type(exc).__name__)
    run.refresh_from_db()
    return run
