"""The kernel worker process: cascades, blocking rules, interrupts, crashes and restarts.

Driven through the real protocol (consumer + Redis + PostgreSQL) with the worker
in its own `runworker kernel` process; assertions are on what a group member receives.
"""
import pytest
from channels.db import database_sync_to_async

from notebooks_app.models import Cell, Notebook
from tests.conftest import create, db_cell, run_and_wait, text_output
from tests.waiting import eventually

pytestmark = pytest.mark.django_db(transaction=True)


def statuses(client, ids):
    return [client.state[i]["status"] for i in ids]


async def test_fan_out_of_fifty_reruns_each_dependent_once(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    root = await create(alice, "root = 1")
    children = [await create(alice, f"child_{i} = root + {i}\nchild_{i}") for i in range(50)]
    await alice.send(type="run_all")
    await alice.wait_for(lambda e: e["type"] == "cell_status" and e["cellId"] == children[-1] and e["status"] == "success", timeout=60)
    start = len(alice.events)
    await alice.send(type="cell_update", cellId=root, code="root = 100")
    await run_and_wait(alice, root)
    await alice.wait_for(lambda e: e["type"] == "cell_status" and e["cellId"] == children[-1] and e["status"] == "success", timeout=60)
    runs = [e["cellId"] for e in alice.events[start:] if e["type"] == "cell_status" and e["status"] == "running"]
    assert sorted(runs) == sorted([root, *children]) and runs[0] == root
    assert [text_output(alice, c) for c in children] == [str(100 + i) for i in range(50)]


async def test_multiple_definitions_block_both_until_fixed(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    first = await create(alice, "x = 1")
    second = await create(alice, "x = 2")
    await alice.wait_status(second, "blocked")
    assert statuses(alice, [first, second]) == ["blocked", "blocked"]
    error = alice.state[first]["error"]
    assert error["ename"] == "MultipleDefinitionError" and "'x'" in error["evalue"] and "cell 2" in error["evalue"]
    # A blocked cell does not run.
    await alice.send(type="run_cell", cellId=first)
    await alice.expect_silence(0.5)
    await alice.send(type="cell_update", cellId=second, code="y = 2")
    await alice.wait_for(lambda e: e["type"] == "cell_status" and e["cellId"] == first and e["status"] == "stale")
    await run_and_wait(alice, first)
    assert alice.state[first]["status"] == "success"


async def test_deleting_a_duplicate_definer_unblocks_and_reruns_the_other(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    first = await create(alice, "x = 1\nx")
    second = await create(alice, "x = 2")
    await alice.wait_status(second, "blocked")
    await alice.send(type="delete_cell", cellId=second)
    await alice.wait_status(first, "success")
    assert text_output(alice, first) == "1"


async def test_cycle_blocks_every_cell_on_it_and_fix_unblocks(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    a = await create(alice, "a = c + 1")
    b = await create(alice, "b = a + 1")
    c = await create(alice, "c = b + 1")
    await alice.wait_status(c, "blocked")
    assert statuses(alice, [a, b, c]) == ["blocked"] * 3
    assert alice.state[b]["error"]["ename"] == "CycleError"
    await alice.send(type="cell_update", cellId=a, code="a = 1")
    await alice.wait_for(lambda e: e["type"] == "cell_status" and e["cellId"] == c and e["status"] == "stale")
    await run_and_wait(alice, c)
    assert text_output(alice, c) is None and alice.state[c]["status"] == "success"


async def test_runner_crash_restarts_and_next_run_works(ws, notebook, users):
    alice, bob = await ws(users["alice"], notebook), await ws(users["bob"], notebook)
    keep = await create(alice, "kept = 1")
    await run_and_wait(alice, keep)
    crash = await create(alice, "import os\nos._exit(1)")
    await run_and_wait(alice, crash)
    assert alice.state[crash]["error"]["ename"] == "KernelDied"
    seen = await bob.wait_for(lambda e: e["type"] == "kernel_restarted")
    assert "exit" in seen[-1]["reason"]
    await bob.wait_status(keep, "stale")
    after = await create(alice, "'alive'")
    await run_and_wait(alice, after)
    assert text_output(alice, after) == "'alive'"
    probe = await create(alice, "kept")
    # The namespace is new: running `probe` reruns its stale ancestor first.
    seen = await run_and_wait(alice, probe)
    assert [e["cellId"] for e in seen if e["type"] == "cell_status" and e["status"] == "running"] == [keep, probe]


async def test_long_cell_in_one_notebook_does_not_delay_another(ws, notebook, users):
    """Notebooks run concurrently: one runs to the end while the other's cell is still
    running (it stops only when interrupted). How fast is bench/'s question."""
    other = await database_sync_to_async(Notebook.objects.create)(name="second", owner=users["alice"])
    one, two = await ws(users["alice"], notebook), await ws(users["alice"], other)
    loop = await create(one, "while True:\n    pass")
    quick = await create(two, "'quick'")
    await one.send(type="run_cell", cellId=loop)
    await one.wait_status(loop, "running")
    await run_and_wait(two, quick)
    assert text_output(two, quick) == "'quick'"
    assert one.state[loop]["status"] == "running"
    await one.send(type="interrupt")
    await one.wait_status(loop, "error")


async def test_restarted_worker_rebuilds_from_database(ws, notebook, users, live_kernel):
    alice = await ws(users["alice"], notebook)
    a = await create(alice, "a = 5\na")
    b = await create(alice, "b = a * 2\nb")
    await run_and_wait(alice, b)
    assert text_output(alice, b) == "10"
    live_kernel.restart()
    # Edits made while the worker was away are in the database; the new worker loads them.
    fresh = await ws(users["bob"], notebook)
    assert fresh.state[b]["outputs"] == [{"mimeType": "text/plain", "data": "10"}]
    await fresh.send(type="cell_update", cellId=a, code="a = 50\na")
    await fresh.wait_for(lambda e: e["type"] == "cell_updated")
    seen = await run_and_wait(fresh, b)
    assert [e["cellId"] for e in seen if e["type"] == "cell_status" and e["status"] == "running"] == [a, b]
    assert text_output(fresh, b) == "100"


async def test_worker_catches_up_on_missed_revision(ws, notebook, users):
    """A change committed without reaching the kernel (a lost message) is picked up by revision."""
    alice = await ws(users["alice"], notebook)
    a = await create(alice, "a = 1\na")

    def sneak():
        Cell.objects.filter(pk=a).update(code="a = 2\na")
        Notebook.objects.filter(pk=notebook.pk).update(revision=notebook.__class__.objects.get(pk=notebook.pk).revision + 1)

    await database_sync_to_async(sneak)()
    # The revision jumps by 2: the worker reloads and resyncs everyone, answering with a state.
    reply = await alice.request(type="create_cell", code="b = a + 1\nb")
    assert reply["type"] == "notebook_state"
    assert alice.state[a]["code"] == "a = 2\na"
    b = alice.order[-1]
    await run_and_wait(alice, b)
    assert text_output(alice, b) == "3"


async def test_a_connecting_client_brings_the_kernel_up_to_the_database(ws, notebook, users):
    """Cells written through the models (revision bumped, no kernel message) show up for the
    next client that connects, and for everyone already connected."""
    alice = await ws(users["alice"], notebook)
    await create(alice, "first = 1")

    def add_through_models():
        nb = Notebook.objects.get(pk=notebook.pk)
        cell = Cell.objects.create(notebook=nb, code="second = first + 1\nsecond")
        nb.revision += 1
        nb.save(update_fields=["revision"])
        return str(cell.pk)

    added = await database_sync_to_async(add_through_models)()
    bob = await ws(users["bob"], notebook)
    assert bob.order[-1] == added
    await alice.wait_for(lambda e: e["type"] == "notebook_state")
    assert alice.order == bob.order
    await run_and_wait(bob, added)
    assert text_output(bob, added) == "2"


async def test_final_states_are_persisted_not_intermediate(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    a = await create(alice, "a = 5\na")
    b = await create(alice, "b = a * 2\nb")
    await run_and_wait(alice, b)

    async def persisted():
        cell = await db_cell(b)
        return cell if cell.status == "success" else None

    cell = await eventually(persisted, what="b's final state in the database")
    assert (cell.status, cell.outputs, cell.reads, cell.writes) == ("success", [{"mimeType": "text/plain", "data": "10"}], ["a"], ["b"])
    assert (await db_cell(a)).status == "success"
