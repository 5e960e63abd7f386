"""One notebook's kernel session: the coordinator of the units that hold its cells.

The session applies kernel messages strictly in order (one asyncio task drains its queue, each
message to its handler in an explicit table; the jobs its own timers ask for are queued apart),
loads and reloads the notebook, and keeps clients caught up with the database's revision.  What
it coordinates lives beside it, one job each: the cells and the cascade plan
(notebook_model.py), statuses (statuses.py), the event stream and its `seq` (event_stream.py),
shared texts (cell_texts.py), inputs (inputs.py), persistence and saving typing (persister.py),
the revision memory holds (revisions.py), applying edits (edits.py), completion (assists.py),
the notebook's packages (package_builds.py), the execution process (execution.py), running a
cascade (running.py), what a takeover brings (takeover.py) and the rows of runs with an id
(shared_runs.py).  It knows nothing of Django or Channels: the worker gives it a `store`
(load/persist), a `publish` coroutine and the run rows' store (`runs`).
"""
import asyncio
import logging

from ..constants import ERROR_TEXT_LIMIT
from .assists import Assists
from .cell_state import CellState  # noqa: F401  (imported from here by operations.py)
from .cell_texts import CellTexts
from .edits import EditApplier
from .event_stream import Encoded, EventStream, gc_paused  # noqa: F401  (Encoded, gc_paused: imported from here)
from .execution import EVICT, ExecutionHost, RunnerConfig
from .inputs import PendingInputs
from .leases import Fenced
from .notebook_model import NotebookModel
from .outputs import cut, untrusted_outputs  # noqa: F401  (untrusted_outputs: imported from here)
from .package_builds import PackageBuilds
from .persister import Persister
from .revisions import Revisions
from .running import CascadeRunner
from .shared_runs import SharedRuns
from .statuses import CellStatuses
from .takeover import Takeover

logger = logging.getLogger(__name__)

# close(): how long the message being handled (a cell running) has to stop once cancelled.
CLOSE_GRACE = 5.0
DRAIN = "drain"  # lifecycle cause: the notebook moved to another worker (fleet.py)


class NotebookSession:
    def __init__(self, notebook_id, *, store, publish, runner_factory, environments=None, max_code_bytes=256 * 1024, pool=None, runs=None):
        self.notebook_id = str(notebook_id)
        self.store = store
        self.loaded = False
        self.closed = False
        self.name = ""
        self._load_lock = asyncio.Lock()
        self._queue = asyncio.Queue()
        self._task = None
        self.on_fenced = None  # (notebook id) -> None: another worker holds this notebook now
        # The run journal, what a takeover brings, the stops' history lines (takeover.py).
        self.takeover = Takeover(self.notebook_id, store=store, on_fenced=self._fenced)
        self.model = NotebookModel()
        self.events = EventStream(publish)
        self.revisions = Revisions(self.notebook_id, events=self.events, reload=self.reload, emit_state=self._emit_state)
        self.texts = CellTexts(model=self.model, events=self.events, queue_job=self._queue_job, save_job=self._save_text, max_code_bytes=max_code_bytes)
        self.persister = Persister(self.notebook_id, store=store, model=self.model, texts=self.texts, events=self.events, journal=self.takeover.journal)
        self.statuses = CellStatuses(model=self.model, events=self.events, persister=self.persister)
        self.packages = PackageBuilds(self.notebook_id, environments=environments, store=store, events=self.events, on_built=self._packages_built)
        self.execution = ExecutionHost(
            self.notebook_id,
            runner_factory=runner_factory,
            on_gone=self.statuses.namespace_gone,
            environment_for=self.packages.environment_for,
            save_file=lambda path, data: self.edits.file_saved_by_cell(path, data),
            pool=pool,  # the worker's lifecycle.ProcessPool: caps, pending, idle and memory stops
            on_status=self._kernel_status,
            in_order=self._queue_job,  # its stops for the lifecycle go in order with the messages
            interrupt_cells=lambda: self.cascades.interrupt(),
        )
        self.inputs = PendingInputs(model=self.model, events=self.events, persister=self.persister, execution=self.execution)
        units = {"model": self.model, "statuses": self.statuses, "events": self.events, "persister": self.persister, "execution": self.execution}
        self.cascades = CascadeRunner(self.notebook_id, store=store, **units)
        self.shared_runs = SharedRuns(self.notebook_id, runs=runs, model=self.model, cascades=self.cascades)
        self.edits = EditApplier(self.notebook_id, store=store, texts=self.texts, cascades=self.cascades, packages=self.packages, advance=self.revisions.advance, submit=self.submit, revision=lambda: self.revisions.current, **units)
        self.assists = Assists(model=self.model, events=self.events, execution=self.execution)
        # Kernel messages (docs/protocol.md, sent by kernel_client.py on commit), by type. An
        # edit is applied only when it is the next revision (revisions.py); a run waits for the
        # database's revision and the typing saved (_up_to_date).
        edit, run = self.revisions.gate, self._up_to_date
        self._handlers = {
            "kernel.create_cell": edit(self.edits.create_cell),
            "kernel.update_cell": edit(self.edits.update_cell),
            "kernel.delete_cell": edit(self.edits.delete_cell),
            "kernel.move_cell": edit(self.edits.move_cell),
            "kernel.rename": edit(self._rename),
            "kernel.db_connection": edit(self.edits.db_connection),
            "kernel.secrets": edit(self.edits.secrets),
            "kernel.files": edit(self.edits.files),
            "kernel.egress": edit(self.edits.egress),
            "kernel.run_cell": run(lambda message: self.cascades.run_cell(message["cellId"], by=message.get("by"))),
            "kernel.run_all": run(lambda message: self.cascades.run_all(by=message.get("by"))),
            "kernel.restart_kernel": lambda message: self.execution.stop(message["reason"]),  # no rows changed: no revision
            "kernel.set_packages": self._set_packages,  # built beside the queue, then applied in it
            "kernel.version_restored": self._version_restored,
            "kernel.text_update": self._text_update,  # one that arrived before the notebook was loaded
        }

    # --- what tests read: the units' own, under the names they had ------------------------------
    cells = property(lambda self: self.model.cells)
    revision = property(lambda self: self.revisions.current)
    runner = property(lambda self: self.execution.runner)
    flush = property(lambda self: self.events.flush)
    persist = property(lambda self: self.persister.persist)

    # --- the queue ----------------------------------------------------------------------------
    def submit(self, message):
        """Queue a kernel message; they are applied strictly in order.  A run is written in the
        journal first (run_journal.py): one already seen is not run again."""
        handler = self._handlers.get(message.get("type"))
        if handler is None:
            logger.warning("kernel message of unknown type %s ignored", message.get("type"))
            return
        if self.takeover.received(message):
            self._queue_job(message["type"], handler, message)

    def resume(self):
        """Load now (a worker that took the notebook over): the runs its last owner left
        unfinished start without waiting for a message."""
        self._queue_job("kernel.resume", self._nothing)

    async def _nothing(self):
        pass

    def _queue_job(self, name, job, *arguments):
        """Queue `job(*arguments)` (a kernel message's handler, or a job of the session's own);
        False if the session is closed (nothing is queued)."""
        if self.closed:
            return False
        self._queue.put_nowait((name, job, arguments))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain(), name=f"notebook-{self.notebook_id}")
        return True

    async def _drain(self):
        while not self.closed:
            name, job, arguments = await self._queue.get()
            activity = name != EVICT  # a stop is not activity: it must not restart the idle clock
            try:
                if activity:
                    self.execution.touch(busy=True)
                await self.ensure_loaded()
                lost = self.takeover.take_lost()
                if lost is not None:  # the kernel died with the worker that held the notebook
                    self.statuses.namespace_gone(lost, cause="failover")  # its results: stale
                    self.execution.lost(lost)
                if self.takeover.recovered:
                    self._run_recovered_first((name, job, arguments))
                    continue
                if not self.model.gone:
                    await job(*arguments)
            except Fenced:
                await self._fenced()
                return
            except Exception as exc:  # one notebook's failure never kills the worker
                logger.exception("kernel session %s failed on %s", self.notebook_id, name)
                self.events.emit({"type": "kernel_error", "message": cut(f"The kernel could not process {name}: {exc}", ERROR_TEXT_LIMIT)})
            finally:
                try:
                    # Results are persisted before they are announced (cascade() does both);
                    # what is left here is the bookkeeping of a structural change (the new
                    # cell's reads and writes, statuses turned stale), which need not hold
                    # up its announcement, nor the next job: with one queued (a run after an
                    # edit) it waits for that job's write, at most PERSIST_INTERVAL.
                    await self.events.flush()
                    if self._queue.empty() or self.persister.due():
                        await self.persister.persist()
                except Fenced:
                    await self._fenced()
                    return
                except Exception:
                    logger.exception("could not publish or persist notebook %s", self.notebook_id)
                if self._queue.empty():
                    # The idle clock starts again when the last job ends (a long cell's end too);
                    # the lifecycle's own stop leaves it be.
                    self.execution.touch(busy=False, clock=activity)

    def _run_recovered_first(self, current):
        """Runs a previous owner left unfinished go ahead of everything queued, `current` first
        among the rest (it came after them)."""
        later = [current]
        while not self._queue.empty():
            later.append(self._queue.get_nowait())
        for message in self.takeover.take_recovered():
            handler = self._handlers.get(message.get("type"))
            if handler is not None:
                self._queue.put_nowait((message["type"], handler, (message,)))
        for item in later:
            self._queue.put_nowait(item)

    async def _fenced(self):
        """Another worker holds this notebook now (fleet.py): drop everything, unsaved."""
        logger.warning("notebook %s: another kernel worker holds it now; this one drops its session without writing", self.notebook_id)
        await self.abandon()
        if self.on_fenced is not None:
            self.on_fenced(self.notebook_id)

    async def abandon(self):
        """Drop the session without writing or publishing anything: another worker owns the
        notebook (its writes would be refused anyway).  The execution process is stopped."""
        if self.closed:
            return
        self.closed = True
        task, self._task = self._task, None
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
        await self._release()

    async def close(self, stop_reason=None):
        """Drop the session: the message being handled is cancelled, typing not saved yet is
        saved and final states persisted, then the execution process goes.  A closed session
        never writes nor publishes again: every timer is cancelled and the queue refuses jobs.
        `stop_reason`: the notebook moves to another worker (a hand-over); its pages hear it,
        results turn stale, and a history line says so."""
        if self.closed:
            return
        self.closed = True
        self.texts.cancel_timers()
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=CLOSE_GRACE)
        try:
            if stop_reason and self.loaded and not self.model.gone and self.execution.alive:
                await self.execution.stop(stop_reason, cause=DRAIN)
            await self.takeover.wait_records()
            await self.shared_runs.close()
            if self.loaded and not self.model.gone:
                await self._save_text()
                await self.persister.persist()
                await self.events.flush()
            await self.takeover.close()
        except Exception:
            logger.exception("could not save notebook %s while closing its session", self.notebook_id)
        finally:
            await self._release()

    async def _release(self):
        """Nothing of the session writes, publishes or runs any more."""
        self.texts.cancel_timers()
        self.persister.closed = True
        self.events.close()
        self.packages.close()
        await self.execution.close()

    def _kernel_status(self, status):
        """The execution process's state for every page (`kernel_status`, docs/protocol.md), and a
        history line for each stop the lifecycle made."""
        if self.events.closed:
            return
        self.events.emit({"type": "kernel_status", **status})
        if status["state"] == "stopped" and status.get("cause") not in (None, "restart"):
            self.takeover.stopped(status)

    def stop_execution(self, reason):
        """Drop the execution process (in order with the cascades): no cell crashed, yet every
        result that lived in it turns stale and clients hear `reason` (`kernel_restarted`)."""
        self._queue_job("kernel.stop_execution", self.execution.stop, reason)

    # --- loading and catching up ------------------------------------------------------------
    async def ensure_loaded(self):
        if self.loaded:
            return
        async with self._load_lock:
            if not self.loaded:
                await self._load()

    async def _load(self):
        with gc_paused():
            snapshot = await self.store.load(self.notebook_id)
            previous_ids = set(self.model.cells)
            if snapshot is None:
                self.model.clear()
                self.loaded = True
                return
            self.events.start_above_earlier_sessions()
            self.name = snapshot["name"]
            self.revisions.loaded(snapshot["revision"])
            await self.execution.configure(RunnerConfig.from_snapshot(snapshot), reason="the notebook's settings changed")
            self.persister.dirty |= self.model.load(snapshot["cells"])
            if self.takeover.loaded(snapshot, self.model.cells.values()):
                self.resume()  # said and run at once, even if this load answered a sync
            self.model.files = snapshot.get("files") or []
            self.texts.keep_after_reload()
            self.statuses.refresh_blocked(emit=False)
            await self.execution.forget(previous_ids - set(self.model.cells))
            self.loaded = True

    async def reload(self, request_id=None):
        """Catch up with the database after a missed message, and resync every client.

        The state carries the requestId of the message that revealed the gap, so its
        sender still gets an answer (its change is part of the state).
        """
        async with self._load_lock:
            await self._load()
        self._emit_state(request_id)

    def state_messages(self, request_id=None):
        """The notebook's state as event_stream.EventStream.state_messages sends it."""
        stdout_url = lambda cell_id: self.store.stdout_url(self.notebook_id, cell_id)  # noqa: E731
        outputs_url = lambda cell_id: self.store.outputs_url(self.notebook_id, cell_id)  # noqa: E731
        config = self.execution.config
        notebook = {
            "id": self.notebook_id,
            "name": self.name,
            "revision": self.revision,
            "cells": [],
            "dbConnection": {"connected": bool(config.db_connection), "display": config.db_display},
            "packages": self.packages.summary(config),
            "secrets": list(config.secret_list),  # names, who set them, when: never a value
            "files": self.model.files,
            "egressAllowlist": list(config.egress_allowlist),
            "kernel": self.execution.status,
        }
        return self.events.state_messages(notebook, self.model.cell_messages(stdout_url, self.texts.fields, outputs_url), request_id)

    def _emit_state(self, request_id=None):
        """A full state to every client; it carries the seq of the last event before it."""
        self.revisions.state_announced = True
        self.events.emit_state(self.state_messages(request_id))

    async def announce_state(self):
        """Every client gets a fresh state now: events sent to them were lost (Redis was down)."""
        if self.loaded and not self.model.gone:
            self._emit_state()
            await self.events.flush()

    async def sync(self, reply_channel, request_id=None, revision=None):
        """Answer one socket with the current state, out of band (never queued behind a cascade).

        When the database was ahead of this session (`revision`, read by the consumer), the
        answer waits in the notebook's queue instead: behind the change still on its way
        here, or behind a reload if that change never comes.
        """
        await self.ensure_loaded()
        if self.model.gone:
            await self.events.send(reply_channel, [{"type": "error", "code": "not_found", "message": "This notebook no longer exists."}])
            return
        if revision is not None and revision > self.revision:
            self._queue_job("kernel.catch_up", self._catch_up, revision, reply_channel, request_id)
            return
        await self.events.send(reply_channel, self.state_messages(request_id))
        if self.texts.states_unsaved or self.persister.dirty:
            # What this load or state learnt (analyses, shared texts built from the code) is
            # stored, so the next worker to load it need not redo it.
            self._queue_job("kernel.bookkeeping", self.persister.persist)

    async def _catch_up(self, revision, reply_channel, request_id):
        if revision > self.revision:
            await self.reload(request_id)  # the state reaches every socket, this one too
        else:
            await self.events.send(reply_channel, self.state_messages(request_id))

    def _up_to_date(self, run):
        """A handler that runs cells (`await run(message)`) once the session has the revision the
        message was sent at and the typing is saved (a run right after typing runs what was typed)."""

        async def handler(message):
            if message.get("revision", -1) > self.revision:
                await self.reload()
            await self._save_text()
            await self.takeover.running(message, lambda: self.shared_runs.running(message, lambda: run(message)), self.cascades)

        return handler

    # --- out of band --------------------------------------------------------------------------
    def text_update(self, message):
        """A page's edit of a cell's shared text, merged and relayed at once (cell_texts.py)."""
        if not self.closed:
            self.execution.touch()
            self.texts.apply(message)

    def input_set(self, message):
        """A widget moved: remembered at once, applied in order (coalesced: inputs.py)."""
        if not self.closed:
            self.execution.touch()
        if not self.closed and self.inputs.add(message):
            self._queue_job("kernel.apply_inputs", self._apply_inputs)

    async def interrupt(self):
        """Stop the running cell and the rest of its cascade (running.py)."""
        return await self.cascades.interrupt()

    async def assist(self, message):
        """`kernel.complete` / `kernel.inspect`: answered to the sender alone, never queued behind
        a cascade, and never starting an execution process (assists.py)."""
        await self.ensure_loaded()
        await self.assists.answer(message, closed=self.closed)

    # --- kernel messages and the session's own jobs -----------------------------------------------
    async def _version_restored(self, message):
        """A saved version restored (many cells at once): reload, then one cascade of what changed."""
        if message.get("revision", -1) <= self.revision:
            return
        await self.reload(message.get("requestId"))
        changed = {cell_id for cell_id in message.get("changed") or () if cell_id in self.model.cells}
        if changed:
            await self.cascades.run_roots(changed)

    async def _set_packages(self, message):
        self.packages.request(message, asyncio.get_running_loop().create_task)

    def _packages_built(self, requirements, lock, message):
        self._queue_job("kernel.packages_built", self.edits.packages_built, requirements, lock, message)

    async def _rename(self, message):
        self.name = message["name"]
        self.events.emit({"type": "notebook_renamed", "name": self.name, "requestId": message.get("requestId")})

    async def _text_update(self, message):
        self.texts.apply(message)

    async def _save_text(self):
        """Typing not saved yet into the database (persister.save_typing), then applied as an edit
        (edits.typed) when it made the next revision; someone else's edit committed in between
        means a reload instead."""
        rows, revision = await self.persister.save_typing()
        if revision is not None and await self.revisions.advance(revision):
            await self.edits.typed(rows)

    async def _apply_inputs(self):
        readers, by = await self.inputs.apply()
        if readers:
            await self.cascades.run_roots(readers, by=by)
