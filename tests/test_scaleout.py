"""The production shape scaled out: 2 Daphne processes and 2 kernel workers (KERNEL_SHARDS=2,
one shard each) on one PostgreSQL and Redis, with clients logged in through the login page.

Every process shares KERNEL_SHARDS=2: the Daphnes pick a notebook's shard, the workers
serve one shard each.  The session-scoped `kernel_worker` (channel `kernel`) is not used.
"""
import os
import subprocess
import sys

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from notebooks_app.kernel_client import kernel_channel
from notebooks_app.models import Notebook

from .client import NotebookClient
from .conftest import ROOT, WorkerProcess, database_url_for_tests
from .live import free_port, login, start_daphne, stop
from .waiting import eventually

pytestmark = pytest.mark.slow

SHARDS = 2
PASSWORD = "scale-out-pass-1"
FINAL = {"success", "error"}


@pytest.fixture
def cluster(transactional_db, django_user_model):
    # The Daphnes check the password with the real settings (PBKDF2), not the tests' MD5.
    hasher = PBKDF2PasswordHasher()
    user = django_user_model.objects.create(username="erin", password=hasher.encode(PASSWORD, hasher.salt()))
    env = dict(os.environ, DATABASE_URL=database_url_for_tests(), KERNEL_SHARDS=str(SHARDS), KERNEL_TIME_LIMIT="20")
    workers = [WorkerProcess([f"kernel.{k}"], extra_env={"KERNEL_SHARDS": str(SHARDS)}).start() for k in range(SHARDS)]
    daphnes, urls = [], []
    try:
        for index in range(2):
            port = free_port()
            daphnes.append(start_daphne(port, env, ROOT / "var" / f"scaleout-daphne-{index}-{os.getpid()}.log"))
            urls.append(f"http://127.0.0.1:{port}")
        cookies = [login(url, "erin", PASSWORD) for url in urls]
        yield {"user": user, "workers": workers, "urls": urls, "cookies": cookies}
    finally:
        for proc in daphnes:
            stop(proc)
        for worker in workers:
            worker.kill()


def notebooks_on_each_shard(user):
    """One notebook per shard (new notebooks get random ids until every shard has one)."""
    found = {}
    while len(found) < SHARDS:
        notebook = Notebook.objects.create(name="scale-out", owner=user)
        found.setdefault(int(kernel_channel(notebook.pk, shards=SHARDS).rsplit(".", 1)[1]), notebook)
    return [str(found[k].pk) for k in range(SHARDS)]


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
    notebook_ids = await sync_to_async(notebooks_on_each_shard)(cluster["user"])
    for notebook_id in notebook_ids:  # one notebook on each shard
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


async def test_a_killed_worker_leaves_the_other_shard_working_and_a_restarted_one_rebuilds(cluster):
    shard0, shard1 = await sync_to_async(notebooks_on_each_shard)(cluster["user"])
    first, second = await connect(cluster, shard0, 0), await connect(cluster, shard1, 1, watch_early=True)
    x = await create(second, "x = 41")
    y = await create(second, "y = x + 1\ny")
    await run(second, x)
    await second.wait_for(final_status(y, "success"))

    cluster["workers"][1].kill()
    # Shard 0 does not notice: edits and cascades go on, through either Daphne.
    p = await create(first, "p = 2")
    q = await create(first, "q = p * 21\nq")
    await run(first, p)
    await first.wait_for(final_status(q, "success"))
    other_daphne = await connect(cluster, shard0, 1)
    assert set(other_daphne.order) == {p, q}

    # Shard 1's edits are committed and wait in Redis for its worker; a new one rebuilds the
    # notebook from the database and tells the clients of the dead one (a fresh state).
    revision_before = await sync_to_async(lambda: Notebook.objects.get(pk=shard1).revision)()
    await second.send(type="create_cell", code="w = 5", requestId="while-down")
    await eventually(sync_to_async(lambda: Notebook.objects.get(pk=shard1).revision > revision_before), what="the create committed")
    # Its early announcement (docs/protocol.md) reaches the sockets without the worker.
    early = await second.wait_for(lambda e: e.get("requestId") == "while-down")
    assert early[-1]["type"] == "cell_created" and early[-1]["early"] and early[-1]["cell"]["code"] == "w = 5"
    cluster["workers"][1].start()
    seen = await second.wait_for(lambda e: e.get("requestId") == "while-down")
    assert seen[-1]["type"] == "notebook_state"
    w = next(c["id"] for c in seen[-1]["notebook"]["cells"] if c["code"] == "w = 5")
    fresh = await connect(cluster, shard1, 0)
    cells = fresh.state
    assert set(cells) == {x, y, w}
    assert cells[y]["status"] == "success" and cells[y]["outputs"] == [{"mimeType": "text/plain", "data": "42"}]
    # The new runner's namespace is empty: running y reruns its ancestor x first.
    await fresh.send(type="run_cell", cellId=y)
    seen = await fresh.wait_for(final_status(y))
    assert [e["cellId"] for e in seen if e["type"] == "cell_status" and e["status"] == "running"] == [x, y]
    assert seen[-1]["status"] == "success"
    for client in (first, second, other_daphne, fresh):
        await client.close()


def test_runkernel_refuses_a_shard_outside_kernel_shards():
    env = dict(os.environ, DATABASE_URL=database_url_for_tests(), KERNEL_SHARDS=str(SHARDS))
    result = subprocess.run([sys.executable, "manage.py", "runkernel", "--shards", "0,2"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "shard [2] does not exist: KERNEL_SHARDS=2 gives shards 0..1" in result.stderr
