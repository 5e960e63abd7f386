"""Notebook files: importing .ipynb, Jupytext percent and marimo files (real-world fixtures and
hostile uploads), exporting .ipynb, .py and HTML for every role, and round trips."""
import io
import json
from pathlib import Path

import nbformat
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.urls import reverse

from notebooks_app import importing, magics
from notebooks_app.constants import CELL_MARKDOWN, CELL_PYTHON, CELL_SQL, MARKDOWN_MIME
from notebooks_app.models import EVENT_CREATED, Cell, Notebook, NotebookEvent, OutputBlob

pytestmark = pytest.mark.django_db

FIXTURES = Path(__file__).resolve().parent / "fixtures"
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
MATPLOTLIB = f"# %matplotlib inline  ({magics.FRONT_END_NOTE})"
PIP = f"# !pip install pandas  ({magics.PIP_NOTE})"


def upload(client, user, filename, data, name=""):
    client.force_login(user)
    return client.post(reverse("notebooks:import"), {"file": SimpleUploadedFile(filename, data), "name": name})


def cells_of(notebook):
    return [(cell.type, cell.code, cell.result_variable) for cell in notebook.cells.order_by("position")]


def imported(response):
    assert response.status_code == 302, response.content.decode()[:2000]
    return Notebook.objects.get(pk=response["Location"].rstrip("/").rsplit("/", 1)[1])


# --- import: real-world files ----------------------------------------------------------------


def test_import_ipynb_makes_a_notebook_of_the_uploaders(client, users):
    response = upload(client, users["dave"], "real_world.ipynb", (FIXTURES / "real_world.ipynb").read_bytes())
    notebook = imported(response)
    assert notebook.owner == users["dave"] and notebook.name == "real_world"
    assert cells_of(notebook) == [
        (CELL_MARKDOWN, f"# Café analysis — ünïcödé ✓\n\nA chart: ![dot](data:image/png;base64,{PNG})", ""),
        (CELL_PYTHON, f"{MATPLOTLIB}\n{PIP}\nimport math", ""),
        (CELL_PYTHON, "prices = [3.5, 4.25]\ntotal = sum(prices)\ntotal", ""),
        (CELL_PYTHON, "print('héllo wörld')", ""),
        (CELL_SQL, "SELECT 42 AS answer", "revenue"),
        (CELL_PYTHON, magics.translate("%%time\nsquares = [n * n for n in range(10)]").code, ""),
        (CELL_PYTHON, "1 / 0", ""),
    ]
    # Outputs are recomputed here, never imported.
    assert all(cell.outputs == [] and cell.stdout == "" and cell.error is None and cell.status == "idle" for cell in notebook.cells.all())
    events = NotebookEvent.objects.filter(notebook=notebook)
    assert [event.kind for event in events] == [EVENT_CREATED] * 7 and {event.user_id for event in events} == {users["dave"].pk}
    page = client.get(response["Location"]).content.decode()
    assert "turned into Python where that is safe" in page and "packages (pandas) are its own here" in page


def test_imported_cells_carry_what_the_kernel_would_work_out_on_first_open(client, users):
    """Analysis and shared text stored at import: the kernel's load takes both as they are
    (a 10,000-cell import then opens like any stored notebook, not analysing every cell)."""
    from notebooks_app.kernel.session import CellState
    from notebooks_app.kernel.shared_text import CellText, code_key

    notebook = imported(upload(client, users["dave"], "real_world.ipynb", (FIXTURES / "real_world.ipynb").read_bytes()))
    rows = list(notebook.cells.order_by("position").values())
    for row in rows:
        state = CellState.from_row(row)
        assert state.restore_analysis(row), row["code"]  # keyed to this very code: taken, not redone
        fresh = CellState(id="", type=row["type"], code=row["code"], position=0, result_variable=row["result_variable"])
        fresh.analyse()
        assert (state.reads, state.writes, state.analysis) == (fresh.reads, fresh.writes, fresh.analysis)
        assert row["ydoc_key"] == code_key(row["code"])
        text = CellText(row["code"], state=bytes(row["ydoc"]))
        assert text.generation == 0 and text.state() == bytes(row["ydoc"])  # the stored state holds this code
    by_code = {row["code"]: row for row in rows}
    assert by_code["prices = [3.5, 4.25]\ntotal = sum(prices)\ntotal"]["writes"] == ["prices", "total"]
    assert by_code["SELECT 42 AS answer"]["writes"] == ["revenue"]


def test_an_import_stores_through_copy_exactly_what_bulk_create_stores(users):
    """operations._insert_all (COPY on PostgreSQL) against Django's bulk_create, row for row:
    text that COPY's own format escapes (tabs, newlines, backslashes, `\\N`), JSON, bytes, NULLs,
    foreign keys, an AutoField pk left to the database."""
    from django.db import connection, transaction

    from notebooks_app.operations import _insert_all

    assert connection.vendor == "postgresql"  # the path under test (SQLite takes bulk_create)
    tricky = "a\tb\nc \\N \\ 'q' \"dq\" é ✓ \\."
    made = {}
    for how in ("copy", "bulk_create"):
        notebook = Notebook.objects.create(owner=users["alice"], name=f"via {how}")
        cells = [
            Cell(notebook=notebook, position=(i + 1) * 1024, type=kind, code=f"{tricky} {i}", result_variable="df_1" if kind == CELL_SQL else "",
                 reads=["x", tricky], writes=[] if i else ["y"], analysis={"v": 1, "names": [tricky], "n": None} if i % 2 else None,
                 outputs=[{"mime": "text/plain", "data": tricky}], error=None if i else {"ename": "E", "evalue": tricky}, ydoc=bytes(range(256)) if i else None, ydoc_key=f"k{i}")
            for i, kind in enumerate([CELL_PYTHON, CELL_SQL, CELL_MARKDOWN, CELL_PYTHON])
        ]
        events = [NotebookEvent(notebook=notebook, user=users["alice"] if i else None, kind=EVENT_CREATED, cell_id=cell.pk, after={"code": cell.code, "next": None}) for i, cell in enumerate(cells)]
        with transaction.atomic():
            if how == "copy":
                _insert_all(Cell, cells)
                _insert_all(NotebookEvent, events)
            else:
                Cell.objects.bulk_create(cells)
                NotebookEvent.objects.bulk_create(events)
        assert all(not cell._state.adding for cell in cells)
        made[how] = (
            [{k: v for k, v in row.items() if k not in ("id", "notebook_id", "created_at", "updated_at")} for row in Cell.objects.filter(notebook=notebook).order_by("position").values()],
            [{k: v for k, v in row.items() if k not in ("id", "notebook_id", "cell_id", "created_at")} for row in NotebookEvent.objects.filter(notebook=notebook).order_by("id").values()],
        )
        assert Cell.objects.filter(notebook=notebook, created_at__isnull=False, updated_at__isnull=False).count() == 4
    assert made["copy"] == made["bulk_create"]
    assert made["copy"][0][0]["code"] == f"{tricky} 0" and bytes(made["copy"][0][1]["ydoc"]) == bytes(range(256))


def test_import_takes_the_name_given(client, users):
    notebook = imported(upload(client, users["alice"], "real_world.ipynb", (FIXTURES / "real_world.ipynb").read_bytes(), name="Q3 report"))
    assert notebook.name == "Q3 report"


def test_import_jupytext_percent(client, users):
    notebook = imported(upload(client, users["alice"], "percent.py", (FIXTURES / "percent.py").read_bytes()))
    assert cells_of(notebook) == [
        (CELL_MARKDOWN, "# Sales, by month\n\nFigures in **€**.", ""),
        (CELL_PYTHON, f"{MATPLOTLIB}\nimport math\n\nrate = 1.2", ""),
        (CELL_PYTHON, "def grow(value):\n    return value * rate\n\n\ngrown = grow(100)", ""),
        (CELL_SQL, "SELECT 1 AS month, 10 AS sales", "by_month"),
        (CELL_SQL, "SELECT 2 AS month", "df_1"),
        (CELL_PYTHON, f"{PIP}\nprint(grown)", ""),
    ]


def test_import_marimo_takes_cell_bodies_without_running_the_file(client, users, tmp_path):
    source = (FIXTURES / "marimo_app.py").read_text().replace("import marimo\n", f"import marimo\nopen({str(tmp_path / 'ran')!r}, 'w')\n", 1)
    notebook = imported(upload(client, users["alice"], "marimo_app.py", source.encode()))
    assert not (tmp_path / "ran").exists()
    assert cells_of(notebook) == [
        (CELL_PYTHON, "import marimo as mo", ""),
        (CELL_MARKDOWN, "# Prices — ünïcödé\n\nA *markdown* cell.", ""),
        (CELL_PYTHON, "# the base price\nprice = 10\ntax = 0.2", ""),
        (CELL_PYTHON, "total = price * (1 + tax)\n\ndef double(x):\n    return 2 * x", ""),
        (CELL_SQL, "SELECT * FROM products WHERE price < {price}", "cheap"),
        (CELL_PYTHON, "", ""),
    ]


def test_anyone_logged_in_may_import_but_not_anonymously(client):
    response = client.post(reverse("notebooks:import"), {"file": SimpleUploadedFile("a.py", b"# %%\nx = 1\n")})
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    assert not Notebook.objects.exists()


# --- import: hostile and broken uploads --------------------------------------------------------


def nested(depth):
    return ("[" * depth + "]" * depth).encode()


HOSTILE = {
    "huge": ("big.ipynb", lambda: b" " * (10 * 1024 * 1024 + 1), "larger than the import limit of 10,485,760 bytes"),
    "truncated JSON": ("cut.ipynb", lambda: (FIXTURES / "real_world.ipynb").read_bytes()[:700], "not valid JSON"),
    "zip bytes": ("archive.ipynb", lambda: b"PK\x03\x04\x14\x00\x00\x00\x08\x00\xb7\x8d\xe9\x92" + bytes(range(256)) * 4, "not UTF-8"),
    "NUL bytes": ("nul.py", lambda: b"# %%\nx = 1\x00\x00", "NUL bytes"),
    "nesting 100,000 deep": ("deep.ipynb", lambda: nested(100_000), "nested too deeply"),
    "nesting inside a cell": ("deep.ipynb", lambda: json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": []})[:-1].encode() + b', "x": ' + nested(100_000) + b"}", "nested too deeply"),
    "1,000,000 cells": ("many.ipynb", lambda: json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [{}] * 1_000_000}).encode(), "at most 10,000"),
    "nbformat 3": ("old.ipynb", lambda: json.dumps({"nbformat": 3, "nbformat_minor": 0, "metadata": {}, "worksheets": [{"cells": []}]}).encode(), "nbformat 3"),
    "JSON not a notebook": ("list.ipynb", lambda: b"[1, 2, 3]", "not a Jupyter notebook"),
    "malformed cell": ("bad.ipynb", lambda: json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [{"cell_type": "code", "source": 7}]}).encode(), "malformed"),
    "no cells": ("empty.ipynb", lambda: json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": []}).encode(), "no cells"),
    "percent .py over its cell cap": ("many.py", lambda: b"# %%\nx = 1\n" * 2001, "at most 2,000 can be imported from a Jupytext .py file"),
    "other extension": ("notes.txt", lambda: b"hello", "Upload a Jupyter notebook"),
    "marimo not Python": ("broken.py", lambda: b"import marimo\napp = marimo.App()\n@app.cell\ndef _(:\n", "not valid Python"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_upload_says_why_and_creates_nothing(client, users, case):
    filename, make, message = HOSTILE[case]
    response = upload(client, users["alice"], filename, make())
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not Notebook.objects.exists() and not Cell.objects.exists() and not NotebookEvent.objects.exists()


def test_cell_over_the_code_limit_is_refused(client, users, settings):
    settings.MAX_CODE_BYTES = 1000
    response = upload(client, users["alice"], "long.py", b"# %%\nx = '" + b"a" * 2000 + b"'\n")
    assert response.status_code == 400 and "Cell 1 is larger than 1,000 bytes" in response.content.decode()
    assert not Notebook.objects.exists()


def test_upload_far_over_the_limit_is_refused_before_it_is_read(client, users, settings):
    settings.IMPORT_MAX_BYTES = 1000
    response = upload(client, users["alice"], "big.ipynb", b"{" * 200_000)
    assert response.status_code == 413 and "The upload is larger than the import limit of 1,000 bytes" in response.content.decode()
    assert not Notebook.objects.exists()


def test_reader_checks_the_size_before_anything_else():
    with pytest.raises(importing.NotebookFileError, match="import limit of 10 bytes"):
        importing.read_notebook("a.ipynb", b"{" * 11, max_bytes=10, max_code_bytes=100)


# --- export -------------------------------------------------------------------------------


@pytest.fixture
def computed(notebook):
    """A notebook whose cells have run: text, HTML, an image stored by reference, stdout, an
    error and a SQL result."""
    make = Cell.objects.create
    make(notebook=notebook, position=256, type=CELL_MARKDOWN, code="# Results for {total}", status="success", outputs=[{"mimeType": MARKDOWN_MIME, "data": "<h1>Results for 7.75</h1>"}])
    make(notebook=notebook, position=512, type=CELL_MARKDOWN, code="Not run: <script>alert(2)</script> **bold**")
    make(notebook=notebook, position=1024, code="total = 7.75\ntotal", status="success", outputs=[{"mimeType": "text/plain", "data": "7.75"}])
    make(notebook=notebook, position=2048, code="print('héllo')\ndf", status="success", stdout="héllo\n",
         outputs=[{"mimeType": "text/plain", "data": "   a\n0  1"}, {"mimeType": "text/html", "data": "<table><tr><td>1</td></tr></table><script>alert(1)</script>"}])
    plot = make(notebook=notebook, position=3072, code="plt.plot([1, 2])", status="success",
                outputs=[{"mimeType": "image/png", "ref": "d" * 64, "size": len(PNG), "url": "/x"}])
    OutputBlob.objects.create(cell=plot, digest="d" * 64, mime_type="image/png", data=PNG)
    make(notebook=notebook, position=4096, code="1 / 0", status="error",
         error={"ename": "ZeroDivisionError", "evalue": "division by zero", "traceback": ['File "<cell 4>", line 1', "ZeroDivisionError: division by zero"]})
    make(notebook=notebook, position=5120, type=CELL_SQL, code="SELECT {total} AS t", result_variable="df_1", status="success",
         outputs=[{"mimeType": "text/plain", "data": "t\n7.75"}, {"mimeType": "text/html", "data": "<table><tr><td>7.75</td></tr></table>"}])
    return notebook


def export(client, user, notebook, fmt, query=""):
    client.force_login(user)
    return client.get(reverse("notebooks:export", kwargs={"notebook_id": notebook.pk, "fmt": fmt}) + query)


@pytest.mark.parametrize("username, status", [("alice", 200), ("bob", 200), ("carol", 200), ("dave", 404)])
@pytest.mark.parametrize("fmt", ["ipynb", "py", "html"])
def test_export_for_every_role(client, users, computed, username, status, fmt):
    response = export(client, users[username], computed, fmt)
    assert response.status_code == status
    if status == 200:
        assert response["Content-Disposition"].startswith("attachment;") and f'shared-analysis.{fmt}"' in response["Content-Disposition"]


def test_export_of_an_unknown_format_is_404(client, users, computed):
    assert export(client, users["alice"], computed, "docx").status_code == 404


def test_exported_ipynb_is_valid_and_carries_the_outputs(client, users, computed):
    nb = nbformat.reads(export(client, users["carol"], computed, "ipynb").content.decode(), as_version=4)
    nbformat.validate(nb)
    heading, prose, first, printed, plot, failed, sql = nb.cells
    assert heading.cell_type == "markdown" and heading.source == "# Results for {total}" and "outputs" not in heading
    assert first.outputs == [{"output_type": "execute_result", "data": {"text/plain": "7.75"}, "metadata": {}, "execution_count": None}]
    assert printed.outputs[0] == {"output_type": "stream", "name": "stdout", "text": "héllo\n"}
    assert set(printed.outputs[1].data) == {"text/plain", "text/html"}
    assert plot.outputs == [{"output_type": "display_data", "data": {"image/png": PNG}, "metadata": {}}]
    assert failed.outputs[0].output_type == "error" and failed.outputs[0].ename == "ZeroDivisionError"
    assert sql.source == "%%sql df_1 <<\nSELECT {total} AS t"


def test_html_report_has_outputs_no_script_and_code_on_request(client, users, computed):
    response = export(client, users["carol"], computed, "html")
    page = response.content.decode()
    # Scripts may run only by hash (the chart frames' vendored libraries), never inline ones.
    assert "<script" not in page and "'unsafe-inline'" not in response["Content-Security-Policy"].split("script-src")[1].split(";")[0]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # inside a sandboxed frame's srcdoc
    assert page.count("<iframe class=\"html-output\" sandbox srcdoc=") == 2
    assert f'src="data:image/png;base64,{PNG}"' in page and "ZeroDivisionError: division by zero" in page
    assert "<h1>Results for 7.75</h1>" in page and "<strong>bold</strong>" in page and "alert(2)" not in page.replace("&lt;script&gt;alert(2)", "")
    assert "plt.plot" not in page
    assert "plt.plot([1, 2])" in export(client, users["carol"], computed, "html", "?code=1").content.decode()


# --- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["real_world.ipynb", "percent.py", "marimo_app.py"])
@pytest.mark.parametrize("fmt", ["ipynb", "py"])
def test_export_then_import_gives_back_the_same_cells(client, users, fixture, fmt):
    first = imported(upload(client, users["alice"], fixture, (FIXTURES / fixture).read_bytes()))
    exported = export(client, users["alice"], first, fmt)
    again = imported(upload(client, users["bob"], f"again.{fmt}", exported.content))
    assert cells_of(again) == cells_of(first)
    assert again.owner == users["bob"]


def test_round_trip_of_a_computed_notebook(client, users, computed):
    again = imported(upload(client, users["alice"], "again.ipynb", export(client, users["alice"], computed, "ipynb").content))
    assert cells_of(again) == cells_of(computed)


# --- management commands ----------------------------------------------------------------------


def test_import_and_export_commands(users, tmp_path):
    out = io.StringIO()
    call_command("import_notebook", str(FIXTURES / "percent.py"), "--owner", "carol", "--name", "From the shell", stdout=out, stderr=io.StringIO())
    notebook = Notebook.objects.get(name="From the shell")
    assert notebook.owner == users["carol"] and str(notebook.pk) in out.getvalue()
    target = tmp_path / "out.ipynb"
    call_command("export_notebook", str(notebook.pk), "--format", "ipynb", "--output", str(target), stderr=io.StringIO())
    nbformat.validate(nbformat.reads(target.read_text(), as_version=4))
    printed = io.StringIO()
    call_command("export_notebook", str(notebook.pk), "--format", "py", stdout=printed)
    assert printed.getvalue().startswith('# /// script\n# dependencies = [\n#     "pandas",\n# ]\n# ///\n\n# %% [markdown]\n# # Sales, by month')  # its `!pip install pandas`


def test_import_command_refuses_a_bad_file_and_an_unknown_owner(users, tmp_path):
    bad = tmp_path / "bad.ipynb"
    bad.write_bytes(b"{\"nbformat\": 4, ")
    with pytest.raises(CommandError, match="not valid JSON"):
        call_command("import_notebook", str(bad), "--owner", "alice")
    with pytest.raises(CommandError, match="no user called"):
        call_command("import_notebook", str(FIXTURES / "percent.py"), "--owner", "nobody")
    assert not Notebook.objects.exists()


def test_import_rewrites_a_top_to_bottom_notebook_and_the_page_says_so_once(client, users):
    book = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import math\ndf = [4, None, 9]"),
        nbformat.v4.new_code_cell("df = [v for v in df if v]\n%timeit sum(df)"),
        nbformat.v4.new_code_cell("for i in range(2):\n    print(i)"),
        nbformat.v4.new_code_cell("for i in range(3):\n    print(math.sqrt(df[0]) + i)"),
    ])
    response = upload(client, users["alice"], "rebinding.ipynb", nbformat.writes(book).encode())
    notebook = imported(response)
    codes = [code for _type, code, _result in cells_of(notebook)]
    assert codes[1].startswith("df_2 = [v for v in df if v]\ndef _timed():\n    sum(df_2)")
    assert codes[2:] == ["for _i in range(2):\n    print(_i)", "for _i in range(3):\n    print(math.sqrt(df_2[0]) + _i)"]
    page = client.get(response["Location"]).content.decode()
    assert "cell 2: df → df_2" in page and "cell 3: i → _i (used in this cell only)" in page and "blocked" not in page.split("Imported")[1][:2000]
    assert "cell 2: df → df_2" not in client.get(response["Location"]).content.decode()  # shown once
