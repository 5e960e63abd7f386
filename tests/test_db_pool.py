"""The PostgreSQL pool's check (notebookproject/db_pool.py): a round trip only when a pooled
connection may be dead; a dead one is never lent (tests/test_faults.py restarts the server)."""
import select

import psycopg
import pytest
from django.db import connection
from psycopg_pool import ConnectionPool

from notebookproject import db_pool
from tests.conftest import database_url_for_tests

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def round_trips(monkeypatch):
    trips = []
    full = ConnectionPool.check_connection

    def counted(conn):
        trips.append(conn)
        return full(conn)

    monkeypatch.setattr(ConnectionPool, "check_connection", staticmethod(counted))
    return trips


def test_the_app_pool_uses_this_check():
    connection.ensure_connection()
    pool = connection.pool
    assert pool is not None and pool._check is db_pool.check and pool._reset is db_pool.returned


def test_a_connection_just_returned_is_lent_without_a_round_trip(round_trips):
    with psycopg.connect(database_url_for_tests(), autocommit=True) as conn:
        conn.execute("SELECT 1")
        db_pool.returned(conn)
        db_pool.check(conn)
        assert round_trips == []


def test_a_connection_the_server_closed_fails_the_check(round_trips):
    with psycopg.connect(database_url_for_tests(), autocommit=True) as conn, psycopg.connect(database_url_for_tests(), autocommit=True) as admin:
        db_pool.returned(conn)
        admin.execute("SELECT pg_terminate_backend(%s)", [conn.info.backend_pid])
        for _ in range(100):  # the FATAL notice and the end of the stream reach its socket
            poller = select.poll()
            poller.register(conn.fileno(), select.POLLIN)
            if poller.poll(50):
                break
        with pytest.raises(psycopg.OperationalError):
            db_pool.check(conn)
        assert len(round_trips) == 1  # the look at the socket sent it to the full check


def test_a_connection_that_rested_long_gets_the_round_trip(round_trips, monkeypatch):
    with psycopg.connect(database_url_for_tests(), autocommit=True) as conn:
        db_pool.returned(conn)
        monkeypatch.setattr(db_pool, "FULL_CHECK_AFTER", -1.0)
        db_pool.check(conn)
        assert round_trips == [conn]


def test_a_connection_in_a_transaction_or_closed_is_never_lent(round_trips):
    with psycopg.connect(database_url_for_tests()) as conn:
        conn.execute("SELECT 1")  # not autocommit: a transaction is open
        with pytest.raises(psycopg.OperationalError):
            db_pool.check(conn)
        conn.rollback()
        conn.close()
        with pytest.raises(psycopg.OperationalError):
            db_pool.check(conn)
