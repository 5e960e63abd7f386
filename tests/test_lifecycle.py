"""The lifecycle of execution processes with real processes (kernel/lifecycle.py): a worker of
each test's own (`manage.py runworker` on shard channels, small limits in its environment), its
notebooks driven over the protocol, its processes counted on the host.

* a cap of 3 with 8 notebooks run: never more than 3 processes, and each notebook's next run gives
  the outputs it gave before;
* idle stop: the page hears why, results turn stale, the next run reruns what it needs and nothing
  more; a long quiet cell is never stopped;
* a person's cap stops their own least recently used; starts over a full worker wait pending, in
  order, with their positions;
* the memory watermark, and a process tree over its own limit killed with its size said;
* an operator's stop (manage.py kernels --stop);
* execution processes run at a lower CPU priority (KERNEL_NICE).
"""
import asyncio
import os
import time

import psutil
import pytest
from asgiref.sync import sync_to_async

from notebooks_app.models import EVENT_KERNEL_STOPPED, Notebook, NotebookEvent

from .conftest import WorkerProcess, create, run_and_wait, text_output
from .waiting import eventually

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

@pytest.fixture
def lifecycle_worker(settings, live_kernel):
    """Factory: `start(**environment)` -> a worker of a fleet of this test's own (in-process
    consumers send to its shards, not the session worker's), with those settings."""
    settings.KERNEL_FLEET = f"lifecycle{os.getpid()}x{time.monotonic_ns() % 10**6}"
    workers = []

    def start(**environment):
        env = {"KERNEL_FLEET": settings.KERNEL_FLEET, **{key: str(value) for key, value in environment.items()}}
        worker = WorkerProcess([settings.KERNEL_FLEET], extra_env=env).start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.kill()


def execution_processes(worker):
    """The worker's execution processes now (each a direct child: nice execs bubblewrap)."""
    try:
        children = psutil.Process(worker.proc.pid).children()
    except psutil.NoSuchProcess:
        return []
    found = []
    for child in children:
        try:
            if "notebooks_app.kernel._child" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue
    return found


def notebooks_of(owner, count, name="lifecycle"):
    return [Notebook.objects.create(name=f"{name} {index}", owner=owner) for index in range(count)]


def stops(notebook):
    return list(NotebookEvent.objects.filter(notebook=notebook, kind=EVENT_KERNEL_STOPPED).order_by("id").values_list("after", flat=True))


async def recorded_stops(notebook, count=1):
    """The history's kernel_stopped lines of `notebook`, once there are `count` (they are written
    just after the stop is announced)."""
    return await eventually(lambda: _at_least(notebook, count), what=f"{count} kernel_stopped line(s)")


async def _at_least(notebook, count):
    found = await sync_to_async(stops)(notebook)
    return found if len(found) >= count else None


def kernel_status(state, cause=None):
    return lambda e: e["type"] == "kernel_status" and e["state"] == state and (cause is None or e.get("cause") == cause)


async def test_a_cap_of_three_never_runs_more_and_every_notebook_gives_the_same_outputs(lifecycle_worker, ws, users):
    worker = lifecycle_worker(KERNEL_MAX_PROCESSES=3, KERNEL_USER_MAX=0)
    notebooks = await sync_to_async(notebooks_of)(users["alice"], 8)
    peak, sampling = 0, True

    async def sample():
        nonlocal peak
        while sampling:
            peak = max(peak, len(await asyncio.to_thread(execution_processes, worker)))
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    clients, cells, first = [], [], []
    try:
        for index, notebook in enumerate(notebooks):
            client = await ws(users["alice"], notebook)
            base = await create(client, f"base = {index} * 7")
            derived = await create(client, "base + 1")
            await run_and_wait(client, base)
            await run_and_wait(client, derived)
            clients.append(client)
            cells.append((base, derived))
            first.append(text_output(client, derived))
        for index, (client, (base, derived)) in enumerate(zip(clients, cells)):
            events = await run_and_wait(client, derived)
            assert events[-1]["status"] == "success", events
            assert text_output(client, derived) == first[index] == str(index * 7 + 1)
    finally:
        sampling = False
        await sampler
    assert 1 <= peak <= 3, peak
    assert len(execution_processes(worker)) <= 3
    stopped = [after for notebook in notebooks for after in await sync_to_async(stops)(notebook)]
    assert len(stopped) >= 5 and all(after["cause"] == "evicted" for after in stopped), stopped


async def test_an_idle_kernel_stops_and_the_next_run_reruns_what_it_needs_and_no_more(lifecycle_worker, ws, users, notebook):
    lifecycle_worker(KERNEL_IDLE_MINUTES=0.05)  # 3 s
    client = await ws(users["alice"], notebook)
    x = await create(client, "x = 21")
    doubled = await create(client, "x * 2")
    other = await create(client, "y = 5")
    await client.send(type="run_all")
    await client.wait_for(lambda e: all(client.state[c]["status"] == "success" for c in (x, doubled, other)), what="every cell run")
    started = time.monotonic()
    seen = await client.wait_for(kernel_status("stopped", "idle"), timeout=20)
    assert time.monotonic() - started >= 2, "stopped before its idle time"
    status = seen[-1]
    assert status["reason"].startswith("Kernel stopped after 0.05 min idle: the next run starts it") and status["at"]
    assert any(e["type"] == "kernel_restarted" and e.get("cause") == "idle" for e in seen)
    assert {client.state[c]["status"] for c in (x, doubled, other)} == {"stale"}
    assert text_output(client, doubled) == "42", "outputs stay, marked stale"
    after = (await recorded_stops(notebook))[-1]
    assert after["cause"] == "idle" and "idle" in after["reason"]
    # A page opened now hears it too.
    late = await ws(users["bob"], notebook)
    assert late.kernel["state"] == "stopped" and late.kernel["cause"] == "idle"
    events = await run_and_wait(client, doubled)
    ran = [e["cellId"] for e in events if e["type"] == "cell_status" and e["status"] == "running"]
    assert ran == [x, doubled], "the stale ancestor and the cell, nothing more"
    assert text_output(client, doubled) == "42" and client.state[other]["status"] == "stale"


async def test_a_long_quiet_cell_is_never_stopped_and_its_end_restarts_the_clock(lifecycle_worker, ws, users, notebook):
    lifecycle_worker(KERNEL_IDLE_MINUTES=0.05)  # 3 s; the cell prints nothing for 7
    client = await ws(users["alice"], notebook)
    cell = await create(client, "import time\ntime.sleep(7)\n'awake'")
    await client.send(type="run_cell", cellId=cell)
    seen = await client.wait_for(lambda e: e["type"] == "cell_status" and e["cellId"] == cell and e["status"] in ("success", "error"), timeout=30)
    assert seen[-1]["status"] == "success" and not any(kernel_status("stopped")(e) for e in seen), seen
    ended = time.monotonic()
    await client.wait_for(kernel_status("stopped", "idle"), timeout=20)
    assert time.monotonic() - ended >= 2.5, "the idle clock starts when the cell ends"


async def test_a_persons_cap_stops_their_least_recently_used_and_leaves_others_alone(lifecycle_worker, ws, users):
    lifecycle_worker(KERNEL_USER_MAX=2, KERNEL_MAX_PROCESSES=10)
    alices = await sync_to_async(notebooks_of)(users["alice"], 3, "alice's")
    [bobs] = await sync_to_async(notebooks_of)(users["bob"], 1, "bob's")
    bob = await ws(users["bob"], bobs)
    await run_and_wait(bob, await create(bob, "b = 1"))
    clients = []
    for notebook in alices:
        client = await ws(users["alice"], notebook)
        await run_and_wait(client, await create(client, "a = 1"))
        clients.append(client)
    seen = await clients[0].wait_for(kernel_status("stopped", "evicted"))
    assert "its user's limit of 2 running kernels" in seen[-1]["reason"]
    assert all(after["cause"] == "evicted" for after in await recorded_stops(alices[0]))
    assert not await sync_to_async(stops)(alices[1]) and not await sync_to_async(stops)(bobs)
    assert bob.kernel["state"] == "running"


async def test_over_a_full_worker_runs_wait_pending_in_order(lifecycle_worker, ws, users):
    lifecycle_worker(KERNEL_MAX_PROCESSES=1, KERNEL_USER_MAX=0)
    first, second, third = await sync_to_async(notebooks_of)(users["alice"], 3)
    a, b, c = [await ws(users["alice"], notebook) for notebook in (first, second, third)]
    slow = await create(a, "import time\ntime.sleep(4)\n'a'")
    quick_b, quick_c = await create(b, "'b'"), await create(c, "'c'")
    await a.send(type="run_cell", cellId=slow)
    await a.wait_status(slow, "running")
    await b.send(type="run_cell", cellId=quick_b)
    pending_b = await b.wait_for(kernel_status("pending"))
    await c.send(type="run_cell", cellId=quick_c)
    pending_c = await c.wait_for(kernel_status("pending"))
    assert pending_b[-1]["position"] == 1 and pending_c[-1]["position"] == 2
    assert "kernels are all busy" in pending_c[-1]["reason"]
    finished = {}
    for name, client, cell in (("a", a, slow), ("b", b, quick_b), ("c", c, quick_c)):
        await client.wait_status(cell, "success", timeout=40)
        finished[name] = time.monotonic()
    assert finished["a"] <= finished["b"] <= finished["c"]
    assert text_output(b, quick_b) == "'b'" and text_output(c, quick_c) == "'c'"
    assert c.kernel["state"] == "running"


async def test_over_the_memory_watermark_idle_kernels_stop_and_busy_ones_run_on(lifecycle_worker, ws, users):
    lifecycle_worker(KERNEL_MEMORY_HIGH_MB=1, KERNEL_MEMORY_LOW_MB=1, KERNEL_MAX_PROCESSES=10)
    busy_notebook, idle_notebook = await sync_to_async(notebooks_of)(users["alice"], 2)
    busy, idle = await ws(users["alice"], busy_notebook), await ws(users["alice"], idle_notebook)
    await run_and_wait(idle, await create(idle, "z = 1"))
    seen = await idle.wait_for(kernel_status("stopped", "memory"), timeout=20)
    assert "to free memory" in seen[-1]["reason"] and "over 1 MB" in seen[-1]["reason"]
    long = await create(busy, "import time\ntime.sleep(5)\n'done'")
    events = await run_and_wait(busy, long)
    assert events[-1]["status"] == "success", "a busy kernel is never stopped for the watermark"


async def test_a_kernel_over_its_own_memory_limit_is_killed_with_its_size_said(lifecycle_worker, ws, users, notebook):
    lifecycle_worker(KERNEL_MEMORY_LIMIT_MB=500)
    client = await ws(users["alice"], notebook)
    hog = await create(client, (
        "import subprocess, sys, time\n"
        "children = [subprocess.Popen([sys.executable, '-c', 'import time; b = b\"x\" * (300 << 20); time.sleep(60)']) for _ in range(2)]\n"
        "time.sleep(30)\n"
    ))
    events = await run_and_wait(client, hog)
    assert events[-1]["status"] == "error"
    error = client.state[hog]["error"]
    assert error["ename"] == "KernelDied" and "over its limit of 500 MB" in error["evalue"], error
    assert any(kernel_status("stopped", "over_limit")(e) for e in events) or (await client.wait_for(kernel_status("stopped", "over_limit")))


async def test_an_operator_stops_a_kernel_with_manage_py_kernels(lifecycle_worker, ws, users, notebook):
    from django.core.management import call_command

    lifecycle_worker()
    client = await ws(users["alice"], notebook)
    await run_and_wait(client, await create(client, "v = 1"))
    await sync_to_async(call_command)("kernels", "--stop", str(notebook.pk), "--reason", "maintenance")
    seen = await client.wait_for(kernel_status("stopped", "operator"))
    assert "by an operator: maintenance" in seen[-1]["reason"]


async def test_execution_processes_run_at_a_lower_cpu_priority(lifecycle_worker, ws, users, notebook):
    worker = lifecycle_worker(KERNEL_NICE=7)
    client = await ws(users["alice"], notebook)
    cell = await create(client, "import os\nos.nice(0)")
    await run_and_wait(client, cell)
    assert text_output(client, cell) == "7"
    [process] = execution_processes(worker)
    assert process.nice() == 7 and psutil.Process(worker.proc.pid).nice() == os.nice(0)
    # Where CPU time is grouped by session (sched_autogroup), the sandbox's own session has that
    # nice too, or the process's nice would count only within it (lifecycle.deprioritize).
    autogroup = f"/proc/{process.pid}/autogroup"
    if os.path.exists(autogroup):
        assert open(autogroup).read().split()[-1] == "7", open(autogroup).read()


async def test_stop_while_pending_gives_up_the_wait(lifecycle_worker, ws, users):
    lifecycle_worker(KERNEL_MAX_PROCESSES=1, KERNEL_USER_MAX=0)
    first, second = await sync_to_async(notebooks_of)(users["alice"], 2)
    a, b = await ws(users["alice"], first), await ws(users["alice"], second)
    slow = await create(a, "import time\ntime.sleep(5)\n'a'")
    waiting = await create(b, "'b'")
    await a.send(type="run_cell", cellId=slow)
    await a.wait_status(slow, "running")
    await b.send(type="run_cell", cellId=waiting)
    await b.wait_for(kernel_status("pending"))
    assert b.state[waiting]["status"] == "queued", "a run waiting for a kernel is queued, not running"
    await b.send(type="interrupt")
    events = await b.wait_for(lambda e: e["type"] == "cell_status" and e["cellId"] == waiting and e["status"] in ("success", "error"))
    assert events[-1]["status"] == "error" and b.state[waiting]["error"]["evalue"] == "interrupted before it started"
    assert (await a.wait_status(slow, "success"))[-1]["status"] == "success"
