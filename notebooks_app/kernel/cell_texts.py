"""The shared texts of one notebook's cells (docs/protocol.md#shared-text): a `CellText` per cell
pages merge their typing into, which cells hold typing the database lacks (and who typed it),
which documents' states it lacks, and the two timers: save SAVE_DELAY after the typing stops,
compact a document whose history outgrew its text after COMPACT_IDLE.

It merges, relays and keeps track; a timer only queues a job (`queue_job`: the save job it is
given, or its own `compact`), which the session runs in its queue.  It must not write to the
store nor change a cell's code (the persister saves the typing, then the session applies it as
an edit).
"""
import asyncio
import base64
import time

from .shared_text import CellText, UpdateRejected, code_key

# Merged shared text is saved (code, revision, analysis) after this long without keystrokes.
SAVE_DELAY = 0.3
# A shared text whose history outgrew its text is compacted after this long without keystrokes.
COMPACT_IDLE = 30.0


def outgrown(text, code):
    """Whether a document's history outgrew its text enough to be compacted."""
    return text.history_size() > 4 * len(code.encode()) + 4096


class CellTexts:
    def __init__(self, *, model, events, queue_job, save_job, max_code_bytes):
        self.model = model
        self.events = events
        self.queue_job = queue_job  # (name, job, *arguments) -> None: the session's queue
        self.save_job = save_job  # the job that saves the typing (the session's)
        self.max_code_bytes = max_code_bytes
        self.documents = {}  # cell id -> CellText
        self.unsaved = set()  # cells whose merged text the database does not have yet
        self.states_unsaved = set()  # cells whose Yjs state (not text) the database lacks
        self._last_keystroke = {}  # cell id -> monotonic time of its last text update
        self._typists = {}  # cell id -> ids of the people whose typing is not saved yet
        self._save_handle = None
        self._compact_handles = {}  # cell id -> its compaction timer

    def __getitem__(self, cell_id):
        return self.documents[cell_id]

    def text(self, cell):
        """The cell's shared text, built on first use from its stored state (or its code)."""
        text = self.documents.get(cell.id)
        if text is None:
            text = CellText(cell.code, state=cell.ydoc, generation=cell.ygen)
            if text.generation != cell.ygen or cell.ydoc is None:
                self.states_unsaved.add(cell.id)
            cell.ydoc = cell.ydoc_b64 = None  # the CellText holds it now
            cell.ygen = text.generation
            self.documents[cell.id] = text
        return text

    def fields(self, cell):
        """The shared text as a state carries it.  A stored state known to hold the cell's code
        (its key) is sent as stored: the document is built only when something edits or reads
        it, so opening a big notebook does not build thousands of documents."""
        if cell.id not in self.documents and cell.ydoc is not None and cell.ykey and cell.ykey == code_key(cell.code):
            if cell.ydoc_b64 is None:
                cell.ydoc_b64 = base64.b64encode(cell.ydoc).decode("ascii")
            return {"ydoc": cell.ydoc_b64, "ygen": cell.ygen}
        text = self.text(cell)
        return {"ydoc": text.state_base64(), "ygen": text.generation}

    def keep_after_reload(self):
        """After a (re)load: shared texts keep their history, so pages can go on merging into
        them.  One whose code the database changed meanwhile takes the new code as an edit;
        one with typing not saved yet keeps it (the coming save writes it)."""
        kept = {}
        for cell_id, text in self.documents.items():
            cell = self.model.cells.get(cell_id)
            if cell is None:
                continue
            cell.ydoc, cell.ydoc_b64, cell.ygen = None, None, text.generation
            kept[cell_id] = text
            if cell_id not in self.unsaved and str(text) != cell.code:
                self._emit_edit(cell, text.replace(cell.code))
        self.documents = kept
        self.unsaved &= set(kept)

    def replace(self, cell, code, by=None):
        """A whole new text (a script's cell_update): one edit of the shared text, so the pages'
        documents converge on it; typing not saved yet is replaced (the last writer wins)."""
        self._emit_edit(cell, self.text(cell).replace(code), by=by)
        self.unsaved.discard(cell.id)

    def _emit_edit(self, cell, update, by=None):
        if update:
            event = {"type": "text_update", "cellId": cell.id, "update": base64.b64encode(update).decode("ascii"), "generation": self.documents[cell.id].generation}
            if by:
                event["by"] = by
            self.events.emit(event)
            self.states_unsaved.add(cell.id)

    def apply(self, message):
        """A page's edit of a cell's shared text: merged and relayed at once, out of band (never
        behind a running cell); saved to the database SAVE_DELAY after the typing stops."""
        reply, request_id = message.get("replyChannel"), message.get("requestId")
        cell = self.model.cells.get(message.get("cellId"))
        if cell is None:
            notice = "This cell was deleted while you were typing in it; what you typed there is gone with it."
            self.events.reply(reply, {"type": "error", "code": "unknown_cell", "message": notice, "cellId": message.get("cellId"), "requestId": request_id})
            return
        text = self.text(cell)
        if message.get("generation") != text.generation:
            # The page's document is of an older generation (compacted, or rebuilt): it starts over.
            self.events.reply(reply, {"type": "text_reset", "cellId": cell.id, "requestId": request_id, **self.fields(cell)})
            return
        try:
            changed = text.apply(base64.b64decode(message.get("update") or ""), max_bytes=self.max_code_bytes)
        except (UpdateRejected, ValueError) as exc:
            self.events.reply(reply, {"type": "error", "code": "invalid_field", "message": f"The edit was refused: {exc}.", "requestId": request_id})
            self.events.reply(reply, {"type": "text_reset", "cellId": cell.id, "requestId": request_id, **self.fields(cell)})
            return
        self._last_keystroke[cell.id] = time.monotonic()
        if not changed:
            return
        self._typists.setdefault(cell.id, set()).add(message.get("byId"))
        event = {"type": "text_update", "cellId": cell.id, "update": message["update"], "generation": text.generation}
        if message.get("by"):
            event["by"] = message["by"]
        self.events.emit(event)
        self.events.flush_eagerly()
        self.unsaved.add(cell.id)
        self._schedule_save()

    def _schedule_save(self):
        if self._save_handle is not None:
            self._save_handle.cancel()
        self._save_handle = asyncio.get_running_loop().call_later(SAVE_DELAY, self._save_due)

    def _save_due(self):
        self._save_handle = None
        self.queue_job("kernel.save_text", self.save_job)

    def take_unsaved(self):
        """The typing to save now, {cell id: (code, state, generation, typists' ids)}, taken off
        the unsaved set (the save timer is cancelled: this is the save)."""
        if self._save_handle is not None:
            self._save_handle.cancel()
            self._save_handle = None
        cells, documents = self.model.cells, self.documents
        pending = {cell_id for cell_id in self.unsaved if cell_id in cells}
        self.unsaved.clear()
        changed = {cell_id: str(documents[cell_id]) for cell_id in pending if str(documents[cell_id]) != cells[cell_id].code}
        self.states_unsaved |= pending - set(changed)
        return {
            cell_id: (code, documents[cell_id].state(), documents[cell_id].generation, sorted(filter(None, self._typists.pop(cell_id, ()))))
            for cell_id, code in changed.items()
        }

    def saved(self, cell_ids):
        """The texts (and their states) of `cell_ids` are stored."""
        self.states_unsaved -= set(cell_ids)

    def compact_when_idle(self, codes):
        """Of the texts just saved (`codes`: cell id -> code), those whose history outgrew them
        are compacted once the typing has stopped for COMPACT_IDLE."""
        loop = asyncio.get_running_loop()
        for cell_id, code in codes.items():
            text = self.documents.get(cell_id)
            if text is not None and outgrown(text, code):
                if cell_id in self._compact_handles:
                    self._compact_handles[cell_id].cancel()
                self._compact_handles[cell_id] = loop.call_later(COMPACT_IDLE, self._compact_due, cell_id)

    @property
    def compactions_due(self):
        """The cells whose compaction timer is set."""
        return set(self._compact_handles)

    def _compact_due(self, cell_id):
        self._compact_handles.pop(cell_id, None)
        self.queue_job("kernel.compact_text", self.compact, cell_id)

    async def compact(self, cell_id):
        """A text whose history outgrew it, idle for COMPACT_IDLE: a new generation without
        the history; every page adopts it whole (`text_reset`).  A job of the session's queue."""
        text = self.documents.get(cell_id)
        if text is None or time.monotonic() - self._last_keystroke.get(cell_id, 0) < COMPACT_IDLE * 0.9:
            return
        if cell_id in self.unsaved or not outgrown(text, str(text)):
            return
        cell = self.model.cells[cell_id]
        self.documents[cell_id] = text.compacted()
        cell.ygen = self.documents[cell_id].generation
        self.states_unsaved.add(cell_id)
        self.events.emit({"type": "text_reset", "cellId": cell_id, **self.fields(cell)})

    def take_states_to_save(self):
        """{cell id: (state, generation, code key)} of documents whose state the database lacks
        and whose text it has, taken off the unsaved states."""
        documents = self.documents
        states = {c: (documents[c].state(), documents[c].generation, code_key(str(documents[c]))) for c in self.states_unsaved if c in documents and c not in self.unsaved}
        self.states_unsaved -= set(states)
        return states

    def discard(self, cell_id):
        """The cell is deleted: its text goes, typing included."""
        self.documents.pop(cell_id, None)
        self.unsaved.discard(cell_id)
        self.states_unsaved.discard(cell_id)
        handle = self._compact_handles.pop(cell_id, None)
        if handle is not None:
            handle.cancel()

    def cancel_timers(self):
        """No more saves or compactions are asked for (the session closes; it saves first)."""
        if self._save_handle is not None:
            self._save_handle.cancel()
            self._save_handle = None
        for handle in self._compact_handles.values():
            handle.cancel()
        self._compact_handles.clear()
