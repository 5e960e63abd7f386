"""Runs with parameters ("run copy", docs/api.md#runs): the notebook's code as stored when the run
starts, with some named inputs set (kernel/parameters.py), every cell in topological order in an
execution process of its own (a fresh `Runner` of the worker's factory, sandboxed, with the
notebook's RunnerConfig: packages, secrets, files, database connection), each cell's result kept
for the run's row.

It must not touch the notebook: no cell state, no event, no output blob, no journal; a cell's
`files.save` is refused. The Django side (claiming the row, writing results) is the `store`
handed in (run_store.RunStore); the worker routes `kernel.run_copy` / `kernel.cancel_run` here.
"""
import asyncio
import contextlib
import logging

from ..constants import (
    CELL_MARKDOWN,
    MARKDOWN_MIME,
    RUN_CANCELLED,
    RUN_ERROR,
    RUN_OUTPUT_LIMIT,
    RUN_STDOUT_LIMIT,
    RUN_SUCCESS,
    RUN_TIMED_OUT,
    STATUS_BLOCKED,
    STATUS_ERROR,
    STATUS_QUEUED,
    STATUS_RUNNING,
    STATUS_SUCCESS,
)
from .environments import PackageError
from .execution import ExecutionHost, RunnerConfig
from .markdown import placeholders as markdown_fields
from .markdown import render as render_markdown
from .notebook_model import NotebookModel
from .outputs import Redactor, bounded_error, untrusted_outputs
from .parameters import InvalidParameters, named_inputs, resolve
from .runner import RunnerDied, SandboxUnavailable
from .running import run_one_cell

logger = logging.getLogger(__name__)

RUN_COPY = "kernel.run_copy"  # {notebook, run, parameters, timeLimit}
CANCEL_RUN = "kernel.cancel_run"  # {notebook, run}
MESSAGES = (RUN_COPY, CANCEL_RUN)
SKIPPED = "skipped"  # a cell's status in a run: it never ran (the run ended before it)


class CopyRun:
    """One run: `execute()` fills `results` ([{cellId, type, status, outputs, stdout, error}] in
    notebook order) and returns the run's status and error message."""

    def __init__(self, notebook_id, snapshot, parameters, *, runner_factory, environment_for=None, on_progress=None):
        self.notebook_id = notebook_id
        self.snapshot = snapshot
        self.parameters = parameters
        self.model = NotebookModel()
        self.model.load(snapshot["cells"])
        self.results = [self._result(cell) for cell in self.model.ordered_cells()]
        self._by_id = {result["cellId"]: result for result in self.results}
        self.config = RunnerConfig.from_snapshot(snapshot)
        self.redactor = Redactor(self.config.secrets)
        self.host = ExecutionHost(
            notebook_id,
            runner_factory=runner_factory,
            on_gone=lambda reason, cause=None: None,  # the process is this run's alone
            environment_for=environment_for,
            save_file=self._refuse_save,
        )
        self.host.config = self.config
        self._on_progress = on_progress  # async (results) -> None, as each cell starts and ends

    @staticmethod
    def _result(cell):
        return {"cellId": cell.id, "type": cell.type, "code": cell.code, "status": STATUS_QUEUED, "outputs": [], "stdout": "", "error": None}

    @staticmethod
    async def _refuse_save(path, data):
        return {"error": "a run with parameters cannot change the notebook's files"}

    async def execute(self):
        """(status, error message); InvalidParameters before anything runs if the code no longer
        has the inputs. Always stops its process."""
        try:
            for cell_id, values in resolve(named_inputs(self.model.ordered_cells()), self.parameters).items():
                self.model.cells[cell_id].inputs.update(values)
        except InvalidParameters as exc:
            return RUN_ERROR, f"The notebook changed since the run was asked for: {exc}."
        try:
            return await self._run_cells()
        finally:
            await self.host.close()

    async def _run_cells(self):
        model = self.model
        blocked = model.graph.blocked()
        for cell_id in blocked:
            self._finish(cell_id, STATUS_BLOCKED, [], model.blocked_error(cell_id))
        for cell_id in model.graph.topological([c for c in model.cells if c not in blocked]):
            if not await self._run_one(model.cells[cell_id]):
                break  # the process could not start or died: the rest never runs
        self.end(SKIPPED)
        return ended(model, self.results)

    def end(self, status, error=None):
        """The run ended: the running cell takes `status` (and `error`), cells not started SKIPPED."""
        for result in self.results:
            if result["status"] == STATUS_RUNNING:
                result["status"], result["error"] = status, error
            elif result["status"] == STATUS_QUEUED:
                result["status"] = SKIPPED

    def _finish(self, cell_id, status, outputs, error):
        result = self._by_id[cell_id]
        result["status"], result["outputs"] = status, outputs
        result["error"] = bounded_error(self.redactor.value(self.model.explain_undefined(error))) if error else None

    async def _run_one(self, cell):
        """Run `cell`; False when the process cannot go on (it did not start, or died)."""
        result = self._by_id[cell.id]
        result["status"] = STATUS_RUNNING
        if self._on_progress is not None:  # the run's row says which cell runs (a long one, a hang)
            await self._on_progress(self.results)
        stream = self.redactor.stream()

        def on_stdout(text):
            result["stdout"] = (result["stdout"] + stream.feed(text))[-RUN_STDOUT_LIMIT:]

        going_on = True
        if cell.syntax_error is not None:
            self._finish(cell.id, STATUS_ERROR, [], cell.syntax_error)
        elif cell.type == CELL_MARKDOWN and not markdown_fields(cell.code):
            self._finish(cell.id, STATUS_SUCCESS, [{"mimeType": MARKDOWN_MIME, "data": render_markdown(cell.code)}], None)
        else:
            going_on = await self._execute(cell, on_stdout)
        result["stdout"] = (result["stdout"] + stream.flush())[-RUN_STDOUT_LIMIT:]
        if self._on_progress is not None:
            await self._on_progress(self.results)
        return going_on

    async def _execute(self, cell, on_stdout):
        try:
            ran = await run_one_cell(await self.host.start(), cell, self.redactor, on_stdout)
        except (SandboxUnavailable, PackageError) as exc:
            self._finish(cell.id, STATUS_ERROR, [], {"ename": type(exc).__name__, "evalue": f"No execution process could start for this run: {exc}", "traceback": []})
            return False
        except RunnerDied as exc:
            self._finish(cell.id, STATUS_ERROR, [], {"ename": "KernelDied", "evalue": f"{exc.reason}; the run stopped here", "traceback": []})
            return False
        outputs = ran.outputs if cell.type == CELL_MARKDOWN else self.redactor.outputs(untrusted_outputs(ran.outputs))
        self._finish(cell.id, STATUS_SUCCESS if ran.status == "success" else STATUS_ERROR, kept_outputs(outputs), ran.error)
        return True


def ended(model, results):
    """(status, error message) of a run whose cells ended as `results` say: `error` naming the
    first cell that failed or was blocked, else `success` (shared_runs.py's runs too)."""
    failed = [r for r in results if r["status"] in (STATUS_ERROR, STATUS_BLOCKED)]
    if not failed:
        return RUN_SUCCESS, ""
    first = model.label(failed[0]["cellId"])
    return RUN_ERROR, f"{len(failed)} cell{'s' if len(failed) > 1 else ''} failed, the first {first}."


def kept_outputs(outputs):
    """Outputs as a run's row keeps them: one whose data is over RUN_OUTPUT_LIMIT says so instead."""
    kept = []
    for output in outputs:
        data = output.get("data")
        size = len(data) if isinstance(data, str) else 0
        if size > RUN_OUTPUT_LIMIT:
            kept.append({"mimeType": "text/plain", "data": f"[{output.get('mimeType')} output of {size:,} characters, over the run log's limit of {RUN_OUTPUT_LIMIT:,}: not kept]"})
        else:
            kept.append(output)
    return kept


class CopyRuns:
    """The runs with parameters of one kernel worker: each a task beside the notebooks' sessions,
    at most `concurrency` at once (the others stay `queued` until a place frees)."""

    def __init__(self, *, store, load, runner_factory, environment_for, concurrency, worker_name):
        self.store = store  # run_store.RunStore: claim / progress / finish
        self.load = load  # async (notebook id) -> snapshot (DatabaseStore.load)
        self.runner_factory = runner_factory  # (notebook id) -> Runner
        self.environment_for = environment_for  # (notebook id) -> async (config) -> (site, lock)
        self.worker_name = worker_name  # () -> this worker's name, written as the run's claimed_by
        self._places = asyncio.Semaphore(concurrency)
        self.tasks = {}  # run id -> (notebook id, task)
        self.closing = False

    def submit(self, message):
        run_id, notebook_id = str(message.get("run")), str(message["notebook"])
        if message["type"] == CANCEL_RUN:
            self.cancel(run_id)
            return
        if run_id in self.tasks:
            return  # the same message twice
        task = asyncio.get_running_loop().create_task(self._run(run_id, notebook_id, message), name=f"run-{run_id}")
        self.tasks[run_id] = (notebook_id, task)
        task.add_done_callback(lambda _task, _id=run_id: self.tasks.pop(_id, None))

    def cancel(self, run_id):
        entry = self.tasks.get(run_id)
        if entry is not None:
            entry[1].cancel()

    def forget_notebook(self, notebook_id):
        """The notebook was deleted (its runs with it): its runs stop."""
        for run_id, (owner, task) in list(self.tasks.items()):
            if owner == str(notebook_id):
                task.cancel()

    async def _run(self, run_id, notebook_id, message):
        # Received: the row names this worker while the run waits for a place, so that if the
        # worker dies meanwhile the run is ended (run_store.end_orphaned_runs), not left queued.
        try:
            await self.store.accept(run_id, self.worker_name())
        except Exception:  # noqa: BLE001 - only the sweep's knowledge is lost; the run goes on
            logger.exception("could not record that this worker received run %s", run_id)
        async with self._places:
            if not await self.store.claim(run_id, self.worker_name()):
                return  # cancelled while queued, or taken already
            limit = float(message.get("timeLimit") or 600)
            run = None
            try:
                snapshot = await self.load(notebook_id)
                if snapshot is None:
                    await self.store.finish(run_id, RUN_CANCELLED, [], "The notebook was deleted.")
                    return
                run = CopyRun(
                    notebook_id,
                    snapshot,
                    message.get("parameters") or {},
                    runner_factory=lambda: self.runner_factory(notebook_id),
                    environment_for=self.environment_for(notebook_id),
                    on_progress=lambda results: self.store.progress(run_id, results),
                )
                status, error = await asyncio.wait_for(run.execute(), timeout=limit)
            except TimeoutError:
                run.end(RUN_TIMED_OUT, {"ename": "TimeoutError", "evalue": f"the run reached its limit of {limit:g} s", "traceback": []})
                status, error = RUN_TIMED_OUT, f"The run took longer than RUN_TIME_LIMIT ({limit:g} s) and was stopped."
            except asyncio.CancelledError:
                # Cancelled over the API (the row says so already: only the results are written),
                # its notebook deleted (no row), or this worker stopping (the run fails, said why).
                if run is not None:
                    run.end(RUN_CANCELLED)
                stopped = "The kernel worker stopped during the run (a restart or a deploy); run it again."
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.store.finish(run_id, RUN_ERROR if self.closing else RUN_CANCELLED, run.results if run else [], stopped if self.closing else "Cancelled."))
                raise
            except Exception as exc:  # noqa: BLE001 - the run fails, the worker goes on
                logger.exception("run %s of notebook %s failed", run_id, notebook_id)
                status, error = RUN_ERROR, f"The run could not be carried out: {type(exc).__name__}: {exc}"
            await self.store.finish(run_id, status, run.results if run else [], error)
            logger.info("run %s of notebook %s ended %s", run_id, notebook_id, status)

    async def close(self):
        self.closing = True
        for _owner, task in list(self.tasks.values()):
            task.cancel()
        for _owner, task in list(self.tasks.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
