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

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
DEFAULT_ROW_CAP = 200


class SqlError(Exception):
    """A SQL cell failure with a message safe to show (password removed)."""

    def __init__(self, ename, evalue):
        super().__init__(evalue)
        self.ename = ename
        self.evalue = evalue


def segments(code):
    """Split SQL into ("sql", text) and ("param", name) pieces.

    Placeholders inside quoted strings, quoted identifiers and comments stay text;
    `{{` and `}}` are literal braces.
    """
    out, buf, i, n = [], [], 0, len(code)

    def flush():
        if buf:
            out.append(("sql", "".join(buf)))
            buf.clear()

    while i < n:
        ch = code[i]
        if ch in "'\"":
            end = i + 1
            while end < n:
                if code[end] == ch:
                    if end + 1 < n and code[end + 1] == ch:  # doubled quote escapes itself
                        end += 2
                        continue
                    break
                end += 1
            buf.append(code[i : end + 1])
            i = end + 1
        elif code.startswith("--", i):
            end = code.find("\n", i)
            end = n if end < 0 else end
            buf.append(code[i:end])
            i = end
        elif code.startswith("/*", i):
            end = code.find("*/", i + 2)
            end = n if end < 0 else end + 2
            buf.append(code[i:end])
            i = end
        elif code.startswith("{{", i) or code.startswith("}}", i):
            buf.append(ch)
            i += 2
        elif ch == "{":
            match = PLACEHOLDER.match(code, i)
            if match:
                flush()
                out.append(("param", match.group(1)))
                i = match.end()
            else:
                buf.append(ch)
                i += 1
        else:
            buf.append(ch)
            i += 1
    flush()
    return out


def placeholder_names(code):
    seen = []
    for kind, value in segments(code):
        if kind == "param" and value not in seen:
            seen.append(value)
    return seen


def table_names(code):
    """Names the query uses as tables (for DuckDB DataFrame scans and graph edges)."""
    try:
        import sqlglot
        from sqlglot import exp
    except ImportError:  # pragma: no cover - sqlglot is a pinned dependency
        return []
    text = "".join(value if kind == "sql" else "NULL" for kind, value in segments(code))
    try:
        statements = sqlglot.parse(text, read="duckdb")
    except Exception:  # an unparsable query has no table edges; the engine reports the error
        return []
    ctes = set()
    names = []
    for statement in statements:
        if statement is None:
            continue
        ctes |= {cte.alias_or_name for cte in statement.find_all(exp.CTE)}
        for table in statement.find_all(exp.Table):
            if not table.db and table.name and table.name not in ctes and table.name not in names:
                names.append(table.name)
    return names


_IN_BEFORE = re.compile(r"\bIN\s*$", re.IGNORECASE)


def bind(code, namespace, style):
    """(query text, parameters) with `{name}` replaced by the driver's parameter markers.

    style: "pyformat" (psycopg: %(p0)s, with literal % doubled) or "qmark" (sqlite3, DuckDB: ?).
    A list or tuple after IN expands to (p, p, ...); elsewhere it binds as one array value.
    """
    parts, params, named = [], ([] if style == "qmark" else {}), 0
    for kind, value in segments(code):
        if kind == "sql":
            parts.append(value.replace("%", "%%") if style == "pyformat" else value)
            continue
        if value not in namespace:
            raise SqlError("NameError", f"name '{value}' is not defined (used as {{{value}}} in this SQL cell)")
        obj = namespace[value]
        items = list(obj) if isinstance(obj, (list, tuple, set, frozenset)) else None
        expand = items is not None and _IN_BEFORE.search("".join(parts[-1:]) if parts else "")
        values = items if expand else [obj]
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
        parts.append("(" + ", ".join(markers) + ")" if expand else markers[0])
    return "".join(parts), params


def redact(text, connection_string):
    if not text or not connection_string:
        return text
    try:
        password = urlsplit(connection_string).password
    except ValueError:
        password = None
    if password:
        text = text.replace(password, "****").replace(unquote(password), "****")
    return re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1****", text, flags=re.IGNORECASE)


class SqlEngines:
    """The notebook's SQL connection (opened lazily, reused) and the embedded DuckDB."""

    def __init__(self):
        self.connection_string = ""
        self._conn = None
        self._kind = None
        self._duck = None
        self._running = None  # (kind, connection) of the query in flight, for interrupt()
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
            return self._kind, self._conn
        cs = self.connection_string
        try:
            if cs.startswith(("postgresql://", "postgres://")):
                import psycopg

                conn = psycopg.connect(cs, autocommit=True, connect_timeout=10)
                self._kind, self._conn = "postgres", conn
            elif cs.startswith("sqlite:///"):
                path = unquote(cs[len("sqlite:///") :])
                conn = sqlite3.connect(path if path.startswith("/") or path == ":memory:" else path, isolation_level=None, check_same_thread=False)
                self._kind, self._conn = "sqlite", conn
            else:
                raise SqlError("ConnectionError", "unsupported connection string; use postgresql://, postgres:// or sqlite:///")
        except SqlError:
            raise
        except Exception as exc:
            raise SqlError("ConnectionError", f"could not connect: {redact(str(exc).strip(), cs)}") from None
        return self._kind, self._conn

    def _duckdb(self):
        if self._duck is None:
            import duckdb

            self._duck = duckdb.connect(":memory:")
        return self._duck

    def interrupt(self):
        """Cancel the query in flight (called from another thread)."""
        with self._lock:
            running = self._running
        if running is None:
            return False
        kind, conn = running
        try:
            if kind == "postgres":
                conn.cancel_safe()
            else:
                conn.interrupt()
        except Exception:  # the query may have just finished
            return False
        return True

    def execute(self, code, namespace, row_cap=DEFAULT_ROW_CAP):
        """Run `code`; returns (DataFrame or None, outputs)."""
        import pandas as pd

        if not code.strip():
            return None, []
        if self.connection_string:
            kind, conn = self._connect()
            query, params = bind(code, namespace, "pyformat" if kind == "postgres" else "qmark")
            try:
                frame, affected = self._run_dbapi(kind, conn, query, params, pd)
            except SqlError:
                raise
            except Exception as exc:
                if kind == "postgres" and conn.closed:
                    self.close()
                raise SqlError(type(exc).__name__, redact(str(exc).strip(), self.connection_string)) from None
        else:
            duck = self._duckdb()
            query, params = bind(code, namespace, "qmark")
            for name in table_names(code):
                value = namespace.get(name)
                if isinstance(value, pd.DataFrame):
                    duck.register(name, value)
            try:
                frame, affected = self._run_duckdb(duck, query, params)
            except Exception as exc:
                raise SqlError(type(exc).__name__, str(exc).strip()) from None
        if frame is None:
            note = f"{affected:,} row{'s' if affected != 1 else ''} affected" if affected is not None and affected >= 0 else "done"
            return None, [{"mimeType": "text/plain", "data": note}]
        return frame, render(frame, row_cap)

    def _run_dbapi(self, kind, conn, query, params, pd):
        with self._lock:
            self._running = (kind, conn)
        try:
            cur = conn.cursor()
            try:
                cur.execute(query, params or None) if kind == "postgres" else cur.execute(query, params)
                if cur.description is None:
                    return None, cur.rowcount
                columns = [d[0] for d in cur.description]
                rows = cur.fetchall()
            finally:
                cur.close()
        finally:
            with self._lock:
                self._running = None
        return pd.DataFrame.from_records(rows, columns=columns), None

    def _run_duckdb(self, duck, query, params):
        with self._lock:
            self._running = ("duckdb", duck)
        try:
            result = duck.execute(query, params)
            if result.description is None:
                return None, None
            return result.df(), None
        finally:
            with self._lock:
                self._running = None


def render(frame, row_cap):
    """An HTML table of the first `row_cap` rows, with column types and the total row count."""
    total = len(frame)
    shown = frame.head(row_cap)
    head = "".join(f"<th>{html.escape(str(c))}<br><small>{html.escape(str(t))}</small></th>" for c, t in zip(frame.columns, frame.dtypes))
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

        return value is None or (not isinstance(value, (list, tuple, dict)) and pd.isna(value))
    except (TypeError, ValueError):
        return False
