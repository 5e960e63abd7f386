"""What one notebook's session does for the fleet (fleet.py), beside its queue: its run journal
kept in the database (run_journal.py), what it takes over from a worker that died or handed the
notebook over (the runs to run again, the kernel that is gone), and the history lines of the
lifecycle's stops (lifecycle.py).

It owns the journal's saves and the stop records on their way; it must not run cells nor touch
the queue: it tells the session what to run (`recovered`) and what to say (`lost`).
"""
import asyncio
import logging

from ..constants import STATUS_ERROR, STATUS_SUCCESS
from .leases import Fenced
from .run_journal import MAX_ATTEMPTS, RUN_TYPES, RunJournal

logger = logging.getLogger(__name__)

GRACE = 5.0  # close(): how long a save or record on its way may take


class Takeover:
    def __init__(self, notebook_id, *, store, on_fenced):
        self.notebook_id = notebook_id
        self.store = store
        self.on_fenced = on_fenced  # async () -> None: another worker holds the notebook now
        self.journal = RunJournal()
        self.recovered = []  # journal entries a previous owner left unfinished, to run first
        self.lost = None  # why the previous owner's execution process is gone, to say once loaded
        self.orphan_reason = None  # () -> why the last worker's kernels are gone (it died), or None
        self.closed = False
        self._first_load = True
        self._saving = None
        self._tasks = set()  # stop records on their way

    @property
    def journaled(self):
        return getattr(self.store, "save_run_journal", None) is not None

    # --- the journal ----------------------------------------------------------------------------
    def received(self, message):
        """A message arrived: a run is written in the journal first; False for a run seen
        already (pending or done), which is not run again."""
        if message["type"] not in RUN_TYPES or self.closed:
            return True
        if not self.journal.add(message):
            logger.info("notebook %s: run %s seen already, not run again", self.notebook_id, message.get("requestId"))
            return False
        self.save_soon()
        return True

    async def running(self, message, run, cascades):
        """`await run()`, a run of `message`: its journal entry ends in the cascade's final write
        (cascades.finishing), or here if it failed; a run cancelled (the session closed, a
        hand-over) or fenced stays in the journal for the next owner."""
        cascades.finishing = lambda: self.journal.finish(message)
        try:
            await run()
        except (asyncio.CancelledError, Fenced):
            raise
        except Exception:
            self.finished(message)
            raise
        finally:
            cascades.finishing = None
        self.finished(message)  # (ended with the results already, unless nothing ran)

    def finished(self, message):
        """A run ended (done, stopped, or failed): never run again, whoever owns the notebook."""
        self.journal.finish(message)
        self.save_soon()

    def save_soon(self):
        """The journal to the store, beside the queue (a run waiting behind a long cascade is in
        the database within a round trip of its arrival)."""
        if self.journaled and (self._saving is None or self._saving.done()):
            self._saving = asyncio.get_running_loop().create_task(self._save())

    async def _save(self):
        while self.journal.changed and not self.closed:
            try:
                async with self.journal.lock:
                    if not self.journal.changed:
                        return
                    self.journal.changed = False
                    await self.store.save_run_journal(self.notebook_id, self.journal.state())
            except Fenced:
                await self.on_fenced()
                return
            except Exception:  # noqa: BLE001 - the next change saves it again
                logger.exception("could not save the run journal of notebook %s", self.notebook_id)
                return

    # --- loading ----------------------------------------------------------------------------------
    def loaded(self, snapshot, cells):
        """The session's first load: the runs the last owner never finished (run once here, first;
        one taken over MAX_ATTEMPTS times is dropped), and whether the notebook's kernel died with
        a worker (its results lived there).  True when something must be said or run at once."""
        if not self._first_load:
            return False
        self._first_load = False
        if "run_journal" in snapshot:
            for entry in self.journal.load(snapshot["run_journal"]):
                if entry["attempts"] > MAX_ATTEMPTS:
                    logger.error("notebook %s: dropping a %s its workers never finished in %d attempts", self.notebook_id, entry["message"].get("type"), MAX_ATTEMPTS)
                    self.journal.finish(entry["message"])
                else:
                    self.recovered.append(entry)
            if self.journal.changed:
                self.save_soon()
        reason = self.orphan_reason() if self.orphan_reason is not None else None
        if reason and (self.recovered or any(cell.status in (STATUS_SUCCESS, STATUS_ERROR) for cell in cells)):
            self.lost = reason
        return self.lost is not None

    def take_recovered(self):
        recovered, self.recovered = self.recovered, []
        for entry in recovered:
            logger.info("notebook %s: running %s left unfinished by its previous worker (attempt %d)", self.notebook_id, entry["message"].get("type"), entry["attempts"])
        return [entry["message"] for entry in recovered]

    def take_lost(self):
        reason, self.lost = self.lost, None
        return reason

    # --- the lifecycle's stops ----------------------------------------------------------------------
    def stopped(self, status):
        """A stop the lifecycle made (idle, evicted, memory, drain, failover, operator): a line in
        the notebook's history, written beside the queue."""
        record = getattr(self.store, "record_kernel_stop", None)
        if record is None:
            return
        task = asyncio.get_running_loop().create_task(self._record(record, status))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _record(self, record, status):
        try:
            await record(self.notebook_id, status["cause"], status["reason"])
        except Fenced:
            pass  # the next owner's history says the rest
        except Exception:  # noqa: BLE001 - a history line is not worth a failed stop
            logger.exception("could not record the kernel stop of notebook %s", self.notebook_id)

    # --- closing ------------------------------------------------------------------------------------
    async def wait_records(self):
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=GRACE)

    async def close(self):
        """The session closes while it still holds the notebook: the journal as it is now, saved
        (what was queued and not run stays in it for the next owner)."""
        self.closed = True
        saving = self._saving
        if saving is not None and not saving.done():
            await asyncio.wait({saving}, timeout=GRACE)
        if self.journal.changed and self.journaled:
            async with self.journal.lock:
                self.journal.changed = False
                await self.store.save_run_journal(self.notebook_id, self.journal.state())
