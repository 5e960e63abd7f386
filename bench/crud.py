"""CRUD: create_cell, cell_update, its undo and redo, move_cell (to the top), delete_cell,
restore_cell and the undo of that restore from one client while others watch; time until every
client (the sender included) has the event (an early announcement, docs/protocol.md, when there
is one; for an edit and a move, the kernel's event in seq order is timed too).

    .venv/bin/python -m bench.crud [--others 1,10,100] [--repeat R] [--quick] [--full-only]

An edit pays one committed transaction (operations.py), a channel-layer hop to the kernel
worker and a group send back.  Its floor is bench/floor_server.py doing the same edits' essential
work (one committed INSERT / UPDATE / DELETE, one PUBLISH, the frame to every socket) for the same
number of clients at the same pace, in blocks of BLOCK rounds alternating with the real
server's, so that both see the same machine; each row's note gives the ratios of the medians
and of the p99s, and the floor server has a row of its own per case (it keeps no history: a
restore is a create there, an undo the plain edit that undoes it, FLOOR).  Edits are paced at 25 a
second, as people make them.  The round-trip floor (one UPDATE + one PUBLISH round trip) is
still printed, back to back and paced alike (bench/harness.py says why).  The Watcher rows have
no floor server of their own.
"""
import asyncio
import sys
import time

from .harness import Cluster, Report, clients_without_gc, parse_args, summary, to_floor_server

PACE = 0.04
BLOCK = 10  # rounds on one server before the other's turn


async def everyone_sees(clients, request_id, kind, start, in_order=None):
    """ms from `start` until every client has the event `kind` carrying `request_id` (the early
    announcement, docs/protocol.md, when there is one); its cellId. `in_order`, a list: the ms
    until every client also had the kernel's own event, in `seq` order, appended to it."""

    async def one(client):
        seen = await client.wait_for(lambda e: e.get("requestId") == request_id)
        if seen[-1]["type"] != kind:
            raise RuntimeError(f"expected {kind}, got {seen[-1]}")
        return seen[-1]

    events = await asyncio.gather(*(one(c) for c in clients))
    took = (time.perf_counter() - start) * 1000
    if in_order is not None:
        await asyncio.gather(*(c.wait_for(lambda e: e.get("requestId") == request_id and e["type"] == kind and "seq" in e) for c, e in zip(clients, events) if "seq" not in e))
        in_order.append((time.perf_counter() - start) * 1000)
    return took, events[0]["cellId"]


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


# The edits of a round, in order: (its name in the table, the event every client waits for).
EDITS = (
    ("create_cell", "cell_created"),
    ("cell_update", "cell_updated"),
    ("undo of cell_update", "cell_updated"),
    ("redo of cell_update", "cell_updated"),
    ("move_cell", "cell_moved"),
    ("delete_cell", "cell_deleted"),
    ("restore_cell", "cell_created"),
    ("undo of restore_cell", "cell_deleted"),
)


def message(kind, i, cell_id):
    """Edit `kind` of round `i` on `cell_id` (None before the create)."""
    code = f"v{i} = {i}"
    return {
        "create_cell": {"type": "create_cell", "code": code},
        "cell_update": {"type": "cell_update", "cellId": cell_id, "code": f"{code} + 1"},
        "undo of cell_update": {"type": "undo"},
        "redo of cell_update": {"type": "redo"},
        "move_cell": {"type": "move_cell", "cellId": cell_id, "afterCellId": None},
        "delete_cell": {"type": "delete_cell", "cellId": cell_id},
        "restore_cell": {"type": "restore_cell", "cellId": cell_id},
        "undo of restore_cell": {"type": "undo"},
    }[kind]


def floor_message(kind, i, cell_id):
    """message() for the floor server, which keeps no history: the plain edit doing the same
    essential work (an undo's write, a restore's insert)."""
    plain = {"undo of cell_update": "cell_update", "redo of cell_update": "cell_update", "restore_cell": "create_cell", "undo of restore_cell": "delete_cell"}.get(kind, kind)
    fields = message(plain, i, cell_id)
    if kind == "undo of cell_update":
        fields["code"] = message("create_cell", i, cell_id)["code"]
    return fields


# Announced early by the server that commits them; the kernel's event, in seq order, follows
# (for a cell_update, with the shared text's update a page's editor shows): timed too.
IN_ORDER = ("cell_update", "undo of cell_update", "redo of cell_update", "move_cell")


async def rounds(sender, see, numbers, samples, edit=message):
    """The rounds `numbers` (each: create, edit its code, undo that, redo it, move it to the top,
    delete it, restore it, undo that), paced at PACE; round 0 warms the session up and is not kept.
    `see(request_id, kind, start)` -> (ms until everyone has it, its cellId); `edit`: message or
    floor_message; `samples`: edit -> list, appended to."""
    for i in numbers:
        cell_id = None
        for n, (kind, event) in enumerate(EDITS):
            start = time.perf_counter()
            await sender.send(requestId=f"{n}-{i}", **edit(kind, i, cell_id))
            in_order = samples.get(f"{kind} (in seq order)") if i else None
            took, seen_id = await see(f"{n}-{i}", event, start, **({"in_order": in_order} if in_order is not None else {}))
            if event == "cell_created":
                cell_id = seen_id  # the floor server's restore is a new cell
            await asyncio.sleep(max(0, PACE - (time.perf_counter() - start)))
            if i:
                samples[kind].append(took)


async def alternating(sides, repeat):
    """`repeat` rounds (after round 0) on each side, (sender, see, samples, edit) as `rounds`
    takes them, BLOCK rounds at a time in turn."""
    for start in range(0, repeat + 1, BLOCK):
        for sender, see, samples, edit in sides:
            await rounds(sender, see, range(start, min(repeat + 1, start + BLOCK)), samples, edit)


async def measure(cluster, args):
    """Prints the table; returns {others: (create summary, delete summary)} (bench/history.py).

    Each size is measured twice: with full clients (tests/live.py, as every other benchmark),
    then with Watchers (bench/harness.py), the sender one of them, which cost this process
    very little and note when each frame was read and when it was on the socket, as it would
    be at a hundred browsers on their own machines."""
    floor_server = f"floor server (bench/floor_server.py): the same clients and edits at the same pace, {BLOCK} rounds at a time alternating with the real server's"
    report = Report("crud", await cluster.floor(), paced_floor=await cluster.floor(pace=PACE), floor_server=floor_server)
    results = {}
    repeat = args.repeat or (3 if args.quick else 50)
    for others in args.others:
        notebook_id = await cluster.anotebook(["a = 1"])
        clients = await cluster.clients(notebook_id, others + 1)
        floor_clients = await cluster.floor_clients(others + 1)
        await floor_clients[0].request(type="create_cell", code="a = 1")  # as the real notebook has
        samples, floor_samples = {kind: [] for kind, _ in EDITS}, {kind: [] for kind, _ in EDITS}
        samples.update({f"{kind} (in seq order)": [] for kind in IN_ORDER})
        with clients_without_gc():
            await alternating(
                [
                    (clients[0], lambda rid, kind, start, **kw: everyone_sees(clients, rid, kind, start, **kw), samples, message),
                    (floor_clients[0], lambda rid, kind, start, **kw: everyone_sees(floor_clients, rid, kind, start, **kw), floor_samples, floor_message),
                ],
                repeat,
            )
        rows = {}
        for kind, _ in EDITS:
            note = to_floor_server(summary(samples[kind]), summary(floor_samples[kind]))
            rows[kind] = report.row(f"{kind}, {others} other clients: all {others + 1} have it", samples[kind], note=note)
        for kind in IN_ORDER:
            name = f"{kind} (in seq order)"
            note = to_floor_server(summary(samples[name]), summary(floor_samples[kind]))
            report.row(f"{name}, {others} other clients: all {others + 1} have the kernel's event", samples[name], note=note)
        for kind, _ in EDITS:
            report.row(f"{kind}, {others} other clients: floor server, all {others + 1} have it", floor_samples[kind], note="bench/floor_server.py")
        results[others] = (rows["create_cell"], rows["delete_cell"])
        await asyncio.gather(*(c.close() for c in clients + floor_clients))
        if args.full_only:
            continue
        notebook_id = await cluster.anotebook(["a = 1"])
        watchers = await cluster.watchers(notebook_id, others + 1)  # the first one sends
        samples = {kind: [] for kind, _ in EDITS}
        with clients_without_gc():
            await rounds(watchers[0], watchers_see(watchers), range(repeat + 1), samples)
        for name, _ in EDITS:
            report.row(f"{name}, {others} watchers: the sender and all {others} have it", [read for read, _ in samples[name]], note="read by the bench")
        for name, _ in EDITS:
            report.row(f"{name}, {others} watchers: on the sender's and all {others} sockets", [at for _, at in samples[name]], note="kernel receive time")
        await asyncio.gather(*(w.close() for w in watchers))
    return results


def main(argv=None):
    args = parse_args("create_cell / cell_update / move_cell / delete_cell / restore_cell / undo latency to every client.", argv, [("full-only", "measure with full clients only, no Watchers")], others="1,10,100")
    if args.quick:
        args.others = [1, 2]
    with Cluster("crud") as cluster:
        asyncio.run(measure(cluster, args))


if __name__ == "__main__":
    sys.exit(main())
