"""Opening a big notebook: the kernel worker's load and the whole state through a socket.

    .venv/bin/python -m bench.open [--cells 10000] [--repeat R] [--quick]

The notebook: `--cells` cells, a chain (`v{i} = v{i-1} + 1`, so the graph has an edge per
cell) each with a 2 KB `text/plain` output, as tests/test_browser_big.py opens in Chromium.
Cases, each from a socket's connect to the last `notebook_state_chunk` received:

* first open ever: the worker loads rows whose reads/writes were never analysed (it analyses
  every cell and stores the analysis);
* cold open: a fresh worker process (restarted before each sample) loads the notebook, whose
  stored analysis is current;
* warm open: the worker already holds the notebook;
* an imported notebook of as many cells (no outputs: an import recomputes them), timed from
  the import (`operations.import_notebook`, which stores each cell's analysis and shared text)
  and from the first socket's connect;

plus the server-rendered page (GET /notebooks/<id>/, logged in) and the kernel worker's RSS
before and after holding the notebook.  Ratios are to the floor of the same run.
"""
import asyncio
import json
import sys
import time
import urllib.request

import websockets
from django.db import models

from .harness import LOG_DIR, Cluster, Report, parse_args

OUTPUT = "x" * 2000


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as status:
        return int(next(line.split()[1] for line in status if line.startswith("VmRSS:"))) / 1024


def big_notebook(cluster, cells):
    from notebooks_app.constants import POSITION_STEP
    from notebooks_app.models import Cell, Notebook

    notebook = Notebook.objects.create(name=f"open {cells}", owner=cluster.user, revision=1)
    rows = []
    for i in range(cells):
        code = "v0 = 0" if i == 0 else f"v{i} = v{i - 1} + 1"
        rows.append(Cell(notebook=notebook, position=(i + 1) * POSITION_STEP, code=code, status="success", outputs=[{"mimeType": "text/plain", "data": OUTPUT}]))
    Cell.objects.bulk_create(rows, batch_size=1000)
    return str(notebook.pk)


def imported_notebook(cluster, cells):
    """(notebook id, ms) of importing the same chain as a file import does."""
    from notebooks_app.importing import ImportedCell
    from notebooks_app.operations import import_notebook

    start = time.perf_counter()
    notebook = import_notebook(cluster.user, name=f"imported {cells}", cells=[ImportedCell(type="python", code="v0 = 0" if i == 0 else f"v{i} = v{i - 1} + 1") for i in range(cells)])
    return str(notebook.pk), (time.perf_counter() - start) * 1000


def wait_for_bookkeeping(notebook_id, timeout=120):
    from notebooks_app.models import Cell

    deadline = time.monotonic() + timeout
    while Cell.objects.filter(notebook_id=notebook_id).filter(models.Q(analysis__isnull=True) | models.Q(ydoc_key="")).exists():
        if time.monotonic() > deadline:
            raise RuntimeError("the worker did not store the notebook's analysis and shared texts")
        time.sleep(0.2)


async def open_state(cluster, notebook_id):
    """(ms from connect to the whole state, bytes received, cells)."""
    url = cluster.urls[0].replace("http://", "ws://") + f"/ws/notebooks/{notebook_id}/?batch=1"
    start = time.perf_counter()
    async with websockets.connect(url, additional_headers={"Cookie": cluster.cookies[0], "Origin": cluster.urls[0]}, max_size=None) as ws:
        size, cells, chunks, seen = 0, 0, None, 0
        while chunks is None or seen < chunks:
            text = await asyncio.wait_for(ws.recv(), 120)
            size += len(text)
            frame = json.loads(text)
            for event in frame["events"] if frame.get("type") == "batch" else [frame]:
                if event.get("type") == "notebook_state":
                    cells += len(event["notebook"]["cells"])
                    chunks, seen = event.get("chunks", 1), 1
                elif event.get("type") == "notebook_state_chunk" and chunks is not None:
                    cells += len(event["cells"])
                    seen += 1
        elapsed = (time.perf_counter() - start) * 1000
    return elapsed, size, cells


def page_ms(cluster, notebook_id):
    request = urllib.request.Request(f"{cluster.urls[0]}/notebooks/{notebook_id}/", headers={"Cookie": cluster.cookies[0]})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as response:
        body = response.read()
        assert response.status == 200
    return (time.perf_counter() - start) * 1000, len(body)


def restart_worker(cluster):
    from django.conf import settings

    from tests.live import start_worker, stop

    stop(cluster.workers[0])
    cluster.workers[0] = start_worker([settings.KERNEL_FLEET], cluster.env, LOG_DIR / f"bench-{cluster.name}-worker-kernel.log")
    return cluster.workers[0].pid


async def measure(cluster, args):
    report = Report("open a big notebook (1 Daphne, 1 worker)", await cluster.floor())
    repeat = args.repeat or (1 if args.quick else 3)
    for count in args.cells:
        notebook_id = await asyncio.to_thread(big_notebook, cluster, count)
        pid = await asyncio.to_thread(restart_worker, cluster)
        idle = rss_mb(pid)
        first_ms, size, cells = await open_state(cluster, notebook_id)
        assert cells == count, (cells, count)
        report.row(f"{count} cells: first open ever (analysis not stored)", [first_ms], note=f"{size / 1e6:.1f} MB of state")
        # The first open's bookkeeping (each cell's analysis and shared-text state stored) done,
        # as it long is when a restarted worker opens a notebook people used before.
        await asyncio.to_thread(wait_for_bookkeeping, notebook_id)
        cold, warm, page, rss = [], [], [], []
        for _ in range(repeat):
            pid = await asyncio.to_thread(restart_worker, cluster)
            cold.append((await open_state(cluster, notebook_id))[0])
            rss.append(rss_mb(pid) - idle)
            warm.append((await open_state(cluster, notebook_id))[0])
            page.append((await asyncio.to_thread(page_ms, cluster, notebook_id))[0])
        report.row(f"{count} cells: cold open (fresh worker loads it) -> whole state", cold)
        report.row(f"{count} cells: warm open -> whole state", warm)
        report.row(f"{count} cells: GET /notebooks/<id>/ (HTML)", page)
        report.row(f"{count} cells: worker RSS for the notebook (over an idle worker of {idle:.0f} MB)", rss, unit="MB")
        imported_id, import_ms = await asyncio.to_thread(imported_notebook, cluster, count)
        report.row(f"{count} cells: import (analysis and shared texts stored with the rows)", [import_ms])
        first_ms, _, cells = await open_state(cluster, imported_id)
        assert cells == count, (cells, count)
        report.row(f"{count} cells: first open of the imported notebook -> whole state", [first_ms])


def main(argv=None):
    args = parse_args("Opening a big notebook: worker load, whole state through a socket, the page.", argv, cells="10000")
    if args.quick:
        args.cells = [200]
    with Cluster("open") as cluster:
        asyncio.run(measure(cluster, args))


if __name__ == "__main__":
    sys.exit(main())
