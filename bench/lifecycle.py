"""Kernel lifecycle and fleet (docs/operations.md, "Kernel lifecycle"; notebooks_app/kernel/fleet.py):
what a CPU hog costs a collaborator, what starting a stopped notebook costs, how long a failover
takes, and what 1, 2 and 4 kernel workers carry.

    .venv/bin/python -m bench.lifecycle [--quick] [--repeat R] [--notebooks 16] [--workers 1,2,4] [--parts 1,2,3,4]

One cluster (Daphne + `runworker kernel` processes of one fleet on PostgreSQL + Redis, real
WebSocket clients).  Parts 1 and 2 run on four workers started with the cluster: 0 with
KERNEL_NICE=10 (the default), 1 with KERNEL_NICE=0, 2 with KERNEL_IDLE_MINUTES=0.05, 3 with
KERNEL_NICE=10 whose execution processes the bench also writes an autogroup nice of 10 to (a
control: the server does it itself now, lifecycle.deprioritize); a
notebook is put on a worker by its shard (Cluster.notebook_on_worker).  Parts 3 and 4 replace
them.

1. **CPU hog vs. a collaborator**: notebook A runs a cell that forks 4 processes spinning
   `while time.time() < end: pass` for a few seconds inside its sandbox, while on notebook B (same
   worker) another client creates and deletes a cell and runs a tiny one, a message every 50 ms.
   Floor: the same edits and runs on B with A idle, in rounds alternating with the hog's; the
   three settings (workers 0, 1 and 3) are interleaved too, so all see the same host.  On a
   kernel with sched_autogroup_enabled=1 (this one) a process's nice counts only within its
   autogroup (its session), and every execution process has a session of its own: the server
   gives those sessions KERNEL_NICE as their autogroup nice (first measured without it: 1.4x
   the edit latency, nice or not), and the third setting, the bench writing it too, is the control.
2. **Start of a stopped notebook** (worker 2): from `run_cell` on a notebook whose kernel stopped
   for idleness (`kernel_status` stopped / idle heard) until the cell's `success`, its one stale
   ancestor rerun first.  Floor: the same two cells on the warm kernel (run_cell on the ancestor,
   which reruns the cell) 0.3 s later, alternating.
3. **Failover** (two workers, KERNEL_LEASE_SECONDS=2 for them and for Daphne): SIGKILL the
   worker holding a notebook's shard, send run_cell at once and again once the killed process has
   exited; time from the kill until the cell succeeds again (on the other worker, in a new
   process, its stale ancestor rerun).  The notebook's run journal says afterwards which of the
   two runs ran.  The killed worker is started again and the fleet rebalanced before each round.
4. **Throughput** with 1, 2 and 4 workers (KERNEL_USER_MAX=0: every notebook is the bench
   user's): 16 notebooks, a client each, all looping (cell_update + run_cell of a tiny cell) at
   once; edits/s and runs/s, and the CPU each kind of process used meanwhile (psutil), to show
   what limits it.

A new execution process loads jedi on its main thread once it has been idle 1 s (1 - 2 s of CPU,
notebooks_app/kernel/_child.py), and a command sent meanwhile waits for it: the parts wait for
that to be over (CpuMeter.quiet) before they measure.  Like every benchmark this one prints and
never fails on a number.
"""
import asyncio
import contextlib
import os
import signal
import statistics
import sys
import time
import uuid

import psutil

from .harness import LOG_DIR, Cluster, Report, clients_without_gc, parse_args, percentile, start_worker, stop
from tests.client import NotebookClient

PACE = 0.05  # seconds between a collaborator's messages (part 1)
HOGS = 4  # processes spinning in notebook A
LEASE_FAILOVER = 2  # KERNEL_LEASE_SECONDS of part 3's workers and of Daphne
LEASE_DEFAULT = 5  # the other parts' workers: the default
IDLE_MINUTES = 0.05  # part 2's workers: 3 s (its tick is 0.75 s)
FINAL = ("success", "error")
WARM_UP_AFTER_IDLE = 1.0  # notebooks_app/kernel/_child.py: jedi loads after this long without a command


def ms_since(start):
    return (time.perf_counter() - start) * 1000


def p95(samples):
    return percentile(samples, 0.95)


def alternating(rounds, modes):
    for index in range(rounds):
        for mode in modes if index % 2 == 0 else modes[::-1]:
            yield index, mode


def cell_ids_of(notebook_id):
    from notebooks_app.models import Cell

    return [str(pk) for pk in Cell.objects.filter(notebook_id=notebook_id).order_by("position").values_list("pk", flat=True)]


async def cell_ids(notebook_id):
    return await asyncio.to_thread(cell_ids_of, notebook_id)


async def run_until(client, cell_id, timeout=60, wait_for=None):
    """run_cell on `cell_id`; (ms until the final status of `wait_for` (default: that cell), ids
    of the cells that ran, in order)."""
    ran, last = [], wait_for or cell_id

    def done(event):
        if event["type"] == "cell_status" and event["status"] == "running":
            ran.append(event["cellId"])
        return event["type"] == "cell_status" and event.get("cellId") == last and event["status"] in FINAL

    start = time.perf_counter()
    await client.send(type="run_cell", cellId=cell_id)
    seen = await client.wait_for(done, timeout=timeout, what=f"{last} to finish")
    elapsed = ms_since(start)
    if seen[-1]["status"] != "success":
        raise RuntimeError(f"the cell failed: {client.state.get(last, {}).get('error')}")
    return elapsed, ran


# --- processes and their CPU ----------------------------------------------------------------


class CpuMeter:
    """CPU seconds per kind of process of the cluster (psutil), and the machine's, over a window."""

    GROUPS = ("Daphne", "kernel workers", "execution processes", "PostgreSQL", "Redis", "bench clients")

    def __init__(self, cluster):
        self.cluster = cluster
        self.postmaster = None
        pidfile = cluster.services.tmp / "pg" / "postmaster.pid"
        try:
            self.postmaster = int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # DATABASE_URL given: not ours to measure

    def processes(self):
        found = {}

        def add(group, proc):
            try:
                found[(proc.pid, proc.create_time())] = (group, proc)
            except psutil.Error:
                pass

        def tree(group, pid, children_group=None):
            try:
                root = psutil.Process(pid)
                add(group, root)
                for child in root.children(recursive=True):
                    add(children_group or group, child)
            except psutil.Error:
                pass

        for proc in self.cluster.daphnes:
            tree("Daphne", proc.pid)
        for proc in self.cluster.workers:
            if proc.poll() is None:
                tree("kernel workers", proc.pid, "execution processes")
        if self.postmaster:
            tree("PostgreSQL", self.postmaster)
        for proc in self.cluster.services.procs:
            tree("Redis", proc.pid)
        add("bench clients", psutil.Process(os.getpid()))
        return found

    @staticmethod
    def nices_under(worker):
        """The nice values of a worker's execution processes (its descendants) now."""
        out = set()
        try:
            for proc in psutil.Process(worker.pid).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    out.add(proc.nice())
        except psutil.Error:
            pass
        return out

    def snapshot(self):
        times = {}
        for key, (group, proc) in self.processes().items():
            try:
                t = proc.cpu_times()
                times[key] = (group, t.user + t.system)
            except psutil.Error:
                pass
        m = psutil.cpu_times()
        busy = m.user + m.nice + m.system + getattr(m, "irq", 0) + getattr(m, "softirq", 0) + getattr(m, "steal", 0)
        return times, busy, time.perf_counter()

    @staticmethod
    def usage(before, after):
        """({group: cores used}, the machine's busy cores, seconds) between two snapshots."""
        (t0, busy0, w0), (t1, busy1, w1) = before, after
        wall = max(w1 - w0, 1e-9)
        cores = dict.fromkeys(CpuMeter.GROUPS, 0.0)
        for key, (group, seconds) in t1.items():
            cores[group] += (seconds - t0.get(key, (group, 0.0))[1]) / wall  # new since: all of it
        return cores, (busy1 - busy0) / wall, wall

    async def quiet(self, group="execution processes", below=0.1, window=0.5, timeout=30, settle=WARM_UP_AFTER_IDLE + 0.2):
        """After `settle` s, until `group` uses less than `below` cores over `window` s: a new
        execution process loads jedi for completion on its main thread once it has been idle
        1 s (_child.warm_up_completion: 1 - 2 s of CPU, more on a busy host), and a command sent
        meanwhile waits for it; seconds waited."""
        start = time.perf_counter()
        await asyncio.sleep(settle)
        while time.perf_counter() - start < timeout:
            before = await asyncio.to_thread(self.snapshot)
            await asyncio.sleep(window)
            cores, _, _ = self.usage(before, await asyncio.to_thread(self.snapshot))
            if cores[group] < below:
                break
        return time.perf_counter() - start


# --- the cluster's workers ---------------------------------------------------------------------


async def replace_workers(cluster, envs, tag):
    """Stop every kernel worker (SIGTERM: they hand their shards over) and start one per entry of
    `envs` (extra environment), at once; returns when they share the shards."""
    from django.conf import settings

    old, cluster.workers = list(cluster.workers), []
    try:
        await asyncio.gather(*(asyncio.to_thread(stop, proc) for proc in old))
    except BaseException:
        cluster.workers.extend(old)  # stopped at the end with the rest
        raise

    def one(index, extra):
        return start_worker([settings.KERNEL_FLEET], {**cluster.env, **extra}, LOG_DIR / f"bench-{cluster.name}-{tag}-worker-{index}.log")

    started = await asyncio.gather(*(asyncio.to_thread(one, i, extra) for i, extra in enumerate(envs)), return_exceptions=True)
    cluster.workers.extend(proc for proc in started if not isinstance(proc, BaseException))
    for outcome in started:
        if isinstance(outcome, BaseException):
            raise outcome
    await asyncio.to_thread(cluster.wait_balanced)


async def restart_worker(cluster, index, extra, tag):
    from django.conf import settings

    log = LOG_DIR / f"bench-{cluster.name}-{tag}-worker-{index}.log"
    cluster.workers[index] = await asyncio.to_thread(start_worker, [settings.KERNEL_FLEET], {**cluster.env, **extra}, log)


# --- 1. a CPU hog and a collaborator ------------------------------------------------------------


def hog_cells(seconds):
    """A's cells: the hog's definition, and its call (what a hog round runs)."""
    return [
        "import os, time\n"
        "def hog(seconds, processes):\n"
        "    end = time.time() + seconds\n"
        "    children = []\n"
        "    for _ in range(processes):\n"
        "        pid = os.fork()\n"
        "        if pid == 0:\n"
        "            while time.time() < end:\n"
        "                pass\n"
        "            os._exit(0)\n"
        "        children.append(pid)\n"
        "    for pid in children:\n"
        "        os.waitpid(pid, 0)\n"
        "    return len(children)\n",
        f"hog({seconds!r}, {HOGS})",
    ]


async def edit(client, **message):
    """One edit with a fresh requestId: (ms until its first announcement, early or not; ms until
    the kernel worker's, in seq order; that event)."""
    rid = f"e-{uuid.uuid4().hex[:10]}"
    start = time.perf_counter()
    await client.send(requestId=rid, **message)
    first = None
    while True:
        event = await client.next(30)
        if event.get("requestId") != rid:
            continue
        if event["type"] == "error":
            raise RuntimeError(f"{message['type']} refused: {event}")
        elapsed = ms_since(start)
        first = first if first is not None else elapsed
        if not event.get("early"):
            return first, elapsed, event


async def collaborator(client, tiny, *, count=None, until=None, samples):
    """create_cell, delete_cell, run of the tiny cell, one message every PACE s: `count` times, or
    while perf_counter() < `until`; returns how many."""
    done = 0
    while (count is not None and done < count) or (count is None and time.perf_counter() < until):
        first, confirmed, created = await edit(client, type="create_cell", code=f"v_{done} = {done}")
        samples["edit first"].append(first)
        samples["edit confirmed"].append(confirmed)
        await asyncio.sleep(PACE)
        first, confirmed, _ = await edit(client, type="delete_cell", cellId=created["cellId"])
        samples["edit first"].append(first)
        samples["edit confirmed"].append(confirmed)
        await asyncio.sleep(PACE)
        elapsed, _ = await run_until(client, tiny)
        samples["run"].append(elapsed)
        await asyncio.sleep(PACE)
        done += 1
    return done


IDLE_WORKER = 2  # the worker with KERNEL_IDLE_MINUTES=IDLE_MINUTES (part 2)
FIRST_WORKERS = [  # parts 1 and 2; parts 3 and 4 replace them
    {"KERNEL_NICE": "10", "KERNEL_LEASE_SECONDS": str(LEASE_DEFAULT)},
    {"KERNEL_NICE": "0", "KERNEL_LEASE_SECONDS": str(LEASE_DEFAULT)},
    {"KERNEL_IDLE_MINUTES": str(IDLE_MINUTES), "KERNEL_LEASE_SECONDS": str(LEASE_DEFAULT)},
    {"KERNEL_NICE": "10", "KERNEL_LEASE_SECONDS": str(LEASE_DEFAULT)},
]
# Part 1's settings: (label, worker, the bench also sets the execution processes' autogroup nice)
HOG_SETUPS = (
    ("KERNEL_NICE=10 (default)", 0, None),
    ("KERNEL_NICE=0", 1, None),
    ("KERNEL_NICE=10 + autogroup nice 10", 3, 10),
)


def autogroups_under(worker, nice=None):
    """The scheduler autogroups (/proc/<pid>/autogroup) of a worker's execution processes, each as
    'nice N'; with `nice`, set that first (Linux with CONFIG_SCHED_AUTOGROUP: a session of its own
    is an autogroup, and a process's nice counts only within its autogroup)."""
    seen = set()
    try:
        children = psutil.Process(worker.pid).children(recursive=True)
    except psutil.Error:
        return seen
    for proc in children:
        path = f"/proc/{proc.pid}/autogroup"
        try:
            if nice is not None:
                with open(path, "w") as f:
                    f.write(str(nice))
            with open(path) as f:
                seen.add(f.read().split(" ", 1)[1].strip())
        except (OSError, IndexError):
            pass
    return seen


async def part_hog(cluster, meter, args):
    """Per setting of HOG_SETUPS a worker serves a notebook A (the hog) and B (the collaborator's);
    rounds interleave the settings and, within each, hog on and off."""
    seconds = 2.0 if args.quick else 4.0
    rounds = args.repeat or (1 if args.quick else 6)
    setups = {}
    try:
        for label, index, group_nice in HOG_SETUPS:
            a_id = await asyncio.to_thread(cluster.notebook_on_worker, hog_cells(seconds), index)
            b_id = await asyncio.to_thread(cluster.notebook_on_worker, ["1 + 1"], index)
            (definition, hog), (tiny,) = await cell_ids(a_id), await cell_ids(b_id)
            a, b = await cluster.client(a_id), await cluster.client(b_id)
            setups[label] = setup = {"a": a, "b": b, "hog": hog, "tiny": tiny, "worker": index, "count": None, "cpu": [], "nices": set(), "groups": set(),
                                     "on": {"edit first": [], "edit confirmed": [], "run": []}, "off": {"edit first": [], "edit confirmed": [], "run": []}}
            await run_until(a, definition)  # A's process started, the hog defined
            await run_until(b, tiny)
            if group_nice is not None:  # the hog's forks inherit it (same session)
                setup["groups"] = await asyncio.to_thread(autogroups_under, cluster.workers[index], group_nice)
        await meter.quiet(timeout=5 if args.quick else 60)
        with clients_without_gc():
            for round_ in range(rounds):
                order = [label for label, _, _ in HOG_SETUPS]
                order = order[round_ % len(order):] + order[: round_ % len(order)]
                for label in order:
                    setup = setups[label]
                    a, b, hog, tiny = setup["a"], setup["b"], setup["hog"], setup["tiny"]
                    for mode in ("on", "off") if round_ % 2 == 0 else ("off", "on"):
                        if mode == "off":
                            await collaborator(b, tiny, count=setup["count"] or max(3, int(seconds / (4 * PACE))), samples=setup["off"])
                            continue
                        start = time.perf_counter()
                        await a.send(type="run_cell", cellId=hog)
                        await a.wait_status(hog, "running")
                        await asyncio.sleep(0.3)  # its processes forked and spinning
                        before = await asyncio.to_thread(meter.snapshot)
                        n = await collaborator(b, tiny, until=start + seconds - 0.3, samples=setup["on"])
                        cores, machine_cores, _ = meter.usage(before, await asyncio.to_thread(meter.snapshot))
                        setup["cpu"].append((cores["execution processes"], machine_cores - sum(cores.values())))
                        setup["nices"].update(await asyncio.to_thread(meter.nices_under, cluster.workers[setup["worker"]]))
                        setup["groups"].update(await asyncio.to_thread(autogroups_under, cluster.workers[setup["worker"]]))
                        await a.wait_for(lambda e, hog=hog: e["type"] == "cell_status" and e.get("cellId") == hog and e["status"] in FINAL, timeout=60)
                        if a.state[hog]["status"] != "success" or [o.get("data") for o in a.state[hog]["outputs"]] != [str(HOGS)]:
                            raise RuntimeError(f"the hog failed: {a.state[hog].get('error') or a.state[hog]['outputs']}")
                        setup["count"] = setup["count"] or n
                        await meter.quiet(settle=0.3, timeout=3)  # the hog's processes gone
    finally:
        for setup in setups.values():
            await setup["a"].close()
            await setup["b"].close()

    report = Report(
        f"Lifecycle 1: notebook A's CPU hog ({HOGS} processes spinning {seconds:g} s) vs. a collaborator's edits and runs on notebook B, both on one worker",
        await cluster.floor(samples=50 if args.quick else 200),
        paced_floor=await cluster.floor(samples=20 if args.quick else 100, pace=PACE),
    )
    print(f"floor of B's figures: the same edits and runs with A idle, rounds alternating with the hog's; the settings below interleaved (a worker each); messages every {PACE * 1000:.0f} ms")
    print("`edit first`: the first announcement of a create_cell / delete_cell (Daphne's early one, or the worker's if sooner); `edit confirmed`: the worker's, in seq order")
    print("`autogroup nice 10`: the bench writes 10 to /proc/<pid>/autogroup of that worker's execution processes as well (the server writes KERNEL_NICE there itself)\n", flush=True)
    lines = []
    for label, _, _ in HOG_SETUPS:
        setup = setups[label]
        on, off = setup["on"], setup["off"]
        for key, what in (("edit first", "edit, first announcement"), ("edit confirmed", "edit, confirmed by the worker"), ("run", "run of a tiny cell -> success")):
            s_on = report.row(f"{what}, hog on, {label}", on[key], note=f"p95 {p95(on[key]):.2f} ms")
            s_off = report.row(f"{what}, hog off (floor), {label}", off[key], note=f"p95 {p95(off[key]):.2f} ms")
            lines.append(
                f"{label}: {what}: hog on / off = median {s_on['median'] / s_off['median']:.1f}x "
                f"({s_on['median']:.1f} / {s_off['median']:.1f} ms), p95 {p95(on[key]) / p95(off[key]):.1f}x ({p95(on[key]):.1f} / {p95(off[key]):.1f} ms)"
            )
        lines.append(
            f"{label}: while B was measured the hog's processes used {statistics.mean(c for c, _ in setup['cpu']):.2f} of {os.cpu_count()} cores "
            f"(execution processes at nice {', '.join(map(str, sorted(setup['nices'])))}, in autogroups with {', '.join(sorted(setup['groups'])) or '?'}); "
            f"processes not of this benchmark {statistics.mean(o for _, o in setup['cpu']):.2f}"
        )
    print()
    for line in lines:
        print(line)
    try:
        enabled = open("/proc/sys/kernel/sched_autogroup_enabled").read().strip() == "1"
    except OSError:
        enabled = False
    if enabled:
        print("this kernel has sched_autogroup_enabled=1: each execution process runs in a session, so an autogroup, of its own; "
              "a nice weighs only within its group, so the server gives those groups KERNEL_NICE (KERNEL_NICE=0: none)")
    sys.stdout.flush()


# --- 2. start of a stopped notebook -------------------------------------------------------------


def stopped_idle(event):
    return event["type"] == "kernel_status" and event["state"] == "stopped" and event.get("cause") == "idle"


async def part_start(cluster, meter, args):
    rounds = args.repeat or (2 if args.quick else 8)
    notebook_id = await asyncio.to_thread(cluster.notebook_on_worker, ["x = 21", "x * 2"], IDLE_WORKER)
    ancestor, cell = await cell_ids(notebook_id)
    client = await cluster.client(notebook_id)
    cold, warm, skipped, wrong = [], [], 0, []
    try:
        await run_until(client, cell)
        for _ in range(rounds):
            idle_from = time.perf_counter()
            await client.wait_for(stopped_idle, timeout=30, what="kernel_status stopped (idle)")
            waited = time.perf_counter() - idle_from
            # cold: the process was stopped; the run starts it and reruns the stale ancestor
            start = time.perf_counter()
            await client.send(type="run_cell", cellId=cell)
            ran = []

            def done(event):
                if event["type"] == "cell_status" and event["status"] == "running":
                    ran.append(event["cellId"])
                return event["type"] == "cell_status" and event.get("cellId") == cell and event["status"] in FINAL

            await client.wait_for(done, timeout=60, what="the cold run")
            cold.append(ms_since(start))
            if ran != [ancestor, cell] or client.state[cell]["status"] != "success":
                wrong.append(f"cold run ran {ran}, status {client.state[cell]['status']}")
            # warm, the floor: the same two cells on the live process, 0.3 s later (before it
            # begins loading jedi, which it does after 1 s without a command)
            await asyncio.sleep(0.3)
            if client.kernel and client.kernel.get("state") != "running":
                skipped += 1  # stopped meanwhile: not a warm run
                continue
            elapsed, ran = await run_until(client, ancestor, wait_for=cell)
            if ran != [ancestor, cell]:
                wrong.append(f"warm run ran {ran}")
            warm.append(elapsed)
    finally:
        await client.close()
    report = Report(
        "Lifecycle 2: run_cell on a notebook whose kernel stopped for idleness -> the cell's success (its stale ancestor rerun)",
        None,
        floor_note=f"floor: the same two cells run on the warm kernel (run_cell on the ancestor, 0.3 s after the cold run), alternating; KERNEL_IDLE_MINUTES={IDLE_MINUTES} (the last stop was heard {waited:.1f} s after that run)",
    )
    s_cold = report.row("stopped kernel: run_cell -> success (start + 2 cells)", cold)
    s_warm = report.row("warm kernel (floor): run_cell -> success (2 cells)", warm)
    print(f"\nstart of a stopped notebook: {s_cold['median']:.0f} ms median vs {s_warm['median']:.0f} ms warm = {s_cold['median'] / s_warm['median']:.1f}x; the start adds {s_cold['median'] - s_warm['median']:.0f} ms")
    if skipped:
        print(f"({skipped} warm sample(s) skipped: the kernel had stopped before the warm run)")
    for line in wrong:
        print(f"WRONG: {line}")
    sys.stdout.flush()


# --- 3. failover -----------------------------------------------------------------------------


def shard_owner(notebook_id):
    from django.conf import settings

    from notebooks_app.kernel.addresses import shard_of
    from notebooks_app.models import KernelLease

    lease = KernelLease.objects.filter(fleet=settings.KERNEL_FLEET, shard=shard_of(notebook_id, settings.KERNEL_VSHARDS)).values_list("owner", "epoch").first()
    return tuple(lease) if lease else None


async def watch_owner(notebook_id, before, start, result):
    """Polls the notebook's shard lease until its owner changes: ms after `start`."""
    while True:
        now = await asyncio.to_thread(shard_owner, notebook_id)
        if now and now != before and now[0]:
            result.append(ms_since(start))
            return
        await asyncio.sleep(0.02)


def journal_of(notebook_id):
    from notebooks_app.models import Notebook

    return Notebook.objects.filter(pk=notebook_id).values_list("run_journal", flat=True).first() or {}


async def journal_after(notebook_id, request_id, timeout=5):
    """The notebook's run journal (in the database) once it says `request_id` finished, or after
    `timeout` s: (ids done, ids pending)."""
    deadline = time.monotonic() + timeout
    while True:
        journal = await asyncio.to_thread(journal_of, notebook_id)
        done = list(journal.get("done") or [])
        pending = [entry.get("id") for entry in journal.get("pending") or []]
        if request_id in done or time.monotonic() > deadline:
            return done, pending
        await asyncio.sleep(0.1)


async def part_failover(cluster, meter, args):
    """Per round: SIGKILL the worker holding a notebook's shard; run_cell `at-kill` at once, and
    `after-exit` once the killed process is gone (waited for: ~50 ms); time from the kill until
    the cell succeeds again, whichever run did it; then whether each run ran, from the notebook's
    run journal (the request ids it finished)."""
    rounds = args.repeat or (1 if args.quick else 5)
    env = {"KERNEL_LEASE_SECONDS": str(LEASE_FAILOVER)}
    await replace_workers(cluster, [env, env], "failover")
    answered, taken, told, exited, problems, lost, stuck = [], [], [], [], [], [], []
    for round_ in range(rounds):
        victim = round_ % 2
        notebook_id = await asyncio.to_thread(cluster.notebook_on_worker, ["x = 1", "import uuid\nuuid.uuid4().hex + str(x)"], victim)
        ancestor, cell = await cell_ids(notebook_id)
        client = await NotebookClient(notebook_id, cluster.cookies[0], server=cluster.urls[0], batch=True, resync_on_gap=True, timeout=60).connect()
        try:
            await run_until(client, cell)
            before_output = client.state[cell]["outputs"]
            owner = await asyncio.to_thread(shard_owner, notebook_id)
            await meter.quiet(timeout=2 if args.quick else 10)
            proc = cluster.workers[victim]
            os.killpg(proc.pid, signal.SIGKILL)
            start = time.perf_counter()
            at_kill, after_exit = f"at-kill-{round_}", f"after-exit-{round_}"
            await client.send(type="run_cell", cellId=cell, requestId=at_kill)
            watcher = asyncio.create_task(watch_owner(notebook_id, owner, start, taken))
            await asyncio.to_thread(proc.wait, 10)
            exited.append(ms_since(start))
            await client.send(type="run_cell", cellId=cell, requestId=after_exit)
            first = None

            def answered_again(_event):
                nonlocal first
                first = first if first is not None else ms_since(start)
                c = client.state.get(cell) or {}
                return c.get("status") == "success" and c.get("outputs") != before_output

            try:
                await client.wait_for(answered_again, timeout=60, what="the cell to succeed again after the kill")
                answered.append(ms_since(start))
                told.append(first)
            except AssertionError as exc:
                problems.append(f"round {round_ + 1}: no success within 60 s of the kill ({str(exc)[:300]})")
            try:
                await asyncio.wait_for(watcher, 30)
            except asyncio.TimeoutError:
                problems.append(f"round {round_ + 1}: the shard's lease did not change owner within 30 s of the kill")
            done, pending = await journal_after(notebook_id, after_exit)
            if after_exit not in done:
                stuck.append(f"round {round_ + 1}: the cell succeeded, yet 5 s later the run journal in the database says done {done}, pending {pending}")
            if at_kill not in done and at_kill not in pending:
                lost.append(round_ + 1)
        finally:
            await client.close()
        await restart_worker(cluster, victim, env, "failover")
        await asyncio.to_thread(cluster.wait_balanced)
    report = Report(
        "Lifecycle 3: failover, 2 workers: SIGKILL of the worker holding a notebook's shard -> the notebook answers again",
        None,
        floor_note=f"floor: the lease, KERNEL_LEASE_SECONDS={LEASE_FAILOVER} ({LEASE_FAILOVER * 1000} ms): the least a failover waits before another worker may take the shard",
    )
    report.row("kill -> the killed process has exited (waitpid)", exited)
    if told:
        report.row("kill -> the page hears something (the new owner's state: kernel stopped, failover)", told)
    if taken:
        report.row("kill -> the other worker holds the shard (lease polled every 20 ms)", taken)
    if answered:
        s = report.row("kill -> the cell succeeds again (new process, its ancestor rerun)", answered)
        print(f"\nfailover: median {s['median'] / 1000:.2f} s, max {s['max'] / 1000:.2f} s over {s['n']} kills; lease {LEASE_FAILOVER} s ({s['median'] / (LEASE_FAILOVER * 1000):.2f}x the lease at the median)")
    print(
        f"run_cell sent right at the kill (before the killed process had exited): lost in {len(lost)} of {rounds} rounds"
        + (f" ({', '.join(map(str, lost))}): never run by anyone, no event, not in the run journal, not left in Redis: presumably Redis handed it to the dying worker's BZPOPMIN" if lost else "")
    )
    print(f"run journal: the run that answered still pending in the database after it finished in {len(stuck)} of {rounds} rounds" + (" (the next owner of the shard, even after a clean hand-over, runs it again):" if stuck else ""))
    for line in stuck:
        print(f"  {line}")
    for line in problems:
        print(f"PROBLEM: {line}")
    sys.stdout.flush()


# --- 4. throughput -----------------------------------------------------------------------------


async def loop(client, cell, rounds, edits, runs):
    for i in range(rounds):
        start = time.perf_counter()
        rid = f"u-{uuid.uuid4().hex[:10]}"
        await client.send(type="cell_update", cellId=cell, code=f"t = {i + 1}", requestId=rid)
        seen = await client.wait_for(lambda e: e.get("requestId") == rid and not e.get("early"), what="cell_updated")
        if seen[-1]["type"] not in ("cell_updated", "applied", "notebook_state"):
            raise RuntimeError(f"cell_update answered with {seen[-1]}")
        edits.append(ms_since(start))
        elapsed, _ = await run_until(client, cell)
        runs.append(elapsed)


async def part_throughput(cluster, meter, args):
    notebooks = args.notebooks[0]
    rounds = args.repeat or (3 if args.quick else 20)
    ids = [await cluster.anotebook(["t = 0"], name=f"throughput {i}") for i in range(notebooks)]
    cells = [(await cell_ids(notebook_id))[0] for notebook_id in ids]
    results = []
    for workers in args.workers:
        env = {"KERNEL_USER_MAX": "0", "KERNEL_LEASE_SECONDS": str(LEASE_DEFAULT)}
        await replace_workers(cluster, [env] * workers, f"throughput{workers}")
        clients = await asyncio.gather(*(cluster.client(notebook_id) for notebook_id in ids))
        try:
            await asyncio.gather(*(run_until(c, cell, timeout=120) for c, cell in zip(clients, cells)))  # each starts its process
            await meter.quiet(timeout=10 if args.quick else 90)  # and loads jedi once idle
            edits, runs = [], []
            with clients_without_gc():
                before = await asyncio.to_thread(meter.snapshot)
                start = time.perf_counter()
                await asyncio.gather(*(loop(c, cell, rounds, edits, runs) for c, cell in zip(clients, cells)))
                wall = time.perf_counter() - start
                cores, machine_cores, _ = meter.usage(before, await asyncio.to_thread(meter.snapshot))
        finally:
            await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        results.append((workers, len(edits) / wall, len(runs) / wall, wall, edits, runs, cores, machine_cores))

    report = Report(
        f"Lifecycle 4: throughput, {notebooks} notebooks with a client each, all looping (cell_update -> cell_updated, run_cell -> success) {rounds} times",
        None,
        floor_note="floor: none; per-operation latencies under that load, and the CPU each kind of process used",
    )
    for workers, eps, rps, wall, edits, runs, cores, machine_cores in results:
        report.row(f"{workers} worker(s): cell_update -> cell_updated", edits, note=f"p95 {p95(edits):.1f} ms")
        report.row(f"{workers} worker(s): run_cell -> success", runs, note=f"p95 {p95(runs):.1f} ms")
    print()
    ncpu = os.cpu_count()
    for workers, eps, rps, wall, edits, runs, cores, machine_cores in results:
        ours = sum(cores.values())
        parts = ", ".join(f"{group} {cores[group]:.2f}" for group in CpuMeter.GROUPS)
        per = ", ".join(f"{group} {cores[group] * wall * 1000 / len(runs):.1f}" for group in CpuMeter.GROUPS)
        print(f"{workers} worker(s): {eps:.1f} edits/s + {rps:.1f} runs/s ({len(edits)} of each in {wall:.1f} s)")
        print(f"    cores used: {parts}; the benchmark's total {ours:.2f}, the machine's {machine_cores:.2f} of {ncpu} (other processes on the host {max(0.0, machine_cores - ours):.2f})")
        print(f"    CPU ms per (edit + run): {per}; total {ours * wall * 1000 / len(runs):.1f}")
    # what limits it, from the figures
    workers, eps, rps, wall, edits, runs, cores, machine_cores = results[-1]
    first = results[0]
    ours = sum(cores.values())
    top = sorted(((v, g) for g, v in cores.items()), reverse=True)
    print(
        f"\nlimit: with {workers} worker(s) the machine was {machine_cores / ncpu:.0%} busy ({machine_cores:.2f} of {ncpu} cores, "
        f"{max(0.0, machine_cores - ours):.2f} of them other processes on the host); this benchmark's biggest users: "
        f"{top[0][1]} {top[0][0]:.2f}, {top[1][1]} {top[1][0]:.2f}, {top[2][1]} {top[2][0]:.2f} cores. "
        f"Runs/s {first[2]:.1f} with {first[0]} worker(s) -> {rps:.1f} with {workers}: "
        + (
            f"CPU-bound: the cores are full, and an edit + run costs {ours * wall * 1000 / len(runs):.1f} ms of CPU across the stack "
            f"(Daphne {cores['Daphne'] * wall * 1000 / len(runs):.1f}, kernel workers {cores['kernel workers'] * wall * 1000 / len(runs):.1f}, "
            f"PostgreSQL {cores['PostgreSQL'] * wall * 1000 / len(runs):.1f}): at most ~{ncpu * len(runs) / (ours * wall):.0f} (edit + run)s a second on {ncpu} idle cores. "
            f"More workers only split the workers' share of the same cores; Daphne, one process, used {cores['Daphne']:.2f} of a core."
            if machine_cores >= 0.85 * ncpu
            else "the cores are not full: each client waits for its own round trips (a closed loop), so latency bounds it."
        )
    )
    sys.stdout.flush()


# --- main --------------------------------------------------------------------------------------


async def measure(cluster, args):
    meter = CpuMeter(cluster)
    parts = {1: part_hog, 2: part_start, 3: part_failover, 4: part_throughput}
    for part in args.parts:
        began = time.perf_counter()
        await parts[part](cluster, meter, args)
        print(f"(part {part} took {time.perf_counter() - began:.0f} s)", flush=True)


def main(argv=None):
    started = time.perf_counter()
    args = parse_args("Kernel lifecycle and fleet: CPU hog vs. a collaborator, start of a stopped notebook, failover, throughput per worker count.", argv, notebooks="16", workers="1,2,4", parts="1,2,3,4")
    if args.quick:
        args.notebooks = [min(args.notebooks[0], 3)]
        args.workers = [k for k in args.workers if k <= 2]
    # Daphne's settings too (its /readyz counts a worker live within the lease); part 3's workers
    # have it, the others get the default in their own environment.
    os.environ["KERNEL_LEASE_SECONDS"] = str(LEASE_FAILOVER)
    if args.quick:  # the fleet balances within a second instead of a few (nothing quick measures depends on it)
        global LEASE_DEFAULT
        LEASE_DEFAULT = LEASE_FAILOVER
        for extra in FIRST_WORKERS:
            extra["KERNEL_LEASE_SECONDS"] = str(LEASE_FAILOVER)
    with Cluster("lifecycle", worker_env=FIRST_WORKERS) as cluster:
        asyncio.run(measure(cluster, args))
    print(f"\n(the whole run took {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    sys.exit(main())
