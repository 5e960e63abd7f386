"""Errors that say what is true (a name only blocked cells define, a shell line in a cell, a
connection without a network, a markdown error shown once) and SQL placeholders that take
markdown's fields (`{slider.value}`, `{d["key"]}`, `{obj.attr}`), with integer aggregates
coming back as integers; through the real kernel worker, plus the pure parts on their own.
"""
import decimal
import types

import pandas as pd
import pytest

from notebooks_app.kernel import markdown, sql
from notebooks_app.kernel.analysis import analyze_python, analyze_sql, install_requirements
from tests.conftest import create, run_and_wait, scratch_database, text_output

db = pytest.mark.django_db(transaction=True)


def html_output(client, cell_id):
    return next((o["data"] for o in client.state[cell_id]["outputs"] if o["mimeType"] == "text/html"), None)


@pytest.fixture(scope="module")
def scratch_pg(django_db_setup):
    """A database of its own on the test PostgreSQL server (cells may not use the server's)."""
    with scratch_database("nb_fields") as (url, _, _):
        yield url


# --- a name only blocked cells define ----------------------------------------------------


@db
async def test_reading_a_name_only_blocked_cells_define_says_so_in_every_kind_of_cell(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    await create(alice, "a = 1")
    await create(alice, "b = 2")
    await create(alice, "x = 1")
    await create(alice, "c = 3")
    await create(alice, "x = 2")
    python = await create(alice, "x + 1")
    query = await create(alice, "SELECT {x} AS x", cellType="sql")
    prose = await create(alice, "x is {x}", cellType="markdown")
    expected = "`x` is defined by a blocked cell: cell 3 and cell 5 both assign it"
    for cell in (python, query, prose):
        await run_and_wait(alice, cell)
        error = alice.state[cell]["error"]
        assert (error["ename"], error["evalue"]) == ("NameError", expected), error
        assert "is not defined" not in "\n".join(error["traceback"])


@db
async def test_a_name_whose_definition_is_on_a_cycle_names_the_cycle(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    await create(alice, "p = q + 1\nw = 1")
    await create(alice, "q = p")
    reader = await create(alice, "w")
    await run_and_wait(alice, reader)
    assert alice.state[reader]["error"]["evalue"] == "`w` is defined by a blocked cell: cell 1, blocked because it is on a cycle (cell 1 → cell 2 → cell 1)"


@db
async def test_a_name_no_cell_defines_is_still_a_plain_name_error(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    cell = await create(alice, "nowhere + 1")
    await run_and_wait(alice, cell)
    assert alice.state[cell]["error"]["evalue"] == "name 'nowhere' is not defined"


# --- shell commands and magics ----------------------------------------------------------


@db
async def test_pip_install_in_a_cell_says_where_packages_are_added(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    cell = await create(alice, "import pandas as pd\n!pip install seaborn")
    await run_and_wait(alice, cell)
    error = alice.state[cell]["error"]
    assert error["ename"] == "SyntaxError"
    assert error["evalue"] == (
        "`!pip install seaborn` (line 2) is a shell command, and shell commands do not run in cells: "
        "add seaborn in the Packages card (docs/packages.md)"
    )


@pytest.mark.parametrize(
    "code, says",
    [
        ("%pip install -q seaborn 'scipy>=1.11'", "an IPython magic, and magics do not run in cells: add seaborn and scipy>=1.11 in the Packages card"),
        ("!python -m pip install -r requirements.txt", "do not run in cells: add packages in the Packages card"),
        ("files = !ls", "`!ls` (line 1) is a shell command, and shell commands do not run in cells: a cell runs Python only"),
        ("%timeit sum(range(10))", "`%timeit sum(range(10))` (line 1) is an IPython magic"),
    ],
)
def test_shell_and_magic_lines_are_explained(code, says):
    error = analyze_python(code).error
    assert error["ename"] == "SyntaxError" and says in error["evalue"], error


def test_other_syntax_errors_keep_pythons_message():
    assert analyze_python("def f(:\n    pass").error["evalue"] == "invalid syntax (line 1)"
    assert install_requirements("!ls -la") is None and install_requirements("!pip3 install -U numpy") == ["numpy"]


# --- no network -------------------------------------------------------------------------


@db
async def test_a_connection_without_a_network_says_the_notebook_has_none(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    by_name = await create(alice, "import urllib.request\nurllib.request.urlopen('http://example.com/', timeout=5)")
    by_address = await create(alice, "import socket\nsocket.create_connection(('192.0.2.1', 80), timeout=5)")
    for cell, ename in ((by_name, "URLError"), (by_address, "OSError")):
        await run_and_wait(alice, cell)
        error = alice.state[cell]["error"]
        assert error["ename"] == ename, error  # the type is the library's own
        assert error["evalue"].startswith("this notebook has no network: its cells cannot connect"), error
        assert "KERNEL_NETWORK=outbound" in error["evalue"] and "docs/security.md" in error["evalue"]
        assert "KERNEL_NETWORK=outbound" in error["traceback"][-1]  # the note, after the error itself


# --- a markdown error, once -------------------------------------------------------------


@db
async def test_a_markdown_fields_error_is_shown_once(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    prose = await create(alice, "Total: {missing}", cellType="markdown")
    await run_and_wait(alice, prose)
    error = alice.state[prose]["error"]
    assert error["ename"] == "NameError" and "'missing'" in error["evalue"]
    assert error["traceback"] == []  # the page shows "ename: evalue" as the title; nothing repeats it


# --- SQL placeholders as markdown fields ------------------------------------------------


@db
async def test_sql_placeholders_read_attributes_and_keys_as_bound_parameters(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    widget = await create(alice, "from reactive_notebook import ui\nslider = ui.slider(0, 10, value=3)")
    await create(alice, "import types\nd = {'key': 'b', 'ids': [3, 4, 5, 8]}\nobj = types.SimpleNamespace(attr=4)")
    query = await create(
        alice,
        "SELECT count(*) AS n, sum(x) AS total FROM range(10) t(x)\n"
        "WHERE x >= {slider.value} AND x IN {d[\"ids\"]} AND x <> {obj.attr} AND {d['key']} = 'b'",
        cellType="sql",
    )
    assert alice.state[query]["reads"] == ["d", "obj", "slider"]
    check = await create(alice, "(int(df_1.total[0]), str(df_1.total.dtype))")
    await run_and_wait(alice, check)
    assert text_output(alice, query).split("\n")[-1].split() == ["3", "16"]  # 3, 5 and 8
    assert text_output(alice, check) == "(16, 'int64')"

    reply = await alice.request(type="set_input", cellId=widget, value=6)
    assert reply["type"] == "input_changed"
    await alice.wait_for(lambda e: e["type"] == "cell_status" and e["cellId"] == check and e["status"] == "success" and text_output(alice, check) == "(8, 'int64')")


@db
async def test_duckdb_integer_sums_are_integers_shown_as_hugeint(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    query = await create(alice, "SELECT sum(x) AS total, avg(x) AS mean FROM range(5) t(x)", cellType="sql")
    await run_and_wait(alice, query)
    assert text_output(alice, query).split("\n")[-1].split() == ["10", "2.0"]
    assert "HUGEINT" in html_output(alice, query) and "<td>10</td>" in html_output(alice, query)


@db
async def test_postgres_whole_numerics_are_integers_and_fractions_stay_decimals(ws, notebook, users, scratch_pg):
    alice = await ws(users["alice"], notebook)
    reply = await alice.request(type="update_db_connection", connectionString=scratch_pg)
    assert reply["type"] == "db_connection_updated" and reply["connected"], reply
    await create(alice, "limit = {'top': 4}")
    query = await create(alice, "SELECT sum(g::bigint) AS total, sum(g::numeric / 2) AS half FROM generate_series(1, {limit[\"top\"]}) g", cellType="sql")
    check = await create(alice, "(int(df_1.total[0]), str(df_1.total.dtype), type(df_1.half[0]).__name__)")
    await run_and_wait(alice, check)
    assert alice.state[query]["status"] == "success", alice.state[query]["error"]
    assert text_output(alice, check) == "(10, 'int64', 'Decimal')"
    html = html_output(alice, query)
    assert "numeric" in html and "<td>10</td>" in html and "<td>5.0" in html


@pytest.mark.parametrize(
    "code, namespace, expected",
    [
        ("WHERE a = {box.value}", {"box": types.SimpleNamespace(value=7)}, ("WHERE a = ?", [7])),
        ('WHERE a = {d["key"]} AND b = {d[\'k 2\']} AND c = {d[key]}', {"d": {"key": 1, "k 2": 2}}, ("WHERE a = ? AND b = ? AND c = ?", [1, 2, 1])),
        ("WHERE id IN {d[ids]}", {"d": {"ids": [1, 2]}}, ("WHERE id IN (?, ?)", [1, 2])),
        ("WHERE id = ANY({rows[0]})", {"rows": [[1, 2]]}, ("WHERE id = ANY(?)", [[1, 2]])),
        ("SELECT {a: 1}, '{d.x}', \"{d.x}\" -- {d.x}", {}, ("SELECT {a: 1}, '{d.x}', \"{d.x}\" -- {d.x}", [])),
        ("SELECT {s.text}", {"s": type("S", (), {"text": "'; DROP TABLE x; --"})}, ("SELECT ?", ["'; DROP TABLE x; --"])),
    ],
)
def test_bind_fields(code, namespace, expected):
    assert sql.bind(code, namespace, "qmark") == expected


def test_a_field_that_fails_names_the_placeholder():
    with pytest.raises(sql.SqlError) as info:
        sql.bind('SELECT {d["nope"]}', {"d": {}}, "qmark")
    assert (info.value.ename, info.value.evalue) == ("KeyError", "'nope' (in {d[\"nope\"]} of this SQL cell)")
    with pytest.raises(sql.SqlError) as info:
        sql.bind("SELECT {slider.value}", {}, "qmark")
    assert info.value.ename == "NameError" and "'slider'" in info.value.evalue


def test_sql_and_markdown_fields_read_their_root_names():
    assert analyze_sql('SELECT {slider.value}, {d["key"]}, {obj.attr[0]} FROM t', "df").reads == {"slider", "d", "obj"}
    assert markdown.placeholders('Top: {d["key"]:.1f} and {obj.attr}') == ["d", "obj"]
    assert markdown.follow({"a": [0, {"k y": 5}]}, '[a][1]["k y"]') == 5


def test_integers_as_integers_leaves_fractions_and_oversized_hugeints_alone():
    frame = pd.DataFrame({"whole": [decimal.Decimal("15"), None], "money": [decimal.Decimal("1.50"), decimal.Decimal("2")], "huge": [2.0**60, 1.0]})
    out = sql.integers_as_integers(frame, ["numeric", "numeric", "HUGEINT"])
    assert str(out.whole.dtype) == "Int64" and out.whole[0] == 15
    assert out.money[0] == decimal.Decimal("1.50") and out.huge.dtype.kind == "f"
