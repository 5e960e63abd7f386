"""SQL cells inside the runner process: engines, bound parameters, DataFrame results.

Runs in the notebook's execution subprocess (imported by _child.py), never in
the web process.  `{name}` placeholders become the driver's own bound
parameters (never text interpolation); the result is a pandas DataFrame bound
to the cell's result variable, shown as a capped HTML table.
"""
import html
import re
import sqlite3
import threading
from urllib.parse import unquote, urlsplit

from ..secrets import scrub
from .analysis import sql_segments, sql_table_names

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
    """(query text, parameters) with `{name}` replaced by the driver's parameter markers.

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
        if value not in namespace:
            raise SqlError("NameError", f"name '{value}' is not defined (used as {{{value}}} in this SQL cell)")
        obj = namespace[value]
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


def _open_transaction():
    return SqlError(
        "TransactionError",
        "the cell left a transaction open, so it was rolled back: each SQL cell runs in autocommit mode "
        "(put BEGIN ... COMMIT in one cell, or leave them out)",
    )


class SqlEngines:
    """The notebook's SQL connection (opened lazily, reused) and the embedded DuckDB.

    Every statement runs in autocommit mode; a cell that leaves a transaction open
    (an explicit BEGIN) has it rolled back and fails, so no transaction ever spans
    cells.
    """

    def __init__(self):
        self.connection_string = ""
        self._conn = None
        self._kind = None
        self._duck = None
        self._running = None  # (kind, connection) of the query in flight, for interrupt()
        self._cancelled = False
        self._registered = set()  # DataFrame names registered in DuckDB for the query in flight
        self._lock = threading.Lock()

    def set_connection(self, connection_string):
        self.close()
        self.connection_string = connection_string or ""

    def close(self):
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # closing a broken connection may fail; it is dropped either way
                pass
        self._conn, self._kind = None, None

    def _connect(self):
        if self._conn is not None:
            if self._kind == "postgres" and (self._conn.closed or self._conn.broken):
                self.close()  # the server went away since the last cell: open a new one
            else:
                return self._kind, self._conn
        cs = self.connection_string
        try:
            if cs.startswith(("postgresql://", "postgres://")):
                import psycopg

                conn = psycopg.connect(cs, autocommit=True, connect_timeout=10)
                self._kind, self._conn = "postgres", conn
            elif cs.startswith("sqlite:///"):
                path = unquote(urlsplit(cs).path[1:]) or ":memory:"
                if path == ":memory:":
                    conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
                else:
                    # mode=rw: a mistyped path is an error, not a new empty database.
                    uri = "file:" + path.replace("?", "%3f").replace("#", "%23") + "?mode=rw"
                    try:
                        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
                    except sqlite3.OperationalError as exc:
                        raise SqlError("ConnectionError", f"could not open the SQLite database {path!r}: {exc}") from None
                self._kind, self._conn = "sqlite", conn
            else:
                raise SqlError("ConnectionError", "unsupported connection string; use postgresql://, postgres:// or sqlite:///")
        except SqlError as exc:
            exc.evalue = scrub(exc.evalue, cs)
            raise
        except Exception as exc:
            raise SqlError("ConnectionError", f"could not connect: {scrub(str(exc).strip(), cs)}") from None
        return self._kind, self._conn

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

    def interrupt(self):
        """Cancel the query in flight (called from another thread)."""
        with self._lock:
            running = self._running
            if running is None:
                return False
            self._cancelled = True
        kind, conn = running
        try:
            if kind == "postgres":
                conn.cancel_safe(timeout=5)
            else:
                conn.interrupt()
        except Exception:  # the query may have just finished
            return False
        return True

    def execute(self, code, namespace, row_cap=DEFAULT_ROW_CAP):
        """Run `code`; returns (DataFrame or None, outputs).  Failures raise SqlError."""
        import pandas as pd

        if not code.strip():
            return None, []
        self._cancelled = False
        if self.connection_string:
            kind, conn = self._connect()
            query, params = bind(code, namespace, "pyformat" if kind == "postgres" else "qmark")
            try:
                frame, affected, types = self._run_dbapi(kind, conn, query, params, pd)
            except Exception as exc:
                self._end_transaction(kind, conn)
                if kind == "postgres" and (conn.closed or conn.broken):
                    self.close()
                raise self._failure(exc) from None
            if self._end_transaction(kind, conn):
                raise _open_transaction()
        else:
            duck = self._duckdb()
            query, params = bind(code, namespace, "qmark")
            self._unregister(duck)  # leftovers of a query an interrupt cut short
            try:
                for name in sql_table_names(code):
                    value = namespace.get(name)
                    if isinstance(value, pd.DataFrame):
                        self._registered.add(name)
                        duck.register(name, value)
                frame, affected, types = self._run_duckdb(duck, query, params)
            except Exception as exc:
                self._end_transaction("duckdb", duck)
                raise self._failure(exc) from None
            finally:
                # A DataFrame is visible only to the query that named it: a deleted
                # variable must not stay queryable (and its memory must be released).
                self._unregister(duck)
            if self._end_transaction("duckdb", duck):
                raise _open_transaction()
        if frame is None:
            if affected is not None and affected >= 0:
                note = f"{affected:,} row{'s' if affected != 1 else ''} affected"
            else:
                note = "done"
            return None, [{"mimeType": "text/plain", "data": note}]
        return frame, render(frame, row_cap, types)

    def _unregister(self, duck):
        while self._registered:
            name = self._registered.pop()
            try:
                duck.unregister(name)
            except Exception:  # already gone (the query dropped the view)
                pass

    def _failure(self, exc):
        if self._cancelled:
            return SqlError("KeyboardInterrupt", "the query was cancelled")
        return SqlError(type(exc).__name__, scrub(str(exc).strip(), self.connection_string))

    def _end_transaction(self, kind, conn):
        """Roll back a transaction the cell left open (an explicit BEGIN); True if there was one."""
        try:
            if kind == "postgres":
                import psycopg

                if conn.closed or conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                    return False
                conn.rollback()
            elif kind == "sqlite":
                if not conn.in_transaction:
                    return False
                conn.rollback()
            else:
                try:
                    conn.execute("ROLLBACK")  # fails when no transaction is open: the usual case
                except Exception:
                    return False
        except Exception:  # a broken connection: it is replaced on the next cell
            if kind != "duckdb":
                self.close()
            return False
        return True

    def _run_dbapi(self, kind, conn, query, params, pd):
        with self._lock:
            self._running = (kind, conn)
        try:
            cur = conn.cursor()
            try:
                if kind == "postgres":
                    cur.execute(query, params or None)
                else:
                    cur.execute(query, params)
                if cur.description is None:
                    return None, cur.rowcount, None
                columns = [d[0] for d in cur.description]
                types = [_pg_type_name(getattr(d, "type_display", None)) for d in cur.description] if kind == "postgres" else None
                rows = cur.fetchall()
            finally:
                cur.close()
        finally:
            with self._lock:
                self._running = None
        return _frame(rows, columns, pd), None, types

    def _run_duckdb(self, duck, query, params):
        with self._lock:
            self._running = ("duckdb", duck)
        try:
            result = duck.execute(query, params)
            if result.description is None:
                return None, None, None
            types = [str(d[1]) for d in result.description]
            frame = result.df()
            if list(frame.columns) == ["Count"] and types == ["BIGINT"] and _is_command(query):
                # DuckDB answers a statement with a one-column "Count" result.
                return None, (int(frame.iloc[0, 0]) if len(frame) else None), None
            return frame, None, types
        finally:
            with self._lock:
                self._running = None


_COMMANDS = ("INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "ALTER", "COPY", "MERGE", "TRUNCATE", "ATTACH", "DETACH", "SET", "LOAD", "INSTALL", "CHECKPOINT", "VACUUM", "ANALYZE", "IMPORT", "EXPORT")


# PostgreSQL's internal type names (what psycopg reports) as people write them.
_PG_TYPE_NAMES = {
    "int2": "smallint",
    "int4": "integer",
    "int8": "bigint",
    "float4": "real",
    "float8": "double precision",
    "bool": "boolean",
    "bpchar": "char",
    "timestamptz": "timestamp with time zone",
    "timetz": "time with time zone",
}


def _pg_type_name(name):
    if not name:
        return name
    base, sep, rest = name.partition("(")
    array = base.endswith("[]")
    base = base.removesuffix("[]")
    return _PG_TYPE_NAMES.get(base, base) + sep + rest + ("[]" if array else "")


def _is_command(query):
    """True for a statement that returns no rows of its own (DuckDB still answers one)."""
    head = re.sub(r"^(\s|;|--[^\n]*(\n|$)|/\*.*?\*/)*", "", query, flags=re.DOTALL)[:12].upper()
    return head.startswith(_COMMANDS)


def _frame(rows, columns, pd):
    """A DataFrame of DB-API rows; integer columns with NULLs stay integers (Int64)."""
    frame = pd.DataFrame.from_records(rows, columns=columns)
    for position, column in enumerate(columns):
        series = frame.iloc[:, position]
        if series.dtype.kind == "f" and series.isna().any():
            raw = [row[position] for row in rows]
            if all(value is None or (isinstance(value, int) and not isinstance(value, bool)) for value in raw):
                frame.isetitem(position, pd.array(raw, dtype="Int64"))
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
