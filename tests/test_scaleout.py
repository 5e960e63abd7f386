"""The production shape scaled out: 2 Daphne processes and 2 kernel workers of one fleet (they
share its virtual shards through leases, kernel/fleet.py) on one PostgreSQL and Redis, with
clients logged in through the login page.

Every process has the fleet of this test's own (KERNEL_FLEET): the Daphnes send to a notebook's
shard, whichever worker holds it.  The session-scoped `kernel_worker` (fleet `kernel`) is not used.
"""
import os
import subprocess
import sys

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from notebooks_app.kernel.addresses import shard_of
from notebooks_app.models import KernelLease, KernelWorkerRecord, Notebook

from .client import NotebookClient
from .conftest import ROOT, WorkerProcess, database_url_for_tests
from .live import free_port, login, start_daphne, stop
from .waiting import eventually

pytestmark = pytest.mark.slow

SHARDS = 8
LEASE = 3
PASSWORD = "scale-out-pass-1"
FINAL = {"success", "error"}


@pytest.fixture
def cluster(transactional_db, django_user_model):
    # The Daphnes check the password with the real settings (PBKDF2), not the tests' MD5.
    hasher = PBKDF2PasswordHasher()
    user = django_user_model.objects.create(username="erin", password=hasher.encode(PASSWORD, hasher.salt()))
    fleet = f"scaleout{os.getpid()}"
    fleet_env = {"KERNEL_FLEET": fleet, "KERNEL_VSHARDS": str(SHARDS), "KERNEL_LEASE_SECONDS": str(LEASE)}
    env = dict(os.environ, DATABASE_URL=database_url_for_tests(), KERNEL_TIME_LIMIT="20", **fleet_env)
    workers = [WorkerProcess([fleet], extra_env=fleet_env).start() for _ in range(2)]
    daphnes, urls = [], []
    try:
        for index in range(2):
            port = free_port()
            daphnes.append(start_daphne(port, env, ROOT / "var" / f"scaleout-daphne-{index}-{os.getpid()}.log"))
            urls.append(f"http://127.0.0.1:{port}")
        cookies = [login(url, "erin", PASSWORD) for url in urls]
        eventually(lambda: all(len(held_by(fleet, worker)) == SHARDS // 2 for worker in workers), 30, "the two workers to share the shards").wait()
        yield {"user": user, "workers": workers, "urls": urls, "cookies": cookies, "fleet": fleet}
    finally:
        for proc in daphnes:
            stop(proc)
        for worker in workers:
            worker.kill()


def held_by(fleet, worker):
    """The shards `worker` holds now."""
    record = KernelWorkerRecord.objects.filter(fleet=fleet, pid=worker.proc.pid).first()
    return set(KernelLease.objects.filter(fleet=fleet, owner=record.name).values_list("shard", flat=True)) if record else set()


def notebooks_on_each_worker(cluster):
    """One notebook on a shard of each worker (new notebooks get random ids until each has one)."""
    held = [held_by(cluster["fleet"], worker) for worker in cluster["workers"]]
    found = {}
    while len(found) < len(held):
        notebook = Notebook.objects.create(name="scale-out", owner=cluster["user"])
        shard = shard_of(notebook.pk, SHARDS)
        found.setdefault(next(i for i, shards in enumerate(held) if shard in shards), notebook)
    return [str(found[i].pk) for i in range(len(held))]


async def connect(cluster, notebook_id, daphne, **options):
    return await NotebookClient(notebook_id, cluster["cookies"][daphne], server=cluster["urls"][daphne], timeout=30, **options).connect()


async def create(client, code):
    rid = f"create-{code}"
    await client.send(type="create_cell", code=code, requestId=rid)
    seen = await client.wait_for(lambda e: e.get("requestId") == rid)
    assert seen[-1]["type"] == "cell_created", seen[-1]
    return seen[-1]["cellId"]


def final_status(cell_id, status=None):
    return lambda e: e["type"] == "cell_status" and e["cellId"] == cell_id and e["status"] in ({status} if status else FINAL)


async def run(client, cell_id, status="success"):
    await client.send(type="run_cell", cellId=cell_id)
    seen = await client.wait_for(final_status(cell_id))
    assert seen[-1]["status"] == status, seen
    return seen


async def test_clients_on_different_daphnes_see_identical_event_sequences(cluster):
    notebook_ids = await sync_to_async(notebooks_on_each_worker)(cluster)
    for notebook_id in notebook_ids:  # one notebook on each worker
        left, right = await connect(cluster, notebook_id, 0), await connect(cluster, notebook_id, 1)
        a = await create(left, "a = 1")
        b = await create(left, "b = a + 1")
        c = await create(right, "c = b + 1\nc")
        await run(left, a)
        await left.wait_for(final_status(c, "success"))
        await right.send(type="delete_cell", cellId=b, requestId="del-b")
        await right.wait_for(final_status(c, "error"))  # c reran without b: NameError
        await left.wait_for(final_status(c, "error"))
        assert left.events == right.events
        kinds = [e["type"] for e in left.events]
        assert kinds.count("cell_created") == 3 and kinds.count("cell_deleted") == 1
        assert [e["error"]["ename"] for e in left.events if e["type"] == "cell_error"] == ["NameError"]
        await left.close()
        await right.close()


async def test_a_killed_workers_notebooks_move_to_the_other_and_a_restarted_one_takes_its_share(cluster):
    shard0, shard1 = await sync_to_async(notebooks_on_each_worker)(cluster)
    first, second = await connect(cluster, shard0, 0), await connect(cluster, shard1, 1, watch_early=True, resync_on_gap=True)
    x = await create(second, "x = 41")
    y = await create(second, "y = x + 1\ny")
    await run(second, x)
    await second.wait_for(final_status(y, "success"))

    cluster["workers"][1].kill()
    # The other worker's notebooks do not notice: edits and cascades go on, through either Daphne.
    p = await create(first, "p = 2")
    q = await create(first, "q = p * 21\nq")
    await run(first, p)
    await first.wait_for(final_status(q, "success"))
    other_daphne = await connect(cluster, shard0, 1)
    assert set(other_daphne.order) == {p, q}

    # The dead worker's notebook: an edit is committed and waits in Redis until the other worker
    # takes the shard (its lease expires within LEASE seconds), rebuilds the notebook from the
    # database and tells the clients of the dead one (a fresh state).
    revision_before = await sync_to_async(lambda: Notebook.objects.get(pk=shard1).revision)()
    await second.send(type="create_cell", code="w = 5", requestId="while-down")
    await eventually(sync_to_async(lambda: Notebook.objects.get(pk=shard1).revision > revision_before), what="the create committed")
    # Its early announcement (docs/protocol.md) reaches the sockets without the worker.
    early = await second.wait_for(lambda e: e.get("requestId") == "while-down")
    assert early[-1]["type"] == "cell_created" and early[-1]["early"] and early[-1]["cell"]["code"] == "w = 5"
    seen = await second.wait_for(lambda e: e.get("requestId") == "while-down", timeout=LEASE + 20)
    assert seen[-1]["type"] == "notebook_state"
    w = next(c["id"] for c in seen[-1]["notebook"]["cells"] if c["code"] == "w = 5")
    fresh = await connect(cluster, shard1, 0)
    cells = fresh.state
    assert set(cells) == {x, y, w}
    # Its results stay, stale: they lived in the dead worker's execution process (a failover).
    assert cells[y]["status"] == "stale" and cells[y]["outputs"] == [{"mimeType": "text/plain", "data": "42"}]
    assert fresh.kernel["state"] == "stopped" and fresh.kernel["cause"] == "failover"
    # The new runner's namespace is empty: running y reruns its ancestor x first.
    await fresh.send(type="run_cell", cellId=y)
    seen = await fresh.wait_for(final_status(y))
    assert [e["cellId"] for e in seen if e["type"] == "cell_status" and e["status"] == "running"] == [x, y]
    assert seen[-1]["status"] == "success"
    # A worker started again takes its share back, without anyone restarting the other.
    cluster["workers"][1].start()
    await eventually(sync_to_async(lambda: all(len(held_by(cluster["fleet"], worker)) == SHARDS // 2 for worker in cluster["workers"])), timeout=30, what="the shards shared again")
    # (A page open across the move sees the new owner's events numbered anew, and resyncs.)
    later = await connect(cluster, shard1, 0)
    await later.send(type="run_cell", cellId=w)
    await later.wait_for(final_status(w, "success"), timeout=30)
    for client in (first, second, other_daphne, fresh, later):
        await client.close()


def test_runkernel_says_shards_are_gone():
    env = dict(os.environ, DATABASE_URL=database_url_for_tests())
    result = subprocess.run([sys.executable, "manage.py", "runkernel", "--shards", "0,2"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "--shards is gone: workers share the fleet's virtual shards through leases" in result.stderr
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=dict(env, KERNEL_SHARDS="4"), capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "KERNEL_SHARDS is gone" in result.stderr
