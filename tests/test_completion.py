"""Completion and inspection through the real protocol, worker and sandboxed execution process."""
import sqlite3
import time

import pytest

from tests.conftest import create, run_and_wait

pytestmark = pytest.mark.django_db(transaction=True)


async def complete(client, cell_id, code, cursor=None, **extra):
    reply = await client.request(type="complete", cellId=cell_id, code=code, cursor=len(code) if cursor is None else cursor, **extra)
    assert reply["type"] == "completions", reply
    return reply


def labels(reply):
    return [item["label"] for item in reply["items"]]


async def test_names_of_the_live_namespace_and_attributes_after_a_dot(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    data = await create(alice, "import pandas as pd\nrevenue_by_month = 12\ndf = pd.DataFrame({'region': ['n', 's'], 'amount': [1, 2]})")
    await run_and_wait(alice, data)
    cell = await create(alice, "")
    reply = await complete(alice, cell, "x = 1\nrevenue_by")
    assert "revenue_by_month" in labels(reply) and not reply.get("busy")
    assert (reply["from"], reply["to"], reply["cellId"]) == (6, 16, cell)
    reply = await complete(alice, cell, "df.gro")
    assert "groupby" in labels(reply) and (reply["from"], reply["to"]) == (3, 6)
    reply = await complete(alice, cell, "pd.read_cs")  # a module of an installed package, by its live name
    assert labels(reply) == ["read_csv"]
    reply = await complete(alice, cell, "import json\njson.dum")  # imported in this very cell, never run
    assert "dumps" in labels(reply)
    assert next(item for item in (await complete(alice, cell, "df.gro"))["items"] if item["label"] == "groupby")["type"] == "function"


async def test_inspect_gives_the_signature_and_docstring(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    data = await create(alice, "def scale(values, factor=2):\n    'Multiply every value by factor.'\n    return [v * factor for v in values]")
    await run_and_wait(alice, data)
    cell = await create(alice, "")
    reply = await alice.request(type="inspect", cellId=cell, code="scale([1], ", cursor=10)
    assert reply["type"] == "inspection" and reply["signature"] == "scale(values, factor=2)", reply
    assert reply["doc"] == "Multiply every value by factor."
    reply = await alice.request(type="inspect", cellId=cell, code="import json\njson.dumps", cursor=20)
    assert reply["signature"].startswith("dumps(obj") and "JSON" in reply["doc"]


async def test_completion_never_runs_a_property_or_getattr_of_a_value(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    code = (
        "calls = []\n"
        "class Trap:\n"
        "    @property\n"
        "    def danger(self):\n"
        "        calls.append('property')\n"
        "        return 'str'\n"
        "    def __getattr__(self, name):\n"
        "        calls.append(name)\n"
        "        return 1\n"
        "trap = Trap()"
    )
    await run_and_wait(alice, await create(alice, code))
    cell = await create(alice, "")
    for text in ("trap.dan", "trap.danger.", "trap.danger.up", "trap.missing.", "trap."):
        await complete(alice, cell, text)
    assert (await alice.request(type="inspect", cellId=cell, code="trap.danger", cursor=11))["type"] == "inspection"
    check = await create(alice, "len(calls)")
    await run_and_wait(alice, check)
    outputs = alice.state[check]["outputs"]
    assert outputs[0]["data"] == "0", outputs


async def test_a_long_running_cell_gets_prompt_static_busy_answers(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    await run_and_wait(alice, await create(alice, "import time\nsleepy_value = 1"))
    long = await create(alice, "time.sleep(30)")
    cell = await create(alice, "")  # before the run: a new cell waits behind it
    await alice.send(type="run_cell", cellId=long)
    await alice.wait_status(long, "running")
    started = time.monotonic()
    reply = await complete(alice, cell, "total = 1\nwhile_true = tot")
    assert time.monotonic() - started < 2.0
    assert reply["busy"] is True and "total" in labels(reply)  # the cell's own names, no namespace
    assert (await complete(alice, cell, "sleepy_value.bit"))["items"] == []
    inspection = await alice.request(type="inspect", cellId=cell, code="time.sleep(", cursor=11)
    assert inspection["type"] == "inspection" and inspection.get("busy") is True and "signature" not in inspection
    await alice.send(type="interrupt")
    await alice.wait_status(long, "error")
    assert "sleepy_value" in labels(await complete(alice, cell, "sleepy_v"))


async def test_no_execution_process_is_started_to_complete(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    cell = await create(alice, "")
    reply = await complete(alice, cell, "counter = 1\ncou")
    assert labels(reply) == ["counter"] and "busy" not in reply
    assert (await complete(alice, cell, "import os\nos.pa"))["items"] == []  # no values, no jedi in the worker
    reply = await alice.request(type="inspect", cellId=cell, code="len(", cursor=4)
    assert reply["type"] == "inspection" and "signature" not in reply and "doc" not in reply


async def test_sql_completes_duckdb_tables_columns_and_dataframes(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    frame = await create(alice, "import pandas as pd\nsales = pd.DataFrame({'region': ['n'], 'amount': [3]})")
    await run_and_wait(alice, frame)
    table = await create(alice, "CREATE TABLE customers (customer_id INTEGER, city VARCHAR)", cellType="sql")
    await run_and_wait(alice, table)
    query = await create(alice, "", cellType="sql")
    reply = await complete(alice, query, "SELECT * FROM cus")
    assert labels(reply) == ["customers"] and (reply["from"], reply["to"]) == (14, 17)
    assert "sales" in labels(await complete(alice, query, "SELECT * FROM sa"))
    assert labels(await complete(alice, query, "SELECT customers.ci")) == ["city"]
    reply = await complete(alice, query, "SELECT reg FROM sales", cursor=10)
    assert labels(reply) == ["region"]
    assert {"SELECT", "SET"} <= set(labels(await complete(alice, query, "se")))


async def test_sql_completes_the_tables_of_the_notebooks_database(ws, notebook, users, tmp_path):
    path = tmp_path / "shop.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE orders (order_id integer, placed_on text)")
    db.close()
    alice = await ws(users["alice"], notebook)
    reply = await alice.request(type="update_db_connection", connectionString=f"sqlite:///{path}")
    assert reply["type"] == "db_connection_updated"
    query = await create(alice, "", cellType="sql")
    assert labels(await complete(alice, query, "SELECT * FROM ord")) == ["orders", "ORDER BY"]  # no execution process yet
    assert labels(await complete(alice, query, "SELECT orders.pl")) == ["placed_on"]
    await run_and_wait(alice, await create(alice, "x = 1"))
    assert labels(await complete(alice, query, "SELECT order_ FROM orders", cursor=13)) == ["order_id"]


async def test_bad_messages_are_refused_and_the_socket_stays_open(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    cell = await create(alice, "")
    bad = [
        {"cellId": cell, "code": "abc"},  # no cursor
        {"cellId": cell, "code": "abc", "cursor": 4},  # past the end
        {"cellId": cell, "code": "abc", "cursor": -1},
        {"cellId": cell, "code": "abc", "cursor": "1"},
        {"cellId": cell, "code": "abc", "cursor": True},
        {"cellId": cell, "code": 5, "cursor": 0},
        {"cellId": "nope", "code": "", "cursor": 0},
        {"cellId": cell, "code": "", "cursor": 0, "extra": 1},
        {"cellId": cell, "code": "a\x00b", "cursor": 1},
    ]
    for fields in bad:
        for kind in ("complete", "inspect"):
            reply = await alice.request(type=kind, **fields)
            assert reply["type"] == "error" and reply["code"] == "invalid_field" and reply["message"], (kind, fields, reply)
    reply = await alice.request(type="complete", cellId=cell, code="x" * (300 * 1024), cursor=0)
    assert reply["code"] == "too_large"
    reply = await alice.request(type="complete", cellId="00000000-0000-0000-0000-000000000000", code="", cursor=0)
    assert reply["type"] == "error" and reply["code"] == "unknown_cell"
    # An astral character counts two UTF-16 units, as in the page's editor.
    reply = await complete(alice, cell, "s = '😀'; sx = 1; s", cursor=len("s = '😀'; sx = 1; s") + 1)
    assert "sx" in labels(reply) and reply["to"] == len("s = '😀'; sx = 1; s".encode("utf-16-le")) // 2
    assert (await alice.request(type="sync"))["type"] == "notebook_state"


async def test_a_viewer_is_refused_and_others_hear_nothing(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    cell = await create(alice, "")
    carol = await ws(users["carol"], notebook)
    reply = await carol.request(type="complete", cellId=cell, code="pri", cursor=3)
    assert reply["type"] == "error" and reply["code"] == "forbidden"
    assert (await carol.request(type="inspect", cellId=cell, code="pri", cursor=3))["code"] == "forbidden"
    bob = await ws(users["bob"], notebook)
    await complete(bob, cell, "pri")  # an editor's answer goes to that editor's socket alone
    await alice.expect_silence(0.3)
    assert not any(e["type"] in ("completions", "inspection") for e in alice.replies)
