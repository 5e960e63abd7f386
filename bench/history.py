"""History: what writing the `NotebookEvent` adds to an edit (issue 17: under 10 %).

    .venv/bin/python -m bench.history [--repeat R] [--history 0,100000] [--code 200,10000] [--quick]

Method: each operation (`operations.create_cell`, `update_cell`, `move_cell`, `delete_cell`)
is called in a loop in this process, synchronously, through the Django ORM on PostgreSQL,
exactly as the consumer calls it (its own transaction, the notebook row locked, its
on-commit send to the kernel channel on Redis), alternately

* **log on**: production code, untouched; and
* **log off**: the same call with `operations.record_event` and `operations.cell_snapshot`
  replaced, in this process only, by no-ops: the event's INSERT (or, for a coalesced edit,
  its SELECT + UPDATE) and the two neighbour SELECTs that build a created / deleted cell's
  snapshot (and a moved cell's old neighbour), which only the event uses.  Everything else in
  the transaction is the same code.

The cost of the log is median(on) - median(off); the ratio is that over median(off) (the
edit without its log), with a verdict per operation against the 10 % target.  A cross-check:
the time spent inside `record_event` and `cell_snapshot` during the log-on calls, as a share of
the call.  Edits come in two kinds: a new event (two cells edited in turn) and a coalesced
one (the same cell again within 60 s: the previous event's `after` is updated).  `--history`
pre-fills the notebook's log with that many old events, and as many of another notebook after
them, to show whether the coalescing SELECT stays cheap on a long log.

Then the end-to-end figure with the log on, from bench/crud.py (Daphne + runworker,
create_cell -> cell_created seen by the sender and one other client), and the log's cost
as a share of it.  The operations are timed after Daphne and the worker are stopped, so
nothing else competes with them (their kernel messages are queued in Redis and dropped after
each operation's block).
"""
import argparse
import asyncio
import re
import statistics
import sys
import time

from .harness import Cluster, Report, percentile, stop
from . import crud

TARGET = 0.10
CELLS = 50
MODES = ("on", "off")
OPERATIONS = ("create_cell", "update_cell (new event)", "update_cell (coalesced)", "move_cell", "delete_cell")


def p90(samples):
    return percentile(samples, 0.90)


class Switch:
    """Log on / off for the operations called in this process (production code untouched)."""

    def __init__(self):
        from notebooks_app import operations

        self.operations = operations
        self.record, self.snapshot = operations.record_event, operations.cell_snapshot
        # create_cell, delete_cell, update_cell (new code) and move_cell on PostgreSQL write their event in
        # the same statement (a `recorded` CTE, and for an edit a `coalesced` one that moves the
        # previous event on): log off is that statement without them.
        self.sql = {name: getattr(operations, name) for name in ("_CREATE_SQL", "_DELETE_SQL", "_UPDATE_SQL", "_MOVE_SQL")}
        self.sql_off = {name: re.sub(r"(recorded|coalesced) AS \(\n.*?\n\),\n", "", sql, count=2, flags=re.DOTALL) for name, sql in self.sql.items()}
        assert all(off != self.sql[name] for name, off in self.sql_off.items()), "no recorded CTE to switch off"
        self.inside = 0.0  # seconds spent in the log's work during the current call (log on)

    def _timed(self, function):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.inside += time.perf_counter() - start

        return timed

    def set(self, mode):
        if mode == "on":
            # The originals, wrapped in a timer (a perf_counter pair: well under a microsecond).
            self.operations.record_event = self._timed(self.record)
            self.operations.cell_snapshot = self._timed(self.snapshot)
            for name, sql in self.sql.items():
                setattr(self.operations, name, sql)
        else:
            self.operations.record_event = lambda *args, **kwargs: None
            self.operations.cell_snapshot = lambda notebook, cell: {"previous": None}
            for name, sql in self.sql_off.items():
                setattr(self.operations, name, sql)

    def restore(self):
        self.operations.record_event, self.operations.cell_snapshot = self.record, self.snapshot
        for name, sql in self.sql.items():
            setattr(self.operations, name, sql)


def code_of(i, size):
    head = f"v{i} = {i}\n"
    return head + "#" * max(0, size - len(head))


def fill_history(notebook_id, other_id, user_id, cell_id, count, code_size):
    """`count` old `edited` events of the notebook, then as many of another notebook."""
    from django.db import connection

    if not count:
        return
    body = '{"code": "' + "x" * code_size + '", "resultVariable": ""}'
    with connection.cursor() as cursor:
        for notebook in (notebook_id, other_id):
            cursor.execute(
                "INSERT INTO notebooks_app_notebookevent (notebook_id, user_id, created_at, kind, cell_id, before, after, is_undo, reverted) "
                "SELECT %s, %s, now() - interval '1 day' + g * interval '1 ms', 'edited', %s, %s::jsonb, %s::jsonb, false, false FROM generate_series(1, %s) g",
                [notebook, user_id, cell_id, body, body, count],
            )
        cursor.execute("ANALYZE notebooks_app_notebookevent")


def drop_kernel_messages():
    """The operations' on-commit messages to the kernel, queued in Redis with no worker to take
    them: dropped after each block so the queue stays under the layer's capacity (past it a send
    fails fast and the edits would get cheaper)."""
    import redis
    from channels.layers import get_channel_layer
    from django.conf import settings
    from notebooks_app.kernel_client import shard_channels

    layer = get_channel_layer()
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        client.delete(*[layer.prefix + channel for channel in shard_channels()])
    finally:
        client.close()


def events_of(notebook_id):
    from notebooks_app.models import NotebookEvent

    return NotebookEvent.objects.filter(notebook_id=notebook_id).count()


def last_event_select(notebook_id, samples):
    """The coalescing SELECT alone (`record`'s "last event of this notebook"), as it is when
    the notebook's newest event lies behind other notebooks' newer ones: ([ms], plan)."""
    from django.db import connection
    from notebooks_app.models import NotebookEvent

    query = NotebookEvent.objects.filter(notebook_id=notebook_id).order_by("-id").only("id", "user_id", "kind", "cell_id", "is_undo", "reverted", "reverts_id", "created_at")
    out = []
    for _ in range(samples):
        start = time.perf_counter()
        query.first()
        out.append((time.perf_counter() - start) * 1000)
    sql, params = query[:1].query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + sql, params)
        plan = " / ".join(row[0].strip() for row in cursor.fetchall()[:3])
    return out, plan


def measure_operations(cluster, repeat, warmup, history, code_size):
    """{operation: {mode: ([ms per call], [ms inside the log's work per call])}}; prints checks."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from notebooks_app import operations
    from notebooks_app.models import Cell

    user = cluster.user
    notebook_id = cluster.notebook([code_of(i, code_size) for i in range(CELLS)])
    other_id = cluster.notebook(name="history: another notebook's log")
    cells = [str(pk) for pk in Cell.objects.filter(notebook_id=notebook_id).order_by("position").values_list("id", flat=True)]
    fill_history(notebook_id, other_id, user.pk, cells[-1], history, code_size)
    idle = last_event_select(notebook_id, 20 if repeat < 50 else 100)
    switch = Switch()
    results = {op: {mode: ([], []) for mode in MODES} for op in OPERATIONS}
    queries = {op: {} for op in OPERATIONS}  # statements per call, counted on the last warm-up call
    created = []
    counter = iter(range(10**9))

    def call(op, mode, i):
        if op == "create_cell":
            created.append(str(operations.create_cell(notebook_id, user, code=code_of(next(counter), code_size)).pk))
        elif op == "update_cell (new event)":
            # Two cells in turn: the last event (of the log-on calls) is always the other cell's.
            operations.update_cell(notebook_id, user, cell_id=cells[i % 2], code=code_of(next(counter), code_size))
        elif op == "update_cell (coalesced)":
            operations.update_cell(notebook_id, user, cell_id=cells[2], code=code_of(next(counter), code_size))
        elif op == "move_cell":
            # Two places in turn, so every call moves the cell (to the same two positions).
            operations.move_cell(notebook_id, user, cell_id=cells[3], after_cell_id=cells[10 + next(counter) % 2 * 20])
        elif op == "delete_cell":
            operations.delete_cell(notebook_id, user, cell_id=created.pop())

    try:
        for op in OPERATIONS:
            before = events_of(notebook_id)
            for i in range(warmup + repeat):
                # Alternate which mode goes first, so drift on a busy machine hits both alike.
                for mode in MODES if i % 2 == 0 else MODES[::-1]:
                    switch.set(mode)
                    switch.inside = 0.0
                    if i == warmup - 1:
                        with CaptureQueriesContext(connection) as captured:
                            call(op, mode, i)
                        queries[op][mode] = len(captured)
                        continue
                    start = time.perf_counter()
                    call(op, mode, i)
                    elapsed = time.perf_counter() - start
                    if i >= warmup:
                        results[op][mode][0].append(elapsed * 1000)
                        results[op][mode][1].append(switch.inside * 1000)
            drop_kernel_messages()
            added = events_of(notebook_id) - before
            # One event per log-on call, except coalesced edits: one for the whole run.
            expected = 1 if op == "update_cell (coalesced)" else warmup + repeat
            print(f"check {op}: {added} events written by {warmup + repeat} log-on calls (expected {expected}): {'OK' if added == expected else 'FAIL'}", flush=True)
    finally:
        switch.restore()
    return results, queries, idle


def report_operations(results, queries, idle, floor, history, code_size):
    report = Report(
        f"history: each operation with the log on / off, {history} earlier events, {code_size}-byte code",
        floor,
        floor_note=None,
    )
    idle_samples, plan = idle
    report.row(f"the coalescing SELECT alone, the notebook's last event behind {history} of another notebook", idle_samples, note=f"plan: {plan}")
    costs = {}
    for op, modes in results.items():
        on, inside = modes["on"]
        off, _ = modes["off"]
        report.row(f"{op}, log on", on, note=f"p90 {p90(on):.3f} ms; in the log's work: median {statistics.median(inside):.3f} ms")
        report.row(f"{op}, log off", off, note=f"p90 {p90(off):.3f} ms")
        cost = statistics.median(on) - statistics.median(off)
        costs[op] = {
            "on": statistics.median(on),
            "on_p90": p90(on),
            "off": statistics.median(off),
            "off_p90": p90(off),
            "cost": cost,
            "ratio": cost / statistics.median(off),
            "inside": statistics.median(inside),
            "share": statistics.median([i / t for i, t in zip(inside, on)]),
            "queries": queries[op],
        }
    print("\n| operation | log on median / p90 | log off median / p90 | cost of the log (on - off) | ratio to the edit | inside the log's work, share of the call | SQL statements on / off |")
    print("|---|---|---|---|---|---|---|")
    for op, c in costs.items():
        print(f"| {op} | {c['on']:.3f} / {c['on_p90']:.3f} ms | {c['off']:.3f} / {c['off_p90']:.3f} ms | {c['cost']:.3f} ms | {c['ratio'] * 100:.1f} % | {c['inside']:.3f} ms, {c['share'] * 100:.1f} % | {c['queries'].get('on')} / {c['queries'].get('off')} |")
    sys.stdout.flush()
    return costs


def verdicts(all_costs, end_to_end):
    print("\n## verdicts (cost of the log = median log on - median log off, over log off)")
    for (history, code_size), costs in all_costs.items():
        for op, c in costs.items():
            mark = "✓" if c["ratio"] <= TARGET else "✗"
            print(f"verdict: {op}, {history} earlier events, {code_size}-byte code: log {c['cost']:.3f} ms / edit {c['off']:.3f} ms = {c['ratio'] * 100:.1f} %; target <= {TARGET * 100:.0f} %: {mark}")
    if end_to_end:
        costs = next(iter(all_costs.values()))
        cost = costs["create_cell"]["cost"]
        ratio = cost / end_to_end["median"]
        mark = "✓" if ratio <= TARGET else "✗"
        print(f"verdict: create_cell end to end (Daphne + runworker, log on): log {cost:.3f} ms / {end_to_end['median']:.3f} ms = {ratio * 100:.1f} %; target <= {TARGET * 100:.0f} %: {mark}")
    sys.stdout.flush()


def main(argv=None):
    parser = argparse.ArgumentParser(description="What the history log adds to an edit, log on vs off in one run.")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few repetitions (smoke test)")
    parser.add_argument("--repeat", type=int, default=None, help="measured calls per operation and mode")
    parser.add_argument("--history", default="0,100000", help="earlier events in the notebook's log, comma-separated (default 0,100000)")
    parser.add_argument("--code", default="200", help="bytes of code per cell, comma-separated (default 200; 10000 shows a big cell)")
    parser.add_argument("--no-stack", action="store_true", help="skip the end-to-end create_cell through Daphne + runworker")
    args = parser.parse_args(argv)
    histories = [int(x) for x in args.history.split(",") if x]
    code_sizes = [int(x) for x in args.code.split(",") if x]
    if args.quick:
        histories, code_sizes = [0, 500], [200]
    repeat = args.repeat or (5 if args.quick else 100)
    warmup = 2 if args.quick else 10
    with Cluster("history") as cluster:
        end_to_end = None
        if not args.no_stack:
            crud_args = argparse.Namespace(others=[1], repeat=repeat if args.quick else 100, quick=args.quick, full_only=True)
            end_to_end = asyncio.run(crud.measure(cluster, crud_args))[1][0]
        # Nothing else running while the operations are timed.
        for proc in cluster.daphnes + cluster.workers:
            stop(proc)
        cluster.daphnes, cluster.workers = [], []
        floor = asyncio.run(cluster.floor())
        all_costs = {}
        for history in histories:
            for code_size in code_sizes:
                results, queries, idle = measure_operations(cluster, repeat, warmup, history, code_size)
                all_costs[(history, code_size)] = report_operations(results, queries, idle, floor, history, code_size)
        verdicts(all_costs, end_to_end)


if __name__ == "__main__":
    sys.exit(main())
