"""The shared text of one cell: a Yjs document (pycrdt) whose `code` text every editor merges into.

The kernel worker's session holds one per cell and is its authority: updates from pages are
applied here and relayed (docs/protocol.md#shared-text), a plain replacement of the code (a
script's `cell_update`) becomes the smallest edit that turns the old text into the new one, and a
document whose history has grown much larger than its text is compacted into a new
`generation` (pages adopt it whole).  No Django, no I/O.

Indexes: pycrdt counts UTF-8 bytes where Python counts code points (and Yjs in the browser UTF-16
units); only `replace` needs indexes, and it converts.  Merging never depends on them.
"""
import base64
import difflib
import hashlib

from pycrdt import Doc, Text

TEXT_NAME = "code"


def code_key(code):
    """A short key of a text, stored beside a document's state (Cell.ydoc_key): a state whose key
    is that of the cell's code holds that code, and can be sent without being read."""
    return hashlib.blake2b(code.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


class UpdateRejected(Exception):
    """An update that is not a valid Yjs update, or that would make the code too long."""


class CellText:
    def __init__(self, code="", *, state=None, generation=0):
        """From a stored `state` (a full update) when it holds exactly `code`; otherwise a new
        document holding `code` (a new generation, so that pages do not merge two histories)."""
        self.doc = Doc()
        self.text = self.doc.get(TEXT_NAME, type=Text)
        self.generation = generation
        self._state = None  # state(), until the document changes (apply, replace)
        self._state_b64 = None
        if state:
            try:
                self.doc.apply_update(bytes(state))
            except Exception:  # a damaged stored state: start over from the code
                state = None
        if not state or str(self.text) != code:
            if state:
                self.doc = Doc()
                self.text = self.doc.get(TEXT_NAME, type=Text)
                self.generation = generation + 1
            if code:
                self.text += code
        else:
            self._state = bytes(state)  # the stored update is this document, whole

    def __str__(self):
        return str(self.text)

    def state(self):
        """The whole document as one update (what a page starts from)."""
        if self._state is None:
            self._state = self.doc.get_update()
        return self._state

    def state_base64(self):
        """state() in base64, as `notebook_state` and `cell_created` carry it (kept, like state())."""
        if self._state_b64 is None:
            self._state_b64 = base64.b64encode(self.state()).decode("ascii")
        return self._state_b64

    def _changed(self):
        self._state = self._state_b64 = None

    def apply(self, update, *, max_bytes=None):
        """Merge a page's update; returns True when the text changed.  An update that would make
        the text longer than `max_bytes` (UTF-8) is rejected before it touches this document."""
        if max_bytes is not None and len(update) + len(str(self.text).encode()) > max_bytes:
            # An update inserts at most its own size: only one this large can overflow.
            trial = Doc()
            trial.apply_update(self.state())
            try:
                trial.apply_update(bytes(update))
            except Exception as exc:
                raise UpdateRejected(f"not a valid update: {exc}") from None
            if len(str(trial.get(TEXT_NAME, type=Text)).encode()) > max_bytes:
                raise UpdateRejected(f"the code would be longer than {max_bytes:,} bytes")
        before = str(self.text)
        try:
            self._changed()
            self.doc.apply_update(bytes(update))
        except Exception as exc:
            raise UpdateRejected(f"not a valid update: {exc}") from None
        return str(self.text) != before

    def replace(self, code):
        """Turn the text into `code` with the smallest edit; returns the update (None: no change)."""
        old = str(self.text)
        if old == code:
            return None
        before = self.doc.get_state()
        matcher = difflib.SequenceMatcher(a=old, b=code, autojunk=False)
        self._changed()
        with self.doc.transaction():
            # From the end backwards, so earlier offsets stay valid.
            for tag, i1, i2, j1, j2 in reversed(matcher.get_opcodes()):
                if tag == "equal":
                    continue
                start, end = _offset(old, i1), _offset(old, i2)
                if end > start:
                    del self.text[start:end]
                if j2 > j1:
                    self.text.insert(start, code[j1:j2])
        return self.doc.get_update(before)

    def history_size(self):
        return len(self.state())

    def compacted(self):
        """A new generation holding the same text without its history."""
        return CellText(str(self.text), generation=self.generation + 1)


def new_state(code):
    """CellText(code).state() for a new cell. An empty document's update is always the same two
    bytes (no client has written to it), so an empty cell, what a page's "+" makes, takes them
    without a document being made: ~0.15 ms of a create_cell on this VM (docs/performance.md,
    "Where a paced create's 3 ms go")."""
    return CellText(code).state() if code else _EMPTY_STATE


_EMPTY_STATE = CellText().state()


def _offset(text, index):
    """The UTF-8 byte offset of code point `index` (pycrdt's unit)."""
    return len(text[:index].encode("utf-8"))
