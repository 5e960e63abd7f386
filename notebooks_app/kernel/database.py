"""The notebook's own database, on the trusted side of the sandbox.

The kernel worker (through `runner.Runner`) holds each notebook's connection here and
runs the queries its sandboxed process sends out: the connection string, and so the
password, never enters the sandbox.  Parameters arrive as JSON data (`sql.decode_params`,
never unpickled) and rows go back as Arrow IPC.  A policy keeps notebooks off the
server's own database: its SQLite file, anything under the project directory, and its
PostgreSQL database.  No Django here: the worker builds the policy from its settings.
"""
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from ..secrets import scrub
from .sql import SqlError, decode_params, engine_of, frame_to_arrow, open_transaction_error

logger = logging.getLogger(__name__)

LOOPBACK_NAMES = frozenset({"", "localhost", "127.0.0.1", "::1", "[::1]", "ip6-localhost"})

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


@dataclass(frozen=True)
class DatabasePolicy:
    """Databases no notebook may open: the server's own.

    `denied_paths`: files and directories a SQLite connection may not point into.
    `denied_postgres`: (host, port, database name) triples.
    """

    denied_paths: tuple = ()
    denied_postgres: tuple = ()

    def refusal(self, connection_string):
        """Why `connection_string` may not be used (None when it may)."""
        engine = engine_of(connection_string)
        if engine == "sqlite":
            path = os.path.realpath(sqlite_path(connection_string) or ".")
            for denied in self.denied_paths:
                denied = os.path.realpath(denied)
                if path == denied or path.startswith(denied.rstrip(os.sep) + os.sep) or path.startswith(denied + "-"):
                    return "that SQLite file belongs to the notebook server itself, which notebooks may not open"
        elif engine == "postgres":
            target = postgres_target(connection_string)
            if target is not None and target in {_normal(*t) for t in self.denied_postgres}:
                return "that is the notebook server's own database, which notebooks may not open"
        return None


def sqlite_path(connection_string):
    return unquote(urlsplit(connection_string).path[1:])


def postgres_target(connection_string):
    """(host, port, database) of a PostgreSQL URL, loopback names folded into one."""
    try:
        import psycopg

        info = psycopg.conninfo.conninfo_to_dict(connection_string)
    except Exception:  # unparsable: psycopg's connect reports it to the cell
        return None
    host = info.get("host") or ""
    return _normal(host.split(",")[0], info.get("port") or 5432, info.get("dbname") or info.get("user") or "")


def _normal(host, port, name):
    host = (host or "").strip().lower()
    if host in LOOPBACK_NAMES or host.startswith("/"):
        host = "loopback"
    try:
        port = int(str(port).split(",")[0])
    except ValueError:
        port = 5432
    return host, port, name


def _pg_type_name(name):
    if not name:
        return name
    base, sep, rest = name.partition("(")
    array = base.endswith("[]")
    base = base.removesuffix("[]")
    return _PG_TYPE_NAMES.get(base, base) + sep + rest + ("[]" if array else "")


def _frame(rows, columns):
    """A DataFrame of DB-API rows; integer columns with NULLs stay integers (Int64)."""
    import pandas as pd

    frame = pd.DataFrame.from_records(rows, columns=columns)
    for position in range(len(columns)):
        series = frame.iloc[:, position]
        if series.dtype.kind == "f" and series.isna().any():
            raw = [row[position] for row in rows]
            if all(value is None or (isinstance(value, int) and not isinstance(value, bool)) for value in raw):
                frame.isetitem(position, pd.array(raw, dtype="Int64"))
    return frame


def _no_attach(action, *args):
    """SQLite authorizer: a notebook's SQL may not ATTACH other database files."""
    return sqlite3.SQLITE_DENY if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH) else sqlite3.SQLITE_OK


SCHEMA_TTL = 30.0
# Tables and their columns, for completion: PostgreSQL's on the search path, SQLite's all.
_SCHEMA_QUERIES = {
    "postgres": "SELECT table_name, column_name FROM information_schema.columns"
    " WHERE table_schema = ANY (current_schemas(false)) ORDER BY table_name, ordinal_position LIMIT 10000",
    "sqlite": "SELECT m.name, p.name FROM sqlite_master AS m JOIN pragma_table_info(m.name) AS p"
    " WHERE m.type IN ('table', 'view') AND m.name NOT LIKE 'sqlite_%' ORDER BY m.name, p.cid LIMIT 10000",
}


class ExternalDatabase:
    """One notebook's connection (opened lazily, reused), used from worker threads.

    Every statement runs in autocommit mode; a cell that leaves a transaction open
    (an explicit BEGIN) has it rolled back and fails, so no transaction spans cells.
    """

    def __init__(self, policy=None):
        self.policy = policy or DatabasePolicy()
        self.connection_string = ""
        self._conn = None
        self._kind = None
        self._running = None  # (kind, connection) of the query in flight, for interrupt()
        self._cancelled = False
        self._lock = threading.Lock()  # guards _running
        self._query_lock = threading.Lock()  # one query at a time
        self._schema = (None, "", {})  # (monotonic time, connection string, tables) for completion

    @property
    def engine(self):
        return engine_of(self.connection_string)

    def set_connection(self, connection_string):
        with self._query_lock:
            self.close()
            self.connection_string = connection_string or ""

    def close(self):
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # closing a broken connection may fail; it is dropped either way
                pass
        self._conn, self._kind = None, None

    def execute(self, query, params):
        """Run one bound query (blocking: call it in a thread); the reply for the sandbox."""
        with self._query_lock:
            try:
                return self._execute(query, params)
            except SqlError as exc:
                return {"error": {"ename": exc.ename, "evalue": scrub(exc.evalue, self.connection_string)}}
            except Exception as exc:  # noqa: BLE001 - every failure is the cell's error, never the worker's
                logger.exception("SQL query failed unexpectedly")
                return {"error": {"ename": type(exc).__name__, "evalue": scrub(str(exc), self.connection_string)}}

    def schema(self):
        """{table: [column, ...]} of the tables a query can name unqualified (blocking: call it in
        a thread), for SQL completion; cached SCHEMA_TTL seconds.  Never waits for a running
        query (the cached tables, or none); a failure is no tables, logged."""
        at, connection_string, tables = self._schema
        if at is not None and connection_string == self.connection_string and time.monotonic() - at < SCHEMA_TTL:
            return tables
        if not self._query_lock.acquire(blocking=False):
            return tables if connection_string == self.connection_string else {}
        try:
            kind, conn = self._connect()
            query = _SCHEMA_QUERIES[kind]
            cur = conn.cursor()
            try:
                cur.execute(query)
                rows = cur.fetchall()
            finally:
                cur.close()
            self._end_transaction(kind, conn)
        except Exception as exc:  # noqa: BLE001 - completion without tables, never an error
            logger.info("could not read the tables of the notebook's database: %s", scrub(str(exc), self.connection_string)[:200])
            rows = []
        finally:
            self._query_lock.release()
        tables = {}
        for table, column in rows:
            tables.setdefault(str(table), []).append(str(column))
        self._schema = (time.monotonic(), self.connection_string, tables)
        return tables

    def _execute(self, query, params):
        self._cancelled = False
        if not isinstance(query, str):
            raise SqlError("ProtocolError", "the query must be text")
        params = decode_params(params)
        kind, conn = self._connect()
        try:
            frame, affected, types = self._run(kind, conn, query, params)
        except Exception as exc:
            self._end_transaction(kind, conn)
            if kind == "postgres" and (conn.closed or conn.broken):
                self.close()
            if self._cancelled:
                raise SqlError("KeyboardInterrupt", "the query was cancelled") from None
            raise SqlError(type(exc).__name__, str(exc).strip()) from None
        if self._end_transaction(kind, conn):
            raise open_transaction_error()
        if frame is None:
            return {"affected": affected}
        return {"arrow": frame_to_arrow(frame), "types": types}

    def interrupt(self):
        """Cancel the query in flight (called from another thread); True if there was one."""
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

    def _connect(self):
        if self._conn is not None:
            if self._kind == "postgres" and (self._conn.closed or self._conn.broken):
                self.close()  # the server went away since the last cell: open a new one
            else:
                return self._kind, self._conn
        cs = self.connection_string
        engine = engine_of(cs)
        if not cs:
            raise SqlError("ConnectionError", "this notebook has no database connection")
        if engine is None:
            raise SqlError("ConnectionError", "unsupported connection string; use postgresql://, postgres:// or sqlite:///")
        refusal = self.policy.refusal(cs)
        if refusal:
            raise SqlError("ConnectionError", refusal)
        try:
            if engine == "postgres":
                import psycopg

                conn = psycopg.connect(cs, autocommit=True, connect_timeout=10)
            else:
                conn = self._open_sqlite(sqlite_path(cs) or ":memory:")
        except SqlError:
            raise
        except Exception as exc:
            raise SqlError("ConnectionError", f"could not connect: {str(exc).strip()}") from None
        self._kind, self._conn = engine, conn
        return engine, conn

    @staticmethod
    def _open_sqlite(path):
        if path == ":memory:":
            conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        else:
            # mode=rw: a mistyped path is an error, not a new empty database.
            uri = "file:" + path.replace("?", "%3f").replace("#", "%23") + "?mode=rw"
            try:
                conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            except sqlite3.OperationalError as exc:
                raise SqlError("ConnectionError", f"could not open the SQLite database {path!r}: {exc}") from None
        conn.set_authorizer(_no_attach)
        return conn

    def _end_transaction(self, kind, conn):
        """Roll back a transaction the cell left open (an explicit BEGIN); True if there was one."""
        try:
            if kind == "postgres":
                import psycopg

                if conn.closed or conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                    return False
            elif not conn.in_transaction:
                return False
            conn.rollback()
        except Exception:  # a broken connection: it is replaced on the next cell
            self.close()
            return False
        return True

    def _run(self, kind, conn, query, params):
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
        return _frame(rows, columns), None, types
