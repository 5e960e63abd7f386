"""One notebook's kernel session: its cells, dependency graph, runner and event stream.

The session applies kernel messages strictly in order (one asyncio task drains
its queue), runs reactive cascades, numbers every event it publishes with a
per-notebook `seq`, and hands final cell states to a store in batches.  It knows
nothing of Django or Channels: the worker gives it a `store` (load/persist) and
a `publish` coroutine, which keeps this logic testable and the I/O in one place.
"""
import asyncio
import base64
import bisect
import contextlib
import gc
import hashlib
import json
import logging
import re
import sys
import time
from dataclasses import dataclass, field

from ..constants import (
    CELL_MARKDOWN,
    CELL_SQL,
    MARKDOWN_MIME,
    ERROR_TEXT_LIMIT,
    OUTPUT_INLINE_LIMIT,
    STATE_CHUNK_BYTES,
    STATE_STDOUT_LIMIT,
    STATUS_BLOCKED,
    STATUS_ERROR,
    STATUS_IDLE,
    STATUS_QUEUED,
    STATUS_RUNNING,
    STATUS_STALE,
    STATUS_SUCCESS,
)
from .analysis import analyze_markdown, analyze_python, analyze_sql
from .markdown import placeholders as markdown_fields
from .markdown import render as render_markdown
from .graph import DependencyGraph
from .runner import RunnerDied, SandboxUnavailable
from .shared_text import CellText, UpdateRejected, code_key
from .display import CHART_MIME_TYPES
from .ui import UI_MIME

logger = logging.getLogger(__name__)

# Stored analyses (Cell.analysis) of another version are recomputed on load: bump this when
# kernel/analysis.py's results change for the same code.
ANALYSIS_VERSION = 1
# Events produced within FLUSH_DELAY of each other go out as one group message.
FLUSH_DELAY = 0.01
# During a long cascade, finished cells are written to the database this often.
PERSIST_INTERVAL = 1.0
# Merged shared text is saved (code, revision, analysis) after this long without keystrokes.
SAVE_DELAY = 0.3
# A shared text whose history outgrew its text is compacted after this long without keystrokes.
COMPACT_IDLE = 30.0
# Streamed stdout kept per cell (the runner caps a single run too).
STDOUT_CAP = 1_000_000
TRANSIENT = frozenset({STATUS_QUEUED, STATUS_RUNNING})
INTERRUPTED_BEFORE_START = {"ename": "KeyboardInterrupt", "evalue": "interrupted before it started", "traceback": []}

_gc_pauses = 0
_gc_was_enabled = True


@contextlib.contextmanager
def gc_paused():
    """The cyclic garbage collector off for a burst of allocations: loading a notebook and
    encoding its state. 10,000 cells make about a million objects, and every full collection
    meanwhile walks all of them and the rest of the heap again (a cold open of 10,000 cells
    spent 0.3 - 0.5 s there; docs/performance.md). Nothing made here is cyclic garbage, so
    one collection afterwards, when the collector next runs, is all it costs. Overlapping
    pauses (two notebooks loading at once) share the switch."""
    global _gc_pauses, _gc_was_enabled
    if _gc_pauses == 0:
        _gc_was_enabled = gc.isenabled()
        gc.disable()
    _gc_pauses += 1
    try:
        yield
    finally:
        _gc_pauses -= 1
        if _gc_pauses == 0 and _gc_was_enabled:
            gc.enable()




def spliced(event, key, item_texts):
    """`event` as an `Encoded` whose text has `item_texts` (the items of its list under `key`,
    each encoded already) spliced in: the list is emptied, the event encoded, and its one
    `"key":[]` (a user string such as the name cannot hold it unescaped) filled."""
    holder = event["notebook"] if event["type"] == "notebook_state" else event
    items, holder[key] = holder[key], []
    skeleton = _encode(event)
    holder[key] = items
    out = Encoded(event)
    out.text = skeleton.replace(f'"{key}":[]', f'"{key}":[' + ",".join(item_texts) + "]", 1)
    return out


@dataclass
class CellState:
    id: str
    type: str
    code: str
    position: int
    result_variable: str = ""
    status: str = STATUS_IDLE
    outputs: list = field(default_factory=list)
    stdout: str = ""
    error: dict | None = None
    reads: list = field(default_factory=list)
    writes: list = field(default_factory=list)
    graph_reads: frozenset = frozenset()
    tables: list = field(default_factory=list)  # SQL cells: the names the query uses as tables
    ydoc: bytes | None = None  # the stored shared-text state, until the session builds its CellText
    ygen: int = 0
    ykey: str = ""  # code_key() of the text `ydoc` holds, as stored with it ("" unknown)
    ydoc_b64: str | None = None  # `ydoc` in base64, once a state has carried it
    run_by: str = ""  # who started the cell's last run
    id_json: str | None = None  # the id as JSON, for events encoded from a template
    inputs: dict = field(default_factory=dict)  # persisted widget values, by widget id
    syntax_error: dict | None = None
    # The persisted fields as the database last had them (to_row's values): a cell whose
    # final state is what is stored already is not written again (a rerun chain's cells).
    saved: tuple | None = None
    analysis: dict | None = None  # what is stored besides reads/writes (restore_analysis)

    @classmethod
    def from_row(cls, row):
        cell = cls(
            id=str(row["id"]),
            type=row["type"],
            code=row["code"],
            position=row["position"],
            result_variable=row.get("result_variable") or row.get("resultVariable") or "",
            status=row.get("status") or STATUS_IDLE,
            outputs=list(row.get("outputs") or []),
            stdout=row.get("stdout") or "",
            error=row.get("error"),
            ydoc=bytes(row["ydoc"]) if row.get("ydoc") else None,
            ygen=row.get("ydoc_generation") or 0,
            ykey=row.get("ydoc_key") or "",
            inputs=dict(row.get("inputs") or {}),
        )
        cell.saved = (cell.status, cell.outputs, cell.stdout, cell.error, list(row.get("reads") or []), list(row.get("writes") or []), row.get("analysis"))
        return cell

    def analysis_key(self):
        """What the analysis depends on: the analyser's version, the Python that runs it (its
        builtins), the cell's type, result variable and code."""
        source = f"{ANALYSIS_VERSION}\0{sys.version_info[0]}.{sys.version_info[1]}\0{self.type}\0{self.result_variable}\0{self.code}"
        return hashlib.blake2b(source.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()

    def restore_analysis(self, row):
        """Take the stored analysis of `row` when it was computed from this very code (its key
        matches); True if it did, False when the cell must be analysed."""
        stored = row.get("analysis")
        if not isinstance(stored, dict) or stored.get("key") != self.analysis_key():
            return False
        self.reads = list(row.get("reads") or [])
        self.writes = list(row.get("writes") or [])
        self.tables = list(stored.get("tables") or [])
        self.syntax_error = stored.get("error")
        self.graph_reads = frozenset(self.reads) | frozenset(stored.get("builtins") or ()) | frozenset(self.tables)
        self.analysis = stored
        return True

    def analyse(self):
        if self.type == CELL_SQL:
            result = analyze_sql(self.code, self.result_variable)
        elif self.type == CELL_MARKDOWN:
            result = analyze_markdown(self.code)
        else:
            result = analyze_python(self.code)
        self.reads = sorted(result.reads)
        self.writes = sorted(result.writes)
        # Builtins (and a SQL cell's table names) become edges only when some cell
        # defines them, which the graph decides.
        self.graph_reads = frozenset(result.reads) | frozenset(result.builtins_used) | frozenset(result.tables)
        self.tables = sorted(result.tables)
        self.syntax_error = result.error
        self.analysis = {"key": self.analysis_key(), "builtins": sorted(result.builtins_used), "tables": self.tables, "error": result.error}

    def to_message(self, stdout_url=None):
        """The cell as the protocol sends it.  Stdout longer than STATE_STDOUT_LIMIT is sent as its
        tail, with `stdoutRef` ({url, size}) to the whole of it (`stdout_url(cell_id)`)."""
        message = {
            "id": self.id,
            "type": self.type,
            "code": self.code,
            "resultVariable": self.result_variable,
            "status": self.status,
            "outputs": self.outputs,
            "stdout": self.stdout,
            "reads": self.reads,
            "writes": self.writes,
            "error": self.error,
        }
        if self.type == CELL_SQL:
            message["tables"] = self.tables
        if self.run_by:
            message["runBy"] = self.run_by
        if len(self.stdout) > STATE_STDOUT_LIMIT and stdout_url is not None:
            message["stdout"] = self.stdout[-STATE_STDOUT_LIMIT:]
            message["stdoutRef"] = {"url": stdout_url(self.id), "size": len(self.stdout)}
        return message

    def persisted_fields(self):
        return (self.status, self.outputs, self.stdout, self.error, self.reads, self.writes, self.analysis)

    def to_row(self):
        return {
            "id": self.id,
            "status": self.status,
            "outputs": self.outputs,
            "stdout": self.stdout,
            "error": self.error,
            "reads": self.reads,
            "writes": self.writes,
            "analysis": self.analysis,
        }


# What the execution process may produce. It runs user code, so it can send anything: never the
# page-trusted markdown HTML (rendered and sanitized here only), never a reference or URL.
CHILD_MIME_TYPES = {"text/plain": str, "text/html": str, "image/png": str, UI_MIME: dict} | dict.fromkeys(CHART_MIME_TYPES, dict)
# HTML that needs scripts of its own (folium maps, widgets, a _repr_html_ with <script>, inline
# event handlers) is always stored apart: its URL serves it as a document whose own policy lets
# its scripts run in an opaque origin (views.cell_output_data); inline HTML runs none.
# A frame inside it (folium's srcdoc, whose scripts are escaped) counts too.
SCRIPTED_HTML = re.compile(r"<script[\s>/]|&lt;script|<iframe[\s>/]|\son[a-z]+\s*=|javascript:", re.IGNORECASE)


_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class Encoded(dict):
    """An event whose JSON text the session made already (`text`): a cascade's statuses are
    most of its events, and a template costs a fraction of encoding the dict.  Never
    changed after `_emit`; the publisher sends `text` as it is."""

    __slots__ = ("text",)


def untrusted_outputs(outputs):
    """The outputs of a run, keeping only known MIME types with data of their type, and no other
    key: an output shown as trusted HTML, or one pointing the page at any URL, cannot be forged."""
    kept = []
    for output in outputs if isinstance(outputs, list) else ():
        mime = output.get("mimeType") if isinstance(output, dict) else None
        if mime in CHILD_MIME_TYPES and isinstance(output.get("data"), CHILD_MIME_TYPES[mime]):
            kept.append({"mimeType": mime, "data": output["data"]})
    return kept


def cut(text, limit):
    """`text`, or its first `limit` characters with a note of how much was left out."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[… {len(text) - limit:,} more characters not shown]"


def bounded_error(error):
    """An error whose message and traceback fit in an event (ERROR_TEXT_LIMIT each): a huge
    exception message is cut, a huge traceback keeps its last lines (nearest the error)."""
    if not error:
        return error
    evalue = cut(str(error.get("evalue", "")), ERROR_TEXT_LIMIT)
    lines, kept, size = list(error.get("traceback") or []), [], 0
    for line in reversed(lines):
        line = cut(str(line), ERROR_TEXT_LIMIT // 4)
        if size + len(line) > ERROR_TEXT_LIMIT:
            kept.append(f"[… {len(lines) - len(kept)} earlier traceback lines not shown]")
            break
        kept.append(line)
        size += len(line) + 1
    return {**error, "ename": cut(str(error.get("ename", "")), 200), "evalue": evalue, "traceback": list(reversed(kept))}


class NotebookSession:
    def __init__(self, notebook_id, *, store, publish, runner_factory, max_code_bytes=256 * 1024):
        self.notebook_id = str(notebook_id)
        self.store = store
        self.publish = publish
        self.runner_factory = runner_factory
        self.runner = None
        self.loaded = False
        self.gone = False
        self.name = ""
        self.revision = -1
        self.db_connection = ""
        self.db_display = ""
        self.cells = {}
        self.order = []  # [(position, id)] sorted
        self.graph = DependencyGraph()
        self.ran_ok = set()  # cells run successfully in this runner since their last change
        # Cells whose run killed the runner: no cascade runs them again (nor what depends on
        # them) until their code changes or someone runs that very cell.
        self.crashed = set()
        self.unblocked = set()  # cells unblocked since they last ran: the next run includes them
        self.max_code_bytes = max_code_bytes
        self.texts = {}  # cell id -> CellText: the shared text pages merge their typing into
        self._unsaved = set()  # cells whose merged text the database does not have yet
        self._states_unsaved = set()  # cells whose Yjs state (not text) the database lacks
        self._last_keystroke = {}  # cell id -> monotonic time of its last text update
        self._save_handle = None
        self._typists = {}  # cell id -> ids of the people whose typing is not saved yet
        self._pending_inputs = {}  # widget id -> the latest set_input not applied yet
        self._last_text_flush = 0.0
        self._inputs_queued = False
        self.seq = 0
        self._pending = []
        self._flush_lock = asyncio.Lock()
        self._flush_handle = None
        self._load_lock = asyncio.Lock()
        self._dirty = set()
        self._last_persist = time.monotonic()
        self._queue = asyncio.Queue()
        self._task = None
        self._cancel_cascade = False
        self._state_announced = False

    # --- lifecycle ----------------------------------------------------------------
    def submit(self, message):
        """Queue a structural or run message; they are applied strictly in order."""
        self._queue.put_nowait(message)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain(), name=f"notebook-{self.notebook_id}")

    async def _drain(self):
        while True:
            message = await self._queue.get()
            try:
                await self.handle(message)
            except Exception as exc:  # one notebook's failure never kills the worker
                logger.exception("kernel session %s failed on %s", self.notebook_id, message.get("type"))
                text = f"The kernel could not process {message.get('type', 'a message')}: {exc}"
                self._emit({"type": "kernel_error", "message": cut(text, ERROR_TEXT_LIMIT)})
            finally:
                try:
                    # Results are persisted before they are announced (cascade() does both);
                    # what is left here is the bookkeeping of a structural change (the new
                    # cell's reads and writes, statuses turned stale), which need not hold
                    # up its announcement.
                    await self.flush()
                    await self.persist()
                except Exception:
                    logger.exception("could not publish or persist notebook %s", self.notebook_id)

    async def close(self):
        if self._task:
            self._task.cancel()
        if self.runner is not None:
            await self.runner.close()

    async def ensure_loaded(self):
        if self.loaded:
            return
        async with self._load_lock:
            if not self.loaded:
                await self._load()

    async def _load(self):
        with gc_paused():
            await self._load_unpaused()

    async def _load_unpaused(self):
        snapshot = await self.store.load(self.notebook_id)
        previous_ids = set(self.cells)
        if snapshot is None:
            self.gone = True
            self.cells, self.order, self.graph = {}, [], DependencyGraph()
            self.loaded = True
            return
        if self.seq == 0:
            # A new session (e.g. a restarted worker) numbers above anything an earlier
            # one can have sent, so connected clients see a gap and resync instead of
            # ignoring the new events as old ones.
            self.seq = int(time.time() * 1000) * 1000
        self.name = snapshot["name"]
        self.revision = snapshot["revision"]
        self._state_announced = False
        self.db_connection = snapshot["db_connection"]
        self.db_display = snapshot["db_display"]
        self.cells, self.order, self.graph = {}, [], DependencyGraph()
        self.ran_ok.clear()
        self.crashed.clear()
        self.unblocked.clear()
        for row in snapshot["cells"]:
            cell = CellState.from_row(row)
            if cell.status in TRANSIENT:
                cell.status = STATUS_STALE  # a worker stopped mid-run: its result never arrived
                self._dirty.add(cell.id)
            # The stored analysis when it is of this code; otherwise analysed again, and stored.
            if not cell.restore_analysis(row):
                cell.analyse()
                self._dirty.add(cell.id)
            self.cells[cell.id] = cell
            if cell.status == STATUS_ERROR and (cell.error or {}).get("ename") == "KernelDied":
                self.crashed.add(cell.id)
        # Order and graph built in one pass each (10,000 cells: graph 0.5 s added one by one).
        self.order = sorted((cell.position, cell.id) for cell in self.cells.values())
        self.graph = DependencyGraph.from_cells((cell.id, cell.graph_reads, cell.writes, cell.position) for cell in self.cells.values())
        self._keep_texts()
        self._refresh_blocked(emit=False)
        if self.runner is not None:
            for gone_id in previous_ids - set(self.cells):
                await self._forget(gone_id)
        self.loaded = True

    async def reload(self, request_id=None):
        """Catch up with the database after a missed message, and resync every client.

        The state carries the requestId of the message that revealed the gap, so its
        sender still gets an answer (its change is part of the state).
        """
        async with self._load_lock:
            await self._load()
        self._emit_state(request_id)

    # --- shared text (docs/protocol.md#shared-text) -------------------------------------------
    def _text(self, cell):
        """The cell's shared text, built on first use from its stored state (or its code)."""
        text = self.texts.get(cell.id)
        if text is None:
            text = CellText(cell.code, state=cell.ydoc, generation=cell.ygen)
            if text.generation != cell.ygen or cell.ydoc is None:
                self._states_unsaved.add(cell.id)
            cell.ydoc = cell.ydoc_b64 = None  # the CellText holds it now
            cell.ygen = text.generation
            self.texts[cell.id] = text
        return text

    def _keep_texts(self):
        """After a (re)load: shared texts keep their history, so pages can go on merging into
        them.  One whose code the database changed meanwhile takes the new code as an edit;
        one with typing not saved yet keeps it (the coming save writes it)."""
        kept = {}
        for cell_id, text in self.texts.items():
            cell = self.cells.get(cell_id)
            if cell is None:
                continue
            cell.ydoc, cell.ydoc_b64, cell.ygen = None, None, text.generation
            kept[cell_id] = text
            if cell_id not in self._unsaved and str(text) != cell.code:
                self._emit_text_edit(cell, text.replace(cell.code))
        self.texts = kept
        self._unsaved &= set(kept)

    def _text_fields(self, cell):
        """The shared text as a state carries it.  A stored state known to hold the cell's code
        (its key) is sent as stored: the document is built only when something edits or reads
        it, so opening a big notebook does not build thousands of documents."""
        if cell.id not in self.texts and cell.ydoc is not None and cell.ykey and cell.ykey == code_key(cell.code):
            if cell.ydoc_b64 is None:
                cell.ydoc_b64 = base64.b64encode(cell.ydoc).decode("ascii")
            return {"ydoc": cell.ydoc_b64, "ygen": cell.ygen}
        text = self._text(cell)
        return {"ydoc": text.state_base64(), "ygen": text.generation}

    def _emit_text_edit(self, cell, update, by=None):
        if update:
            event = {"type": "text_update", "cellId": cell.id, "update": base64.b64encode(update).decode("ascii"), "generation": self.texts[cell.id].generation}
            if by:
                event["by"] = by
            self._emit(event)
            self._states_unsaved.add(cell.id)

    def text_update(self, message):
        """A page's edit of a cell's shared text: merged and relayed at once, out of band (never
        behind a running cell); saved to the database SAVE_DELAY after the typing stops."""
        reply, request_id = message.get("replyChannel"), message.get("requestId")
        cell = self.cells.get(message.get("cellId"))
        if cell is None:
            notice = "This cell was deleted while you were typing in it; what you typed there is gone with it."
            self._reply(reply, {"type": "error", "code": "unknown_cell", "message": notice, "cellId": message.get("cellId"), "requestId": request_id})
            return
        text = self._text(cell)
        if message.get("generation") != text.generation:
            # The page's document is of an older generation (compacted, or rebuilt): it starts over.
            self._reply(reply, {"type": "text_reset", "cellId": cell.id, "requestId": request_id, **self._text_fields(cell)})
            return
        try:
            changed = text.apply(base64.b64decode(message.get("update") or ""), max_bytes=self.max_code_bytes)
        except (UpdateRejected, ValueError) as exc:
            self._reply(reply, {"type": "error", "code": "invalid_field", "message": f"The edit was refused: {exc}.", "requestId": request_id})
            self._reply(reply, {"type": "text_reset", "cellId": cell.id, "requestId": request_id, **self._text_fields(cell)})
            return
        self._last_keystroke[cell.id] = time.monotonic()
        if not changed:
            return
        self._typists.setdefault(cell.id, set()).add(message.get("byId"))
        event = {"type": "text_update", "cellId": cell.id, "update": message["update"], "generation": text.generation}
        if message.get("by"):
            event["by"] = message["by"]
        self._emit(event)
        # A lone keystroke goes out at once; keystrokes of many typists arriving together share
        # one group message (one frame per page asking for batches) every FLUSH_DELAY.
        now = time.monotonic()
        if now - self._last_text_flush >= FLUSH_DELAY:
            self._last_text_flush = now
            asyncio.get_running_loop().create_task(self.flush())
        else:
            self._schedule_flush()
        self._unsaved.add(cell.id)
        self._schedule_save()

    async def on_text_update(self, message):
        self.text_update(message)  # queued only when it arrived before the notebook was loaded

    def _reply(self, channel, event):
        if channel:
            asyncio.get_running_loop().create_task(self.publish(channel, [event]))

    def _schedule_save(self):
        if self._save_handle is not None:
            self._save_handle.cancel()
        loop = asyncio.get_running_loop()
        self._save_handle = loop.call_later(SAVE_DELAY, lambda: self.submit({"type": "kernel.save_text"}))

    async def on_save_text(self, message):
        """Merged text into the database (code, Yjs state, one revision bump), then the same
        path as an edit: analysis, edges, `cell_updated`, stale statuses."""
        self._save_handle = None
        pending = {cell_id for cell_id in self._unsaved if cell_id in self.cells}
        self._unsaved.clear()
        changed = {cell_id: str(self.texts[cell_id]) for cell_id in pending if str(self.texts[cell_id]) != self.cells[cell_id].code}
        self._states_unsaved |= pending - set(changed)
        if not changed:
            return
        rows = {
            cell_id: (code, self.texts[cell_id].state(), self.texts[cell_id].generation, sorted(filter(None, self._typists.pop(cell_id, ()))))
            for cell_id, code in changed.items()
        }
        revision = await self.store.save_code(self.notebook_id, rows)
        self._states_unsaved -= set(changed)
        if revision is None:
            return
        if revision != self.revision + 1:  # an edit of someone else's committed in between
            await self.reload()
            return
        self.revision = revision
        for cell_id, code in changed.items():
            cell = self.cells[cell_id]
            self._code_changed(cell, code, cell.result_variable)
        newly_blocked, _ = self._refresh_blocked()
        await self._forget_all(newly_blocked)
        for cell_id, code in changed.items():
            if self.texts[cell_id].history_size() > 4 * len(code.encode()) + 4096:
                loop = asyncio.get_running_loop()
                loop.call_later(COMPACT_IDLE, lambda c=cell_id: self.submit({"type": "kernel.compact_text", "cellId": c}))

    async def on_compact_text(self, message):
        """A text whose history outgrew it, idle for COMPACT_IDLE: a new generation without
        the history; every page adopts it whole (`text_reset`)."""
        cell_id = message["cellId"]
        text = self.texts.get(cell_id)
        if text is None or time.monotonic() - self._last_keystroke.get(cell_id, 0) < COMPACT_IDLE * 0.9:
            return
        if cell_id in self._unsaved or text.history_size() <= 4 * len(str(text).encode()) + 4096:
            return
        self.texts[cell_id] = text.compacted()
        self.cells[cell_id].ygen = self.texts[cell_id].generation
        self._states_unsaved.add(cell_id)
        self._emit({"type": "text_reset", "cellId": cell_id, **self._text_fields(self.cells[cell_id])})

    # --- inputs (kernel/ui.py) ---------------------------------------------------------------
    def input_set(self, message):
        """A widget moved (the value is checked and persisted already): remembered at once, applied
        in order; values that arrive while the last ones wait are coalesced into one cascade."""
        self._pending_inputs[message["widgetId"]] = message
        if not self._inputs_queued:
            self._inputs_queued = True
            self.submit({"type": "kernel.apply_inputs"})

    async def on_apply_inputs(self, message):
        self._inputs_queued = False
        pending, self._pending_inputs = self._pending_inputs, {}
        readers, by = set(), None
        for widget_id, change in pending.items():
            cell = self.cells.get(change["cellId"])
            if cell is None:
                continue
            cell.inputs[widget_id] = change["value"]
            cell.saved = None  # its outputs change in place: written again whatever they were
            for output in cell.outputs:
                data = output.get("data")
                if output.get("mimeType") == UI_MIME and isinstance(data, dict) and data.get("id") == widget_id:
                    data["value"] = change["value"]
            self._dirty.add(cell.id)
            event = {"type": "input_changed", "cellId": cell.id, "widgetId": widget_id, "value": change["value"], "requestId": change.get("requestId")}
            if change.get("by"):
                event["by"] = by = change["by"]
            self._emit(event)
            if self.runner is not None and self.runner.alive:
                try:
                    await self.runner.set_input(widget_id, change["value"])
                except (RunnerDied, RuntimeError):
                    self.ran_ok.discard(cell.id)  # not in this process: the cascade reruns the cell
            else:
                self.ran_ok.discard(cell.id)
            readers |= self.graph.descendants(cell.id)
        if readers:
            await self.cascade(self._run_set(readers), by=by)

    # --- ordering helpers ---------------------------------------------------------------
    def _insert(self, cell, analysed=False):
        if not analysed:
            cell.analyse()
        self.cells[cell.id] = cell
        bisect.insort(self.order, (cell.position, cell.id))
        self.graph.add(cell.id, reads=cell.graph_reads, writes=cell.writes, position=cell.position)

    def _remove(self, cell_id):
        self.texts.pop(cell_id, None)
        self._unsaved.discard(cell_id)
        self._states_unsaved.discard(cell_id)
        cell = self.cells.pop(cell_id)
        index = bisect.bisect_left(self.order, (cell.position, cell_id))
        del self.order[index]
        self.graph.remove(cell_id)
        for bookkeeping in (self.ran_ok, self.crashed, self.unblocked, self._dirty):
            bookkeeping.discard(cell_id)
        return cell

    def _reposition(self, positions):
        for cell_id, position in positions.items():
            cell = self.cells.get(cell_id)
            if cell is not None and cell.position != position:
                cell.position = position
                self.graph.set_position(cell_id, position)
        self.order = sorted((c.position, c.id) for c in self.cells.values())

    def index_of(self, cell_id):
        cell = self.cells[cell_id]
        return bisect.bisect_left(self.order, (cell.position, cell_id))

    def ordered_cells(self):
        return [self.cells[cell_id] for _, cell_id in self.order]

    def _label(self, cell_id):
        cell = self.cells.get(cell_id)
        if cell is None:
            return "a deleted cell"
        first = next((line.strip() for line in cell.code.splitlines() if line.strip()), "")
        snippet = f" ({first[:40]})" if first else ""
        return f"cell {self.index_of(cell_id) + 1}{snippet}"

    # --- events --------------------------------------------------------------------
    def _emit(self, event):
        self.seq += 1
        event["seq"] = self.seq
        self._pending.append(event)
        self._schedule_flush()

    def _schedule_flush(self):
        """Pending events go out FLUSH_DELAY from the first of them, in one send."""
        if self._flush_handle is None:
            loop = asyncio.get_running_loop()
            self._flush_handle = loop.call_later(FLUSH_DELAY, lambda: loop.create_task(self.flush()))

    async def flush(self):
        """Publish pending events to the notebook's group, all of them in one send."""
        async with self._flush_lock:
            if self._flush_handle is not None:
                self._flush_handle.cancel()
                self._flush_handle = None
            events, self._pending = self._pending, []
            if not events:
                return
            await self.publish(None, events)

    def state_messages(self, request_id=None):
        """The notebook's state: one `notebook_state`, followed, for a notebook too large for
        one frame, by `notebook_state_chunk`s with the rest of its cells (docs/protocol.md).

        Each cell is encoded once, here: its text sizes the chunks (UTF-8 bytes) and is spliced
        into the messages' texts, which travel with them (`Encoded.text`), so the worker does
        not encode the cells again."""
        with gc_paused():
            return self._state_messages(request_id)

    def _state_messages(self, request_id):
        stdout_url = lambda cell_id: self.store.stdout_url(self.notebook_id, cell_id)  # noqa: E731
        encode = _encode
        chunks, texts, size = [[]], [[]], 0
        for state in self.ordered_cells():
            cell = state.to_message(stdout_url)
            cell.update(self._text_fields(state))
            text = encode(cell)
            cell_size = len(text.encode("utf-8"))
            if chunks[-1] and size + cell_size > STATE_CHUNK_BYTES:
                chunks.append([])
                texts.append([])
                size = 0
            chunks[-1].append(cell)
            texts[-1].append(text)
            size += cell_size
        message = {
            "type": "notebook_state",
            "notebook": {
                "id": self.notebook_id,
                "name": self.name,
                "revision": self.revision,
                "cells": chunks[0],
                "dbConnection": {"connected": bool(self.db_connection), "display": self.db_display},
            },
            "seq": self.seq,
        }
        if len(chunks) > 1:
            message["chunks"] = len(chunks)
        if request_id is not None:
            message["requestId"] = request_id
        rest = [
            {"type": "notebook_state_chunk", "stateSeq": self.seq, "chunk": index, "chunks": len(chunks), "cells": chunk}
            for index, chunk in enumerate(chunks[1:], start=1)
        ]
        return [spliced(m, "cells", t) for m, t in zip([message, *rest], texts)]

    def _emit_state(self, request_id=None):
        """A full state to every client; it carries the seq of the last event before it."""
        self._state_announced = True
        self._pending.extend(self.state_messages(request_id))
        self._schedule_flush()

    async def announce_state(self):
        """Every client gets a fresh state now: events sent to them were lost (Redis was down)."""
        if self.loaded and not self.gone:
            self._emit_state()
            await self.flush()

    async def sync(self, reply_channel, request_id=None, revision=None):
        """Answer one socket with the current state, out of band (never queued behind a cascade).

        When the database was ahead of this session (`revision`, read by the consumer), the
        answer waits in the notebook's queue instead: behind the change still on its way
        here, or behind a reload if that change never comes.
        """
        await self.ensure_loaded()
        if self.gone:
            await self.publish(reply_channel, [{"type": "error", "code": "not_found", "message": "This notebook no longer exists."}])
            return
        if revision is not None and revision > self.revision:
            self.submit({"type": "kernel.catch_up", "revision": revision, "replyChannel": reply_channel, "requestId": request_id})
            return
        await self.publish(reply_channel, self.state_messages(request_id))
        if self._states_unsaved or self._dirty:
            # What this load or state learnt (analyses, shared texts built from the code) is
            # stored by the queue's bookkeeping, so the next worker to load it need not redo it.
            self.submit({"type": "kernel.bookkeeping"})

    async def on_bookkeeping(self, message):
        """Nothing of its own: the queue persists after every message (_drain)."""

    async def assist(self, message):
        """`kernel.complete` / `kernel.inspect`, out of band: answered to the sender alone, never
        queued behind a cascade, and never starting an execution process (Runner.assist)."""
        await self.ensure_loaded()
        channel, request_id = message["replyChannel"], message.get("requestId")
        cell = None if self.gone else self.cells.get(message.get("cellId"))
        if cell is None:
            await self.publish(channel, [{"type": "error", "code": "unknown_cell", "message": "No such cell in this notebook.", "requestId": request_id}])
            return
        op = message["type"].removeprefix("kernel.")
        if self.runner is None:  # made, not started: its database answers SQL completion
            self.runner = self.runner_factory()
            self.runner.set_connection(self.db_connection)
        if cell.type == CELL_MARKDOWN:
            answer = {} if op == "inspect" else {"from": message["cursor"], "to": message["cursor"], "items": []}
        else:
            language = "sql" if cell.type == CELL_SQL else "python"
            answer = await self.runner.assist(op, code=message["code"], cursor=message["cursor"], language=language)
        reply = {"type": "completions" if op == "complete" else "inspection", "requestId": request_id, "cellId": cell.id, **answer}
        await self.publish(channel, [reply])

    async def on_catch_up(self, message):
        if message["revision"] > self.revision:
            await self.reload(message.get("requestId"))  # the state reaches every socket, this one too
        else:
            await self.publish(message["replyChannel"], self.state_messages(message.get("requestId")))

    def _set_status(self, cell, status, *, emit=True):
        cell.status = status
        if status not in TRANSIENT:
            self._dirty.add(cell.id)
        if not emit:
            return
        if status in (STATUS_BLOCKED, STATUS_STALE):
            self._emit({"type": "cell_status", "cellId": cell.id, "status": status, "error": cell.error})
            return
        # The hot path of a cascade (queued, running, success, error): encoded from a template.
        self.seq += 1
        by = cell.run_by if status in TRANSIENT else ""
        event = Encoded(type="cell_status", cellId=cell.id, status=status)
        if by:
            event["by"] = by
        event["seq"] = self.seq
        if cell.id_json is None:
            cell.id_json = _encode(cell.id)
        by_json = f',"by":{_encode(by)}' if by else ""
        event.text = f'{{"type":"cell_status","cellId":{cell.id_json},"status":"{status}"{by_json},"seq":{self.seq}}}'
        self._pending.append(event)
        self._schedule_flush()

    # --- persistence -------------------------------------------------------------------
    async def persist(self):
        changed = []
        for cell_id in self._dirty:
            cell = self.cells.get(cell_id)
            if cell is not None and cell.status not in TRANSIENT:
                fields = cell.persisted_fields()
                if fields != cell.saved:
                    changed.append((cell, fields))
        self._dirty = {c for c in self._dirty if c in self.cells and self.cells[c].status in TRANSIENT}
        self._last_persist = time.monotonic()
        if changed and not self.gone:
            # Under the flush lock: the 10 ms flush timer must not announce a final state
            # while it is being written (a client that sees it and reloads must find it).
            async with self._flush_lock:
                await self.store.persist(self.notebook_id, [cell.to_row() for cell, _ in changed])
            for cell, fields in changed:
                cell.saved = fields
        # Then the shared texts' states (after the rows: a big notebook's first load has
        # thousands of each, and its analyses are what a restarted worker misses most).
        states = {c: (self.texts[c].state(), self.texts[c].generation, code_key(str(self.texts[c]))) for c in self._states_unsaved if c in self.texts and c not in self._unsaved}
        self._states_unsaved -= set(states)
        if states and not self.gone:
            await self.store.save_text_states(self.notebook_id, states)

    async def _persist_if_due(self):
        if time.monotonic() - self._last_persist >= PERSIST_INTERVAL:
            await self.flush()
            await self.persist()

    # --- messages ---------------------------------------------------------------------
    async def handle(self, message):
        await self.ensure_loaded()
        if self.gone:
            return
        kind = message["type"]
        handler = getattr(self, "on_" + kind.removeprefix("kernel."), None)
        if handler is None:
            logger.warning("kernel message of unknown type %s ignored", kind)
            return
        await handler(message)

    async def _caught_up(self, message):
        """True when `message` is the next revision and should be applied to memory.

        A message the loaded state already reflects is skipped; one that skips a
        revision means a message was missed, so the session reloads from the database.
        """
        revision = message.get("revision")
        if revision is None:
            return False
        if revision <= self.revision:
            if not self._state_announced:
                # Loaded fresh (a restarted worker) with this change already in it: the
                # clients of the old session never saw it and have no gap to notice.
                self._emit_state(message.get("requestId"))
            elif message.get("requestId") is not None:
                # Already in a state every client got (a reload): its sender still hears of it.
                self._emit({"type": "applied", "requestId": message["requestId"]})
            return False
        if revision == self.revision + 1:
            self.revision = revision
            return True
        logger.info("notebook %s: revision %s after %s, reloading", self.notebook_id, revision, self.revision)
        await self.reload(message.get("requestId"))
        return False

    async def on_create_cell(self, message):
        if not await self._caught_up(message):
            return
        if message.get("positions"):
            self._reposition(message["positions"])
        row = dict(message["cell"], position=message["position"])
        if message.get("ydoc"):
            # The shared text the web side made, stored and announced early with the row: this
            # very document, so that pages which started from the early announcement merge here.
            row["ydoc"], row["ydoc_key"] = base64.b64decode(message["ydoc"]), code_key(row["code"])
        cell = CellState.from_row(row)
        cell.saved = None  # the message's copy of the row, not the row: written once whatever it says
        self._insert(cell)
        self._dirty.add(cell.id)
        created = {**cell.to_message(), **self._text_fields(cell)}
        self._emit({"type": "cell_created", "cellId": cell.id, "cell": created, "index": self.index_of(cell.id), "requestId": message.get("requestId")})
        newly_blocked, _ = self._refresh_blocked()
        await self._forget_all(newly_blocked)
        if message.get("run"):  # a restored cell: it and what failed without it run again
            await self.flush()  # the answer to the request goes out now, not after the cascade starts
            await self.cascade(self._run_set({cell.id}))

    async def on_version_restored(self, message):
        """A saved version restored (many cells at once): reload, then one cascade of what changed."""
        if message.get("revision", -1) <= self.revision:
            return
        await self.reload(message.get("requestId"))
        changed = {cell_id for cell_id in message.get("changed") or () if cell_id in self.cells}
        if changed:
            await self.cascade(self._run_set(changed))

    async def on_rename(self, message):
        if not await self._caught_up(message):
            return
        self.name = message["name"]
        self._emit({"type": "notebook_renamed", "name": self.name, "requestId": message.get("requestId")})

    async def on_move_cell(self, message):
        if not await self._caught_up(message):
            return
        positions = dict(message.get("positions") or {})
        positions[message["cellId"]] = message["position"]
        self._reposition(positions)
        if message["cellId"] in self.cells:
            self._emit({"type": "cell_moved", "cellId": message["cellId"], "index": self.index_of(message["cellId"]), "requestId": message.get("requestId")})
        self._refresh_blocked()  # blocked messages name cells by their place

    async def on_update_cell(self, message):
        if not await self._caught_up(message):
            return
        cell = self.cells.get(message["cellId"])
        if cell is None:
            return
        # A whole new text (a script's cell_update): one edit of the shared text, so the pages'
        # documents converge on it; typing not saved yet is replaced (the last writer wins).
        text = self._text(cell)
        self._emit_text_edit(cell, text.replace(message["code"]), by=message.get("by"))
        self._unsaved.discard(cell.id)
        self._code_changed(cell, message["code"], message.get("resultVariable") or "", request_id=message.get("requestId"))
        newly_blocked, _ = self._refresh_blocked()
        await self._forget_all(newly_blocked)

    def _code_changed(self, cell, code, result_variable, request_id=None):
        """New code (saved already): analysis, edges, `cell_updated`, and stale results."""
        cell.code = code
        cell.result_variable = result_variable
        self.crashed.discard(cell.id)  # new code: it may run again
        cell.analyse()
        self.graph.update(cell.id, reads=cell.graph_reads, writes=cell.writes)
        self._dirty.add(cell.id)
        cell.saved = None  # the edit's transaction wrote the row's status (stale): written again
        self._emit(
            {
                "type": "cell_updated",
                "cellId": cell.id,
                "code": cell.code,
                "resultVariable": cell.result_variable,
                "reads": cell.reads,
                "writes": cell.writes,
                **({"tables": cell.tables} if cell.type == CELL_SQL else {}),
                "requestId": request_id,
            }
        )
        self._mark_stale([cell.id, *self.graph.descendants(cell.id)])

    async def on_delete_cell(self, message):
        if not await self._caught_up(message):
            return
        cell_id = message["cellId"]
        if cell_id not in self.cells:
            return
        # Descendants are taken before the cell leaves the graph: they are what must rerun.
        descendants = self.graph.descendants(cell_id)
        blocked_before = set(self.graph.blocked())
        self._remove(cell_id)
        await self._forget(cell_id)
        self._emit({"type": "cell_deleted", "cellId": cell_id, "requestId": message.get("requestId")})
        _, unblocked = self._refresh_blocked()
        freed = (blocked_before - set(self.graph.blocked())) & set(self.cells)
        roots = (set(descendants) | freed | self.unblocked) & set(self.cells)
        if roots:
            # cell_deleted answers a request: it goes out now, in a frame of its own, rather than
            # with the cascade's first events FLUSH_DELAY later (docs/performance.md, "Edits").
            await self.flush()
            await self.cascade(self._run_set(roots))
        elif unblocked:
            await self.flush()

    async def on_db_connection(self, message):
        if not await self._caught_up(message):
            return
        snapshot = await self.store.load_connection(self.notebook_id)
        self.db_connection, self.db_display = snapshot
        if self.runner is not None:
            self.runner.set_connection(self.db_connection)
        self._emit({"type": "db_connection_updated", "connected": bool(self.db_connection), "display": self.db_display, "requestId": message.get("requestId")})
        # Every SQL result (and what was computed from it) came from the old connection.
        affected = set()
        for cell in self.cells.values():
            if cell.type == CELL_SQL:
                affected |= {cell.id} | self.graph.descendants(cell.id)
        self._mark_stale(affected)

    async def on_run_cell(self, message):
        if message.get("revision", -1) > self.revision:
            await self.reload()
        await self._save_typing()
        cell_id = message["cellId"]
        if cell_id not in self.cells:
            return
        self.crashed.discard(cell_id)  # run on purpose: it gets its chance again
        await self.cascade(self._run_set({cell_id} | self.unblocked), by=message.get("by"))

    async def on_run_all(self, message):
        if message.get("revision", -1) > self.revision:
            await self.reload()
        await self._save_typing()
        await self.cascade(self._run_set(set(self.cells)), by=message.get("by"))

    async def _save_typing(self):
        """A run right after typing runs what was typed: merged text not saved yet is saved first."""
        if self._unsaved:
            if self._save_handle is not None:
                self._save_handle.cancel()
            await self.on_save_text({})

    def _run_set(self, roots):
        """What running `roots` must run, to be run in one topological order.

        The roots and everything downstream of them, plus every ancestor of any of those
        that is out of date (changed or never run since the runner started), so no cell
        runs on inputs the cascade did not bring up to date.  Cells whose run killed the
        runner, and what depends on them, are left out (unless run themselves: on_run_cell).
        Other dependents of the out-of-date ancestors become stale: their inputs change.
        """
        held_back = self.crashed | self.graph.descendants_of(self.crashed) if self.crashed else set()
        to_run = (set(roots) | self.graph.descendants_of(roots)) - held_back
        stale_upstream = {c for c in self.graph.ancestors_of(to_run) if c not in self.ran_ok} - held_back
        to_run |= stale_upstream
        if stale_upstream:
            self._mark_stale(self.graph.descendants_of(stale_upstream) - to_run)
        self.unblocked -= to_run
        return to_run

    async def interrupt(self):
        """Out of band: stop the running cell and the rest of its cascade."""
        self._cancel_cascade = True
        if self.runner is not None:
            return await self.runner.interrupt()
        return False

    # --- graph-derived state ----------------------------------------------------------------
    def _mark_stale(self, cell_ids):
        """Results of `cell_ids` are out of date.  A cell that has none (never run, `idle`)
        stays `idle`; a crashed cell keeps its `KernelDied` error."""
        # In notebook order, so every client sees the statuses change top to bottom.
        cell_ids = sorted(cell_ids, key=lambda c: self.index_of(c) if c in self.cells else -1)
        for cell_id in cell_ids:
            cell = self.cells.get(cell_id)
            self.ran_ok.discard(cell_id)
            if cell is None or cell.status in (STATUS_BLOCKED, STATUS_STALE, STATUS_IDLE):
                continue
            if cell_id in self.crashed:
                continue
            self._set_status(cell, STATUS_STALE)

    def _blocked_error(self, cell_id):
        details = self.graph.blocked_details(cell_id)
        parts, ename = [], "MultipleDefinitionError"
        for detail in details:
            if detail["kind"] == "cycle":
                ename = "CycleError"
                path = " → ".join(self._label(c) for c in detail["cells"])
                parts.append(f"this cell is on a cycle: {path}")
            else:
                others = ", ".join(self._label(c) for c in detail["cells"])
                parts.append(f"'{detail['name']}' is also defined by {others}")
        return {"ename": ename, "evalue": "; ".join(parts) or (self.graph.blocked_reason(cell_id) or "blocked"), "traceback": []}

    def _refresh_blocked(self, emit=True):
        """Bring cell statuses in line with the graph's blocked set.

        Returns (newly blocked ids, newly unblocked ids); the caller removes the
        names of newly blocked cells from the runner (`_forget_all`).
        """
        blocked = self.graph.blocked()
        newly_blocked, unblocked = [], []
        for cell_id in blocked:
            cell = self.cells[cell_id]
            error = self._blocked_error(cell_id)
            if cell.status != STATUS_BLOCKED or cell.error != error:
                if cell.status != STATUS_BLOCKED:
                    newly_blocked.append(cell_id)
                # A blocked cell shows no results of older code (clients clear them too).
                cell.error, cell.outputs, cell.stdout = error, [], ""
                self.ran_ok.discard(cell_id)
                self.unblocked.discard(cell_id)
                self._set_status(cell, STATUS_BLOCKED, emit=emit)
        for cell in self.cells.values():
            if cell.status == STATUS_BLOCKED and cell.id not in blocked:
                cell.error = None
                self._set_status(cell, STATUS_STALE, emit=emit)
                unblocked.append(cell.id)
                self.unblocked.add(cell.id)
        return newly_blocked, unblocked

    async def _forget_all(self, cell_ids):
        for cell_id in cell_ids:
            await self._forget(cell_id)

    async def _forget(self, cell_id):
        if self.runner is None or not self.runner.alive:
            return
        try:
            await self.runner.forget(cell_id)
        except RunnerDied:
            logger.warning("runner of notebook %s died while forgetting a cell", self.notebook_id)

    # --- running -------------------------------------------------------------------------
    async def _ensure_runner(self):
        if self.runner is None:
            self.runner = self.runner_factory()
            self.runner.set_connection(self.db_connection)  # held outside the sandbox
        if not self.runner.alive:
            await self.runner.start()

    async def cascade(self, cell_ids, by=None):
        """Run `cell_ids` in topological order (ties by position), announcing each step;
        `by`: who asked, shown on every cell it runs ("run by bob").

        Consecutive Python cells go to the execution process as one batch (`_run_batch`);
        SQL, markdown and cells with a syntax error run one by one (`_run_one`) between them.
        An interrupt stops the running cell and leaves the rest `stale`; so does a death of
        the execution process, which also fails the running cell with `KernelDied`.
        """
        order = [c for c in self.graph.topological(cell_ids) if c in self.cells]
        runnable = [self.cells[c] for c in order if self.cells[c].status != STATUS_BLOCKED]
        for cell in runnable:
            cell.run_by = by or ""
            self._set_status(cell, STATUS_QUEUED)
        self._cancel_cascade = False
        index = 0
        while index < len(runnable):
            if self._cancel_cascade:
                break
            end = index
            while end < len(runnable) and self._batchable(runnable[end]):
                end += 1
            if end - index > 1:
                ran, runner_died = await self._run_batch(runnable[index:end])
            else:
                ran, runner_died = 1, await self._run_one(runnable[index])
            index += ran
            if runner_died:
                break
            await self._persist_if_due()
        for rest in runnable[index:]:
            self._set_status(rest, STATUS_STALE)
        self._cancel_cascade = False
        await self.persist()
        await self.flush()

    @staticmethod
    def _batchable(cell):
        return cell.type not in (CELL_SQL, CELL_MARKDOWN) and cell.syntax_error is None

    def _start_run(self, cell):
        """The cell is about to run: its old results go, clients see it `running`.  Returns
        whether it had outputs stored by reference (whose blobs the new run may drop)."""
        had_references = any("ref" in output for output in cell.outputs) if cell.outputs else False
        cell.stdout, cell.outputs, cell.error = "", [], None
        self._set_status(cell, STATUS_RUNNING)
        return had_references

    def _append_stdout(self, cell, text):
        if len(cell.stdout) < STDOUT_CAP:
            cell.stdout += text
        self._emit({"type": "cell_stdout", "cellId": cell.id, "text": text})

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

        def on_stdout(index, text):
            if index == current:
                self._append_stdout(cells[index], text)
            else:
                held.setdefault(index, []).append(text)

        had_references = self._start_run(cells[0])
        try:
            await self._ensure_runner()
        except SandboxUnavailable as exc:
            self._sandbox_unavailable(cells[0], exc)
            return 1, True
        except RunnerDied as exc:
            self._died(cells[0], exc)
            return 1, True
        if self._cancel_cascade:  # Stop pressed while the execution process was starting
            self._finish(cells[0], STATUS_ERROR, [], INTERRUPTED_BEFORE_START)
            return 1, False
        batch = [{"cell": cell.id, "code": cell.code, "writes": cell.writes, "inputs": cell.inputs} for cell in cells]
        try:
            async with contextlib.aclosing(self.runner.run_batch(batch, on_stdout=on_stdout)) as results:
                async for result in results:
                    cell = cells[current]
                    status = STATUS_SUCCESS if result.status == "success" else STATUS_ERROR
                    outputs = untrusted_outputs(result.outputs) if result.outputs else []
                    if outputs or had_references:
                        outputs = await self._by_reference(cell, outputs, had_references=had_references)
                    self._finish(cell, status, outputs, result.error)
                    current += 1
                    if self._cancel_cascade or current == len(cells):
                        return current, False
                    await self._persist_if_due()
                    had_references = self._start_run(cells[current])
                    for text in held.pop(current, ()):
                        self._append_stdout(cells[current], text)
        except RunnerDied as exc:
            self._died(cells[current], exc)
            return current + 1, True
        return current, False

    async def _run_one(self, cell):
        """Run one cell; True if the runner died under it."""
        had_references = self._start_run(cell)
        if cell.syntax_error is not None:
            self._finish(cell, STATUS_ERROR, [], cell.syntax_error)
            return False

        def on_stdout(text):
            self._append_stdout(cell, text)

        if cell.type == CELL_MARKDOWN and not markdown_fields(cell.code):
            # Prose without values: rendered here, no execution process needed.
            self._finish(cell, STATUS_SUCCESS, [{"mimeType": MARKDOWN_MIME, "data": render_markdown(cell.code)}], None)
            return False
        try:
            await self._ensure_runner()
            if self._cancel_cascade:  # Stop pressed while the execution process was starting
                self._finish(cell, STATUS_ERROR, [], INTERRUPTED_BEFORE_START)
                return False
            if cell.type == CELL_SQL:
                result = await self.runner.run_sql(cell.id, cell.code, result_variable=cell.result_variable, on_stdout=on_stdout)
            elif cell.type == CELL_MARKDOWN:
                result = await self.runner.run_markdown(cell.id, cell.code)
                # The sandbox formats the values; the markdown becomes safe HTML here, on the trusted side.
                text = result.outputs[0].get("data") if result.status == "success" and result.outputs else ""
                result.outputs = [{"mimeType": MARKDOWN_MIME, "data": render_markdown(str(text))}] if result.status == "success" else []
            else:
                result = await self.runner.run(cell.id, cell.code, writes=cell.writes, inputs=cell.inputs, on_stdout=on_stdout)
        except SandboxUnavailable as exc:
            self._sandbox_unavailable(cell, exc)
            return True
        except RunnerDied as exc:
            self._died(cell, exc)
            return True
        status = STATUS_SUCCESS if result.status == "success" else STATUS_ERROR
        outputs = result.outputs if cell.type == CELL_MARKDOWN else untrusted_outputs(result.outputs)
        outputs = await self._by_reference(cell, outputs, had_references=had_references)
        self._finish(cell, status, outputs, result.error)
        return False

    def _sandbox_unavailable(self, cell, exc):
        evalue = f"{exc}. No code runs until the sandbox works here; an operator may turn it off with KERNEL_SANDBOX=off (docs/security.md)"
        self._finish(cell, STATUS_ERROR, [], {"ename": "SandboxUnavailable", "evalue": evalue, "traceback": []})

    def _died(self, cell, exc):
        """The execution process died running `cell`: it fails with KernelDied and is held back
        from later cascades (`crashed`); every result that lived in the process is stale."""
        self.crashed.add(cell.id)
        self._finish(cell, STATUS_ERROR, [], {"ename": "KernelDied", "evalue": f"{exc.reason}; the kernel was restarted with an empty namespace", "traceback": []})
        self._kernel_restarted(exc.reason, except_cell=cell.id)

    async def _by_reference(self, cell, outputs, *, had_references):
        """Outputs over OUTPUT_INLINE_LIMIT, stored apart before they are announced (so their
        URL works as soon as a client sees it) and replaced by a reference: {mimeType, ref,
        size, url}.  The cell's blobs its new outputs no longer use are dropped."""
        blobs, kept = [], []
        for output in outputs:
            data, mime = output.get("data"), output.get("mimeType", "text/plain")
            if mime in CHART_MIME_TYPES:
                text = json.dumps(data, separators=(",", ":"))
                data = text if len(text) > OUTPUT_INLINE_LIMIT else None
            elif mime == "text/html" and isinstance(data, str) and SCRIPTED_HTML.search(data):
                pass
            elif not isinstance(data, str) or len(data) <= OUTPUT_INLINE_LIMIT:
                data = None
            if data is None:
                kept.append(output)
                continue
            digest = hashlib.sha256(mime.encode() + b"\0" + data.encode("utf-8", "replace")).hexdigest()
            size = len(data) * 3 // 4 if mime.startswith("image/") else len(data.encode("utf-8", "replace"))
            blobs.append({"digest": digest, "mimeType": mime, "data": data})
            kept.append({"mimeType": mime, "ref": digest, "size": size, "url": self.store.output_url(self.notebook_id, digest)})
        if blobs or had_references:
            await self.store.save_blobs(self.notebook_id, cell.id, blobs)
        return kept

    def _finish(self, cell, status, outputs, error):
        """Announce a finished run's outputs, error and final status."""
        cell.outputs, cell.error = outputs, bounded_error(error)
        error = cell.error
        if outputs:
            self._emit({"type": "cell_output", "cellId": cell.id, "outputs": outputs})
        if error is not None:
            self._emit({"type": "cell_error", "cellId": cell.id, "error": error})
        if status == STATUS_SUCCESS:
            self.ran_ok.add(cell.id)
        else:
            self.ran_ok.discard(cell.id)
        self._set_status(cell, status)

    def _kernel_restarted(self, reason, *, except_cell):
        """The runner died: its namespace is gone, so every result that lived in it is stale."""
        logger.warning("runner of notebook %s died: %s", self.notebook_id, reason)
        self.ran_ok.clear()
        self._emit({"type": "kernel_restarted", "reason": reason})
        for cell in self.ordered_cells():
            if cell.id != except_cell and cell.status in (STATUS_SUCCESS, STATUS_ERROR):
                self._set_status(cell, STATUS_STALE)
