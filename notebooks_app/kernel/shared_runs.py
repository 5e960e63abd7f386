"""Runs on the shared kernel with an id (docs/api.md#runs): a `kernel.run_cell` / `kernel.run_all`
the API sent with a run id (`run`) has a NotebookRun row of kind `shared`, which this unit keeps
in step with the cascade the message causes: taken (`running`) as the cascade starts, ended with
each cell's result when the cascade ends, and cancelled by interrupting that cascade the way Stop
does (never another one: a run cancelled while queued is simply not taken when its turn comes).

It runs nothing and decides nothing of the cascade (the session's handler and running.py do); it
writes only the run's row, through the `runs` store the worker gives (run_store.SharedRunStore),
the row's end beside the queue. Without a store (a session made without the database) runs are
not recorded.
"""
import asyncio
import logging

from ..constants import RUN_CANCELLED, RUN_ERROR, RUN_STDOUT_LIMIT, STATUS_BLOCKED, STATUS_ERROR, STATUS_SUCCESS
from .copy_runs import SKIPPED, ended
from .leases import Fenced

logger = logging.getLogger(__name__)

GRACE = 5.0  # close(): how long an end on its way to the database may take
INTERRUPTED = "KeyboardInterrupt"  # the error of a cell that Stop, a restart or a cancel interrupted
INTERRUPTED_RUN = "Interrupted while it ran: Stop on the notebook's page, or a restart of its kernel."


class SharedRuns:
    def __init__(self, notebook_id, *, runs, model, cascades):
        self.notebook_id = notebook_id
        self.runs = runs  # run_store.SharedRunStore, or None: runs are not recorded
        self.model = model
        self.cascades = cascades
        self.current = None  # the run whose message is being handled
        self.cancelled = False  # it was cancelled over the API meanwhile
        self._ends = set()  # ends on their way to the database

    async def running(self, message, run):
        """`await run()`, the cascade `message` asks for; with a run id, only if the run's row is
        this worker's to carry out (not cancelled, not ended), and the row follows it. A run the
        session drops unfinished (it closed, or lost the notebook) is left `running`: the next
        owner runs it again from the run journal, or end_orphaned_runs ends it."""
        run_id = message.get("run")
        if run_id is None or self.runs is None:
            return await run()
        run_id = str(run_id)
        self.current, self.cancelled = run_id, False
        try:
            if not await self.runs.start(run_id) or self.cancelled:
                logger.info("notebook %s: run %s was cancelled or ended before it started; not run", self.notebook_id, run_id)
                return None
            planned = set()
            self.cascades.starting = planned.update
            try:
                await run()
            except (asyncio.CancelledError, Fenced):
                raise
            except Exception as exc:
                self._end(run_id, RUN_ERROR, [], f"The kernel could not carry the run out: {type(exc).__name__}: {exc}")
                raise
            finally:
                self.cascades.starting = None
            self._end(run_id, *self.outcome(message, planned))
        finally:
            self.current = None

    async def cancel(self, run_id):
        """Run `run_id` was cancelled over the API (its row says so already): its cascade, if it
        is the one under way, is interrupted as Stop does."""
        if run_id != self.current:
            return False
        self.cancelled = True
        return await self.cascades.interrupt()

    def outcome(self, message, planned):
        """(status, results, error message) of the run whose cascade was asked to run `planned`:
        each of those cells in notebook order as it ended ([{cellId, type, code, status, outputs,
        stdout, error}], the shape of copy_runs.py's)."""
        model = self.model
        if not planned and message.get("cellId") and message["cellId"] not in model.cells:
            return RUN_ERROR, [], "The cell was deleted before the run started."
        results = [self._result(cell) for cell in model.ordered_cells() if cell.id in planned]
        if self.cancelled:
            return RUN_CANCELLED, results, ""  # the row says who cancelled it; it keeps that
        if any(result["status"] == RUN_CANCELLED for result in results):
            return RUN_CANCELLED, results, INTERRUPTED_RUN
        status, error = ended(model, results)
        return status, results, error

    def _result(self, cell):
        error = cell.error
        if cell.status == STATUS_SUCCESS:
            status = STATUS_SUCCESS
        elif cell.status == STATUS_ERROR:
            status = RUN_CANCELLED if (error or {}).get("ename") == INTERRUPTED else STATUS_ERROR
        elif cell.status == STATUS_BLOCKED:
            status, error = STATUS_BLOCKED, error or self.model.blocked_error(cell.id)
        else:
            status = SKIPPED  # stale: the cascade ended before it (an interrupt, a death of the process)
        return {"cellId": cell.id, "type": cell.type, "code": cell.code, "status": status, "outputs": list(cell.outputs), "stdout": cell.stdout[-RUN_STDOUT_LIMIT:], "error": error}

    def _end(self, run_id, status, results, error):
        """The row's end, written beside the queue (the next message need not wait for it)."""
        task = asyncio.get_running_loop().create_task(self._write_end(run_id, status, results, error), name=f"run-end-{run_id}")
        self._ends.add(task)
        task.add_done_callback(self._ends.discard)

    async def _write_end(self, run_id, status, results, error):
        try:
            await self.runs.finish(run_id, status, results, error)
        except Exception:  # noqa: BLE001 - the cells' results are the notebook's all the same
            logger.exception("could not write the end of run %s of notebook %s", run_id, self.notebook_id)
            return
        logger.info("run %s of notebook %s ended %s", run_id, self.notebook_id, status)

    async def close(self):
        """The session closes: the ends on their way are waited for (a while)."""
        if self._ends:
            await asyncio.wait(set(self._ends), timeout=GRACE)
