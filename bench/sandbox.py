"""Sandbox cost: what bubblewrap adds to a notebook's start-up and to a cascade, sandbox on vs
off, interleaved in one run so both see the same machine.

    .venv/bin/python -m bench.sandbox [--starts 20] [--sizes 100,1000] [--repeat R] [--no-stack] [--quick]

* start-up (in process, `Runner` as the worker builds it): from `Runner.start()` to the result
  of the notebook's first cell, `1 + 1` and `import pandas` (what a user feels on opening a
  notebook), each on a fresh runner; the on and off runs alternate.  A breakdown follows:
  bubblewrap alone (`/bin/true` in the sandbox), a bare interpreter, the child's imports, and
  `Runner.start()` until the child says it is ready.
* cascade, runner only: a chain of K cells (x0 = 0, x{i} = x{i-1} + 1) through `Runner.run`,
  one warm runner per mode, the on and off runs alternating.
* cascade, whole stack: the same chain as bench/cascade.py runs it (Daphne + `runworker`
  on PostgreSQL + Redis, a WebSocket client), with two kernel workers sharing the fleet's
  shards: worker 0 has KERNEL_SANDBOX=on, worker 1 off; one notebook on a shard of each, the
  runs alternating.  Its floor is the usual Redis + PostgreSQL one.

The floor of every sandboxed figure is the same figure with the sandbox off, measured in
the same run; the last lines are one verdict per target of issue 11 (start-up under 300 ms,
cascade on/off within 1.10).  A benchmark prints, it does not fail.
"""
import asyncio
import statistics
import subprocess
import sys
import time

from notebooks_app.kernel import sandbox as sandboxing
from notebooks_app.kernel.runner import PROJECT_ROOT, Runner

from .cascade import chain, run_root
from .harness import Cluster, Report, parse_args, percentile

STARTUP_TARGET_MS = 300.0
CASCADE_TARGET_RATIO = 1.10
MODES = ("on", "off")
TRIVIAL = "1 + 1"
PANDAS = "import pandas"


def config(mode):
    return sandboxing.SandboxConfig() if mode == "on" else None


def alternating(rounds):
    """(round, mode) pairs, on/off then off/on, so neither mode always goes first."""
    for index in range(rounds):
        for mode in MODES if index % 2 == 0 else MODES[::-1]:
            yield index, mode


def ms_since(start):
    return (time.perf_counter() - start) * 1000


def p90(samples):
    return percentile(samples, 0.90)


# --- start-up ------------------------------------------------------------------------------
async def first_cell(mode, code):
    """(ms until Runner.start() returns, ms until the first cell's result) on a fresh runner."""
    runner = Runner(sandbox=config(mode), notebook_id=f"bench-sandbox-{mode}")
    try:
        start = time.perf_counter()
        await runner.start()
        ready = ms_since(start)
        result = await runner.run("c1", code)
        total = ms_since(start)
    finally:
        await runner.close()
    if result.status != "success":
        raise RuntimeError(f"{code!r} failed with the sandbox {mode}: {result.error}")
    return ready, total


def bwrap_argv():
    """The runner's own bubblewrap command line (root mode: a uid of the notebook's, setpriv)."""
    config = sandboxing.SandboxConfig()
    uid = config.uid_base + 1 if sandboxing.running_as_root() else None
    return sandboxing.bwrap_arguments(config, uid=uid, env=config.limits.child_env())


def process_argv(mode, command):
    """argv running `command` (a list) the way the runner would: in the sandbox or not."""
    if mode == "off":
        return command
    argv = bwrap_argv()
    if command[0] == sys.executable:
        return argv[: argv.index(sys.executable)] + command
    return argv[: argv.index("--") + 1] + command  # no setpriv: bubblewrap alone


def spawn(mode, command):
    """ms for one process to start and exit; stdin is /dev/null, so the kernel child says
    it is ready, reads the end of its command stream and exits."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(PROJECT_ROOT)}
    start = time.perf_counter()
    result = subprocess.run(process_argv(mode, command), cwd="/", env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    elapsed = ms_since(start)
    if result.returncode != 0:
        raise RuntimeError(f"{command} failed with the sandbox {mode}: {result.stderr.decode(errors='replace')[-500:]}")
    return elapsed


BREAKDOWN = (
    ("exec /bin/true (bubblewrap's own cost)", ["/bin/true"]),
    ("python -c pass (interpreter start-up)", [sys.executable, "-c", "pass"]),
    ("python -m notebooks_app.kernel._child to ready and exit (+ the child's imports)", [sys.executable, "-m", "notebooks_app.kernel._child"]),
)


async def startup(args):
    report = Report("sandbox: start-up", None, floor_note="floor: the same figure with the sandbox off, runs alternating (ratio in the note)")
    probes = []
    for _ in range(3 if args.quick else 5):
        start = time.perf_counter()
        reason = sandboxing.probe.__wrapped__()  # the cached check every worker runs once
        probes.append(ms_since(start))
        if reason:
            raise SystemExit(f"the sandbox cannot start here: {reason}")
    results = {}
    for code in (TRIVIAL, PANDAS):
        await first_cell("on", code), await first_cell("off", code)  # warm the page cache
        samples = {mode: ([], []) for mode in MODES}
        for _, mode in alternating(args.starts):
            ready, total = await first_cell(mode, code)
            samples[mode][0].append(ready)
            samples[mode][1].append(total)
        results[code] = samples
        floor = statistics.median(samples["off"][1])
        for mode in MODES:
            total = samples[mode][1]
            ratio = f"; on/off {statistics.median(total) / floor:.2f}x" if mode == "on" else ""
            report.row(f"Runner.start() -> first `{code}` result, sandbox {mode}", total, note=f"p90 {p90(total):.1f} ms{ratio}")
    print()
    breakdown = []
    for case, command in BREAKDOWN:
        spawn("on", command), spawn("off", command)
        samples = {mode: [] for mode in MODES}
        for _, mode in alternating(args.starts):
            samples[mode].append(spawn(mode, command))
        breakdown.append((case, samples))
    samples = results[TRIVIAL]
    breakdown.append(("Runner.start() until the child is ready", {mode: samples[mode][0] for mode in MODES}))
    breakdown.append(("ready -> first `1 + 1` result", {mode: [t - r for r, t in zip(*samples[mode])] for mode in MODES}))
    for case, samples in breakdown:
        for mode in MODES:
            report.row(f"{case}, sandbox {mode}", samples[mode], note=f"p90 {p90(samples[mode]):.1f} ms")
    arguments = []
    for _ in range(args.starts):
        start = time.perf_counter()
        bwrap_argv()
        arguments.append(ms_since(start))
    report.row("bwrap_arguments() (in the worker, per sandboxed start)", arguments)
    report.row("sandbox.probe() (once per worker process, before its first sandbox)", probes)
    return results


# --- cascade --------------------------------------------------------------------------------
async def runner_cascade(args):
    report = Report("sandbox: cascade through Runner.run (no worker, no I/O but the runner's pipes)", None, floor_note="floor: the same chain with the sandbox off, runs alternating")
    ratios = {}
    runners = {mode: Runner(sandbox=config(mode), notebook_id=f"bench-sandbox-cascade-{mode}") for mode in MODES}
    try:
        for runner in runners.values():
            await runner.start()

        async def run_chain(runner, cells):
            start = time.perf_counter()
            for index, code in enumerate(cells):
                result = await runner.run(f"c{index}", code, writes={f"x{index}"})
                if result.status != "success":
                    raise RuntimeError(f"cell {index} failed: {result.error}")
            return ms_since(start) / len(cells)

        for n in args.sizes:
            cells = chain(n)
            for runner in runners.values():
                await run_chain(runner, cells)  # warm-up
            samples = {mode: [] for mode in MODES}
            for _, mode in alternating(repeats(args, n)):
                samples[mode].append(await run_chain(runners[mode], cells))
            ratios[n] = statistics.median(samples["on"]) / statistics.median(samples["off"])
            for mode in MODES:
                note = f"{n} cells" + (f"; on/off {ratios[n]:.2f}x" if mode == "on" else "")
                report.row(f"chain N={n}: per cell, sandbox {mode}", samples[mode], unit="ms/cell", note=note)
    finally:
        for runner in runners.values():
            await runner.close()
    return ratios


def repeats(args, n):
    return args.repeat or (2 if args.quick else max(6, 4000 // (n + 10)))


async def stack_cascade(cluster, args):
    report = Report("sandbox: cascade through Daphne + runworker (worker 0 sandbox on, worker 1 off)", await cluster.floor())
    ratios = {}
    for n in args.sizes:
        clients, cell_ids = {}, {}
        for mode, worker in (("on", 0), ("off", 1)):
            notebook_id = await asyncio.to_thread(cluster.notebook_on_worker, chain(n), worker)
            clients[mode] = await cluster.client(notebook_id)
            cell_ids[mode] = list(clients[mode].order)
            await run_root(clients[mode], cell_ids[mode])  # warm-up: loads the session, starts the runner
        samples = {mode: [] for mode in MODES}
        for _, mode in alternating(repeats(args, n)):
            samples[mode].append(await run_root(clients[mode], cell_ids[mode]) / n)
        ratios[n] = statistics.median(samples["on"]) / statistics.median(samples["off"])
        for mode in MODES:
            note = f"{n} cells" + (f"; on/off {ratios[n]:.2f}x" if mode == "on" else "")
            report.row(f"chain N={n}: per cell, sandbox {mode}", samples[mode], unit="ms/cell", note=note)
        for client in clients.values():
            await client.close()
    return ratios


# --- verdicts -------------------------------------------------------------------------------
def verdicts(startup_results, runner_ratios, stack_ratios):
    print("\n## verdicts")
    for code in (TRIVIAL, PANDAS):
        on, off = startup_results[code]["on"][1], startup_results[code]["off"][1]
        median = statistics.median(on)
        if code == TRIVIAL:
            target = f"target < {STARTUP_TARGET_MS:.0f} ms: {'✓' if median < STARTUP_TARGET_MS else '✗'}"
        else:
            target = f"on/off {median / statistics.median(off):.2f} (no target: what a user opening a pandas notebook waits)"
        print(f"verdict: start-up, sandbox on, first `{code}`: median {median:.1f} ms (p90 {p90(on):.1f}), off {statistics.median(off):.1f} ms; {target}")
    for label, ratios in (("whole stack", stack_ratios), ("Runner.run only", runner_ratios)):
        for n, ratio in ratios.items():
            mark = "✓" if ratio <= CASCADE_TARGET_RATIO else "✗"
            print(f"verdict: cascade chain N={n} ({label}), per cell on/off = {ratio:.2f}; target <= {CASCADE_TARGET_RATIO:.2f}: {mark}")
    sys.stdout.flush()


def main(argv=None):
    flags = [("no-stack", "skip the whole-stack cascade (no PostgreSQL, Redis, Daphne or worker)")]
    args = parse_args("Sandbox cost: start-up and cascade, sandbox on vs off, in one run.", argv, flags, sizes="100,1000", starts="20")
    if args.quick:
        args.sizes, args.starts = [3], [2]
    args.starts = args.starts[0]
    startup_results = asyncio.run(startup(args))
    runner_ratios = asyncio.run(runner_cascade(args))
    stack_ratios = {}
    if not args.no_stack:
        on, off = {"KERNEL_SANDBOX": "on"}, {"KERNEL_SANDBOX": "off"}
        with Cluster("sandbox", worker_env=[on, off]) as cluster:
            stack_ratios = asyncio.run(stack_cascade(cluster, args))
    verdicts(startup_results, runner_ratios, stack_ratios)


if __name__ == "__main__":
    sys.exit(main())
