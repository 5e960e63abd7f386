"""The PostgreSQL pool's check: a round trip only when a pooled connection may be dead.

psycopg_pool's own `check_connection` (what CONN_HEALTH_CHECKS gives) sends an empty query
every time a connection is lent: with CONN_MAX_AGE = 0 that is every `database_sync_to_async`
call, one of the two round trips of an edit (docs/performance.md, "Edits"). Here the check
looks at the connection first:

* a connection the server closed (a restart, a killed backend, `idle_session_timeout`) has
  said so on its socket, which is then readable (the FATAL notice, the end of the stream): a
  silent idle connection has nothing to read;
* one that sat in the pool longer than FULL_CHECK_AFTER seconds is checked with a round trip
  anyway (a connection dropped silently by a firewall or a dead network never becomes readable);
* anything else, broken, closed or not idle, fails the check and the pool replaces it.

A connection that fails is replaced by the pool before the request gets one, as before
(tests/test_faults.py restarts PostgreSQL under the app).
"""
import select
import time
import weakref

import psycopg
from psycopg import pq
from psycopg_pool import ConnectionPool

# Seconds a connection may rest in the pool and still be lent after a look at its socket alone.
FULL_CHECK_AFTER = 10.0

_returned_at = weakref.WeakKeyDictionary()  # connection -> time.monotonic() it came back to the pool


def returned(conn):
    """The pool's `reset` callback: when the connection came back (it is idle by then)."""
    _returned_at[conn] = time.monotonic()


def _not_idle(conn):
    return conn.closed or conn.broken or conn.pgconn.transaction_status != pq.TransactionStatus.IDLE


def _hung_up(conn):
    """The idle connection's socket is readable: the server said goodbye (a FATAL notice, the
    end of the stream)."""
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    return bool(poller.poll(0))


def unusable(conn):
    """True when `conn` (sync or asyncio) must not serve another request: closed, broken, not
    idle, or hung up by the server."""
    return _not_idle(conn) or _hung_up(conn)


def check(conn):
    """The pool's `check` callback: raises when `conn` must not be lent."""
    if _not_idle(conn):
        raise psycopg.OperationalError("the pooled connection is closed or not idle")
    rested = time.monotonic() - _returned_at.get(conn, float("-inf"))
    if _hung_up(conn) or rested > FULL_CHECK_AFTER:
        ConnectionPool.check_connection(conn)  # the round trip: raises if the server is gone
