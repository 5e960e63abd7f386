"""Running a cascade (`CascadeRunner`): given the cells to run (one cell run on purpose, every
cell, or roots), it sends consecutive Python cells to the execution process as one batch and the
others one by one, and announces each step as its result streams back (queued, running, stdout,
outputs, error, final status); Stop (`interrupt`) or a death of the process ends the cascade,
and what did not run turns stale.

It runs what it is told to run; it must not decide what else runs (notebook_model.plan_cascade)
nor read kernel messages.  It writes only output blobs (before their references are announced).
Every stdout, output and error is redacted of the notebook's secret values (outputs.Redactor)
before anyone hears of it.
"""
import contextlib
import logging

from ..constants import CELL_MARKDOWN, CELL_SQL, MARKDOWN_MIME, STATUS_ERROR, STATUS_QUEUED, STATUS_RUNNING, STATUS_STALE, STATUS_SUCCESS
from .markdown import placeholders as markdown_fields
from .markdown import render as render_markdown
from .outputs import Redactor, by_reference, untrusted_outputs
from .environments import PackageError
from .lifecycle import StartWithdrawn
from .runner import RunnerDied, SandboxUnavailable

logger = logging.getLogger(__name__)

# Streamed stdout kept per cell (the runner caps a single run too).
STDOUT_CAP = 1_000_000
INTERRUPTED_BEFORE_START = {"ename": "KeyboardInterrupt", "evalue": "interrupted before it started", "traceback": []}


def batchable(cell):
    return cell.type not in (CELL_SQL, CELL_MARKDOWN) and cell.syntax_error is None


async def run_one_cell(runner, cell, redactor, on_stdout):
    """One cell of any type on `runner` (started): its RunResult, a markdown cell's as safe HTML
    (the sandbox formats its values; the markdown becomes HTML here, on the trusted side).
    Shared by the cascade and the runs with parameters (copy_runs.py)."""
    if cell.type == CELL_SQL:
        return await runner.run_sql(cell.id, cell.code, result_variable=cell.result_variable, on_stdout=on_stdout)
    if cell.type == CELL_MARKDOWN:
        result = await runner.run_markdown(cell.id, cell.code)
        text = result.outputs[0].get("data") if result.status == "success" and result.outputs else ""
        result.outputs = [{"mimeType": MARKDOWN_MIME, "data": render_markdown(redactor.text(str(text)))}] if result.status == "success" else []
        return result
    return await runner.run(cell.id, cell.code, writes=cell.writes, inputs=cell.inputs, on_stdout=on_stdout)


class CascadeRunner:
    def __init__(self, notebook_id, *, store, model, statuses, events, persister, execution):
        self.notebook_id = notebook_id
        self.store = store
        self.model = model
        self.statuses = statuses
        self.events = events
        self.persister = persister
        self.execution = execution
        self.cancelled = False  # Stop was pressed: the rest of the cascade does not run
        self.redactor = Redactor()  # the secrets of the process the cascade runs in (run())
        self._streams = {}  # cell id -> its stdout as it streams, redacted (outputs.RedactedStream)
        # () -> None, set by the session for the run of a message: called just before the
        # cascade's final write, so the message's journal entry ends in that same write.
        self.finishing = None
        # (cell ids) -> None, set by shared_runs.py for the run of a message with a run id: told
        # the cells each cascade of that run is asked to run (its blocked ones included).
        self.starting = None

    async def run_cell(self, cell_id, by=None):
        """Run one cell on purpose: if it crashed the execution process it gets its chance again,
        and the cells unblocked since they last ran run with it."""
        if cell_id not in self.model.cells:
            return
        self.model.crashed.discard(cell_id)
        await self.run_roots({cell_id} | self.model.unblocked, by=by)

    async def run_all(self, by=None):
        await self.run_roots(set(self.model.cells), by=by)

    async def interrupt(self):
        """Stop: the running cell is interrupted and the rest of its cascade does not run."""
        self.cancelled = True
        return await self.execution.interrupt()

    async def run_roots(self, roots, by=None):
        """Run `roots` and what they need (notebook_model.plan_cascade) as one cascade."""
        plan = self.model.plan_cascade(roots)
        self.statuses.mark_stale(plan.stale)
        self.model.unblocked -= plan.run
        await self.run(plan.run, by=by)

    async def run(self, cell_ids, by=None):
        """Run `cell_ids` in topological order (ties by position), announcing each step;
        `by`: who asked, shown on every cell it runs ("run by bob").

        Consecutive Python cells go to the execution process as one batch (`_run_batch`);
        SQL, markdown and cells with a syntax error run one by one (`_run_one`) between them.
        An interrupt stops the running cell and leaves the rest `stale`; so does a death of
        the execution process, which also fails the running cell with `KernelDied`.
        """
        if self.starting is not None:
            self.starting(cell_ids)
        runnable = self.model.runnable(cell_ids)
        if by and not self.execution.alive:
            self.execution.user = by  # whoever starts the process: their cap counts it (lifecycle.py)
        set_status = self.statuses.set
        self.redactor, self._streams = Redactor(self.execution.config.secrets), {}
        for cell in runnable:
            cell.run_by = by or ""
            set_status(cell, STATUS_QUEUED)
        self.cancelled = False
        index = 0
        while index < len(runnable):
            if self.cancelled:
                break
            end = index
            while end < len(runnable) and batchable(runnable[end]):
                end += 1
            if end - index > 1:
                ran, runner_died = await self._run_batch(runnable[index:end])
            else:
                ran, runner_died = 1, await self._run_one(runnable[index])
            index += ran
            if runner_died:
                break
            await self.persister.persist_if_due()
        for rest in runnable[index:]:
            set_status(rest, STATUS_STALE)
        self.cancelled = False
        finished, self.finishing = self.finishing, None
        if finished is not None:
            finished()  # the run's journal entry goes in the same write as its results
        await self.persister.persist()
        await self.events.flush()

    def _start_run(self, cell):
        """The cell is about to run: its old results go, clients see it `running`.  Returns
        whether it had outputs stored by reference (whose blobs the new run may drop)."""
        had_references = any("ref" in output for output in cell.outputs) if cell.outputs else False
        cell.stdout, cell.outputs, cell.error = "", [], None
        self.statuses.set(cell, STATUS_RUNNING)
        return had_references

    def _append_stdout(self, cell, text):
        stream = self._streams.get(cell.id)
        if stream is None:
            stream = self._streams[cell.id] = self.redactor.stream()
        self._emit_stdout(cell, stream.feed(text))

    def _emit_stdout(self, cell, text):
        if not text:
            return
        if len(cell.stdout) < STDOUT_CAP:
            cell.stdout += text
        self.events.emit({"type": "cell_stdout", "cellId": cell.id, "text": text})

    def _finish(self, cell, status, outputs, error):
        """The cell's final state (`outputs` redacted already, before their blobs were stored):
        the end of its stdout held back in case it began a secret goes out first, then its
        status and its error, redacted (a name the process lacks because only blocked cells
        define it says so: notebook_model.explain_undefined)."""
        stream = self._streams.pop(cell.id, None)
        if stream is not None:
            self._emit_stdout(cell, stream.flush())
        self.statuses.finish(cell, status, outputs, self.redactor.value(self.model.explain_undefined(error)))

    async def _run_batch(self, cells):
        """Run consecutive Python cells as one request to the execution process, each announced
        as its result streams back.  Returns (cells dealt with, whether the runner died):
        fewer than all of them when Stop was pressed or the process died; the caller marks
        the rest stale.

        A cell is shown `running` once the one before it has finished, which is when the
        execution process starts it; stdout that arrives before the session has caught up
        with its cell waits until then, so every client sees running, stdout, result."""
        current = 0
        held = {}  # index -> stdout of a cell not announced as running yet
        finish = self._finish

        def on_stdout(index, text):
            if index == current:
                self._append_stdout(cells[index], text)
            else:
                held.setdefault(index, []).append(text)

        failed = await self._process_first()
        if self.cancelled:  # Stop pressed while it waited for a kernel (pending)
            finish(cells[0], STATUS_ERROR, [], INTERRUPTED_BEFORE_START)
            return 1, False
        had_references = self._start_run(cells[0])
        try:
            if failed is not None:
                raise failed
            runner = await self.execution.start()
        except (SandboxUnavailable, PackageError) as exc:
            self._sandbox_unavailable(cells[0], exc)
            return 1, True
        except RunnerDied as exc:
            self._died(cells[0], exc)
            return 1, True
        if self.cancelled:  # Stop pressed while the execution process was starting
            finish(cells[0], STATUS_ERROR, [], INTERRUPTED_BEFORE_START)
            return 1, False
        batch = [{"cell": cell.id, "code": cell.code, "writes": cell.writes, "inputs": cell.inputs} for cell in cells]
        try:
            async with contextlib.aclosing(runner.run_batch(batch, on_stdout=on_stdout)) as results:
                async for result in results:
                    cell = cells[current]
                    status = STATUS_SUCCESS if result.status == "success" else STATUS_ERROR
                    outputs = self.redactor.outputs(untrusted_outputs(result.outputs)) if result.outputs else []
                    if outputs or had_references:
                        outputs = await self._by_reference(cell, outputs, had_references=had_references)
                    finish(cell, status, outputs, result.error)
                    self.model.files_opened(cell.id, result.files)
                    current += 1
                    if self.cancelled or current == len(cells):
                        return current, False
                    await self.persister.persist_if_due()
                    had_references = self._start_run(cells[current])
                    for text in held.pop(current, ()):
                        self._append_stdout(cells[current], text)
        except RunnerDied as exc:
            self._died(cells[current], exc)
            return current + 1, True
        return current, False

    async def _process_first(self):
        """Start the execution process, if it is not running, before a cell is shown `running`:
        a start that waits for a place (pending, lifecycle.py) or builds packages leaves the cell
        `queued` meanwhile.  The exception a failed start raised, for the caller to report on the
        cell, or None."""
        if self.execution.alive:
            return None
        try:
            await self.execution.start()
        except StartWithdrawn:
            return None  # Stop pressed while it waited: `cancelled` says the rest
        except (SandboxUnavailable, PackageError, RunnerDied) as exc:
            return exc
        return None

    async def _run_one(self, cell):
        """Run one cell; True if the runner died under it."""
        needs_process = cell.syntax_error is None and not (cell.type == CELL_MARKDOWN and not markdown_fields(cell.code))
        failed = await self._process_first() if needs_process else None
        finish = self._finish
        if self.cancelled:  # Stop pressed while it waited for a kernel (pending)
            finish(cell, STATUS_ERROR, [], INTERRUPTED_BEFORE_START)
            return False
        had_references = self._start_run(cell)
        if cell.syntax_error is not None:
            finish(cell, STATUS_ERROR, [], cell.syntax_error)
            return False

        def on_stdout(text):
            self._append_stdout(cell, text)

        if cell.type == CELL_MARKDOWN and not markdown_fields(cell.code):
            # Prose without values: rendered here, no execution process needed.
            finish(cell, STATUS_SUCCESS, [{"mimeType": MARKDOWN_MIME, "data": render_markdown(cell.code)}], None)
            return False
        try:
            if failed is not None:
                raise failed
            runner = await self.execution.start()
            if self.cancelled:  # Stop pressed while the execution process was starting
                finish(cell, STATUS_ERROR, [], INTERRUPTED_BEFORE_START)
                return False
            result = await run_one_cell(runner, cell, self.redactor, on_stdout)
        except (SandboxUnavailable, PackageError) as exc:
            self._sandbox_unavailable(cell, exc)
            return True
        except RunnerDied as exc:
            self._died(cell, exc)
            return True
        status = STATUS_SUCCESS if result.status == "success" else STATUS_ERROR
        outputs = result.outputs if cell.type == CELL_MARKDOWN else self.redactor.outputs(untrusted_outputs(result.outputs))
        outputs = await self._by_reference(cell, outputs, had_references=had_references)
        finish(cell, status, outputs, result.error)
        self.model.files_opened(cell.id, result.files)
        return False

    def _sandbox_unavailable(self, cell, exc):
        """No execution process could start: the sandbox cannot work here, or the notebook's
        packages cannot be installed."""
        if isinstance(exc, PackageError):
            evalue = f"This notebook's packages could not be installed, so no code runs: {exc} Change them in the Packages panel (docs/packages.md)."
            self.statuses.finish(cell, STATUS_ERROR, [], {"ename": "PackagesUnavailable", "evalue": evalue, "traceback": []})
            return
        evalue = f"{exc}. No code runs until the sandbox works here; an operator may turn it off with KERNEL_SANDBOX=off (docs/security.md)"
        self.statuses.finish(cell, STATUS_ERROR, [], {"ename": "SandboxUnavailable", "evalue": evalue, "traceback": []})

    def _died(self, cell, exc):
        """The execution process died running `cell`: it fails with KernelDied and is held back
        from later cascades (`crashed`); every result that lived in the process is stale."""
        logger.warning("runner of notebook %s died: %s", self.notebook_id, exc.reason)
        self.model.crashed.add(cell.id)
        error = {"ename": "KernelDied", "evalue": f"{exc.reason}; the kernel was restarted with an empty namespace", "traceback": []}
        self._finish(cell, STATUS_ERROR, [], error)
        self.statuses.namespace_gone(exc.reason, except_cell=cell.id)

    async def _by_reference(self, cell, outputs, *, had_references):
        """Outputs over OUTPUT_INLINE_LIMIT, stored apart before they are announced (so their
        URL works as soon as a client sees it) and replaced by a reference; the cell's blobs
        its new outputs no longer use are dropped."""
        kept, blobs = by_reference(outputs, lambda digest: self.store.output_url(self.notebook_id, digest))
        if (blobs or had_references) and not self.persister.closed:
            await self.store.save_blobs(self.notebook_id, cell.id, blobs)
        return kept
