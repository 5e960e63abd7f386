"""One cell as the kernel holds it (`CellState`): its code, its analysis, its last run's results,
and the one list of the fields the worker persists (`PERSISTED_FIELDS`).

Pure data and the cell's own analysis: no asyncio, no I/O, no knowledge of other cells (that
is notebook_model.py) nor of how a change is announced (statuses.py, event_stream.py).
"""
import hashlib
import operator
import sys
from dataclasses import dataclass, field

from ..constants import CELL_MARKDOWN, CELL_SQL, STATE_STDOUT_LIMIT, STATUS_IDLE, STATUS_QUEUED, STATUS_RUNNING
from .analysis import analyze_markdown, analyze_python, analyze_sql

# Stored analyses (Cell.analysis) of another version are recomputed on load: bump this when
# kernel/analysis.py's results change for the same code.
ANALYSIS_VERSION = 2  # 2: SQL placeholders read fields' root names; `!cmd` lines explained
# What the worker writes back of a cell (Cell columns of the same names), in this order.
PERSISTED_FIELDS = ("status", "outputs", "stdout", "error", "reads", "writes", "analysis")
# A run in progress: never persisted (a worker that stops mid-run leaves the stored final state).
TRANSIENT = frozenset({STATUS_QUEUED, STATUS_RUNNING})

_persisted = operator.attrgetter(*PERSISTED_FIELDS)


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
    # The persisted fields as the database last had them (persisted_fields()): a cell whose
    # final state is what is stored already is not written again (a rerun chain's cells).
    saved: tuple | None = None
    analysis: dict | None = None  # what is stored besides reads/writes (restore_analysis)

    @classmethod
    def from_row(cls, row):
        """The cell of a stored row (or of a message's copy of one); its analysis is the row's
        until restore_analysis() or analyse() sets it."""
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
            reads=list(row.get("reads") or []),
            writes=list(row.get("writes") or []),
            analysis=row.get("analysis"),
            ydoc=bytes(row["ydoc"]) if row.get("ydoc") else None,
            ygen=row.get("ydoc_generation") or 0,
            ykey=row.get("ydoc_key") or "",
            inputs=dict(row.get("inputs") or {}),
        )
        cell.saved = cell.persisted_fields()
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

    def code_fields(self):
        """The code and what the analysis made of it, as the protocol sends them (a cell's
        message, `cell_updated`)."""
        fields = {"code": self.code, "resultVariable": self.result_variable, "reads": self.reads, "writes": self.writes}
        if self.type == CELL_SQL:
            fields["tables"] = self.tables
        return fields

    def to_message(self, stdout_url=None, outputs_url=None):
        """The cell as the protocol sends it.  Stdout longer than STATE_STDOUT_LIMIT is sent as its
        tail, with `stdoutRef` ({url, size}) to the whole of it (`stdout_url(cell_id)`).  With
        `outputs_url` (a state's cell beyond STATE_INLINE_OUTPUT_CELLS), final outputs are left
        out for `outputsRef` ({url, count}): the stored ones, which are these once a run ended."""
        outputs = self.outputs
        message = {"id": self.id, "type": self.type, **self.code_fields(), "status": self.status, "outputs": outputs, "stdout": self.stdout, "error": self.error}
        if outputs and outputs_url is not None and self.status not in TRANSIENT:
            message["outputs"] = []
            message["outputsRef"] = {"url": outputs_url(self.id), "count": len(outputs)}
        if self.run_by:
            message["runBy"] = self.run_by
        if len(self.stdout) > STATE_STDOUT_LIMIT and stdout_url is not None:
            message["stdout"] = self.stdout[-STATE_STDOUT_LIMIT:]
            message["stdoutRef"] = {"url": stdout_url(self.id), "size": len(self.stdout)}
        return message

    def persisted_fields(self):
        """The values of PERSISTED_FIELDS, in its order."""
        return _persisted(self)

    def to_row(self, fields=None):
        """The row the store writes: the id and PERSISTED_FIELDS (`fields`, their values taken
        already)."""
        row = dict(zip(PERSISTED_FIELDS, fields if fields is not None else _persisted(self)))
        row["id"] = self.id
        return row
