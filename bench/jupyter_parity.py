"""How many cells of real Jupyter notebooks run clean here, beside Jupyter running the same files.

    .venv/bin/python -m bench.jupyter_parity NOTEBOOK.ipynb|DIR ... [--literal] [--cell-timeout 30]

Each notebook runs top to bottom in Jupyter (nbclient, ipykernel's python3 kernel, in a copy of
the notebook's folder, so its data files are there) and, read by `importing.read_notebook` as
an upload is read, in this server's kernel (a NotebookSession with a real sandboxed Runner and
`kernel.run_all`, as tests/test_jupyter_corpus.py drives it; the sandbox's working directory
starts empty: a notebook's data files cannot be brought in yet). Both use this virtualenv's
packages. Printed: per notebook, the code cells that ran clean on each side; then the totals
and the causes of the failures on each side (error names, blocked, never finished).

`--literal` imports the cells without the top-to-bottom rewrite (rewrite.py), to see what it
changes. `--packages` runs a notebook whose cells fail with ModuleNotFoundError once more, with
the packages the page's prompt offers for them (packages.distribution_for_module) as the
notebook's own, resolved and built from PACKAGE_INDEX_URL (default the real index) into
ENVIRONMENTS_DIR: what a user gets after clicking "Add … to this notebook's packages?" (docs/packages.md).
Not a test: real notebooks need packages and files this server may not have.
"""
import argparse
import asyncio
import collections
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "notebookproject.settings")

import django  # noqa: E402

django.setup()

import nbformat  # noqa: E402
from nbclient import NotebookClient  # noqa: E402
from nbclient.exceptions import CellTimeoutError, DeadKernelError  # noqa: E402

from notebooks_app import importing, rewrite  # noqa: E402
from notebooks_app.constants import STATUS_BLOCKED  # noqa: E402
from notebooks_app.packages import distribution_for_module, missing_module  # noqa: E402
from tests.test_jupyter_corpus import MAX_BYTES, MAX_CODE_BYTES, folded, jupyter_records, kernel_record, session_of  # noqa: E402

FINAL = ("success", "error", "stale", "blocked")


def notebooks(paths):
    for path in map(Path, paths):
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
        else:
            yield path


def in_jupyter(path, cell_timeout):
    """Records of the notebook's cells run in Jupyter (None for markdown); cells after a timeout
    or a dead kernel have no record."""
    book = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder) / "work"
        shutil.copytree(path.parent, work, ignore=shutil.ignore_patterns("*.ipynb", ".git"))
        client = NotebookClient(book, timeout=cell_timeout, kernel_name="python3", allow_errors=True, resources={"metadata": {"path": str(work)}})
        try:
            client.execute()
        except (CellTimeoutError, DeadKernelError, RuntimeError) as exc:
            print(f"    jupyter stopped: {type(exc).__name__}", file=sys.stderr)
    return jupyter_records(book), book


async def here(imported, cell_timeout, environments=None):
    session, store, published = session_of(imported, cell_timeout, environments)
    try:
        await session.ensure_loaded()
        state = session.state_messages()[0]["notebook"]["cells"]
        session.submit({"type": "kernel.run_all"})
        waiting = {cell["id"] for cell in state if cell["status"] != STATUS_BLOCKED and cell["type"] != "markdown"}
        deadline = time.monotonic() + cell_timeout * max(len(waiting), 1)
        seen = 0
        while waiting and time.monotonic() < deadline:
            for event in published.events[seen:]:
                if event["type"] == "cell_status" and event["status"] in FINAL:
                    waiting.discard(event["cellId"])
            seen = len(published.events)
            published._arrived.clear()
            try:
                await asyncio.wait_for(published._arrived.wait(), 1)
            except asyncio.TimeoutError:
                pass
        await session.flush()
    finally:
        await session.close()
    cells = folded(state, published.events)
    here.missing = [missing_module((cells[cell["id"]].get("error") or {}).get("evalue", "")) for cell in state
                    if (cells[cell["id"]].get("error") or {}).get("ename") == "ModuleNotFoundError"]
    return [kernel_record(cells[cell["id"]], store) for cell in state]


def offered_packages(modules):
    """The packages the page would offer for the modules a run could not import, in order."""
    offered = []
    for module in modules:
        name = distribution_for_module(module) if module else None
        if name and name not in offered:
            offered.append(name)
    return offered


def cause(record):
    return record["error"] or "clean"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--literal", action="store_true", help="import without the top-to-bottom rewrite")
    parser.add_argument("--cell-timeout", type=int, default=30)
    parser.add_argument("--verbose", action="store_true", help="name each cell whose outcome differs, with its first line")
    parser.add_argument("--packages", action="store_true", help="run again with the packages the ModuleNotFoundError prompt offers")
    options = parser.parse_args()
    if options.literal:
        rewrite.rewrite_cells = lambda cells: rewrite.RewriteReport()
    totals = collections.Counter()
    causes = {"jupyter": collections.Counter(), "here": collections.Counter(), "with packages": collections.Counter()}
    environments = None
    if options.packages:
        from django.conf import settings

        from notebooks_app.kernel.worker import package_settings
        from notebooks_app.kernel.environments import Environments

        environments = Environments(package_settings())
        print(f"packages from {settings.PACKAGE_INDEX_URL} into {settings.ENVIRONMENTS_DIR}")
    started = time.monotonic()
    for path in notebooks(options.paths):
        try:
            imported = importing.read_notebook(path.name, path.read_bytes(), max_bytes=MAX_BYTES, max_code_bytes=MAX_CODE_BYTES)
        except importing.NotebookFileError as exc:
            print(f"{path}: not imported: {exc}")
            continue
        reference, _ = in_jupyter(path, options.cell_timeout)
        ours = asyncio.run(here(imported, options.cell_timeout))
        pairs = [(want, got) for want, got in zip(reference, ours) if want is not None]
        clean = (sum(w["error"] is None for w, _ in pairs), sum(g["error"] is None for _, g in pairs))
        for want, got in pairs:
            causes["jupyter"][cause(want)] += 1
            causes["here"][cause(got)] += 1
        totals.update(cells=len(pairs), jupyter=clean[0], here=clean[1], notebooks=1)
        line = f"{path.parent.name}/{path.name}: {len(pairs)} code cells, clean {clean[0]} in Jupyter, {clean[1]} here"
        if environments is not None:
            offered = offered_packages(here.missing)
            if offered:
                imported.requirements = offered
                again = asyncio.run(here(imported, options.cell_timeout, environments))
                ours = again
            after = sum(got["error"] is None for want, got in zip(reference, ours) if want is not None)
            for want, got in zip(reference, ours):
                if want is not None:
                    causes["with packages"][cause(got)] += 1
            totals.update(packages=after)
            line += f", {after} with the packages offered ({', '.join(offered) or 'none'})"
        print(line, flush=True)
        if options.verbose:
            for number, (want, got, cell) in enumerate(zip(reference, ours, imported.cells), start=1):
                if want is not None and cause(want) != cause(got):
                    first = (cell.code.strip().splitlines() or [""])[0][:70]
                    print(f"    cell {number}: Jupyter {cause(want)}, here {cause(got)}: {first}")
    print()
    if environments is not None:
        print(f"with the packages the prompt offers: {totals['packages']} clean")
    print(f"{totals['notebooks']} notebooks, {totals['cells']} code cells: clean {totals['jupyter']} in Jupyter, {totals['here']} here "
          f"({'without' if options.literal else 'with'} the rewrite), {time.monotonic() - started:.0f} s")
    for side in ("jupyter", "here", "with packages"):
        if not causes[side]:
            continue
        print(f"  {side}: " + ", ".join(f"{name} {count}" for name, count in causes[side].most_common() if name != "clean"))


if __name__ == "__main__":
    main()
