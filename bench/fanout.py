"""Fan-out: many sockets on one notebook; one event's arrival at all of them.

    .venv/bin/python -m bench.fanout [--sockets 50,200,500] [--daphnes 1] [--procs 0] [--repeat R] [--quick]

Each round one socket creates (or deletes) a cell; the figure per socket is the time from
the send to that socket's receipt of the event, and "all reached" is the slowest one.

With `--procs K` the receiving sockets live in K separate client processes (the sender stays
here), so the clients' own JSON decoding is not serialised in one Python process; arrival
times are CLOCK_MONOTONIC, which every process of the machine shares.
"""
import asyncio
import multiprocessing
import os
import re
import sys
import time

from .harness import LOG_DIR, ROOT, Cluster, Report, parse_args

PACE = 0.05
# After connecting: every join was announced to every earlier socket (presence, O(n²) frames);
# let Daphne finish those before its CPU per event is measured.
SETTLE = 3.0


def cpu_seconds(pids):
    """User + system CPU time of processes (/proc/<pid>/stat), in seconds."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


TIMING = re.compile(r"fanout timing: sockets=(\d+) written_ms=([\d.]+) flushed_ms=([\d.]+)")


def server_rows(report, cluster, count, log_start):
    """Daphne's own view (FANOUT_TIMING): from the event's arrival from Redis to its frames
    written to every socket's transport, and to the event loop having sent them."""
    log = (LOG_DIR / f"bench-{cluster.name}-daphne-0.log").read_text(errors="replace")[log_start:]
    found = [(float(w), float(f)) for n, w, f in TIMING.findall(log) if int(n) >= count - 1]
    if found:
        report.row(f"{count} sockets: server, arrival -> frames written to every transport", [w for w, _ in found])
        report.row(f"{count} sockets: server, arrival -> sent (two loop turns later)", [f for _, f in found])


def log_size(cluster):
    path = LOG_DIR / f"bench-{cluster.name}-daphne-0.log"
    return len(path.read_text(errors="replace")) if path.exists() else 0


def daphne_cpu_row(report, cluster, count, seconds, events):
    """Daphne's CPU per event: what fan-out costs the server, whatever the clients and the
    other processes on the machine do to the latencies."""
    report.row(f"{count} sockets: Daphne CPU per event", [seconds * 1000 / events], note=f"{len(cluster.daphnes)} Daphne, {events} events")


async def one_event(sender, clients, message):
    start = time.perf_counter()
    await sender.send(**message)

    async def arrival(client):
        seen = await client.wait_for(lambda e: e.get("requestId") == message["requestId"], timeout=60)
        return (time.perf_counter() - start) * 1000, seen[-1]

    results = await asyncio.gather(*(arrival(c) for c in clients))
    return [ms for ms, _ in results], results[0][1]


def _client_process(urls, cookies, notebook_id, count, conn):
    """A process holding `count` sockets: for each request id it is sent, the monotonic time
    at which each of its sockets received that request's event."""
    sys.path.insert(0, str(ROOT))
    from tests.client import NotebookClient

    async def run():
        clients = []
        for start in range(0, count, 10):  # a few at a time: Daphne gives a handshake 5 s
            clients += await asyncio.gather(
                *(NotebookClient(notebook_id, cookies[i % len(urls)], server=urls[i % len(urls)], batch=True, timeout=30, watch_presence=True, watch_early=True).connect() for i in range(start, min(count, start + 10)))
            )
        conn.send("ready")
        loop = asyncio.get_running_loop()
        while True:
            rid = await loop.run_in_executor(None, conn.recv)
            if rid is None:
                break

            async def arrival(client):
                seen = await client.wait_for(lambda e: e.get("requestId") == rid, timeout=60)
                return time.monotonic(), seen[-1]

            results = await asyncio.gather(*(arrival(c) for c in clients))
            conn.send([(t, e.get("cellId")) for t, e in results])
        await asyncio.gather(*(c.close() for c in clients))

    asyncio.run(run())


class RemoteClients:
    """Receiving sockets spread over `procs` client processes."""

    def __init__(self, cluster, notebook_id, count, procs):
        ctx = multiprocessing.get_context("spawn")
        self.pipes, self.procs = [], []
        for k in range(procs):
            n = count // procs + (1 if k < count % procs else 0)
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_client_process, args=(cluster.urls, cluster.cookies, notebook_id, n, child), daemon=True)
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)

    async def ready(self):
        for pipe in self.pipes:
            assert await asyncio.to_thread(pipe.recv) == "ready"

    async def one_event(self, sender, message):
        for pipe in self.pipes:
            pipe.send(message["requestId"])
        start = time.monotonic()
        await sender.send(**message)
        mine = await sender.wait_for(lambda e: e.get("requestId") == message["requestId"], timeout=60)
        arrivals = []
        for pipe in self.pipes:
            arrivals += [(t - start) * 1000 for t, _ in await asyncio.to_thread(pipe.recv)]
        return arrivals, mine[-1]

    def close(self):
        for pipe in self.pipes:
            pipe.send(None)
        for proc in self.procs:
            proc.join(30)


async def create_and_delete(cluster, repeat, send):
    """`repeat` + 1 rounds (the first warms up) of a create_cell, then a delete of that cell, each
    sent by `send(i, message)` -> (arrivals in ms at every socket, the event). Returns the arrivals
    per socket, the all-reached times, Daphne's CPU seconds and where its log stood after warm-up."""
    per_socket, all_reached, cell_id = [], [], None
    pids = [p.pid for p in cluster.daphnes]
    for i in range(repeat + 1):
        if i == 1:
            cpu, log_start = cpu_seconds(pids), log_size(cluster)
        if cell_id is None:
            message = {"type": "create_cell", "code": f"v{i} = {i}", "requestId": f"r{i}"}
        else:
            message = {"type": "delete_cell", "cellId": cell_id, "requestId": f"r{i}"}
        arrivals, event = await send(i, message)
        cell_id = event["cellId"] if event["type"] == "cell_created" else None
        if i:
            per_socket += arrivals
            all_reached.append(max(arrivals))
        await asyncio.sleep(PACE)
    return per_socket, all_reached, cpu_seconds(pids) - cpu, log_start


async def measure_remote(cluster, args, report, count):
    notebook_id = await cluster.anotebook(["a = 1"])
    sender = await cluster.client(notebook_id)
    remote = RemoteClients(cluster, notebook_id, count - 1, args.procs[0])
    await remote.ready()
    await asyncio.sleep(SETTLE)
    repeat = args.repeat or (2 if args.quick else 20)
    per_socket, all_reached, cpu, log_start = await create_and_delete(cluster, repeat, lambda i, message: remote.one_event(sender, message))
    report.row(f"{count} sockets: per socket", per_socket, note=f"{args.procs[0]} client processes")
    report.row(f"{count} sockets: all reached", all_reached, note=f"{args.procs[0]} client processes")
    daphne_cpu_row(report, cluster, count, cpu, repeat)
    server_rows(report, cluster, count, log_start)
    remote.close()
    await sender.close()


async def measure(cluster, args):
    report = Report(f"fanout ({len(cluster.urls)} Daphne)", await cluster.floor())
    for count in args.sockets:
        if args.procs[0]:
            await measure_remote(cluster, args, report, count)
            continue
        notebook_id = await cluster.anotebook(["a = 1"])
        clients = await cluster.clients(notebook_id, count)
        await asyncio.sleep(SETTLE)
        repeat = args.repeat or (2 if args.quick else 20)
        per_socket, all_reached, cpu, log_start = await create_and_delete(cluster, repeat, lambda i, message: one_event(clients[i % count], clients, message))
        report.row(f"{count} sockets: per socket", per_socket)
        report.row(f"{count} sockets: all reached", all_reached)
        daphne_cpu_row(report, cluster, count, cpu, repeat)
        server_rows(report, cluster, count, log_start)
        await asyncio.gather(*(c.close() for c in clients))


def main(argv=None):
    args = parse_args("One event's arrival at many sockets of one notebook.", argv, sockets="50,200,500", daphnes="1", procs="0")
    if args.quick:
        args.sockets = [3]
    os.environ["FANOUT_TIMING"] = "1"  # Daphne logs its side of each event (notebooks_app/fanout.py)
    with Cluster("fanout", daphnes=args.daphnes[0]) as cluster:
        asyncio.run(measure(cluster, args))


if __name__ == "__main__":
    sys.exit(main())
