"""CRUD: create_cell then delete_cell from one client while others watch; time until every
client (the sender included) has the event.

    .venv/bin/python -m bench.crud [--others 1,10,100] [--repeat R] [--quick]

An edit pays one committed transaction (operations.py), a channel-layer hop to the kernel
worker and a group send back, so the floor (one UPDATE + one PUBLISH round trip) is the
least it can cost.  Edits are paced at 25 a second, as people make them, and the floor is
reported twice: back to back, and paced alike (bench/harness.py says why).
"""
import asyncio
import sys
import time

from .harness import Cluster, Report, clients_without_gc, parse_args

PACE = 0.04


async def everyone_sees(clients, request_id, kind):
    """ms until every client has the event `kind` carrying `request_id`; its cellId."""
    start = time.perf_counter()

    async def one(client):
        seen = await client.wait_for(lambda e: e.get("requestId") == request_id)
        if seen[-1]["type"] != kind:
            raise RuntimeError(f"expected {kind}, got {seen[-1]}")
        return seen[-1]["cellId"]

    cell_ids = await asyncio.gather(*(one(c) for c in clients))
    return (time.perf_counter() - start) * 1000, cell_ids[0]


async def rounds(sender, clients, repeat, creates, deletes):
    """`repeat` create + delete rounds after one that warms the session up, paced at PACE."""
    for i in range(repeat + 1):  # the first round warms the session up
        start = time.perf_counter()
        await sender.send(type="create_cell", code=f"v{i} = {i}", requestId=f"c{i}")
        created, cell_id = await everyone_sees(clients, f"c{i}", "cell_created")
        await asyncio.sleep(max(0, PACE - (time.perf_counter() - start)))
        start = time.perf_counter()
        await sender.send(type="delete_cell", cellId=cell_id, requestId=f"d{i}")
        deleted, _ = await everyone_sees(clients, f"d{i}", "cell_deleted")
        await asyncio.sleep(max(0, PACE - (time.perf_counter() - start)))
        if i:
            creates.append(created)
            deletes.append(deleted)


async def measure(cluster, args):
    """Prints the table; returns {others: (create summary, delete summary)} (bench/history.py)."""
    report = Report("crud", await cluster.floor(), paced_floor=await cluster.floor(pace=PACE))
    results = {}
    for others in args.others:
        notebook_id = await cluster.anotebook(["a = 1"])
        clients = await cluster.clients(notebook_id, others + 1)
        sender = clients[0]
        creates, deletes = [], []
        repeat = args.repeat or (3 if args.quick else 50)
        with clients_without_gc():
            await rounds(sender, clients, repeat, creates, deletes)
        results[others] = (
            report.row(f"create_cell, {others} other clients: all {others + 1} have it", creates),
            report.row(f"delete_cell, {others} other clients: all {others + 1} have it", deletes),
        )
        await asyncio.gather(*(c.close() for c in clients))
    return results


def main(argv=None):
    args = parse_args("create_cell / delete_cell latency to every client.", argv, others="1,10,100")
    if args.quick:
        args.others = [1, 2]
    with Cluster("crud") as cluster:
        asyncio.run(measure(cluster, args))


if __name__ == "__main__":
    sys.exit(main())
