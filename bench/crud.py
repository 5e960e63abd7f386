"""CRUD: create_cell, cell_update, move_cell (to the top) and delete_cell from one client while
others watch; time until every client (the sender included) has the event.

    .venv/bin/python -m bench.crud [--others 1,10,100] [--repeat R] [--quick] [--full-only]

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


async def everyone_sees(clients, request_id, kind, start):
    """ms from `start` until every client has the event `kind` carrying `request_id`; its cellId."""

    async def one(client):
        seen = await client.wait_for(lambda e: e.get("requestId") == request_id)
        if seen[-1]["type"] != kind:
            raise RuntimeError(f"expected {kind}, got {seen[-1]}")
        return seen[-1]["cellId"]

    cell_ids = await asyncio.gather(*(one(c) for c in clients))
    return (time.perf_counter() - start) * 1000, cell_ids[0]


def watchers_see(watchers):
    """everyone_sees for Watchers (the sender is one): ((ms until the bench had read it at every
    one, ms until it was on every one's socket), its cellId); bench/harness.py says which is
    which."""

    async def see(request_id, kind, start):
        arrivals = await asyncio.gather(*(w.arrival(request_id) for w in watchers))
        for _, _, event in arrivals:
            if event["type"] != kind:
                raise RuntimeError(f"expected {kind}, got {event}")
        read = (max(read for read, _, _ in arrivals) - start) * 1000
        at = (max(at for _, at, _ in arrivals) - start) * 1000
        return (read, at), arrivals[0][2]["cellId"]

    return see


# The edits of a round, in order: (message type, the event every client waits for).
EDITS = (("create_cell", "cell_created"), ("cell_update", "cell_updated"), ("move_cell", "cell_moved"), ("delete_cell", "cell_deleted"))


async def rounds(sender, see, repeat, samples):
    """`repeat` rounds (create, edit its code, move it to the top, delete it) after one that warms
    the session up, paced at PACE; `see(request_id, kind, start)` -> (ms until everyone has it,
    its cellId); `samples`: message type -> list, appended to."""
    for i in range(repeat + 1):  # the first round warms the session up
        cell_id = None
        for n, (kind, event) in enumerate(EDITS):
            fields = {"create_cell": {"code": f"v{i} = {i}"}, "cell_update": {"cellId": cell_id, "code": f"v{i} = {i} + 1"}}.get(kind, {"cellId": cell_id})
            if kind == "move_cell":
                fields["afterCellId"] = None
            start = time.perf_counter()
            await sender.send(type=kind, requestId=f"{n}-{i}", **fields)
            took, seen_id = await see(f"{n}-{i}", event, start)
            cell_id = cell_id or seen_id
            await asyncio.sleep(max(0, PACE - (time.perf_counter() - start)))
            if i:
                samples[kind].append(took)


async def measure(cluster, args):
    """Prints the table; returns {others: (create summary, delete summary)} (bench/history.py).

    Each size is measured twice: with full clients (tests/live.py, as every other benchmark),
    then with Watchers (bench/harness.py), the sender one of them, which cost this process
    very little and note when each frame was read and when it was on the socket, as it would
    be at a hundred browsers on their own machines."""
    report = Report("crud", await cluster.floor(), paced_floor=await cluster.floor(pace=PACE))
    results = {}
    repeat = args.repeat or (3 if args.quick else 50)
    for others in args.others:
        notebook_id = await cluster.anotebook(["a = 1"])
        clients = await cluster.clients(notebook_id, others + 1)
        samples = {kind: [] for kind, _ in EDITS}
        with clients_without_gc():
            await rounds(clients[0], lambda rid, kind, start: everyone_sees(clients, rid, kind, start), repeat, samples)
        rows = {kind: report.row(f"{kind}, {others} other clients: all {others + 1} have it", samples[kind]) for kind, _ in EDITS}
        results[others] = (rows["create_cell"], rows["delete_cell"])
        await asyncio.gather(*(c.close() for c in clients))
        if args.full_only:
            continue
        notebook_id = await cluster.anotebook(["a = 1"])
        watchers = await cluster.watchers(notebook_id, others + 1)  # the first one sends
        samples = {kind: [] for kind, _ in EDITS}
        with clients_without_gc():
            await rounds(watchers[0], watchers_see(watchers), repeat, samples)
        for name, _ in EDITS:
            report.row(f"{name}, {others} watchers: the sender and all {others} have it", [read for read, _ in samples[name]], note="read by the bench")
        for name, _ in EDITS:
            report.row(f"{name}, {others} watchers: on the sender's and all {others} sockets", [at for _, at in samples[name]], note="kernel receive time")
        await asyncio.gather(*(w.close() for w in watchers))
    return results


def main(argv=None):
    args = parse_args("create_cell / cell_update / move_cell / delete_cell latency to every client.", argv, [("full-only", "measure with full clients only, no Watchers")], others="1,10,100")
    if args.quick:
        args.others = [1, 2]
    with Cluster("crud") as cluster:
        asyncio.run(measure(cluster, args))


if __name__ == "__main__":
    sys.exit(main())
