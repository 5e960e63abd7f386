"""Fan-out: many sockets on one notebook; one event's arrival at all of them.

    .venv/bin/python -m bench.fanout [--sockets 50,200,500] [--daphnes 1] [--repeat R] [--quick]

Each round one socket creates (or deletes) a cell; the figure per socket is the time from
the send to that socket's receipt of the event, and "all reached" is the slowest one.
"""
import asyncio
import sys
import time

from .harness import Cluster, Report, parse_args

PACE = 0.05


async def one_event(sender, clients, message):
    start = time.perf_counter()
    await sender.send(**message)

    async def arrival(client):
        seen = await client.wait_for(lambda e: e.get("requestId") == message["requestId"], timeout=60)
        return (time.perf_counter() - start) * 1000, seen[-1]

    results = await asyncio.gather(*(arrival(c) for c in clients))
    return [ms for ms, _ in results], results[0][1]


async def measure(cluster, args):
    report = Report(f"fanout ({len(cluster.urls)} Daphne)", await cluster.floor())
    for count in args.sockets:
        notebook_id = await cluster.anotebook(["a = 1"])
        clients = await cluster.clients(notebook_id, count)
        per_socket, all_reached = [], []
        repeat = args.repeat or (2 if args.quick else 20)
        cell_id = None
        for i in range(repeat + 1):
            if cell_id is None:
                message = {"type": "create_cell", "code": f"v{i} = {i}", "requestId": f"r{i}"}
            else:
                message = {"type": "delete_cell", "cellId": cell_id, "requestId": f"r{i}"}
            arrivals, event = await one_event(clients[i % count], clients, message)
            cell_id = event["cellId"] if event["type"] == "cell_created" else None
            if i:  # the first round warms up
                per_socket += arrivals
                all_reached.append(max(arrivals))
            await asyncio.sleep(PACE)
        report.row(f"{count} sockets: per socket", per_socket)
        report.row(f"{count} sockets: all reached", all_reached)
        await asyncio.gather(*(c.close() for c in clients))


def main(argv=None):
    args = parse_args("One event's arrival at many sockets of one notebook.", argv, sockets="50,200,500", daphnes="1")
    if args.quick:
        args.sockets = [3]
    with Cluster("fanout", daphnes=args.daphnes[0]) as cluster:
        asyncio.run(measure(cluster, args))


if __name__ == "__main__":
    sys.exit(main())
