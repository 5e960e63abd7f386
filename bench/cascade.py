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

The chain's floor is bench/floor_server.py running the same chain (its cells made there first):
the N cells' code to a child process in one message, a line per cell back, one UPDATE of the N
statuses, the statuses to the socket in ~10 ms batches; "rerun" and "edit + run" alike, each
repeat alternating with the real server's.  Its rows follow the chain's, and the chain's notes
give the ratios of the medians and of the p99s.  The round-trip floor (one UPDATE + one
PUBLISH round trip) is still the ratio column.
"""
import asyncio
import sys
import time

from .harness import Cluster, Report, parse_args, summary, to_floor_server

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


async def floor_notebook(cluster, cells):
    """A client of the floor server and the ids of `cells` (code strings) it made there, in order."""
    client = (await cluster.floor_clients(1))[0]
    for i, code in enumerate(cells):
        await client.send(type="create_cell", code=code, requestId=f"make-{i}")
    await client.wait_for(lambda e: e.get("requestId") == f"make-{len(cells) - 1}", timeout=600)
    return client, list(client.order)


async def measure(cluster, args):
    report = Report("cascade", await cluster.floor(), floor_server="floor server (bench/floor_server.py): the chain run there, each repeat alternating with the real server's")
    for shape, build in (("chain", chain), ("fan-out", fan)):
        for n in args.sizes:
            notebook_id = await cluster.anotebook(build(n))
            client = await cluster.client(notebook_id)
            # From the database: the first state frame holds only the cells that fit in it
            # (a 1,000-cell chain arrives in two chunks).
            cell_ids = await asyncio.to_thread(cell_ids_of, notebook_id)
            await run_root(client, cell_ids)  # warm-up: loads the session, starts the runner
            floor = None
            if shape == "chain":
                floor = await floor_notebook(cluster, build(n))
                await run_root(*floor)  # warm-up: starts its child process
            # A new execution process loads jedi (completion) in a thread after its first
            # command: 1 - 2 s of CPU, once per process, that is not the cascade's.
            await asyncio.sleep(args.settle[0])
            repeat = args.repeat or (2 if args.quick else max(3, 2000 // (n + 10)))
            root = "x0" if shape == "chain" else "root"
            real, floors = {"rerun": [], "edit + run": []}, {"rerun": [], "edit + run": []}
            for k in range(repeat):  # alternating, so that all see the same machine
                real["rerun"].append(await run_root(client, cell_ids))
                real["edit + run"].append(await run_root(client, cell_ids, edit=f"{root} = {k + 1}"))
                if floor:
                    floors["rerun"].append(await run_root(*floor))
                    floors["edit + run"].append(await run_root(*floor, edit=f"{root} = {k + 1}"))
            cells = len(cell_ids)
            for what, totals in real.items():
                note = to_floor_server(summary(totals), summary(floors[what])) if floor else ""
                report.row(f"{shape} N={n}, {what}: whole cascade", totals, note=note)
                report.row(f"{shape} N={n}, {what}: per cell", [t / cells for t in totals], unit="ms/cell", note=f"{cells} cells")
            for what, totals in floors.items() if floor else ():
                report.row(f"{shape} N={n}, floor server, {what}: whole cascade", totals, note="bench/floor_server.py")
                report.row(f"{shape} N={n}, floor server, {what}: per cell", [t / cells for t in totals], unit="ms/cell", note=f"{cells} cells")
            await client.close()
            if floor:
                await floor[0].close()


def main(argv=None):
    args = parse_args("Reactive cascade latency through Daphne + kernel worker.", argv, sizes="10,100,1000", settle="3")
    if args.quick:
        args.sizes, args.settle = [3], [0]
    with Cluster("cascade") as cluster:
        asyncio.run(measure(cluster, args))


if __name__ == "__main__":
    sys.exit(main())
