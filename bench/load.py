"""Load: many notebooks, several clients each, a mixed workload for a fixed time.

    .venv/bin/python -m bench.load [--notebooks 20] [--clients 5] [--seconds 60] [--quick]

Every client edits only its own cells (create, update, run, delete; a new cell reads the
client's previous one, so runs cascade), waits for the outcome of each action, then thinks
for 100-300 ms.  Latency: send -> the sender sees the event carrying its requestId (edits),
or the run cell's final status (runs).  Errors: error frames, kernel_error events, timeouts
and dropped sockets; a cell failing with NameError after its input was deleted is a cell
result, not an error.
"""
import asyncio
import random
import sys
import time
from collections import defaultdict

from .harness import Cluster, Report, parse_args

TIMEOUT = 30
FINAL = {"success", "error"}


async def client_loop(client, tag, deadline, latencies, errors):
    rng = random.Random(tag)
    cells = []  # [cell id, name] of this client's cells
    counter = 0
    while time.monotonic() < deadline:
        counter += 1
        rid = f"{tag}-{counter}"
        choice = rng.random()
        start = time.perf_counter()
        try:
            if not cells or choice < 0.3:
                kind = "create"
                name = f"{tag}_{counter}"
                code = f"{name} = {cells[-1][1]} + 1" if cells else f"{name} = 0"
                await client.send(type="create_cell", code=code, requestId=rid)
                seen = await client.wait_for(lambda e: e.get("requestId") == rid, TIMEOUT)
                if seen[-1]["type"] == "cell_created":
                    cells.append([seen[-1]["cellId"], name])
            elif choice < 0.5:
                kind = "update"
                cell = rng.choice(cells)
                await client.send(type="cell_update", cellId=cell[0], code=f"{cell[1]} = {rng.randint(0, 99)}", requestId=rid)
                seen = await client.wait_for(lambda e: e.get("requestId") == rid, TIMEOUT)
            elif choice < 0.85:
                kind = "run"
                cell_id = rng.choice(cells)[0]
                await client.send(type="run_cell", cellId=cell_id, requestId=rid)
                seen = await client.wait_for(lambda e: e.get("requestId") == rid or (e.get("cellId") == cell_id and e.get("status") in FINAL), TIMEOUT)
            else:
                kind = "delete"
                cell = cells.pop(rng.randrange(len(cells)))
                await client.send(type="delete_cell", cellId=cell[0], requestId=rid)
                seen = await client.wait_for(lambda e: e.get("requestId") == rid, TIMEOUT)
            if seen[-1]["type"] == "error":
                errors[f"error frame ({seen[-1]['code']})"] += 1
            else:
                latencies[kind].append((time.perf_counter() - start) * 1000)
            kernel_errors = sum(1 for e in seen if e["type"] == "kernel_error")
            if kernel_errors:
                errors["kernel_error events"] += kernel_errors
        except asyncio.TimeoutError:
            errors["timeouts"] += 1
        except Exception as exc:  # a dropped socket ends this client
            errors[f"client failure ({type(exc).__name__})"] += 1
            return
        await asyncio.sleep(rng.uniform(0.1, 0.3))


async def measure(cluster, args):
    report = Report(f"load: {args.notebooks[0]} notebooks x {args.clients[0]} clients, {args.seconds[0]} s", await cluster.floor())
    clients = []
    for n in range(args.notebooks[0]):
        notebook_id = await cluster.anotebook()
        clients += [(f"n{n}c{c}", client) for c, client in enumerate(await cluster.clients(notebook_id, args.clients[0]))]
    latencies, errors = defaultdict(list), defaultdict(int)
    start = time.monotonic()
    await asyncio.gather(*(client_loop(client, tag, start + args.seconds[0], latencies, errors) for tag, client in clients))
    elapsed = time.monotonic() - start
    done = sum(len(v) for v in latencies.values())
    for kind in ("create", "update", "run", "delete"):
        if latencies[kind]:
            report.row(f"{kind}", latencies[kind])
    report.row("all actions", [x for v in latencies.values() for x in v], note=f"{done / elapsed:.1f} actions/s")
    print(f"\nthroughput: {done} actions in {elapsed:.1f} s = {done / elapsed:.1f} actions/s; errors: {sum(errors.values())} {dict(errors) or ''}")
    await asyncio.gather(*(client.close() for _, client in clients))


def main(argv=None):
    args = parse_args("Mixed workload on many notebooks at once.", argv, notebooks="20", clients="5", seconds="60")
    if args.quick:
        args.notebooks, args.clients, args.seconds = [2], [2], [3]
    with Cluster("load") as cluster:
        asyncio.run(measure(cluster, args))


if __name__ == "__main__":
    sys.exit(main())
