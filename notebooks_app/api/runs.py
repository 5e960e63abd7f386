"""Runs asked for over the API. Today (phase 1 of "Notebooks as services") a run is what the page's
Run button does: a cell, or every cell, on the notebook's shared kernel, without parameters,
checked by operations.check_kernel_command and queued to the kernel worker with the very message
the consumer sends (kernel_client.command_message). Its results reach every open page and the
database as any run's do; the API answers 202 with what was queued.

The seam for phase 2 (a Run with an id, parameters, an execution process of its own, schedules):
`queue_run` is the one function the views call, and `QueuedRun` what they answer with.
"""
from dataclasses import dataclass

from asgiref.sync import async_to_sync

from .. import kernel_client, operations

RUN_CELL = "run_cell"
RUN_ALL = "run_all"


@dataclass(frozen=True)
class QueuedRun:
    kind: str  # RUN_CELL or RUN_ALL
    notebook_id: str
    cell_id: str | None
    request_id: str  # the requestId of the events the run causes
    revision: int  # the notebook's revision the run was queued at

    def describe(self):
        return {"queued": self.kind, "notebookId": self.notebook_id, "cellId": self.cell_id, "requestId": self.request_id, "revision": self.revision}


def queue_run(notebook_id, user, *, cell_id=None, request_id):
    """Check that `user` may run the notebook (and that the cell is there), then queue the run;
    OperationError (not_found, forbidden, unknown_cell) as for the WebSocket's run_cell."""
    kind = RUN_CELL if cell_id else RUN_ALL
    revision = operations.check_kernel_command(notebook_id, user, cell_id=cell_id)
    message = kernel_client.command_message(notebook_id, kind, revision=revision, request_id=request_id, cell_id=cell_id, by=user.get_username())
    async_to_sync(kernel_client.send)(notebook_id, message)
    return QueuedRun(kind=kind, notebook_id=str(notebook_id), cell_id=cell_id, request_id=request_id, revision=revision)
