"""A fleet of kernel workers with real processes (kernel/fleet.py): workers of a fleet of each
test's own share its virtual shards through leases in PostgreSQL; the notebooks are driven over
the protocol and compared with the database afterwards.

* three workers, one SIGKILLed mid-cascade: its notebooks answer again within the lease time, the
  edit committed meanwhile is there, and every run it had queued or was running runs once;
* a SIGSTOPped worker whose shards moved cannot write or publish after SIGCONT;
* a fourth worker takes its share without anyone restarting;
* SIGTERM drains: the worker hands its shards over at once (no wait for its leases to expire),
  its pages hear why, and the next owner runs the notebook.
"""
import io
import math
import os
import signal
import time

import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command

from notebooks_app.kernel.addresses import shard_of
from notebooks_app.models import EVENT_KERNEL_STOPPED, Cell, KernelLease, KernelWorkerRecord, Notebook, NotebookEvent, NotebookFile

from .conftest import WorkerProcess, create, session_cookie, text_output
from .client import NotebookClient
from .waiting import eventually

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

LEASE = 3  # seconds: KERNEL_LEASE_SECONDS of these fleets
SHARDS = 12


@pytest.fixture
def fleet(settings, live_kernel, ws):
    """Factory: `start()` -> a worker of this test's own fleet (the in-process consumers send to
    it, not to the session's worker).  (`ws` for its teardown: this loop's edit lane closed.)"""
    settings.KERNEL_FLEET = f"fleet{os.getpid()}x{time.monotonic_ns() % 10**6}"
    settings.KERNEL_VSHARDS = SHARDS
    settings.KERNEL_LEASE_SECONDS = LEASE
    workers = []

    def start(**environment):
        env = {"KERNEL_FLEET": settings.KERNEL_FLEET, "KERNEL_VSHARDS": str(SHARDS), "KERNEL_LEASE_SECONDS": str(LEASE), **{k: str(v) for k, v in environment.items()}}
        worker = WorkerProcess([settings.KERNEL_FLEET], extra_env=env).start()
        worker.fleet = settings.KERNEL_FLEET
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        if worker.proc.poll() is None:
            os.kill(worker.proc.pid, signal.SIGCONT)
    for worker in workers:
        worker.kill(signal.SIGTERM)  # drained: their database sessions end with them


def record_of(worker):
    return KernelWorkerRecord.objects.filter(fleet=worker.fleet, pid=worker.proc.pid).first()


def shards_of(worker):
    record = record_of(worker)
    if record is None:
        return set()
    return set(KernelLease.objects.filter(fleet=worker.fleet, owner=record.name).values_list("shard", flat=True))


async def balanced(workers):
    """Until every shard is held and each worker holds its fair share."""
    share = math.ceil(SHARDS / len(workers))

    def check():
        held = [shards_of(worker) for worker in workers]
        return sum(len(h) for h in held) == SHARDS and all(share - 1 <= len(h) <= share for h in held) and held

    return await eventually(sync_to_async(check), timeout=30, what=f"{SHARDS} shards shared by {len(workers)} workers")


def notebook_held_by(owner, worker, others=()):
    """A new notebook whose shard `worker` holds."""
    held = shards_of(worker)
    assert held, "the worker holds no shard"
    while True:
        notebook = Notebook.objects.create(name="fleet", owner=owner)
        if shard_of(notebook.pk, SHARDS) in held:
            return notebook
        notebook.delete()


async def client_of(user, notebook):
    cookie = await sync_to_async(session_cookie)(user)
    return await NotebookClient(notebook.pk, cookie, resync_on_gap=True, timeout=30).connect()


async def until(client, condition, what, timeout=30):
    """`condition()` of the client's folded state: true now, or after some event to come."""
    if not condition():
        await client.wait_for(lambda e: condition(), timeout=timeout, what=what)


def statuses(client, cell_id, status):
    return [e for e in client.events if e["type"] == "cell_status" and e["cellId"] == cell_id and e["status"] == status]


def db_cells(notebook):
    return {str(c.id): (c.code, c.status, c.outputs, c.stdout) for c in Cell.objects.filter(notebook=notebook)}


async def test_a_killed_workers_notebooks_move_within_the_lease_and_its_queued_runs_run_once(fleet, users):
    workers = [fleet() for _ in range(3)]
    await balanced(workers)
    victim = workers[1]
    notebook = await sync_to_async(notebook_held_by)(users["alice"], victim)
    client = await client_of(users["alice"], notebook)
    # Each run leaves a mark that counts its runs: a new version of a notebook file.
    slow = await create(client, "import time\nimport reactive_notebook as _nb\ntime.sleep(3)\n_nb.files.save('slow.txt', 'ran')\na = 1")
    after = await create(client, "b = a + 1\nb")
    other = await create(client, "import reactive_notebook as _nb\n_nb.files.save('other.txt', 'ran')\nprint('c ran')")
    await client.send(type="run_cell", cellId=slow)
    await client.send(type="run_cell", cellId=other)  # queued behind the cascade
    # Killed once the cell is in its sleep (its process started): a run received in the last
    # milliseconds before a kill, before its journal entry commits, is lost (docs/operations.md).
    await client.wait_for(lambda e: e["type"] == "kernel_status" and e["state"] == "running", what="the execution process started")
    victim.kill()  # SIGKILL, mid-cascade
    killed = time.monotonic()
    # Committed while nobody holds the shard; its answer is the new owner's state (the clients
    # of the dead worker get a fresh one) or, when the new owner came first, its event.
    edit = await client.request(type="create_cell", code="d = 4")
    assert edit["type"] in ("cell_created", "notebook_state"), edit
    await until(client, lambda: client.state.get(after, {}).get("status") == "success" and client.state.get(other, {}).get("status") == "success", "the queued runs done by the new owner", timeout=40)
    moved = time.monotonic() - killed
    print(f"\nfailover: the killed worker's notebook ran again {moved:.2f} s after the kill (lease {LEASE} s)")
    assert moved < LEASE + 10
    assert text_output(client, after) == "2" and client.state[other]["stdout"] == "c ran\n"
    runs = await sync_to_async(lambda: {path: NotebookFile.objects.filter(notebook=notebook, path=path).count() for path in ("slow.txt", "other.txt")})()
    assert runs == {"slow.txt": 1, "other.txt": 1}, "the interrupted run and the queued one ran once each"
    owners = await sync_to_async(lambda: [w for w in workers if shard_of(notebook.pk, SHARDS) in shards_of(w)])()
    assert len(owners) == 1 and owners[0] is not victim and owners[0].proc.poll() is None
    stored = await sync_to_async(db_cells)(notebook)
    assert len(stored) == 4 and "d = 4" in {code for code, *_ in stored.values()}
    assert {cell_id: client.state[cell_id]["status"] for cell_id in stored} == {cell_id: row[1] for cell_id, row in stored.items()}
    assert (await sync_to_async(Notebook.objects.get)(pk=notebook.pk)).run_journal.get("pending") == []
    # Its pages and its history hear why the namespace is gone.
    assert client.kernel["state"] in ("running", "stopped")
    lost = await sync_to_async(lambda: list(NotebookEvent.objects.filter(notebook=notebook, kind=EVENT_KERNEL_STOPPED).values_list("after", flat=True)))()
    assert [after["cause"] for after in lost] == ["failover"] and "the kernel worker that ran it stopped answering" in lost[0]["reason"]
    assert f":{victim.proc.pid}:" not in lost[0]["reason"], "no host nor pid for the notebook's members"
    await client.close()


async def test_a_paused_worker_that_lost_its_shards_writes_nothing_after_it_wakes(fleet, users):
    workers = [fleet(), fleet()]
    await balanced(workers)
    paused = workers[0]
    notebook = await sync_to_async(notebook_held_by)(users["alice"], paused)
    client = await client_of(users["alice"], notebook)
    slow = await create(client, "import time\ntime.sleep(2)\n'first owner'")
    await client.send(type="run_cell", cellId=slow)
    await client.wait_status(slow, "running")
    os.kill(paused.proc.pid, signal.SIGSTOP)  # its execution process runs on; it does not
    # The other worker takes the shard once the lease expired, and runs the run again.
    await eventually(lambda: sync_to_async(lambda: shard_of(notebook.pk, SHARDS) in shards_of(workers[1]))(), timeout=30, what="the shard taken over")
    await until(client, lambda: client.state.get(slow, {}).get("status") == "success", "the run done by the new owner")
    fresh = await create(client, "'second owner'")
    await client.send(type="run_cell", cellId=fresh)
    await client.wait_status(fresh, "success")
    before = await sync_to_async(db_cells)(notebook)
    revision = (await sync_to_async(Notebook.objects.get)(pk=notebook.pk)).revision
    seen = len(client.events)
    os.kill(paused.proc.pid, signal.SIGCONT)
    log = paused.log_path

    def dropped():
        text = log.read_text(errors="replace")
        return "lost shard" in text or "another kernel worker holds it now" in text

    await eventually(dropped, timeout=20, what="the woken worker to notice it lost its shard")
    await client.expect_silence(1.0)
    assert len(client.events) == seen, "the woken worker published nothing"
    assert await sync_to_async(db_cells)(notebook) == before, "the woken worker wrote nothing"
    assert (await sync_to_async(Notebook.objects.get)(pk=notebook.pk)).revision == revision
    assert paused.proc.poll() is None, "it lives on, serving the shards it holds again"
    await client.close()


async def test_a_new_worker_takes_its_share_and_its_notebooks_answer(fleet, users):
    workers = [fleet() for _ in range(3)]
    await balanced(workers)
    notebooks = [await sync_to_async(Notebook.objects.create)(name=f"n{i}", owner=users["alice"]) for i in range(6)]
    clients = [await client_of(users["alice"], notebook) for notebook in notebooks]
    cells = [await create(client, f"v = {i}\nv") for i, client in enumerate(clients)]
    workers.append(fleet())
    held = await balanced(workers)
    assert len(held[-1]) == math.ceil(SHARDS / 4)
    listing = io.StringIO()
    await sync_to_async(call_command)("kernels", stdout=listing)
    assert f"{SHARDS} shards, 4 live worker(s)" in listing.getvalue()
    assert listing.getvalue().count("(live)") == 4 and "no live worker" not in listing.getvalue()
    for i, (client, cell) in enumerate(zip(clients, cells)):
        await client.send(type="run_cell", cellId=cell)
        await until(client, lambda c=client, cell=cell: c.state[cell]["status"] == "success", f"notebook {i} runs")
        assert text_output(client, cell) == str(i)
        await client.close()


async def test_sigterm_hands_every_shard_over_at_once(fleet, users):
    workers = [fleet(), fleet()]
    await balanced(workers)
    leaving = workers[0]
    notebook = await sync_to_async(notebook_held_by)(users["alice"], leaving)
    client = await client_of(users["alice"], notebook)
    x = await create(client, "x = 20")
    y = await create(client, "x + 1")
    await client.send(type="run_cell", cellId=x)
    await until(client, lambda: client.state[y]["status"] == "success", "the cascade")
    leaving.proc.send_signal(signal.SIGTERM)
    asked = time.monotonic()
    seen = await client.wait_for(lambda e: e["type"] == "kernel_status" and e["state"] == "stopped", what="the drain's stop")
    assert seen[-1]["cause"] == "drain" and "moved to another kernel worker" in seen[-1]["reason"]
    assert leaving.proc.wait(20) == 0
    await eventually(lambda: sync_to_async(lambda: len(shards_of(workers[1])) == SHARDS)(), timeout=LEASE, what="every shard with the remaining worker")
    handed = time.monotonic() - asked
    print(f"\ndrain: every shard with the other worker {handed:.2f} s after SIGTERM (lease {LEASE} s)")
    assert client.state[x]["status"] == client.state[y]["status"] == "stale"
    await client.send(type="run_cell", cellId=y)
    # The new owner's first events come with a seq of its own: the client resyncs, so the
    # outcome is checked (y needs x run again in the new process), not each event.
    await until(client, lambda: client.state[y]["status"] == "success" and client.state[x]["status"] == "success", "y and its ancestor on the new owner")
    assert text_output(client, y) == "21"
    await client.close()
