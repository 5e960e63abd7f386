"""Cascade: run the root of a chain (x0 = 0, x{i} = x{i-1} + 1) or of a fan-out (root + N
children) and time it until the last cell's final status reaches a client.

Two rows each: the root run with its code unchanged ("rerun"), and what users do, an edit of the
root (`cell_update`, a new value every repeat) followed by its run ("edit + run": timed from the
edit sent to the last final status; every value downstream changes).

    .venv/bin/python -m bench.cascade [--sizes 10,100,1000] [--repeat R] [--settle S] [--quick]

--settle: seconds to wait after each notebook's warm-up run (default 3), while its new
execution process loads jedi for completion in a thread (1 - 2 s of CPU, once per process);
--settle 0 measures with that load.

ms/cell is the whole cascade divided by its cells: the kernel's per-cell overhead
(run the trivial cell in the runner, announce it, persist it) as a client sees it.
"""
import asyncio
import sys
import time

from .harness import Cluster, Report, parse_args

FINAL = {"success", "error"}


def chain(n):
    return ["x0 = 0"] + [f"x{i} = x{i - 1} + 1" for i in range(1, n)]


def fan(n):
    return ["root = 0"] + [f"c{i} = root + {i}" for i in range(n)]


def cell_ids_of(notebook_id):
    from notebooks_app.models import Cell

    return [str(pk) for pk in Cell.objects.filter(notebook_id=notebook_id).order_by("position").values_list("pk", flat=True)]


async def run_root(client, cell_ids, *, edit=None):
    """run_cell on the first cell (after `cell_update` with code `edit`, if given); ms until every
    cell of the cascade has its final status."""
    remaining = set(cell_ids)
    failed = []

    def done(event):
        if event["type"] == "cell_status" and event["status"] in FINAL and event["cellId"] in remaining:
            remaining.discard(event["cellId"])
            if event["status"] == "error":
                failed.append(event["cellId"])
        return not remaining

    start = time.perf_counter()
    if edit is not None:
        await client.send(type="cell_update", cellId=cell_ids[0], code=edit)
    await client.send(type="run_cell", cellId=cell_ids[0])
    await client.wait_for(done, timeout=600)
    if failed:
        raise RuntimeError(f"{len(failed)} cells failed in the cascade")
    return (time.perf_counter() - start) * 1000


async def measure(cluster, args):
    report = Report("cascade", await cluster.floor())
    for shape, build in (("chain", chain), ("fan-out", fan)):
        for n in args.sizes:
            notebook_id = await cluster.anotebook(build(n))
            client = await cluster.client(notebook_id)
            # From the database: the first state frame holds only the cells that fit in it
            # (a 1,000-cell chain arrives in two chunks).
            cell_ids = await asyncio.to_thread(cell_ids_of, notebook_id)
            await run_root(client, cell_ids)  # warm-up: loads the session, starts the runner
            # A new execution process loads jedi (completion) in a thread after its first
            # command: 1 - 2 s of CPU, once per process, that is not the cascade's.
            await asyncio.sleep(args.settle[0])
            repeat = args.repeat or (2 if args.quick else max(3, 2000 // (n + 10)))
            root = "x0" if shape == "chain" else "root"
            reruns, edits = [], []
            for k in range(repeat):  # alternating, so both see the same machine
                reruns.append(await run_root(client, cell_ids))
                edits.append(await run_root(client, cell_ids, edit=f"{root} = {k + 1}"))
            cells = len(cell_ids)
            for what, totals in (("rerun", reruns), ("edit + run", edits)):
                report.row(f"{shape} N={n}, {what}: whole cascade", totals)
                report.row(f"{shape} N={n}, {what}: per cell", [t / cells for t in totals], unit="ms/cell", note=f"{cells} cells")
            await client.close()


def main(argv=None):
    args = parse_args("Reactive cascade latency through Daphne + kernel worker.", argv, sizes="10,100,1000", settle="3")
    if args.quick:
        args.sizes, args.settle = [3], [0]
    with Cluster("cascade") as cluster:
        asyncio.run(measure(cluster, args))


if __name__ == "__main__":
    sys.exit(main())
