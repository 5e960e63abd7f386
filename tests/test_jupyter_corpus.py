"""Jupyter as the reference: a notebook written for top-to-bottom execution, imported here, shows
what it shows in Jupyter.

Every notebook of tests/fixtures/jupyter_corpus/ runs top to bottom in Jupyter (nbclient starting
ipykernel's "python3" kernel, in a fresh working directory) and, read by `importing.read_notebook`,
in our kernel: a NotebookSession with an in-memory store and a real Runner in its sandbox, driven
as in test_session.py (`kernel.run_all`), its cells' results folded from the published events as
a client folds them.  The import maps cells 1:1, so code cell N of the file is compared with cell
N here.  Then the notebook as our exporter writes it (`exporting.to_ipynb`, from rows stored by
`operations.import_notebook` with the outputs of that run) must carry those results and, run in
Jupyter again, show them.

A code cell's record: its stdout, the values it showed in order (each as a page shows it: its
HTML when it has one, else its text/plain), how many images, and the name of its error.  The two
sides' records are made alike in two places only, `normalized` (text) and `shown` (values):
memory addresses and timings, which differ from run to run, and what IPython writes differently
for the same result (CRLF from the pty of `!cmd`, its pretty printer's `<A at 0x…>`, `%%markdown`
as a display object).
"""
import asyncio
import functools
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient as JupyterClient

from notebooks_app import exporting, importing, operations
from notebooks_app.constants import MARKDOWN_MIME, STATUS_BLOCKED, STATUS_SUCCESS
from notebooks_app.kernel.markdown import render as render_markdown
from notebooks_app.kernel.runner import Runner
from notebooks_app.kernel.session import NotebookSession
from notebooks_app.models import Cell, OutputBlob

from .test_session import NOTEBOOK, TIMEOUT, MemoryStore, Published

pytestmark = pytest.mark.slow  # starts a Jupyter kernel per notebook

CORPUS = Path(__file__).resolve().parent / "fixtures" / "jupyter_corpus"
NOTEBOOKS = sorted(CORPUS.glob("*.ipynb"))
FINAL = ("success", "error", "stale")
JUPYTER_TIMEOUT = 60  # seconds a cell may take in Jupyter
MAX_BYTES = 10 * 1024 * 1024
MAX_CODE_BYTES = 256 * 1024

ADDRESS = re.compile(r"0x[0-9a-f]+")
# What %timeit, %%time and %time print (and what the import's timing code prints in their place);
# %timeit adds "The slowest run took 5.2 times longer than the fastest..." when runs vary.
TIMING = re.compile(r"^(?:.+ per loop \(.*\)|CPU times: .*|Wall time: .*|The slowest run took .* times longer than the fastest\..*)$")


# --- the only normalization -----------------------------------------------------------------


def normalized(text):
    """Text as compared: memory addresses and timings (a run of timing lines is one `<timing>`)
    differ from run to run, trailing whitespace does not count.  Representation only: IPython
    runs `!cmd` in a pty (CRLF line ends), and its pretty printer writes a default repr without
    "object" (`<__main__.A at 0x…>` for repr()'s `<__main__.A object at 0x…>`)."""
    text = ADDRESS.sub("0x…", text.replace("\r\n", "\n")).replace(" object at 0x…", " at 0x…")
    lines = []
    for line in text.split("\n"):
        line = "<timing>" if TIMING.match(line.rstrip()) else line.rstrip()
        if not (line == "<timing>" and lines and lines[-1] == line):
            lines.append(line)
    return "\n".join(lines).rstrip("\n")


def shown(bundle):
    """A value (a MIME bundle without an image) as (kind, text): the form a notebook page shows,
    its HTML when it has one, else its text/plain.

    Representation only: `%%markdown` shows an IPython Markdown object in Jupyter (text/markdown,
    with a placeholder text/plain `<IPython.core.display.Markdown object>`) where the import makes
    a markdown cell; it is compared by the HTML our renderer makes of that markdown, which is what
    the markdown cell shows here."""
    if "text/html" in bundle:
        return ("html", bundle["text/html"])
    if MARKDOWN_MIME in bundle:
        return ("markdown", bundle[MARKDOWN_MIME])
    if "text/markdown" in bundle:
        return ("markdown", render_markdown(bundle["text/markdown"]))
    return ("text", bundle["text/plain"] if "text/plain" in bundle else f"[{', '.join(sorted(bundle))}]")


def record(*, stdout, bundles, error):
    """A code cell's record: its stdout, the values it showed in order, its images, its error."""
    return {
        "stdout": normalized(stdout),
        "values": [(kind, normalized(text)) for kind, text in (shown(b) for b in bundles if "image/png" not in b)],
        "images": sum("image/png" in bundle for bundle in bundles),
        "error": error,
    }


# --- Jupyter's side -------------------------------------------------------------------------


def jupyter_records(notebook):
    """Per cell of an executed (or exported) notebook: its record, None for a markdown cell."""
    records = []
    for cell in notebook.cells:
        if cell.cell_type != "code":
            records.append(None)
            continue
        stdout, bundles, error = [], [], None
        for output in cell.outputs:
            if output.output_type == "stream" and output.name == "stdout":
                stdout.append(output.text)
            elif output.output_type in ("execute_result", "display_data"):
                bundles.append(dict(output.data))
            elif output.output_type == "error":
                error = output.ename
        records.append(record(stdout="".join(stdout), bundles=bundles, error=error))
    return records


def run_in_jupyter(notebook, cwd):
    """`notebook` executed top to bottom in a fresh python3 kernel whose working directory is `cwd`."""
    JupyterClient(notebook, timeout=JUPYTER_TIMEOUT, kernel_name="python3", allow_errors=True, resources={"metadata": {"path": str(cwd)}}).execute()
    return notebook


# --- our side -------------------------------------------------------------------------------


def folded(cells, events):
    """The cells of a state with the published events applied, as a client applies them."""
    cells = {cell["id"]: dict(cell) for cell in cells}
    for event in events:
        cell = cells.get(event.get("cellId"))
        if cell is None:
            continue
        if event["type"] == "cell_status":
            if event["status"] in ("running", "blocked"):
                cell.update(outputs=[], stdout="", error=None)
            cell["status"] = event["status"]
            if "error" in event:
                cell["error"] = event["error"]
        elif event["type"] == "cell_output":
            cell["outputs"] = event["outputs"]
        elif event["type"] == "cell_stdout":
            cell["stdout"] += event["text"]
        elif event["type"] == "cell_error":
            cell["error"] = event["error"]
    return cells


def session_of(imported, time_limit=TIMEOUT, environments=None):
    """A session over the imported cells (an in-memory store, a real runner; the imported
    packages built by `environments`, kernel/environments.py): (session, store, published events)."""
    store = MemoryStore([cell.code for cell in imported.cells])
    store.requirements = list(imported.requirements) if environments is not None else []
    for row, cell in zip(store.cells, imported.cells):
        row.update(type=cell.type, result_variable=cell.result_variable)
    published = Published()
    session = NotebookSession(NOTEBOOK, store=store, publish=published, runner_factory=lambda: Runner(time_limit=time_limit), environments=environments)
    return session, store, published


async def run_all_here(imported):
    """The imported cells run with `run_all` in a session of their own: each cell as every
    client ends up seeing it, and the store (its `blobs`: outputs stored apart)."""
    session, store, published = session_of(imported)
    try:
        await session.ensure_loaded()
        state = session.state_messages()[0]["notebook"]["cells"]  # what a client starts from
        session.submit({"type": "kernel.run_all"})
        for cell in state:
            if cell["status"] != STATUS_BLOCKED:  # a blocked cell does not run
                await published.status(cell["id"], *FINAL)
        await session.flush()
    finally:
        await session.close()
    cells = folded(state, published.events)
    return [cells[cell["id"]] for cell in state], store


@functools.cache
def run_here(path):
    """`path` imported and run in our kernel once per test session (both tests use the run)."""
    imported = importing.read_notebook(path.name, path.read_bytes(), max_bytes=MAX_BYTES, max_code_bytes=MAX_CODE_BYTES)
    cells, store = asyncio.run(run_all_here(imported))
    return imported, cells, store


def kernel_record(cell, store):
    """A cell's record from its final state here (a markdown cell's value: its rendered HTML)."""
    blobs = store.blobs.get(cell["id"], {})
    bundles = []
    for output in cell["outputs"]:
        mime = output["mimeType"]
        data = output["data"] if "data" in output else blobs[output["ref"]]["data"]
        if mime == "text/html" and bundles and set(bundles[-1]) == {"text/plain"}:
            bundles[-1][mime] = data  # the HTML form of the value before it (one bundle, as exporting pairs them)
        else:
            bundles.append({mime: data})
    error = (cell["error"] or {}).get("ename")
    if error is None and cell["status"] != STATUS_SUCCESS:
        error = f"<{cell['status']}>"  # never ran to an end: not clean
    return record(stdout=cell["stdout"], bundles=bundles, error=error)


# --- comparing ------------------------------------------------------------------------------


def brief(record):
    """A record for a failure message: long values cut short, a DataFrame's HTML without its style."""
    values = [(kind, re.sub(r"<style scoped>.*?</style>\s*", "", text, flags=re.S)) for kind, text in record["values"]]
    return {**record, "values": [(kind, text if len(text) <= 300 else text[:300] + "…") for kind, text in values]}


def assert_same_records(reference, here, sources, what):
    """Each of the reference's code cells (None: markdown, not compared) has the same record
    here, and as many of them ran clean (no error) here as there."""
    compared = [(want, got) for want, got in zip(reference, here) if want is not None]
    differing = [
        f"cell {index + 1} `{(source.strip().splitlines() or [''])[0][:50]}`:\n    {what}: {brief(want)}\n    here:    {brief(got)}"
        for index, (want, got, source) in enumerate(zip(reference, here, sources))
        if want is not None and want != got
    ]
    clean = (sum(want["error"] is None for want, _ in compared), sum(got["error"] is None for _, got in compared))
    assert not differing, f"{len(differing)} cell(s) differ from {what} (clean: {clean[0]} there, {clean[1]} here):\n" + "\n".join(differing)
    assert clean[1] == clean[0]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_an_imported_notebook_shows_what_jupyter_shows(path, tmp_path):
    original = nbformat.reads(path.read_text(encoding="utf-8"), as_version=4)
    sources = [cell.source for cell in original.cells]
    jupyter = jupyter_records(run_in_jupyter(original, tmp_path))
    _, cells, store = run_here(path)
    assert len(cells) == len(original.cells)  # the import maps cells 1:1
    here = [kernel_record(cell, store) for cell in cells]
    assert_same_records(jupyter, here, sources, "jupyter")


@pytest.mark.django_db
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_the_exported_notebook_carries_and_reproduces_what_ran_here(path, tmp_path, users):
    imported, cells, store = run_here(path)
    notebook = operations.import_notebook(users["alice"], name=imported.name, cells=imported.cells)
    rows = list(notebook.cells.order_by("position"))
    assert [row.code for row in rows] == [cell["code"] for cell in cells]
    for row, cell in zip(rows, cells):  # what the worker stores after the run (worker.DatabaseStore)
        Cell.objects.filter(pk=row.pk).update(status=cell["status"], outputs=cell["outputs"], stdout=cell["stdout"], error=cell["error"])
        blobs = store.blobs.get(cell["id"], {}).values()
        OutputBlob.objects.bulk_create([OutputBlob(cell=row, digest=b["digest"], mime_type=b["mimeType"], data=b["data"]) for b in blobs])
    here = [kernel_record(cell, store) for cell in cells]
    sources = [cell["code"] for cell in cells]
    exported = nbformat.reads(exporting.to_ipynb(notebook), as_version=4)
    assert len(exported.cells) == len(cells)
    assert_same_records(jupyter_records(exported), here, sources, "the file")
    assert_same_records(jupyter_records(run_in_jupyter(exported, tmp_path)), here, sources, "jupyter")
