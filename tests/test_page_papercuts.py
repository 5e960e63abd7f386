"""The page's papercuts (issue 33, item 7) on the server side: "Restart kernel" over the real
protocol (consumer, channel layer, kernel worker), and a new notebook's one empty Python cell."""
import pytest
from channels.db import database_sync_to_async

from notebooks_app import operations
from notebooks_app.constants import CELL_PYTHON
from notebooks_app.models import EVENT_CREATED, EVENT_KERNEL_RESTARTED, NotebookEvent
from tests.conftest import create, run_and_wait, text_output

pytestmark = pytest.mark.django_db(transaction=True)


def restart_events(notebook):
    return list(NotebookEvent.objects.filter(notebook=notebook, kind=EVENT_KERNEL_RESTARTED).values_list("user__username", flat=True))


async def test_restart_kernel_tells_everyone_and_turns_results_stale(ws, notebook, users):
    alice, bob, carol = [await ws(users[name], notebook) for name in ("alice", "bob", "carol")]
    cell = await create(alice, "x = 41\nx + 1")
    await run_and_wait(alice, cell)
    assert text_output(alice, cell) == "42"

    await bob.send(type="restart_kernel")
    for client in (alice, bob, carol):
        restarted = await client.wait_for(lambda e: e["type"] == "kernel_restarted")
        assert restarted[-1]["reason"] == "restarted by bob"
        await client.wait_status(cell, "stale")
    assert await database_sync_to_async(restart_events)(notebook) == ["bob"]
    # The next run starts a fresh process.
    await run_and_wait(alice, cell)
    assert text_output(alice, cell) == "42"


async def test_viewer_cannot_restart_the_kernel(ws, notebook, users):
    carol, alice = await ws(users["carol"], notebook), await ws(users["alice"], notebook)
    reply = await carol.request(type="restart_kernel")
    assert reply["type"] == "error" and reply["code"] == "forbidden"
    await alice.expect_silence(0.5)
    assert await database_sync_to_async(restart_events)(notebook) == []


def test_a_new_notebook_starts_with_one_empty_python_cell(users):
    notebook = operations.create_notebook(users["dave"], "  Fresh ideas  ")
    assert notebook.name == "Fresh ideas"
    assert list(notebook.cells.values_list("type", "code")) == [(CELL_PYTHON, "")]
    cell = notebook.cells.get()
    # Its `created` event, as any other new cell: undo and history see it.
    assert list(notebook.events.values_list("kind", "cell_id")) == [(EVENT_CREATED, cell.pk)]
