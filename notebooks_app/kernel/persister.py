"""Writes one notebook's final cell states and shared-text states to its store, in batches: the
cells marked dirty since the last write whose persisted fields changed, at most every
PERSIST_INTERVAL during a long cascade; and the typing merged into shared texts and not saved
yet (`save_typing`: code, Yjs state, one revision bump), which the session then applies.

It writes only what the model and the shared texts hold; it must not change a cell nor announce
anything, and once closed (or the notebook gone) it writes nothing.
"""
import time

from .cell_state import TRANSIENT

# During a long cascade, finished cells are written to the database this often.
PERSIST_INTERVAL = 1.0


class Persister:
    def __init__(self, notebook_id, *, store, model, texts, events, journal=None):
        self.notebook_id = notebook_id
        self.store = store
        self.model = model
        self.texts = texts
        self.events = events
        self.journal = journal  # run_journal.RunJournal: a change of it goes in the same write as the rows
        self.dirty = set()  # cells whose persisted fields may differ from the stored ones
        self.closed = False
        self._last = time.monotonic()

    def discard(self, cell_id):
        self.dirty.discard(cell_id)

    async def persist(self):
        """Dirty cells whose final state the store lacks, in one write; then the shared texts'
        states (after the rows: a big notebook's first load has thousands of each, and its
        analyses are what a restarted worker misses most)."""
        cells = self.model.cells
        changed = []
        for cell_id in self.dirty:
            cell = cells.get(cell_id)
            if cell is not None and cell.status not in TRANSIENT:
                fields = cell.persisted_fields()
                if fields != cell.saved:
                    changed.append((cell, fields))
        self.dirty = {c for c in self.dirty if c in cells and cells[c].status in TRANSIENT}
        self._last = time.monotonic()
        if self.closed or self.model.gone:
            return
        journaled = self.journal is not None and self.journal.changed and getattr(self.store, "save_run_journal", None) is not None
        if changed or journaled:
            # Under the events' lock: the 10 ms flush timer must not announce a final state
            # while it is being written (a client that sees it and reloads must find it).
            async with self.events.lock:
                rows = [cell.to_row(fields) for cell, fields in changed]
                if not journaled:
                    await self.store.persist(self.notebook_id, rows)
                else:
                    async with self.journal.lock:  # its state as of this write (run_journal.py)
                        self.journal.changed = False
                        await self.store.persist(self.notebook_id, rows, journal=self.journal.state())
            for cell, fields in changed:
                cell.saved = fields
        states = self.texts.take_states_to_save()
        if states:
            await self.store.save_text_states(self.notebook_id, states)

    async def save_typing(self):
        """The typing not saved yet (cell_texts.take_unsaved) into the store in one write:
        ({cell id: (code, state, generation, typists)}, the revision it made, or None)."""
        if self.closed or self.model.gone or not self.texts.unsaved:
            return {}, None
        rows = self.texts.take_unsaved()
        if not rows:
            return rows, None
        revision = await self.store.save_code(self.notebook_id, rows)
        self.texts.saved(rows)
        return rows, revision

    def due(self):
        """The last write is PERSIST_INTERVAL old."""
        return time.monotonic() - self._last >= PERSIST_INTERVAL

    async def persist_if_due(self):
        if self.due():
            await self.events.flush()
            await self.persist()
