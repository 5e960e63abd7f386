"""SQL cells end to end: PostgreSQL (a scratch database on the test server), SQLite and the
embedded DuckDB, driven over the WebSocket with the real kernel worker; plus the binding,
redaction and rendering helpers on their own.
"""
import asyncio
import json
import secrets
import sqlite3
import time
from types import SimpleNamespace
from urllib.parse import quote, urlsplit

import psycopg
import pytest
from channels.db import database_sync_to_async

from notebooks_app.kernel import sql
from notebooks_app.kernel.analysis import analyze_sql, sql_table_names
from notebooks_app.kernel.runner import Runner
from notebooks_app.models import Notebook
from notebooks_app.secrets import scrub
from tests.conftest import scratch_database
from tests.waiting import eventually
from tests.test_protocol import create, db_cell, run_and_wait, text_output

PW_ROLE = "notebook_pw_role"  # scripts/run_tests.py makes the server check this role's password
RIGHT_PASSWORD = "Right-Pass-81"
WRONG_PASSWORD = "Wr0ng@Secret-77"  # '@' must be URL-encoded: both forms must stay hidden

SEED_SQL = [
    "CREATE TABLE items (id integer PRIMARY KEY, v integer, name text, created date)",
    "INSERT INTO items SELECT g, g * 5, 'item ' || g, DATE '2024-01-01' + g FROM generate_series(1, 10) g",
    "UPDATE items SET v = NULL, created = NULL WHERE id = 10",
    "CREATE TABLE customers (id integer PRIMARY KEY, name text, city text)",
    "INSERT INTO customers VALUES (1, 'Ann', 'Oslo'), (2, 'Bo', NULL), (3, 'Cy', 'Rome')",
    "CREATE TABLE orders (id integer PRIMARY KEY, customer_id integer, amount numeric(10, 2), ordered_on date)",
    "INSERT INTO orders VALUES (1, 1, 10.50, '2024-03-01'), (2, 1, NULL, '2024-03-02'), (3, 2, 7.25, NULL), (4, NULL, 3.00, '2024-03-04')",
    "CREATE TABLE victims (id integer, name text)",
    "INSERT INTO victims VALUES (1, 'alice'), (2, '''; DROP TABLE victims; --')",
]


@pytest.fixture(scope="module")
def pg(django_db_setup):
    """A scratch database with seeded tables on the test PostgreSQL server, dropped afterwards."""
    with scratch_database("nb_sql") as (url, name, admin_url):
        with psycopg.connect(admin_url, autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (PW_ROLE,)).fetchone() is None:
                conn.execute(f"CREATE ROLE {PW_ROLE} LOGIN PASSWORD '{RIGHT_PASSWORD}'")
        with psycopg.connect(url, autocommit=True) as conn:
            for statement in SEED_SQL:
                conn.execute(statement)
        parts = urlsplit(url)
        host = f"{parts.hostname}:{parts.port}"
        yield SimpleNamespace(
            url=url,
            name=name,
            wrong_password_url=f"postgresql://{PW_ROLE}:{quote(WRONG_PASSWORD, safe='')}@{host}/{name}",
            right_password_url=f"postgresql://{PW_ROLE}:{RIGHT_PASSWORD}@{host}/{name}",
        )
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {PW_ROLE}")


def pg_query(pg, query, params=None):
    with psycopg.connect(pg.url, autocommit=True) as conn:
        return conn.execute(query, params).fetchall()


def seed_sqlite(path):
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE items (id integer PRIMARY KEY, v integer, name text, created text)")
        db.executemany("INSERT INTO items VALUES (?, ?, ?, ?)", [(i, i * 5 if i < 10 else None, f"item {i}", f"2024-01-{i + 1:02d}") for i in range(1, 11)])
        db.execute("CREATE TABLE victims (id integer, name text)")
        db.executemany("INSERT INTO victims VALUES (?, ?)", [(1, "alice"), (2, "'; DROP TABLE victims; --")])
    db.close()
    return f"sqlite:///{path}"  # an absolute path: sqlite:////tmp/...


@pytest.fixture
def engine(request, pg, tmp_path):
    """(kind, connection string or '' for DuckDB); DuckDB gets its tables from DataFrame cells."""
    kind = request.param
    if kind == "postgres":
        return kind, pg.url
    if kind == "sqlite":
        return kind, seed_sqlite(tmp_path / "seed.db")
    return kind, ""


async def use_engine(client, engine):
    """Point the notebook at the engine; DuckDB gets an `items` / `victims` DataFrame cell."""
    kind, url = engine
    if url:
        reply = await client.request(type="update_db_connection", connectionString=url)
        assert reply["type"] == "db_connection_updated" and reply["connected"], reply
        return None
    code = (
        "import pandas as pd\n"
        "items = pd.DataFrame({'id': range(1, 11), 'v': [i * 5 for i in range(1, 10)] + [None]})\n"
        "victims = pd.DataFrame({'id': [1, 2], 'name': ['alice', \"'; DROP TABLE victims; --\"]})"
    )
    return await create(client, code)


def html_output(client, cell_id):
    return next((o["data"] for o in client.state[cell_id]["outputs"] if o["mimeType"] == "text/html"), None)


def runs_since(client, start):
    return [e["cellId"] for e in client.events[start:] if e["type"] == "cell_status" and e["status"] == "running"]


async def stored_cell(cell_id, predicate):
    """The cell's row once `predicate` holds (the worker persists right after a cascade)."""

    async def stored():
        cell = await db_cell(cell_id)
        return cell if predicate(cell) else None

    return await eventually(stored, what=f"cell {cell_id} stored as expected")


# --- over the WebSocket, with the real worker ------------------------------------------

pytestmark_db = pytest.mark.django_db(transaction=True)


@pytestmark_db
async def test_reactive_chain_python_sql_python_on_postgres(ws, notebook, users, pg):
    alice = await ws(users["alice"], notebook)
    bob = await ws(users["bob"], notebook)
    await use_engine(alice, ("postgres", pg.url))
    threshold = await create(alice, "threshold = 10")
    query = await create(alice, "SELECT id, v FROM items WHERE v > {threshold} ORDER BY id", cellType="sql")
    count = await create(alice, "len(df_1)")
    cell = alice.state[query]
    assert (cell["type"], cell["resultVariable"], cell["reads"], cell["writes"]) == ("sql", "df_1", ["threshold"], ["df_1"])

    await run_and_wait(alice, count)
    assert [alice.state[c]["status"] for c in (threshold, query, count)] == ["success"] * 3
    assert text_output(alice, count) == "7"  # v = 15 ... 45; the NULL row never matches
    assert text_output(alice, query).startswith("7 rows")

    # Changing threshold and running it reruns the SQL cell and its dependent, in order.
    start = len(alice.events)
    await alice.request(type="cell_update", cellId=threshold, code="threshold = 25")
    await run_and_wait(alice, threshold)
    await alice.wait_status(count, "success")
    assert runs_since(alice, start) == [threshold, query, count]
    assert text_output(alice, count) == "4"
    # Bob saw the same: the second run's result.
    await bob.wait_for(lambda e: e["type"] == "cell_status" and e["cellId"] == count and e["status"] == "success" and text_output(bob, count) == "4", what="bob's rerun")

    # Deleting the cell that defines threshold: the SQL cell fails naming it, and so on down.
    await alice.request(type="delete_cell", cellId=threshold)
    await alice.wait_status(count, "error")
    error = alice.state[query]["error"]
    assert error["ename"] == "NameError" and "'threshold'" in error["evalue"]
    assert alice.state[count]["error"]["ename"] == "NameError" and "df_1" in alice.state[count]["error"]["evalue"]
    stored = await stored_cell(query, lambda c: c.status == "error")
    assert stored.error["ename"] == "NameError" and stored.reads == ["threshold"] and stored.writes == ["df_1"]


@pytestmark_db
async def test_duckdb_queries_a_dataframe_cell_by_name_with_a_graph_edge(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    frame = "import pandas as pd\nsales = pd.DataFrame({{'region': ['n', 's', 'n', 'e'], 'amount': {}}})"
    sales = await create(alice, frame.format([5, 20, 30, 40]))
    await create(alice, "minimum = 10")
    query = await create(alice, "SELECT region, SUM(amount) AS total FROM sales WHERE amount > {minimum} GROUP BY region ORDER BY region", cellType="sql")
    total = await create(alice, "int(df_1['total'].sum())")
    assert alice.state[query]["reads"] == ["minimum"]  # the table name is an edge, not a listed read

    await run_and_wait(alice, total)
    assert text_output(alice, total) == "90"
    html = html_output(alice, query)
    assert "<caption>3 rows</caption>" in html and "region" in html and "VARCHAR" in html

    # The table name makes the edge: rerunning the DataFrame cell reruns the query.
    start = len(alice.events)
    await alice.request(type="cell_update", cellId=sales, code=frame.format([5, 20, 30, 400]))
    await run_and_wait(alice, sales)
    await alice.wait_status(total, "success")
    assert runs_since(alice, start) == [sales, query, total]
    assert text_output(alice, total) == "450"

    # The DataFrame's cell deleted: the query no longer sees a table of that name.
    await alice.request(type="delete_cell", cellId=sales)
    await alice.wait_status(total, "error")
    error = alice.state[query]["error"]
    assert error["ename"] == "CatalogException" and "sales" in error["evalue"]


@pytestmark_db
@pytest.mark.parametrize("engine", ["postgres", "sqlite", "duckdb"], indirect=True)
async def test_a_string_with_sql_in_it_is_data_never_sql(ws, notebook, users, engine, pg):
    alice = await ws(users["alice"], notebook)
    await use_engine(alice, engine)
    await create(alice, "evil = \"'; DROP TABLE victims; --\"")
    query = await create(alice, "SELECT id, name FROM victims WHERE name = {evil}", cellType="sql")
    check = await create(alice, "list(df_1['id'])")
    await run_and_wait(alice, check)
    assert text_output(alice, check) == "[2]"  # matched as a value, never run as SQL
    again = await create(alice, "SELECT count(*) AS n FROM victims", cellType="sql")
    await run_and_wait(alice, again)
    assert alice.state[again]["status"] == "success" and "2" in text_output(alice, again).splitlines()[-1]
    if engine[0] == "postgres":
        assert pg_query(pg, "SELECT count(*) FROM victims") == [(2,)]
    elif engine[0] == "sqlite":
        path = urlsplit(engine[1]).path[1:]
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT count(*) FROM victims").fetchone() == (2,)
    assert alice.state[query]["status"] == "success"


@pytestmark_db
@pytest.mark.parametrize("engine", ["postgres", "sqlite", "duckdb"], indirect=True)
async def test_a_list_binds_for_in(ws, notebook, users, engine):
    alice = await ws(users["alice"], notebook)
    await use_engine(alice, engine)
    ids = await create(alice, "ids = [2, 4, 99]")
    await create(alice, "SELECT id FROM items WHERE id IN {ids} ORDER BY id", cellType="sql")
    check = await create(alice, "[int(i) for i in df_1['id']]")
    await run_and_wait(alice, check)
    assert text_output(alice, check) == "[2, 4]"
    await alice.request(type="cell_update", cellId=ids, code="ids = []")
    await run_and_wait(alice, ids)
    await alice.wait_status(check, "success")
    assert text_output(alice, check) == "[]"  # an empty list matches nothing, no syntax error
    if engine[0] == "postgres":
        any_query = await create(alice, "SELECT count(*) AS n FROM items WHERE id = ANY({picked})", cellType="sql")
        picked = await create(alice, "picked = (1, 2, 3)")
        await run_and_wait(alice, any_query)
        assert alice.state[any_query]["status"] == "success", alice.state[any_query]["error"]
        assert text_output(alice, any_query).splitlines()[-1].strip() == "3"
        assert picked in alice.state


@pytestmark_db
async def test_bad_connection_string_is_refused_to_the_sender_and_nothing_stored(ws, notebook, users, tmp_path):
    alice, bob = await ws(users["alice"], notebook), await ws(users["bob"], notebook)
    good = seed_sqlite(tmp_path / "good.db")
    assert (await alice.request(type="update_db_connection", connectionString=good))["type"] == "db_connection_updated"
    await bob.wait_for(lambda e: e["type"] == "db_connection_updated")
    revision = (await database_sync_to_async(Notebook.objects.get)(pk=notebook.pk)).revision
    for value in ["mysql://u:pw@h/db", "postgresql://u:pw@h:99999999/db", "sqlite://relative.db", "postgresql:///nohost", "  ", ["x"]]:
        reply = await alice.request(type="update_db_connection", connectionString=value)
        if value == "  ":  # blank means "no connection": that one is accepted
            assert reply["type"] == "db_connection_updated" and reply["connected"] is False
            await alice.request(type="update_db_connection", connectionString=good)
            revision += 2
            continue
        assert reply["type"] == "error" and reply["code"] == "invalid_field", (value, reply)
        assert "pw" not in reply["message"].replace("postgresql", "")
    stored = await database_sync_to_async(Notebook.objects.get)(pk=notebook.pk)
    assert stored.connection_string == good and stored.revision == revision
    await bob.wait_for(lambda e: e["type"] == "db_connection_updated" and not e["connected"])
    await bob.wait_for(lambda e: e["type"] == "db_connection_updated" and e["connected"])
    await bob.expect_silence(0.5)  # refusals went to alice only


@pytestmark_db
async def test_missing_sqlite_file_is_a_clear_cell_error_and_is_not_created(ws, notebook, users, tmp_path):
    alice = await ws(users["alice"], notebook)
    missing = tmp_path / "nope" / "missing.db"
    await use_engine(alice, ("sqlite", f"sqlite:///{missing}"))
    query = await create(alice, "SELECT 1 AS one", cellType="sql")
    await run_and_wait(alice, query)
    error = alice.state[query]["error"]
    assert error["ename"] == "ConnectionError" and "missing.db" in error["evalue"]
    assert not missing.exists()


@pytestmark_db
async def test_wrong_password_is_the_cells_error_without_the_password_anywhere(ws, notebook, users, pg, live_kernel):
    try:
        psycopg.connect(pg.wrong_password_url, connect_timeout=5).close()
        pytest.skip("this PostgreSQL server trusts every role (no password check); scripts/test configures one that does not")
    except psycopg.OperationalError:
        pass
    encoded = quote(WRONG_PASSWORD, safe="")
    alice, bob = await ws(users["alice"], notebook), await ws(users["bob"], notebook)
    reply = await alice.request(type="update_db_connection", connectionString=pg.wrong_password_url)
    assert reply["display"] == f"postgresql://{PW_ROLE}:****@{urlsplit(pg.url).netloc.split('@')[-1]}/{pg.name}"
    query = await create(alice, "SELECT current_user AS who", cellType="sql")
    await run_and_wait(alice, query)
    error = alice.state[query]["error"]
    assert error["ename"] == "ConnectionError" and "password authentication failed" in error["evalue"]
    await bob.wait_status(query, "error")
    for seen in (alice.events, alice.replies, bob.events):
        text = json.dumps(seen)
        assert WRONG_PASSWORD not in text and encoded not in text
    stored = await stored_cell(query, lambda c: c.status == "error")
    assert stored.error["ename"] == "ConnectionError"
    assert WRONG_PASSWORD not in json.dumps(stored.error) and encoded not in json.dumps(stored.error)

    def admin_pages():
        from django.contrib.auth import get_user_model
        from django.test import Client

        client = Client()
        client.force_login(get_user_model().objects.create_superuser("root", "root@example.com", "root-pass-123"))
        return [
            client.get(f"/admin/notebooks_app/notebook/{notebook.pk}/change/").content.decode(),
            client.get(f"/admin/notebooks_app/cell/{query}/change/").content.decode(),
            client.get("/admin/notebooks_app/notebook/").content.decode(),
        ]

    pages = await database_sync_to_async(admin_pages)()
    assert "password authentication failed" in pages[1]
    for page in pages:
        assert WRONG_PASSWORD not in page and encoded not in page
    log = live_kernel.log_path.read_text(errors="replace")
    assert WRONG_PASSWORD not in log and encoded not in log

    # The right password: the runner drops the failed attempt and connects.
    await alice.request(type="update_db_connection", connectionString=pg.right_password_url)
    await run_and_wait(alice, query)
    assert alice.state[query]["status"] == "success" and PW_ROLE in text_output(alice, query)


SLOW_QUERIES = {
    "postgres": "SELECT pg_sleep(30) AS slept",
    "sqlite": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000000) SELECT count(*) AS n FROM c",
    "duckdb": "SELECT sum(hash(i)) AS h FROM range(100000000000) t(i)",
}


@pytestmark_db
@pytest.mark.parametrize("engine", ["postgres", "sqlite", "duckdb"], indirect=True)
async def test_interrupt_cancels_a_running_query_and_the_next_one_works(ws, notebook, users, engine, pg):
    alice = await ws(users["alice"], notebook)
    await use_engine(alice, engine)
    warm = await create(alice, "SELECT 1 AS one", cellType="sql")  # connection opened before the slow one
    await run_and_wait(alice, warm)
    slow = await create(alice, SLOW_QUERIES[engine[0]], cellType="sql")
    await alice.send(type="run_cell", cellId=slow)
    await alice.wait_status(slow, "running")
    if engine[0] == "postgres":  # the query is on the server: cancelling it there is what is tested
        await eventually(lambda: any("pg_sleep" in (r[1] or "") and r[0] == "active" for r in pg_query(pg, "SELECT state, query FROM pg_stat_activity WHERE datname = %s", (pg.name,))), what="the query running")
    await alice.send(type="interrupt")
    await alice.wait_status(slow, "error", timeout=15)
    error = alice.state[slow]["error"]
    assert error["ename"] == "KeyboardInterrupt", error  # cancelled: not the time limit (TimeoutError)
    if engine[0] == "postgres":
        # The server stopped the query too; no connection sits in a transaction.
        rows = pg_query(pg, "SELECT state, query FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (pg.name,))
        assert not [r for r in rows if "pg_sleep" in (r[1] or "") and r[0] == "active"], rows
        assert not [r for r in rows if (r[0] or "").startswith("idle in transaction")], rows
    after = await create(alice, "SELECT 41 + 1 AS answer", cellType="sql")
    await run_and_wait(alice, after)
    assert alice.state[after]["status"] == "success" and text_output(alice, after).splitlines()[-1].strip() == "42"


@pytestmark_db
async def test_statements_without_rows_report_affected_rows_and_never_leave_a_transaction(ws, notebook, users, pg):
    alice = await ws(users["alice"], notebook)
    await use_engine(alice, ("postgres", pg.url))
    table = f"counters_{secrets.token_hex(3)}"
    make = await create(alice, f"CREATE TABLE {table} AS SELECT g AS id, 0 AS hits FROM generate_series(1, 7) g", cellType="sql")
    await run_and_wait(alice, make)
    assert alice.state[make]["status"] == "success" and text_output(alice, make) == "7 rows affected"
    bump = await create(alice, f"UPDATE {table} SET hits = hits + 1 WHERE id <= {{limit}}", cellType="sql")
    limit = await create(alice, "limit = 3")
    await run_and_wait(alice, bump)
    assert text_output(alice, bump) == "3 rows affected" and alice.state[bump]["outputs"] == [{"mimeType": "text/plain", "data": "3 rows affected"}]
    # Autocommit: another connection sees the change at once.
    assert pg_query(pg, f"SELECT sum(hits) FROM {table}") == [(3,)]
    assert limit in alice.state
    # A cell that opens a transaction and leaves it open fails, and it is rolled back.
    dangling = await create(alice, f"BEGIN; UPDATE {table} SET hits = 100", cellType="sql")
    await run_and_wait(alice, dangling)
    assert alice.state[dangling]["error"]["ename"] == "TransactionError"
    assert pg_query(pg, f"SELECT sum(hits) FROM {table}") == [(3,)]
    rows = pg_query(pg, "SELECT state FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (pg.name,))
    assert not [r for r in rows if (r[0] or "").startswith("idle in transaction")], rows
    # A whole transaction in one cell is fine; a literal % needs no escaping.
    whole = await create(alice, f"BEGIN; UPDATE {table} SET hits = 0 WHERE id = 1; COMMIT", cellType="sql")
    await run_and_wait(alice, whole)
    assert alice.state[whole]["status"] == "success", alice.state[whole]["error"]
    percent = await create(alice, "SELECT '100%' AS pct, count(*) AS n FROM items WHERE name LIKE 'item 1%'", cellType="sql")
    await run_and_wait(alice, percent)
    assert "100%" in text_output(alice, percent) and text_output(alice, percent).splitlines()[-1].split() == ["100%", "2"]


@pytestmark_db
async def test_joins_nulls_and_dates_show_types_and_reach_python(ws, notebook, users, pg):
    alice = await ws(users["alice"], notebook)
    await use_engine(alice, ("postgres", pg.url))
    query = await create(
        alice,
        "SELECT o.id, c.name AS customer, c.city, o.amount, o.ordered_on\n"
        "FROM orders o LEFT JOIN customers c ON c.id = o.customer_id\nORDER BY o.id",
        cellType="sql",
    )
    check = await create(alice, "[str(d) for d in df_1['ordered_on']], int(df_1['customer'].isna().sum()), str(df_1['amount'][0])")
    await run_and_wait(alice, check)
    assert text_output(alice, check) == "(['2024-03-01', '2024-03-02', 'None', '2024-03-04'], 1, '10.50')"
    html = html_output(alice, query)
    assert "<caption>4 rows</caption>" in html
    for column, kind in [("id", "integer"), ("customer", "text"), ("amount", "numeric(10,2)"), ("ordered_on", "date")]:
        assert f"<th>{column}<br><small>{kind}</small></th>" in html
    assert html.count("<td class='null'>NULL</td>") == 5  # Bo's city, amount 2, date 3, order 4's customer and city
    assert "<td>2024-03-04</td>" in html

    ints = await create(alice, "SELECT id, v FROM items ORDER BY id", cellType="sql")
    dtype = await create(alice, "str(df_2['v'].dtype), int(df_2['v'].isna().sum())")
    await run_and_wait(alice, dtype)
    assert text_output(alice, dtype) == "('Int64', 1)"  # integers with a NULL stay integers
    assert "<td>45</td>" in html_output(alice, ints)


@pytestmark_db
async def test_a_100k_row_result_is_capped_in_the_table_with_the_total_count(ws, notebook, users, pg):
    alice = await ws(users["alice"], notebook)
    await use_engine(alice, ("postgres", pg.url))
    query = await create(alice, "SELECT g AS n, md5(g::text) AS digest, DATE '2020-01-01' + g % 1000 AS day FROM generate_series(1, 100000) g", cellType="sql")
    check = await create(alice, "len(df_1), int(df_1['n'].sum())")
    await run_and_wait(alice, check)
    assert text_output(alice, check) == f"(100000, {100000 * 100001 // 2})"
    html = html_output(alice, query)
    assert "<caption>100,000 rows, showing the first 200</caption>" in html
    assert html.count("<tr>") == 201  # the header and 200 rows
    assert len(json.dumps(alice.state[query]["outputs"])) < 60_000  # what travels to every browser
    stored = await stored_cell(query, lambda c: c.status == "success")
    assert len(json.dumps(stored.outputs)) < 60_000


@pytestmark_db
async def test_changing_the_connection_marks_sql_cells_and_their_dependents_stale(ws, notebook, users, tmp_path):
    alice, bob = await ws(users["alice"], notebook), await ws(users["bob"], notebook)
    threshold = await create(alice, "threshold = 10")
    query = await create(alice, "SELECT 42 AS answer WHERE {threshold} > 0", cellType="sql")
    check = await create(alice, "int(df_1['answer'][0])")
    await run_and_wait(alice, check)  # on DuckDB
    assert text_output(alice, check) == "42"
    url = seed_sqlite(tmp_path / "other.db")
    await alice.request(type="update_db_connection", connectionString=url)
    await bob.wait_status(check, "stale")
    await alice.wait_status(check, "stale")
    for client in (alice, bob):
        assert [client.state[c]["status"] for c in (threshold, query, check)] == ["success", "stale", "stale"]
    # The runner now queries the SQLite file: its table exists there only.
    await alice.request(type="cell_update", cellId=query, code="SELECT count(*) AS answer FROM items WHERE v > {threshold}")
    await run_and_wait(alice, check)
    assert text_output(alice, check) == "7"
    # Back to none: DuckDB again, where that table does not exist.
    await alice.request(type="update_db_connection", connectionString="")
    await alice.wait_status(query, "stale")
    await run_and_wait(alice, query)
    assert alice.state[query]["error"]["ename"] == "CatalogException"


@pytestmark_db
async def test_result_variable_defaults_rename_validation_and_privacy(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    first = await create(alice, "SELECT 1 AS a", cellType="sql")
    second = await create(alice, "SELECT 2 AS a", cellType="sql")
    taken = await create(alice, "df_3 = 'taken by Python'")
    third = await create(alice, "SELECT 3 AS a", cellType="sql")
    assert [alice.state[c]["resultVariable"] for c in (first, second, third)] == ["df_1", "df_2", "df_4"]
    assert alice.state[taken]["resultVariable"] == ""

    reply = await alice.request(type="cell_update", cellId=first, resultVariable="totals")
    assert reply["type"] == "cell_updated" and reply["resultVariable"] == "totals" and reply["writes"] == ["totals"]
    user = await create(alice, "int(totals['a'][0]) + 1")
    await run_and_wait(alice, user)
    assert text_output(alice, user) == "2"
    assert (await db_cell(first)).result_variable == "totals"

    for bad in ["1abc", "class", "a-b", "", "x" * 101, 7]:
        reply = await alice.request(type="cell_update", cellId=second, resultVariable=bad)
        assert reply["type"] == "error" and reply["code"] == "invalid_field", (bad, reply)
    reply = await alice.request(type="cell_update", cellId=taken, resultVariable="frame")
    assert reply["type"] == "error" and reply["code"] == "invalid_field" and "SQL" in reply["message"]
    assert (await db_cell(second)).result_variable == "df_2" and (await db_cell(taken)).result_variable == ""

    # A leading underscore keeps the result private: no write, no edge.
    reply = await alice.request(type="cell_update", cellId=second, resultVariable="_scratch")
    assert reply["writes"] == [] and reply["resultVariable"] == "_scratch"
    await run_and_wait(alice, second)
    assert alice.state[second]["status"] == "success"

    # Two SQL cells with one result variable block each other like any duplicate definition.
    reply = await alice.request(type="cell_update", cellId=third, resultVariable="totals")
    await alice.wait_for(lambda e: alice.state[first]["status"] == alice.state[third]["status"] == "blocked", what="both blocked")
    assert "totals" in alice.state[third]["error"]["evalue"]


# --- the runner on its own -------------------------------------------------------------


async def test_runner_row_cap_and_result_binding():
    runner = Runner(time_limit=10, sql_row_cap=3)
    try:
        result = await runner.run_sql("q", "SELECT i FROM range(10) t(i)", result_variable="frame")
        assert result.status == "success", result.error
        assert result.outputs[0]["data"].startswith("10 rows, showing the first 3")
        assert result.outputs[1]["data"].count("<tr>") == 4
        assert (await runner.run("p", "len(frame)")).outputs[0]["data"] == "10"
        # A rerun without rows unbinds the old result (the cell's names are forgotten first).
        assert (await runner.run_sql("q", "CREATE TABLE t (a INTEGER)", result_variable="frame")).outputs == [{"mimeType": "text/plain", "data": "done"}]
        assert (await runner.run("p", "frame")).error["ename"] == "NameError"
        # Nothing DuckDB does prints into the cell (no progress bar on a long query).
        setting = await runner.run_sql("r", "SELECT current_setting('enable_progress_bar') AS shown")
        assert setting.outputs[0]["data"].splitlines()[-1].strip() == "False"
    finally:
        await runner.close()


@pytest.mark.slow  # its 5 s time limit must elapse
async def test_runner_time_limit_cancels_a_query():
    # Long enough that the query after it (DuckDB imported again if the process was replaced)
    # fits on a machine under load; the first query would take hours.
    runner = Runner(time_limit=5.0)
    try:
        result = await runner.run_sql("q", "SELECT sum(hash(i)) AS h FROM range(100000000000) t(i)", result_variable="x")
        assert result.status == "error" and result.error["ename"] == "TimeoutError"  # stopped, not finished
        assert (await runner.run_sql("q", "SELECT 1 AS one", result_variable="x")).status == "success"
    finally:
        await runner.close()


async def test_an_interrupted_query_has_ended_on_its_server_when_the_cell_reports_it(pg):
    """The interrupt stops the child's wait at once, while the cancel takes a round trip to
    the server (slowed here, as on a loaded machine or a distant database): the cell's
    result is handed over only once the query has ended there."""
    runner = Runner(time_limit=30)
    database = runner.database
    cancel = database.interrupt

    def slow_cancel():
        time.sleep(0.5)
        return cancel()

    database.interrupt = slow_cancel
    database.set_connection(pg.url)

    def sleeping():
        rows = pg_query(pg, "SELECT state, query FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (pg.name,))
        return [row for row in rows if "pg_sleep" in (row[1] or "") and row[0] == "active"]

    try:
        task = asyncio.create_task(runner.run_sql("q", SLOW_QUERIES["postgres"], result_variable="x"))
        await eventually(sleeping, what="the query running on the server")
        interrupting = asyncio.create_task(runner.interrupt())  # as a socket's interrupt: beside the run
        result = await asyncio.wait_for(task, 15)
        assert result.status == "error" and result.error["ename"] == "KeyboardInterrupt", result.error
        assert not sleeping()
        assert await interrupting
        assert (await runner.run_sql("r", "SELECT 41 + 1 AS answer", result_variable="y")).status == "success"
    finally:
        await runner.close()


def test_row_cap_setting_reaches_the_runner(settings):
    from notebooks_app.kernel.worker import KernelService

    settings.KERNEL_SQL_ROW_CAP = 17
    assert KernelService()._runner_factory().sql_row_cap == 17


# --- binding, redaction, rendering, table names ---------------------------------------


@pytest.mark.parametrize(
    "code, namespace, style, expected",
    [
        ("SELECT * FROM t WHERE a = {a}", {"a": 1}, "qmark", ("SELECT * FROM t WHERE a = ?", [1])),
        ("SELECT {a}, {a}", {"a": "x"}, "pyformat", ("SELECT %(p0)s, %(p1)s", {"p0": "x", "p1": "x"})),
        ("WHERE id IN {ids}", {"ids": [1, 2]}, "qmark", ("WHERE id IN (?, ?)", [1, 2])),
        ("WHERE id in ( {ids} )", {"ids": (1, 2)}, "qmark", ("WHERE id in ( ?, ? )", [1, 2])),
        ("WHERE id IN {ids}", {"ids": []}, "qmark", ("WHERE id IN (?)", [None])),
        ("WHERE id IN {ids}", {"ids": {3, 1}}, "qmark", ("WHERE id IN (?, ?)", [1, 3])),
        ("WHERE id = ANY({ids})", {"ids": [1, 2]}, "pyformat", ("WHERE id = ANY(%(p0)s)", {"p0": [1, 2]})),
        ("SELECT '50%', {a}", {"a": 1}, "pyformat", ("SELECT '50%%', %(p0)s", {"p0": 1})),
        ("SELECT '50%'", {}, "pyformat", ("SELECT '50%'", {})),
        ("SELECT '{a}', {{a}}, {b} -- {c}", {"b": 2}, "qmark", ("SELECT '{a}', {a}, ? -- {c}", [2])),
        ("SELECT {s}", {"s": "'; DROP TABLE x; --"}, "qmark", ("SELECT ?", ["'; DROP TABLE x; --"])),
    ],
)
def test_bind(code, namespace, style, expected):
    assert sql.bind(code, namespace, style) == expected


def test_bind_unknown_name_is_a_name_error_naming_it():
    with pytest.raises(sql.SqlError) as info:
        sql.bind("SELECT {known}, {missing}", {"known": 1}, "qmark")
    assert info.value.ename == "NameError" and "'missing'" in info.value.evalue


def test_bind_turns_numpy_and_pandas_scalars_into_plain_values():
    import numpy as np
    import pandas as pd

    _, params = sql.bind("SELECT {a}, {b}, {c}, {d}", {"a": np.int64(3), "b": np.float32(0.5), "c": pd.Timestamp("2024-01-02"), "d": pd.NaT}, "qmark")
    assert params[0] == 3 and type(params[0]) is int and type(params[1]) is float
    assert str(params[2]) == "2024-01-02 00:00:00" and type(params[2]).__name__ == "datetime" and params[3] is None


@pytest.mark.parametrize(
    "text, connection, expected",
    [
        ("failed for secret!", "postgresql://u:secret!@h/db", "failed for ****"),
        ("echo p@ss and p%40ss", "postgresql://u:p%40ss@h/db", "echo **** and ****"),
        ("dsn: host=h password=hunter2 user=u", "postgresql://h/db", "dsn: host=h password=**** user=u"),
        ("nothing here", "postgresql://u@h/db", "nothing here"),
        ("", "postgresql://u:x@h/db", ""),
    ],
)
def test_redact(text, connection, expected):
    assert scrub(text, connection) == expected


def test_render_caps_rows_escapes_and_marks_nulls():
    import pandas as pd

    frame = pd.DataFrame({"n": range(500), "label": ["<b>x</b>"] * 499 + [None]})
    text, table = sql.render(frame, 10, ["integer", "text"])
    assert text["mimeType"] == "text/plain" and text["data"].startswith("500 rows, showing the first 10")
    assert table["mimeType"] == "text/html" and table["data"].count("<tr>") == 11
    assert "&lt;b&gt;x&lt;/b&gt;" in table["data"] and "<b>x" not in table["data"]
    assert "<th>n<br><small>integer</small></th>" in table["data"]
    _, last = sql.render(frame.tail(1), 10)
    assert "<td class='null'>NULL</td>" in last["data"] and "<caption>1 row</caption>" in last["data"]
    assert "<small>int64</small>" in last["data"]  # no database types: pandas dtypes


@pytest.mark.parametrize(
    "code, tables",
    [
        ("SELECT * FROM sales WHERE amount > {threshold}", ["sales"]),
        ("WITH recent AS (SELECT * FROM orders) SELECT * FROM recent JOIN customers USING (id)", ["orders", "customers"]),
        ("SELECT * FROM public.items, _hidden", ["_hidden"]),
        ("SELECT '{x}' FROM t -- FROM nope", ["t"]),
        ("SELEC garbage (((", []),
        ("", []),
    ],
)
def test_sql_table_names(code, tables):
    assert sorted(sql_table_names(code)) == sorted(tables)


def test_sql_analysis_tables_are_edges_not_reads():
    result = analyze_sql("SELECT * FROM sales JOIN _private ON true WHERE x > {threshold} AND y IN (SELECT y FROM df_1)", "df_1")
    assert result.reads == {"threshold"} and result.writes == {"df_1"}
    assert result.tables == {"sales"}  # not private names, not its own result


def test_graph_edge_by_table_name_only_when_a_cell_defines_it():
    from notebooks_app.kernel.session import CellState

    sales = CellState(id="a", type="python", code="sales = 1", position=1)
    query = CellState(id="b", type="sql", code="SELECT * FROM sales JOIN real_table USING (id)", position=2, result_variable="df_1")
    sales.analyse()
    query.analyse()
    assert query.reads == [] and query.graph_reads == {"sales", "real_table"}
    from notebooks_app.kernel.graph import DependencyGraph

    graph = DependencyGraph()
    for cell in (sales, query):
        graph.add(cell.id, reads=cell.graph_reads, writes=cell.writes, position=cell.position)
    assert graph.descendants("a") == {"b"} and graph.ancestors("b") == {"a"}


def test_a_long_query_gets_its_table_names_without_the_parser():
    from notebooks_app.kernel import analysis

    code = "WITH recent AS (SELECT * FROM orders)\nSELECT * FROM recent JOIN customers USING (id) JOIN public.x ON true -- FROM nope\nWHERE s = 'FROM lit'"
    padded = code + "\n" + "-- padding\n" * (analysis.SQLGLOT_MAX_CHARS // 10)
    assert sorted(sql_table_names(padded)) == sorted(sql_table_names(code)) == ["customers", "orders"]


@pytest.mark.parametrize("kind", ["python", "sql"])
async def test_an_interrupt_sent_right_after_run_is_not_lost(kind):
    """The child may not have started the cell yet when the interrupt arrives."""
    runner = Runner(time_limit=15)
    try:
        await runner.start()
        for _ in range(3):
            if kind == "python":
                task = asyncio.create_task(runner.run("c", "while True:\n    pass"))
            else:
                task = asyncio.create_task(runner.run_sql("c", SLOW_QUERIES["duckdb"], result_variable="x"))
            await asyncio.sleep(0)  # the run command is on its way, nothing has started
            while not await runner.interrupt():
                await asyncio.sleep(0)
            started = time.monotonic()
            result = await asyncio.wait_for(task, 10)
            assert result.status == "error" and result.error["ename"] == "KeyboardInterrupt", result.error
            assert time.monotonic() - started < 5
        assert (await runner.run("d", "1 + 1")).outputs[0]["data"] == "2"
        # A cancelled DuckDB query leaves no DataFrame registered behind it.
        made = await runner.run("e", "import pandas as pd\nframe = pd.DataFrame({'a': [1]})")
        assert made.status == "success", made.error  # pandas whole after the interrupts
        assert (await runner.run_sql("f", "SELECT * FROM frame", result_variable="y")).status == "success"
        await runner.run("e", "del frame")
        assert (await runner.run_sql("f", "SELECT * FROM frame", result_variable="y")).error["ename"] == "CatalogException"
    finally:
        await runner.close()


@pytestmark_db
async def test_running_a_frame_cell_first_runs_the_never_run_cell_a_query_reads(ws, notebook, users):
    """Issue 13: `limit` was created and never run; running `sales` reruns the query, which
    reads `{limit}`: the cascade runs `limit` first instead of failing with NameError."""
    alice = await ws(users["alice"], notebook)
    sales = await create(alice, "import pandas as pd\nsales = pd.DataFrame({'amount': [1, 5, 9, 12]})")
    await create(alice, "limit = 4")
    query = await create(alice, "SELECT count(*) AS n FROM sales WHERE amount > {limit}", cellType="sql")
    reply = await alice.request(type="cell_update", cellId=query, resultVariable="df_n")
    assert reply["type"] == "cell_updated", reply
    answer = await create(alice, "int(df_n['n'][0])")
    await run_and_wait(alice, sales)
    await alice.wait_for(lambda e: e["type"] == "cell_status" and e["cellId"] == answer and e["status"] in ("success", "error"))
    assert alice.state[query]["status"] == "success", alice.state[query]["error"]
    assert text_output(alice, answer) == "3"


ENGINE_LOADED_PROBE = """
import json, os, sys
from notebooks_app.kernel import _child

seen = []
started = _child.Activity.start_executing


def start_executing(self, sql=False):
    engine = kernel._sql
    seen.append({"modules": sorted(m for m in ("pandas", "numpy", "duckdb", "sqlglot", "pyarrow") if m in sys.modules),
                 "connected": engine is not None and engine._duck is not None})
    return started(self, sql)


_child.Activity.start_executing = start_executing
out = os.open(sys.argv[1], os.O_WRONLY)
protocol = _child.Protocol(os.dup(0), os.dup(out))
kernel = _child.Kernel(protocol, _child.Capture(protocol, 10000), 10000)
kernel.handle({"op": "run_sql", "id": 1, "cell": "a", "code": "SELECT 1 AS one", "result_variable": "x"})
kernel.handle({"op": "run_sql", "id": 2, "cell": "b", "code": "SELECT {x}", "engine": "postgres"})
protocol.send({"op": "seen", "seen": seen})
"""


def test_a_sql_cell_becomes_interruptible_only_once_its_engine_is_loaded(tmp_path):
    """An interrupt that landed inside the engine's first `import pandas` (an interrupt right
    after run, under load) left numpy half made: every later `import pandas` in that notebook
    failed.  So the engine's modules (and DuckDB's configured connection) are loaded before
    the cell can be interrupted; an interrupt meanwhile waits for it (interrupt_pending)."""
    import subprocess
    import sys

    out = tmp_path / "protocol"
    out.touch()
    subprocess.run([sys.executable, "-c", ENGINE_LOADED_PROBE, str(out)], check=True, timeout=60, stdin=subprocess.DEVNULL)
    messages = [json.loads(line) for line in out.read_text().splitlines()]
    seen = next(m for m in messages if m.get("op") == "seen")["seen"]
    assert {"duckdb", "numpy", "pandas", "sqlglot"} <= set(seen[0]["modules"]) and seen[0]["connected"], seen
    assert "pyarrow" in seen[1]["modules"], seen  # the notebook's own database answers in Arrow
