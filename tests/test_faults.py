"""Faults injected from outside into a private production shape (tests/faults.py): Redis and
PostgreSQL stopped and started again, the kernel worker SIGKILLed mid-cascade, a runner
SIGKILLed, Daphne restarted.  Each test checks that clients, building their notebook from
events alone, converge to the database, that no committed edit is lost, and that the
server's logs hold no traceback.
"""
import asyncio
import os
import signal

import pytest

from notebooks_app.middleware import CLOSE_TRY_AGAIN_LATER

from .client import Closed, NotebookClient
from .faults import Cluster, converged, no_transient, readiness, runner_pids, view
from .waiting import eventually

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    cluster = Cluster()
    yield cluster
    cluster.close()


@pytest.fixture(autouse=True)
def _no_tracebacks(cluster):
    before = cluster.tracebacks()
    yield
    assert cluster.tracebacks() == before, f"tracebacks in {cluster.daphne_log} or {cluster.worker_log}"


async def create(client, code):
    event = await client.request(type="create_cell", code=code)
    assert event["type"] == "cell_created", event
    return event["cellId"]


async def run_and_wait(client, cell_id, status="success", timeout=60):
    await client.send(type="run_cell", cellId=cell_id)
    event = (await client.wait_for(lambda e: e["type"] == "cell_status" and e["cellId"] == cell_id and e["status"] in ("success", "error", "stale"), timeout=timeout))[-1]
    assert event["status"] == status, event
    return event


def logged(log, since, text):
    """True once `text` is in `log` after its first `since` bytes."""
    return text.encode() in log.read_bytes()[since:]


def log_end(log):
    return log.stat().st_size


async def test_redis_restart_is_survived_by_daphne_and_the_worker(cluster):
    notebook = cluster.new_notebook()
    client = await cluster.client(notebook).connect()
    a = await create(client, "a = 20")
    b = await create(client, "b = a + 1\nb")
    await run_and_wait(client, a)
    await client.wait_for(lambda e: e["type"] == "cell_status" and e["cellId"] == b and e["status"] == "success")
    worker_pid = cluster.worker.pid
    worker_log_start = log_end(cluster.worker_log)

    cluster.redis.stop()
    # An edit while Redis is down is refused with `unavailable`, never met with silence.
    reply = await client.request(type="cell_update", cellId=b, code="b = a + 2\nb", timeout=30)
    assert reply["type"] == "error" and reply["code"] == "unavailable", reply
    status, body = readiness(cluster)
    assert status == 503 and body["checks"]["redis"] != "ok", body
    # Down long enough for the worker's receive to fail and back off.
    await eventually(lambda: logged(cluster.worker_log, worker_log_start, "lost Redis"), timeout=60, what="the worker noticing Redis is down")
    cluster.redis.start()

    # The worker is the same process, with a's value still in its kernel: running b alone works.
    await eventually(lambda: asyncio.to_thread(lambda: readiness(cluster)[0] == 200), timeout=60, what="readyz after Redis came back")
    assert cluster.worker.poll() is None and cluster.worker.pid == worker_pid
    # The socket's process resubscribed and resynced it (a state, or a fresh connection): only
    # then can events reach it again; readyz asks Redis itself and may answer sooner.
    await client.wait_for(lambda e: e["type"] in ("notebook_state", "reconnected"), timeout=60)
    await client.request(type="cell_update", cellId=b, code="b = a + 3\nb")
    await client.send(type="run_cell", cellId=b)
    events = await client.wait_for(lambda e: e["type"] == "cell_status" and e["cellId"] == b and e["status"] in ("success", "error"))
    assert [e["cellId"] for e in events if e["type"] == "cell_status" and e["status"] == "running"] == [b]
    assert events[-1]["status"] == "success"
    # A new socket gets its state at once.
    fresh = await cluster.client(notebook).connect(timeout=20)
    await converged(fresh, cluster, notebook, settled=no_transient)
    await converged(client, cluster, notebook, settled=no_transient)
    assert cluster.db_cells(notebook)[1][b][0] == "b = a + 3\nb"
    log = cluster.worker_log.read_text()
    assert "lost Redis" in log and "reachable again" in log
    await client.close()
    await fresh.close()


async def open_refused(cluster, notebook):
    """Open a socket on `notebook` and read it to its end: (the frames it got, its close code)."""
    client = NotebookClient(notebook, cluster.cookie, server=cluster.url, timeout=30)
    await client.connect(wait_state=False)
    frames = []
    try:
        while True:
            frames.append(await client.next())
    except Closed:
        return frames, client.close_code


async def test_a_socket_connecting_while_redis_is_down_is_told_to_retry_then_gets_its_state(cluster):
    notebook = cluster.new_notebook()
    client = await cluster.client(notebook).connect()
    a = await create(client, "a = 3")
    await run_and_wait(client, a)
    await client.close()

    daphne_log_start = log_end(cluster.daphne_log)
    cluster.redis.stop()
    try:
        # At once (this Daphne's pub/sub connection may not have noticed yet), and again once
        # it has: each time a clear `unavailable`, then 4013 (try again later), never a hang.
        for noticed in (False, True):
            if noticed:
                await eventually(lambda: logged(cluster.daphne_log, daphne_log_start, "pub/sub layer: lost Redis"), timeout=60, what="Daphne noticing Redis is down")
            frames, code = await open_refused(cluster, notebook)
            assert code == CLOSE_TRY_AGAIN_LATER, (frames, code)
            assert [(f["type"], f.get("code")) for f in frames] == [("error", "unavailable")], frames
    finally:
        cluster.redis.start()

    # Redis is back: a new socket gets its state (retrying while the layers reconnect), and
    # the notebook works as before.
    fresh = await cluster.client(notebook).connect(timeout=60)
    assert fresh.order == [a] and fresh.state[a]["status"] == "success"
    b = await create(fresh, "b = a * 2\nb")
    await run_and_wait(fresh, b)
    order, cells = await converged(fresh, cluster, notebook, settled=no_transient)
    assert order == [a, b] and cells[b] == ("b = a * 2\nb", "success")
    await fresh.close()


async def test_postgresql_restart_gives_clear_errors_then_works(cluster):
    notebook = cluster.new_notebook()
    client = await cluster.client(notebook).connect()
    a = await create(client, "a = 1")

    cluster.pg.stop(mode="fast")
    # A long outage with requests throughout: the pool's reconnection delay doubles at each
    # failure, and must never grow past what a request waits once the database is back.
    for _ in range(3):
        status, body = cluster.http("/")
        assert status == 503 and "Temporarily unavailable" in body
    reply = await client.request(type="cell_update", cellId=a, code="a = 2", timeout=30)
    assert reply["type"] == "error" and reply["code"] == "unavailable", reply
    status, body = readiness(cluster)
    assert status == 503 and body["checks"]["database"] != "ok" and body["checks"]["redis"] == "ok", body
    cluster.pg.start()

    # The first request after the database is back works: pooled connections are checked.
    status, _ = cluster.http("/")
    assert status == 200
    fresh = await cluster.client(notebook).connect(timeout=20)
    b = await create(fresh, "b = a * 10\nb")
    await run_and_wait(fresh, a)
    await fresh.wait_for(lambda e: e["type"] == "cell_status" and e["cellId"] == b and e["status"] == "success")
    order, cells = await converged(fresh, cluster, notebook, settled=no_transient)
    assert cells[a] == ("a = 1", "success") and order == [a, b]
    await converged(client, cluster, notebook, settled=no_transient)
    await client.close()
    await fresh.close()


async def test_postgresql_down_while_a_cell_runs_keeps_its_result(cluster):
    notebook = cluster.new_notebook()
    client = await cluster.client(notebook).connect()
    slow = await create(client, "import time\ntime.sleep(3)\nx = 7\nx")
    await client.send(type="run_cell", cellId=slow)
    await client.wait_for(lambda e: e["type"] == "cell_status" and e["cellId"] == slow and e["status"] == "running")
    worker_log_start = log_end(cluster.worker_log)
    cluster.pg.stop(mode="fast")
    # The result arrives while the database is down: the worker retries writing it.
    await eventually(lambda: logged(cluster.worker_log, worker_log_start, "lost PostgreSQL"), timeout=60, what="the result's write failing")
    cluster.pg.start()
    _, cells = await converged(client, cluster, notebook, settled=no_transient)
    assert cells[slow][1] == "success"
    await client.close()


async def test_worker_killed_mid_cascade_and_restarted_converges(cluster):
    notebook = cluster.new_notebook()
    editor, watcher = await cluster.client(notebook).connect(), await cluster.client(notebook).connect()
    # No shared name (two cells importing `time` would block each other).
    cells = [await create(editor, "__import__('time').sleep(0.5)\nc0 = 0")]
    for i in range(1, 6):
        cells.append(await create(editor, f"__import__('time').sleep(0.5)\nc{i} = c{i - 1} + 1"))
    await editor.send(type="run_cell", cellId=cells[0])
    await editor.wait_for(lambda e: e["type"] == "cell_status" and e["cellId"] == cells[2] and e["status"] == "running")
    cluster.kill(cluster.worker)
    # An edit while the worker is down is committed and waits in Redis.
    await editor.send(type="create_cell", code="note = 'kept'")
    await eventually(lambda: asyncio.to_thread(lambda: any(code == "note = 'kept'" for code, _ in cluster.db_cells(notebook)[1].values())), timeout=60, what="the edit committed")
    cluster.start_worker()
    # The restarted worker runs the cascade the killed one had under way, once (its run
    # journal, kernel/run_journal.py): every cell of the chain ends `success`.
    def chain_done(client):  # (a client resyncing may not hold every cell yet)
        return all(client.state.get(c, {}).get("status") == "success" for c in cells)

    for client in (editor, watcher):
        if not chain_done(client):
            await client.wait_for(lambda e, client=client: chain_done(client), timeout=60, what="the interrupted cascade run to its end")
    for client in (editor, watcher):
        order, db = await converged(client, cluster, notebook, settled=no_transient)
    assert view(editor) == view(watcher)
    assert any(code == "note = 'kept'" for code, _ in db.values())
    await editor.close()
    await watcher.close()


async def test_killed_runner_turns_results_stale(cluster):
    notebook = cluster.new_notebook()
    client = await cluster.client(notebook).connect()
    a = await create(client, "a = 1")
    b = await create(client, "import time\ntime.sleep(30)")
    await run_and_wait(client, a)
    await client.send(type="run_cell", cellId=b)
    await client.wait_for(lambda e: e["type"] == "cell_status" and e["cellId"] == b and e["status"] == "running")
    pids = runner_pids(cluster.worker.pid)
    assert pids, "no runner found"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    await client.wait_for(lambda e: e["type"] == "kernel_restarted")
    _, cells = await converged(client, cluster, notebook, settled=no_transient)
    assert cells[a][1] == "stale" and cells[b][1] == "error"
    await client.close()


async def test_daphne_restart_clients_reconnect_and_resync(cluster):
    notebook = cluster.new_notebook()
    client = await cluster.client(notebook).connect()
    a = await create(client, "a = 5")
    await run_and_wait(client, a)
    cluster.kill(cluster.daphne, signal.SIGTERM)
    cluster.start_daphne()
    await client.next(timeout=10)  # the closed socket reconnects and gets a fresh state
    b = await create(client, "b = a + 1")
    await run_and_wait(client, b)
    order, _ = await converged(client, cluster, notebook, settled=no_transient)
    assert order == [a, b]
    await client.close()
