"""Completion and inspection: the round trip of `complete` / `inspect` through the real protocol.

    .venv/bin/python -m bench.complete [--samples 200] [--quick]

One real WebSocket client (Daphne, the core channel layer, a `runworker` kernel worker with
the sandbox as configured, its execution process with jedi, the pub/sub layer back) on a notebook
whose first cell made a pandas DataFrame `df`.  Each figure is one request's send to its
answer's receipt, one at a time, after warm-up requests (the process loads jedi once).  Cases:
a live name, an attribute after a dot (`df.gro`), a module's attribute (`pd.read_cs`), a SQL
table and column (DuckDB and DataFrames), `inspect` inside a call, the `busy` answer while a
cell runs, and the static answer of a notebook with no execution process.

Floor, measured in the same run: one bare Redis PUBLISH -> SUBSCRIBE round trip (completion
commits nothing, so PostgreSQL is not on its path), and `sync` (socket -> worker -> socket
without the execution process) as the protocol's own round trip.  Budget: 100 ms on a warm kernel.
"""
import asyncio
import statistics
import sys
import time

from .harness import Cluster, Report, parse_args, summary

WARMUP = 5
BUDGET_MS = 100.0
SETUP = "import pandas as pd\nrevenue_by_month = 12\ndf = pd.DataFrame({'region': ['n', 's'], 'amount': [1, 2]})"
PYTHON_CASES = [
    ("name from the live namespace (`revenue_by`)", "complete", "x = 1\nrevenue_by", "revenue_by_month"),
    ("attribute after a dot (`df.gro`)", "complete", "df.gro", "groupby"),
    ("module attribute (`pd.read_cs`)", "complete", "pd.read_cs", "read_csv"),
    ("inspect inside a call (`df.groupby(`)", "inspect", "df.groupby(", "groupby("),
]
SQL_CASE = ("SQL column of a DataFrame (`SELECT reg FROM df`)", "complete", "SELECT reg FROM df", "region", 10)


class Asker:
    def __init__(self, client):
        self.client = client
        self.next_id = 0

    async def ask(self, **message):
        """(milliseconds, answer) of one request."""
        self.next_id += 1
        request_id = f"bench-{self.next_id}"
        start = time.perf_counter()
        await self.client.send(requestId=request_id, **message)
        seen = await self.client.wait_for(lambda e: e.get("requestId") == request_id)
        return (time.perf_counter() - start) * 1000, seen[-1]


def found(answer, expected):
    if answer["type"] == "completions":
        return any(item["label"] == expected for item in answer["items"])
    return answer["type"] == "inspection" and expected in (answer.get("signature") or "")


async def series(asker, samples, expected, **message):
    """`samples` timed requests after WARMUP untimed ones; every answer must hold `expected`."""
    out, ok = [], True
    for i in range(WARMUP + samples):
        elapsed, answer = await asker.ask(**message)
        ok = ok and found(answer, expected)
        if i >= WARMUP:
            out.append(elapsed)
    return out, ok


async def run_and_wait(client, cell_id):
    await client.send(type="run_cell", cellId=cell_id)
    await client.wait_for(lambda e: e.get("type") == "cell_status" and e.get("cellId") == cell_id and e["status"] in ("success", "error"), timeout=120)


async def measure(cluster, args):
    floor = await cluster.floor()
    redis_floor = floor["redis"]
    samples = args.repeat or args.samples[0]
    notebook_id = await cluster.anotebook([SETUP, "", "import time as clock\nclock.sleep(600)"])  # the last reads nothing of the first
    client = await cluster.client(notebook_id)
    cells = list(client.order)
    asker = Asker(client)
    sync_ms = []
    for i in range(WARMUP + samples):
        elapsed, _ = await asker.ask(type="sync")
        if i >= WARMUP:
            sync_ms.append(elapsed)
    report = Report(
        "complete: a completion or inspection round trip through the WebSocket protocol",
        None,
        floor_note=f"floor: Redis PUBLISH->SUBSCRIBE {redis_floor:.3f} ms (no PostgreSQL on the path); ratios are to it",
    )
    report.floor_total = redis_floor
    report.row("sync: socket -> worker -> socket, no execution process (the protocol's round trip)", sync_ms)
    # No execution process yet: the worker's static answer.
    static_ms, ok = await series(asker, samples, "revenue_by_month", type="complete", cellId=cells[1], code="revenue_by_month = 1\nrevenue_b", cursor=len("revenue_by_month = 1\nrevenue_b"))
    report.row("no execution process: static answer from the worker", static_ms)
    await run_and_wait(client, cells[0])
    assert not (await asker.ask(type="complete", cellId=cells[1], code="df.", cursor=3))[1].get("busy"), "the kernel is busy"
    results = {}
    for case, kind, code, expected in PYTHON_CASES:
        cursor = len(code)
        results[case], case_ok = await series(asker, samples, expected, type=kind, cellId=cells[1], code=code, cursor=cursor)
        ok = ok and case_ok
        report.row(f"{case}, warm kernel", results[case])
    _, created = await asker.ask(type="create_cell", cellType="sql", afterCellId=cells[1])
    case, kind, code, expected, cursor = SQL_CASE
    results[case], case_ok = await series(asker, samples, expected, type=kind, cellId=created["cellId"], code=code, cursor=cursor)
    ok = ok and case_ok
    report.row(f"{case}, warm kernel", results[case])
    await client.send(type="run_cell", cellId=cells[2])
    await client.wait_for(lambda e: e.get("type") == "cell_status" and e.get("cellId") == cells[2] and e["status"] == "running", timeout=60)
    busy_ms, busy_ok = await series(asker, samples, "revenue_by_month", type="complete", cellId=cells[1], code="revenue_by_month = 1\nrevenue_b", cursor=len("revenue_by_month = 1\nrevenue_b"))
    report.row("while a cell runs: busy, static answer from the execution process", busy_ms)
    await client.send(type="interrupt")
    await client.close()
    print(flush=True)
    for case, out in results.items():
        s = summary(out)
        verdict = "✓" if s["p99"] <= BUDGET_MS else "✗"
        print(f"verdict: {case}: p50 {s['median']:.2f} ms, p99 {s['p99']:.2f} ms = {s['median'] / redis_floor:.1f}x / {s['p99'] / redis_floor:.1f}x the floor; "
              f"p50 minus sync {s['median'] - statistics.median(sync_ms):.2f} ms; budget p99 <= {BUDGET_MS:.0f} ms: {verdict}", flush=True)
    print(f"answers: {'OK' if ok and busy_ok else 'FAIL'}", flush=True)
    return ok and busy_ok


def main(argv=None):
    args = parse_args("Completion and inspection round trips through the real protocol, against the floor.", argv, samples="200")
    if args.quick:
        args.samples = [10]
    with Cluster("complete") as cluster:
        ok = asyncio.run(measure(cluster, args))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
