"""Smoke test of every benchmark (tiny sizes, --quick): each runs against the real production
shape and prints its table and floor.  No timing assertions: the figures live in
docs/performance.md."""
import os
import re
import subprocess
import sys

import pytest

from .conftest import ROOT, database_url_for_tests

pytestmark = pytest.mark.slow

ROW = re.compile(r"^\| .+ \| \d+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \| (ms|ms/cell|µs) \|", re.M)


def run_bench(name, env):
    module, *options = name.split()
    result = subprocess.run([sys.executable, "-m", f"bench.{module}", "--quick", *options], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert ROW.search(result.stdout), result.stdout
    return result.stdout


@pytest.mark.parametrize("name", ["crud", "fanout", "fanout --procs 1", "load", "open"])
def test_benchmark_runs_on_the_test_services(name, transactional_db):
    # Another Redis database: the suite's own kernel worker listens on `kernel` in database 0.
    redis_url = os.environ["REDIS_URL"].rsplit("/", 1)[0] + "/3"
    output = run_bench(name, dict(os.environ, DATABASE_URL=database_url_for_tests(), REDIS_URL=redis_url))
    assert re.search(r"floor: Redis PUBLISH->SUBSCRIBE [\d.]+ ms \+ committed PostgreSQL UPDATE [\d.]+ ms", output)
    if name == "load":
        assert "errors: 0" in output
    if name == "crud":  # the floor also taken at the edits' pace, and both ratios per row
        assert re.search(r"floor paced alike \(one sample every 40 ms\): [\d.]+ ms \+ [\d.]+ ms = [\d.]+ ms", output)
        assert re.search(r"\| create_cell, 1 other clients: all 2 have it \|( [^|]+ \|){6} [\d.]+x \| [\d.]+x \|", output)
        assert re.search(r"\| delete_cell, 2 watchers: the sender and all 2 have it \| 3 \| [\d.]+ \|", output)  # bench.harness.Watcher
        assert re.search(r"\| create_cell, 2 watchers: on the sender's and all 2 sockets \| 3 \| [\d.]+ \|.*kernel receive time", output)
        # bench/floor_server.py, alternating with the real server: its rows, and the ratios to them
        assert "floor server (bench/floor_server.py): the same clients and edits at the same pace" in output
        for kind in ("create_cell", "cell_update", "move_cell", "delete_cell"):
            assert re.search(rf"\| {kind}, 1 other clients: floor server, all 2 have it \| 3 \| [\d.]+ \|", output)
            assert re.search(rf"\| {kind}, 2 other clients: all 3 have it \|.*\| floor server: [\d.]+x median, [\d.]+x p99 \|", output)
    if name.startswith("fanout"):  # Daphne's side of each event, from its FANOUT_TIMING log lines
        assert "3 sockets: server, arrival -> frames written to every transport" in output
    if name == "open":
        for case in ("first open ever", "cold open", "warm open", "GET /notebooks/<id>/", "worker RSS"):
            assert f"200 cells: {case}" in output


def test_cascade_starts_its_own_services():
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    output = run_bench("cascade", env)
    assert "starting a throwaway PostgreSQL" in output and "chain N=3, rerun: per cell" in output and "chain N=3, edit + run: per cell" in output and "fan-out N=3" in output
    for what in ("rerun", "edit + run"):  # the chain's floor, bench/floor_server.py, and the ratios to it
        assert re.search(rf"\| chain N=3, floor server, {re.escape(what)}: whole cascade \| 2 \| [\d.]+ \|", output)
        assert re.search(rf"\| chain N=3, {re.escape(what)}: whole cascade \|.*\| floor server: [\d.]+x median, [\d.]+x p99 \|", output)


def test_graph_benchmark():
    output = run_bench("graph", dict(os.environ))
    assert "chain N=100: one update, same names" in output


def test_sandbox_benchmark(transactional_db):
    """Start-up and cascade with the sandbox on and off, in one run: every figure and a verdict per target."""
    from notebooks_app.kernel import sandbox

    reason = sandbox.probe()
    if reason:
        pytest.skip(reason)
    redis_url = os.environ["REDIS_URL"].rsplit("/", 1)[0] + "/4"
    output = run_bench("sandbox", dict(os.environ, DATABASE_URL=database_url_for_tests(), REDIS_URL=redis_url))
    for mode in ("on", "off"):
        assert f"Runner.start() -> first `1 + 1` result, sandbox {mode}" in output
        assert f"Runner.start() -> first `import pandas` result, sandbox {mode}" in output
        assert f"exec /bin/true (bubblewrap's own cost), sandbox {mode}" in output
        assert output.count(f"chain N=3: per cell, sandbox {mode}") == 2  # Runner.run and the whole stack
    assert "(worker 0 sandbox on, worker 1 off)" in output
    assert re.search(r"verdict: start-up, sandbox on, first `1 \+ 1`: median [\d.]+ ms .*target < 300 ms: [✓✗]", output)
    assert re.search(r"verdict: cascade chain N=3 \(whole stack\), per cell on/off = [\d.]+; target <= 1.10: [✓✗]", output)


def test_keystroke_benchmark(transactional_db):
    """Shared text: keystroke -> other pages with 2 and 3 editors (one typing, all typing), the
    parts of its path, and every editor's text identical with every typed character (OK)."""
    redis_url = os.environ["REDIS_URL"].rsplit("/", 1)[0] + "/5"
    output = run_bench("keystroke", dict(os.environ, DATABASE_URL=database_url_for_tests(), REDIS_URL=redis_url))
    assert re.search(r"floor: Redis PUBLISH->SUBSCRIBE [\d.]+ ms", output)
    for case in ("2 editors, 1 typing", "2 editors, 2 typing", "3 editors, 1 typing", "3 editors, 3 typing"):
        assert f"keystroke -> another page: {case}" in output and f"keystroke -> every other page: {case}" in output
        assert f"check {case}: OK" in output and f"check {case}, floor server: OK" in output
        assert f"floor server relay -> another page: {case}" in output and f"floor server relay -> every other page: {case}" in output
        assert re.search(rf"verdict: {case}: p50 [\d.]+ ms, p99 [\d.]+ ms = [\d.]+x / [\d.]+x the floor server \(p50 [\d.]+ ms, p99 [\d.]+ ms\); [\d.]+x / [\d.]+x the round-trip floor", output)
    assert "presence relayed socket -> socket" in output and "core channel layer send -> receive" in output
    assert "shared text: OK" in output and "FAIL" not in output


def test_history_benchmark(transactional_db):
    """The log's cost per operation (log on / off in one run), the coalesced edit, the end-to-end
    create_cell from bench/crud.py, one verdict per operation against 10 %; no timing assertions."""
    redis_url = os.environ["REDIS_URL"].rsplit("/", 1)[0] + "/6"
    output = run_bench("history", dict(os.environ, DATABASE_URL=database_url_for_tests(), REDIS_URL=redis_url))
    assert "create_cell, 1 other clients: all 2 have it" in output  # bench/crud.py's table, reused
    for op in ("create_cell", "update_cell (new event)", "update_cell (coalesced)", "move_cell", "delete_cell"):
        assert f"| {op}, log on |" in output and f"| {op}, log off |" in output
        assert f"check {op}: " in output
        for history in (0, 500):
            assert re.search(rf"verdict: {re.escape(op)}, {history} earlier events, 200-byte code: log -?[\d.]+ ms / edit [\d.]+ ms = -?[\d.]+ %; target <= 10 %: [✓✗]", output)
    assert "the coalescing SELECT alone, the notebook's last event behind 500 of another notebook" in output
    assert re.search(r"\| update_cell \(coalesced\) \| [\d.]+ / [\d.]+ ms \| .* \| \d+ / \d+ \|", output)  # the summary, with SQL statements on / off
    assert "FAIL" not in output
    assert re.search(r"verdict: create_cell end to end \(Daphne \+ runworker, log on\): log -?[\d.]+ ms / [\d.]+ ms = -?[\d.]+ %; target <= 10 %: [✓✗]", output)


def test_complete_benchmark(transactional_db):
    """Completion and inspection round trips (warm kernel, busy, no process) against the floor; every answer right."""
    redis_url = os.environ["REDIS_URL"].rsplit("/", 1)[0] + "/7"
    output = run_bench("complete", dict(os.environ, DATABASE_URL=database_url_for_tests(), REDIS_URL=redis_url))
    assert re.search(r"floor: Redis PUBLISH->SUBSCRIBE [\d.]+ ms", output)
    for case in ("attribute after a dot (`df.gro`)", "inspect inside a call (`df.groupby(`)", "SQL column of a DataFrame"):
        assert re.search(rf"verdict: {re.escape(case)}.*: p50 [\d.]+ ms, p99 [\d.]+ ms = .*budget p99 <= 100 ms: [✓✗]", output)
    assert "while a cell runs: busy" in output and "no execution process: static answer" in output
    assert "answers: OK" in output


def test_lifecycle_benchmark():
    """CPU hog vs. a collaborator (KERNEL_NICE 10 / 0 / autogroup), start of an idle-stopped
    notebook, failover after a SIGKILL, throughput per worker count; its own services (its workers
    form a fleet, which must not join the suite's)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    output = run_bench("lifecycle", env)
    assert re.search(r"floor: Redis PUBLISH->SUBSCRIBE [\d.]+ ms", output)
    for label in ("KERNEL_NICE=10 (default)", "KERNEL_NICE=0"):
        assert re.search(rf"{re.escape(label)}: run of a tiny cell -> success: hog on / off = median [\d.]+x", output)
    assert re.search(r"start of a stopped notebook: [\d.]+ ms median vs [\d.]+ ms warm", output)
    assert re.search(r"failover: median [\d.]+ s, max [\d.]+ s over \d+ kills; lease 2 s", output)
    assert re.search(r"1 worker\(s\): [\d.]+ edits/s \+ [\d.]+ runs/s", output) and "limit: " in output


@pytest.mark.browser
def test_page_open_benchmark_opens_a_big_notebook_in_chromium():
    """bench/page_open.py: the notebook opened cold and warm in Chromium, every figure printed."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    output = run_bench("page_open", env)
    for case in ("cold", "warm"):
        assert f"300 cells, {case}: first screen" in output and f"300 cells, {case}: editable" in output
