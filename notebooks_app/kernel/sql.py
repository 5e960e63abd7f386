"""SQL cells: bound parameters, the embedded DuckDB, and what crosses the sandbox's edge.

Imported by the sandboxed execution process (`_child.py`), which binds `{name}` placeholders
(and `{slider.value}`, `{d["key"]}`: markdown's fields, without a format spec) from its
namespace as the driver's own parameters (never text interpolation), runs DuckDB over its
DataFrames itself, and hands queries for the notebook's own database to the trusted side
(`database.py`, which alone ever sees the connection string) as JSON data, getting rows back
as Arrow IPC.  The result is a pandas DataFrame bound to the cell's result variable (integer
aggregates as integers), shown as a capped HTML table.
"""
import base64
import html
import re
import threading

from .analysis import placeholder_root, sql_segments, sql_table_names
from .markdown import follow

DEFAULT_ROW_CAP = 200


class SqlError(Exception):
    """A SQL cell failure with a message safe to show (password removed)."""

    def __init__(self, ename, evalue):
        super().__init__(evalue)
        self.ename = ename
        self.evalue = evalue


_IN_BEFORE = re.compile(r"\bIN\s*$", re.IGNORECASE)
_IN_PAREN_BEFORE = re.compile(r"\bIN\s*\(\s*$", re.IGNORECASE)
_PAREN_AFTER = re.compile(r"^\s*\)")


def bind(code, namespace, style):
    """(query text, parameters) with `{name}` (or `{name.attr}`, `{name["key"]}`, `{name[0]}`)
    replaced by the driver's parameter markers.

    style: "pyformat" (psycopg: %(p0)s, with literal % doubled when there are
    parameters) or "qmark" (sqlite3, DuckDB: ?).  A list, tuple or set after `IN`
    (or inside `IN (...)`) expands to one parameter per item; elsewhere it binds as
    one array value (`= ANY({ids})` on PostgreSQL).  Values are always parameters,
    never SQL text.
    """
    # The same scanner as analysis.placeholders: the graph's edges are the bound names.
    pieces = sql_segments(code)
    parts, params, named = [], ([] if style == "qmark" else {}), 0
    for index, (kind, value) in enumerate(pieces):
        if kind == "sql":
            parts.append(value)
            continue
        obj = _placeholder_value(value, namespace)
        items = None
        if isinstance(obj, (list, tuple, set, frozenset)):
            items = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else list(obj)
        before = parts[-1] if parts and pieces[index - 1][0] == "sql" else ""
        after = pieces[index + 1][1] if index + 1 < len(pieces) and pieces[index + 1][0] == "sql" else ""
        in_parens = items is not None and _IN_PAREN_BEFORE.search(before) and _PAREN_AFTER.match(after)
        expand = items is not None and (in_parens or _IN_BEFORE.search(before))
        if expand:
            values = [_plain(item) for item in items]
        elif items is not None:
            values = [[_plain(item) for item in items]]  # one array value (a tuple would be a record)
        else:
            values = [_plain(obj)]
        if expand and not values:
            values = [None]  # IN (NULL) matches nothing, like an empty list should
        markers = []
        for item in values:
            if style == "qmark":
                params.append(item)
                markers.append("?")
            else:
                key = f"p{named}"
                named += 1
                params[key] = item
                markers.append(f"%({key})s")
        joined = ", ".join(markers)
        parts.append(joined if in_parens else "(" + joined + ")" if expand else markers[0])
    if style == "pyformat":
        if not params:
            # No parameters: psycopg sends the text as it is, so % stays single.
            return "".join(v if k == "sql" else "" for k, v in pieces), params
        parts = [part if kind == "param" else part.replace("%", "%%") for part, (kind, _) in zip(parts, pieces)]
    return "".join(parts), params


def _placeholder_value(field, namespace):
    """The value of a placeholder (`field`: its text without braces) in `namespace`."""
    name = placeholder_root(field)
    if name not in namespace:
        raise SqlError("NameError", f"name '{name}' is not defined (used as {{{field}}} in this SQL cell)")
    try:
        return follow(namespace[name], field[len(name) :])
    except Exception as exc:  # noqa: BLE001 - a property or __getitem__ of the user's may raise anything
        raise SqlError(type(exc).__name__, f"{exc} (in {{{field}}} of this SQL cell)") from None


def _plain(value):
    """NumPy / pandas scalars as the plain Python values every driver understands."""
    module = type(value).__module__ or ""
    if module.startswith("numpy") and hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    if module.startswith("pandas"):
        import pandas as pd

        if value is pd.NaT or value is pd.NA:
            return None
        if hasattr(value, "to_pydatetime"):
            return value.to_pydatetime()
        if hasattr(value, "to_pytimedelta"):
            return value.to_pytimedelta()
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def open_transaction_error():
    return SqlError(
        "TransactionError",
        "the cell left a transaction open, so it was rolled back: each SQL cell runs in autocommit mode "
        "(put BEGIN ... COMMIT in one cell, or leave them out)",
    )


def engine_of(connection_string):
    """'postgres', 'sqlite' or '' (DuckDB) for a connection string; None if unsupported."""
    if not connection_string:
        return ""
    if connection_string.startswith(("postgresql://", "postgres://")):
        return "postgres"
    if connection_string.startswith("sqlite:///"):
        return "sqlite"
    return None


def affected_note(affected):
    if affected is not None and affected >= 0:
        return [{"mimeType": "text/plain", "data": f"{affected:,} row{'s' if affected != 1 else ''} affected"}]
    return [{"mimeType": "text/plain", "data": "done"}]


# --- crossing the sandbox's edge: parameters out as JSON data, rows back as Arrow IPC -------
# Parameters leave the sandbox as plain JSON with tagged values for the types JSON lacks,
# and are never unpickled; rows come back as an Arrow IPC stream (base64 in the JSON line).

_TAG = "$sql"


def encode_params(params):
    if isinstance(params, dict):
        return {key: _encode(value) for key, value in params.items()}
    return [_encode(value) for value in params]


def _encode(value):
    import datetime
    import decimal
    import uuid

    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_encode(item) for item in value]
    for kind, cls, dump in (
        ("datetime", datetime.datetime, lambda v: v.isoformat()),
        ("date", datetime.date, lambda v: v.isoformat()),
        ("time", datetime.time, lambda v: v.isoformat()),
        ("timedelta", datetime.timedelta, lambda v: [v.days, v.seconds, v.microseconds]),
        ("decimal", decimal.Decimal, str),
        ("uuid", uuid.UUID, str),
        ("bytes", (bytes, bytearray, memoryview), lambda v: base64.b64encode(bytes(v)).decode("ascii")),
    ):
        if isinstance(value, cls):
            return {_TAG: kind, "v": dump(value)}
    raise SqlError("TypeError", f"a value of type {type(value).__name__} cannot be a SQL parameter (use a number, text, date, time, decimal, bytes or a list of them)")


def decode_params(params):
    if isinstance(params, dict):
        return {str(key): _decode(value) for key, value in params.items()}
    if isinstance(params, list):
        return [_decode(value) for value in params]
    raise SqlError("ProtocolError", "parameters must be a list or an object")


def _decode(value):
    import datetime
    import decimal
    import uuid

    if isinstance(value, list):
        return [_decode(item) for item in value]
    if not isinstance(value, dict):
        return value
    kind, raw = value.get(_TAG), value.get("v")
    loaders = {
        "datetime": datetime.datetime.fromisoformat,
        "date": datetime.date.fromisoformat,
        "time": datetime.time.fromisoformat,
        "timedelta": lambda v: datetime.timedelta(days=v[0], seconds=v[1], microseconds=v[2]),
        "decimal": decimal.Decimal,
        "uuid": uuid.UUID,
        "bytes": base64.b64decode,
    }
    if kind not in loaders:
        raise SqlError("ProtocolError", f"unknown parameter type {kind!r}")
    try:
        return loaders[kind](raw)
    except (TypeError, ValueError, IndexError, decimal.InvalidOperation) as exc:
        raise SqlError("ProtocolError", f"bad {kind} parameter: {exc}") from None


def frame_to_arrow(frame):
    """A DataFrame as base64 Arrow IPC; columns Arrow cannot type go as text."""
    import pyarrow as pa

    frame = frame.copy()
    frame.columns = [str(c) for c in frame.columns]
    for position in range(len(frame.columns)):
        try:
            pa.array(frame.iloc[:, position], from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
            frame.isetitem(position, frame.iloc[:, position].map(lambda v: None if _is_null(v) else str(v)))
    table = pa.Table.from_pandas(frame, preserve_index=False)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return base64.b64encode(sink.getvalue().to_pybytes()).decode("ascii")


def frame_from_arrow(data):
    import pyarrow as pa

    return pa.ipc.open_stream(base64.b64decode(data)).read_all().to_pandas()


def load(engine=""):
    """Import what a SQL cell on `engine` needs ("" is the embedded DuckDB), before the cell
    becomes interruptible (the child calls this ahead of `Activity.start_executing`).

    An interrupt that lands inside a module's first import leaves it half made for the life
    of the process: numpy cannot be initialised twice, so every later `import pandas` in the
    notebook would fail.  A user's own import is the user's; these are the engine's."""
    import pandas  # noqa: F401
    import sqlglot  # noqa: F401 - sql_table_names and bind parse with it
    import sqlglot.dialects.duckdb  # noqa: F401 - loaded on first parse otherwise

    if engine:
        import pyarrow  # noqa: F401 - the trusted side's rows come as Arrow IPC
        import pyarrow.ipc  # noqa: F401


def run_external(engine, code, namespace, ask, row_cap=DEFAULT_ROW_CAP):
    """A SQL cell on the notebook's own database, from inside the sandbox.

    The query is bound here (the values live in this namespace), then `ask` sends it with
    its parameters to the trusted side, which holds the connection, and returns its answer:
    `{"error": {ename, evalue}}` or `{"arrow", "types"}` or `{"affected"}`.
    Returns (DataFrame or None, outputs); failures raise SqlError.
    """
    if not code.strip():
        return None, []
    query, params = bind(code, namespace, "pyformat" if engine == "postgres" else "qmark")
    reply = ask(query, encode_params(params))
    if reply.get("error"):
        raise SqlError(reply["error"].get("ename") or "DatabaseError", reply["error"].get("evalue") or "")
    if reply.get("arrow") is None:
        return None, affected_note(reply.get("affected"))
    frame = integers_as_integers(frame_from_arrow(reply["arrow"]), reply.get("types"))
    return frame, render(frame, row_cap, reply.get("types"))


class DuckDbEngine:
    """The embedded DuckDB of a notebook without a connection, inside its sandbox.

    Every statement runs in autocommit mode; a cell that leaves a transaction open (an
    explicit BEGIN) has it rolled back and fails, so no transaction ever spans cells.
    DataFrames are visible to a query only when it names them, and only while it runs.
    """

    def __init__(self):
        self._duck = None
        self._running = False
        self._cancelled = False
        self._registered = set()  # DataFrame names registered in DuckDB for the query in flight
        self._lock = threading.Lock()

    def connect(self):
        """The connection, made and configured now (see `load`): only a query is cut short
        by an interrupt, never the connection's set-up, whose settings keep Python frames
        out of DuckDB's reach."""
        return self._duckdb()

    def _duckdb(self):
        if self._duck is None:
            import duckdb

            self._duck = duckdb.connect(":memory:")
            # Only DataFrames registered by name (below) are visible, never the
            # Python frames DuckDB would otherwise scan for variables.
            # No progress bar either: it would print into the cell's output.
            for setting in ("SET python_enable_replacements = false", "SET enable_progress_bar = false"):
                try:
                    self._duck.execute(setting)
                except Exception:  # an older DuckDB without the setting
                    pass
        return self._duck

    def tables(self):
        """{table: [column, ...]} of this DuckDB's own tables and views (for completion, while
        no query runs: the caller makes sure of that)."""
        rows = self._duckdb().execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = 'main' ORDER BY table_name, ordinal_position LIMIT 10000"
        ).fetchall()
        tables = {}
        for table, column in rows:
            tables.setdefault(table, []).append(column)
        return tables

    def interrupt(self):
        """Cancel the query in flight (called from another thread)."""
        with self._lock:
            if not self._running:
                return False
            self._cancelled = True
        try:
            self._duck.interrupt()
        except Exception:  # the query may have just finished
            return False
        return True

    def execute(self, code, namespace, row_cap=DEFAULT_ROW_CAP):
        """Run `code`; returns (DataFrame or None, outputs).  Failures raise SqlError."""
        import pandas as pd

        if not code.strip():
            return None, []
        self._cancelled = False
        duck = self._duckdb()
        query, params = bind(code, namespace, "qmark")
        self._unregister(duck)  # leftovers of a query an interrupt cut short
        try:
            for name in sql_table_names(code):
                value = namespace.get(name)
                if isinstance(value, pd.DataFrame):
                    self._registered.add(name)
                    duck.register(name, value)
            frame, affected, types = self._run(duck, query, params)
        except Exception as exc:
            self._rollback(duck)
            if self._cancelled:
                raise SqlError("KeyboardInterrupt", "the query was cancelled") from None
            raise SqlError(type(exc).__name__, str(exc).strip()) from None
        finally:
            # A DataFrame is visible only to the query that named it: a deleted
            # variable must not stay queryable (and its memory must be released).
            self._unregister(duck)
        if self._rollback(duck):
            raise open_transaction_error()
        if frame is None:
            return None, affected_note(affected)
        return frame, render(frame, row_cap, types)

    def _unregister(self, duck):
        # A name leaves the set only once DuckDB let go of it: the KeyboardInterrupt of an
        # interrupt may land here, and the next query's call must still find what is left.
        for name in list(self._registered):
            try:
                duck.unregister(name)
            except Exception:  # already gone (the query dropped the view)
                pass
            self._registered.discard(name)

    @staticmethod
    def _rollback(duck):
        """Roll back a transaction the cell left open; True if there was one."""
        try:
            duck.execute("ROLLBACK")  # fails when no transaction is open: the usual case
        except Exception:
            return False
        return True

    def _run(self, duck, query, params):
        with self._lock:
            self._running = True
        try:
            result = duck.execute(query, params)
            if result.description is None:
                return None, None, None
            types = [str(d[1]) for d in result.description]
            frame = integers_as_integers(result.df(), types)
            if list(frame.columns) == ["Count"] and types == ["BIGINT"] and _is_command(query):
                # DuckDB answers a statement with a one-column "Count" result.
                return None, (int(frame.iloc[0, 0]) if len(frame) else None), None
            return frame, None, types
        finally:
            with self._lock:
                self._running = False


_COMMANDS = ("INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "ALTER", "COPY", "MERGE", "TRUNCATE", "ATTACH", "DETACH", "SET", "LOAD", "INSTALL", "CHECKPOINT", "VACUUM", "ANALYZE", "IMPORT", "EXPORT")


def _is_command(query):
    """True for a statement that returns no rows of its own (DuckDB still answers one)."""
    head = re.sub(r"^(\s|;|--[^\n]*(\n|$)|/\*.*?\*/)*", "", query, flags=re.DOTALL)[:12].upper()
    return head.startswith(_COMMANDS)


_WIDE_INTEGERS = ("HUGEINT", "UHUGEINT")
_EXACT_IN_FLOAT = 2**53  # float64 holds every integer up to this one exactly
_INT64 = (-(2**63), 2**63 - 1)


def integers_as_integers(frame, types):
    """Integer aggregates as integers, not floats: DuckDB's HUGEINT (what SUM of integers
    gives; pandas gets it as float64) and PostgreSQL's bare `numeric` whose values are all
    whole (SUM of bigint: Decimals), as int64 (Int64 with NULLs; Python ints past int64).
    A HUGEINT past 2**53 stays a float: DuckDB has rounded it already.  `types`: the
    database's type names of the columns, as `render` shows them (None: nothing to do)."""
    import decimal

    import pandas as pd

    for position, kind in enumerate(types or ()):
        if position >= len(frame.columns):
            break
        series = frame.iloc[:, position]
        if kind in _WIDE_INTEGERS and series.dtype.kind == "f":
            values = series.dropna()
            if (values.abs() <= _EXACT_IN_FLOAT).all():
                frame.isetitem(position, series.astype("Int64" if len(values) < len(series) else "int64"))
        elif kind == "numeric" and series.dtype == object:
            whole = [None if _is_null(v) else v for v in series]
            if not any(v is not None for v in whole):
                continue
            if all(v is None or (isinstance(v, decimal.Decimal) and v.is_finite() and v.as_tuple().exponent >= 0) for v in whole):
                ints = [None if v is None else int(v) for v in whole]
                if any(v is not None and not _INT64[0] <= v <= _INT64[1] for v in ints):
                    frame.isetitem(position, pd.Series(ints, dtype=object, index=frame.index))
                else:
                    frame.isetitem(position, pd.array(ints, dtype="Int64" if None in ints else "int64"))
    return frame


def render(frame, row_cap, types=None):
    """An HTML table of the first `row_cap` rows, with column types and the total row count.

    `types` are the database's names for the column types when known; else pandas dtypes.
    """
    total = len(frame)
    shown = frame.head(row_cap)
    if not types or len(types) != len(frame.columns):
        types = [str(t) for t in frame.dtypes]
    head = "".join(f"<th>{html.escape(str(c))}<br><small>{html.escape(str(t))}</small></th>" for c, t in zip(frame.columns, types))
    body = []
    for row in shown.itertuples(index=False, name=None):
        cells = "".join("<td class='null'>NULL</td>" if _is_null(v) else f"<td>{html.escape(str(v))}</td>" for v in row)
        body.append(f"<tr>{cells}</tr>")
    caption = f"{total:,} row{'s' if total != 1 else ''}" + (f", showing the first {row_cap:,}" if total > row_cap else "")
    table = f"<table class='sql-result'><caption>{caption}</caption><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    text = f"{caption}\n{shown.to_string(index=False, max_colwidth=60)}" if len(frame.columns) else caption
    return [{"mimeType": "text/plain", "data": text}, {"mimeType": "text/html", "data": table}]


def _is_null(value):
    try:
        import pandas as pd

        return value is None or (not isinstance(value, (list, tuple, dict)) and bool(pd.isna(value)))
    except (TypeError, ValueError):
        return False
