"""Big notebooks stay open: no frame over the limit, large outputs by reference, chunked states.

Through the real consumer and worker (PostgreSQL, Redis, runworker): notebooks with large
outputs and with 10,000 cells are opened from fresh sockets, every frame is measured, and the
output URLs are fetched as a member, a stranger and an anonymous visitor.
"""
import pytest
from channels.db import database_sync_to_async
from django.test import Client

from notebooks_app.constants import FRAME_BYTES_BUDGET, FRAME_BYTES_LIMIT, OUTPUT_INLINE_LIMIT, STATE_INLINE_OUTPUT_CELLS, STATE_STDOUT_LIMIT
from notebooks_app.models import Cell, Notebook
from notebooks_app.protocol import frame_groups
from tests.conftest import create, run_and_wait

pytestmark = pytest.mark.django_db(transaction=True)


def reference(client, cell_id):
    outputs = client.state[cell_id]["outputs"]
    refs = [o for o in outputs if "ref" in o]
    assert refs, outputs
    return refs[0]


@database_sync_to_async
def fetch(user, url, **headers):
    client = Client()
    if user is not None:
        client.force_login(user)
    return client.get(url, **headers)


async def test_five_300_kb_outputs_open_from_a_fresh_socket_by_reference(ws, notebook, users):
    alice = await ws(users["alice"], notebook, batch=True)
    cells = [await create(alice, f"'{i}' * 300_000") for i in range(5)]
    await alice.send(type="run_all")
    await alice.wait_for(lambda e: e["type"] == "cell_status" and e["cellId"] == cells[-1] and e["status"] == "success", timeout=60)
    fresh = await ws(users["bob"], notebook)
    assert [fresh.state[c]["status"] for c in cells] == ["success"] * 5
    assert fresh.largest_frame < FRAME_BYTES_LIMIT and alice.largest_frame < FRAME_BYTES_LIMIT
    ref = reference(fresh, cells[2])
    assert ref["mimeType"] == "text/plain" and ref["size"] == 300_002 and "data" not in ref
    response = await fetch(users["carol"], ref["url"])  # a viewer may fetch it
    assert response.status_code == 200 and response.content.decode() == "'" + "2" * 300_000 + "'"
    assert response["Content-Type"].startswith("text/plain") and response["ETag"] == f'"{ref["ref"]}"'
    assert "immutable" in response["Cache-Control"]
    assert (await fetch(users["carol"], ref["url"], HTTP_IF_NONE_MATCH=response["ETag"])).status_code == 304
    assert (await fetch(users["dave"], ref["url"])).status_code == 404  # a stranger
    assert (await fetch(None, ref["url"])).status_code == 404  # anonymous
    page = (await fetch(users["carol"], f"/notebooks/{notebook.pk}/")).content.decode()
    assert ref["url"] in page and len(page) < 200_000  # the page links large outputs


async def test_a_2_mb_image_output_is_served_as_png_bytes(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    code = (
        "import numpy as np, matplotlib.pyplot as plt\n"
        "fig, ax = plt.subplots(figsize=(12, 12), dpi=100)\n"
        "ax.imshow(np.random.default_rng(1).random((1200, 1200, 3)))\n"
        "fig"
    )
    cell = await create(alice, code)
    await run_and_wait(alice, cell)
    ref = reference(alice, cell)
    assert ref["mimeType"] == "image/png" and ref["size"] > 2_000_000, ref
    assert [o["mimeType"] for o in alice.state[cell]["outputs"]] == ["image/png"]  # once, not twice
    response = await fetch(users["bob"], ref["url"])
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert response.content.startswith(b"\x89PNG") and abs(len(response.content) - ref["size"]) < 4
    assert alice.largest_frame < FRAME_BYTES_LIMIT


async def test_html_output_by_reference_is_a_sandboxed_document_without_scripts(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    code = "class Big:\n    def _repr_html_(self):\n        return '<script>parent.x=1</script><table>' + '<tr><td>1</td></tr>' * 10_000 + '</table>'\nBig()"
    cell = await create(alice, code)
    await run_and_wait(alice, cell)
    ref = next(o for o in alice.state[cell]["outputs"] if o["mimeType"] == "text/html")
    response = await fetch(users["carol"], ref["url"])
    policy = response["Content-Security-Policy"]
    assert response.status_code == 200 and response["Content-Type"].startswith("text/html")
    # An opaque origin whose own scripts may run (docs/frontend.md#outputs) but reach nothing.
    assert policy.startswith("sandbox allow-scripts;") and "default-src 'none'" in policy and "connect-src 'none'" in policy
    assert "allow-same-origin" not in policy


@pytest.mark.slow  # 8 s (16 s in a loaded run): the worker opens a notebook of 10,000 cells
async def test_a_notebook_of_10000_cells_opens_in_chunks_under_the_frame_limit(ws, notebook, users):
    @database_sync_to_async
    def fill():
        Cell.objects.bulk_create(
            [Cell(notebook=notebook, position=(i + 1) * 1024, code=f"v{i} = {i}  # " + "x" * 150) for i in range(10_000)]
        )
        Notebook.objects.filter(pk=notebook.pk).update(revision=notebook.revision + 1)

    await fill()
    client = await ws(users["carol"], notebook)
    assert len(client.order) == 10_000 and client.state_chunks > 1
    assert client.order[0] == (await database_sync_to_async(lambda: str(Cell.objects.filter(notebook=notebook).order_by("position").first().pk))())
    assert client.largest_frame < FRAME_BYTES_LIMIT
    assert client.state[client.order[-1]]["code"].startswith("v9999 = 9999")


async def test_no_frame_exceeds_the_limit_whatever_a_cell_produces(ws, notebook, users):
    """Oversized inputs for every kind of event: streamed stdout, an error with a huge message
    and traceback, the largest code allowed, outputs just under the inline limit in one
    cascade (batched), and the state of all of it on a fresh socket."""
    alice = await ws(users["alice"], notebook, batch=True)
    plain = await ws(users["bob"], notebook)
    code_cells = [
        "print('s' * 3_000_000)",
        "raise ValueError('e' * 3_000_000)",
        "def deep(n):\n    if n == 0:\n        raise RuntimeError('bottom ' + 'r' * 100_000)\n    return deep(n - 1)\ndeep(900)",
        "big_code = 1  # " + "c" * 200_000,
        *[f"'{i}' * {OUTPUT_INLINE_LIMIT - 100}" for i in range(30)],
    ]
    cells = [await create(alice, code) for code in code_cells]
    await alice.send(type="run_all")
    await alice.wait_for(lambda e: e["type"] == "cell_status" and e["cellId"] == cells[-1] and e["status"] in ("success", "error"), timeout=120)
    await plain.wait_for(lambda e: e["type"] == "cell_status" and e["cellId"] == cells[-1] and e["status"] in ("success", "error"), timeout=60)
    error = alice.state[cells[1]]["error"]
    assert error["ename"] == "ValueError" and "more characters not shown" in error["evalue"] and len(error["evalue"]) < 70_000
    assert sum(len(line) for line in alice.state[cells[2]]["error"]["traceback"]) < 70_000
    fresh = await ws(users["carol"], notebook, batch=True)
    stdout = fresh.state[cells[0]]
    assert len(stdout["stdout"]) == STATE_STDOUT_LIMIT and stdout["stdoutRef"]["size"] > STATE_STDOUT_LIMIT
    whole = await fetch(users["carol"], stdout["stdoutRef"]["url"])
    assert whole.status_code == 200 and len(whole.content) == stdout["stdoutRef"]["size"]
    for client in (alice, plain, fresh):
        assert client.largest_frame < FRAME_BYTES_LIMIT, client.largest_frame


def test_frame_groups_pack_in_order_within_the_budget():
    texts = ["a" * 300_000, "b" * 300_000, "c" * 300_000, "d" * 10]
    groups = frame_groups(texts, budget=FRAME_BYTES_BUDGET)
    assert [t for group in groups for t in group] == texts
    assert all(sum(len(t) + 2 for t in group) <= FRAME_BYTES_BUDGET for group in groups)
    assert frame_groups(["x" * 900_000]) == [["x" * 900_000]]


def test_stdout_reference_of_a_cell_is_for_its_notebooks_members_only(notebook, users):
    cell = Cell.objects.create(notebook=notebook, code="print()", stdout="o" * 100)
    url = f"/notebooks/{notebook.pk}/cells/{cell.pk}/stdout/"
    member, stranger = Client(), Client()
    member.force_login(users["carol"])
    stranger.force_login(users["dave"])
    assert member.get(url).content == b"o" * 100
    assert stranger.get(url).status_code == 404


async def test_a_big_notebooks_later_cells_come_with_their_outputs_by_reference(ws, notebook, users):
    """The first STATE_INLINE_OUTPUT_CELLS cells of a state carry their outputs; a later cell whose
    run ended carries `outputsRef`, which returns exactly the outputs a small state would hold."""
    @database_sync_to_async
    def fill():
        cells = [Cell(notebook=notebook, position=(i + 1) * 1024, code=f"v{i} = {i}\nv{i}") for i in range(STATE_INLINE_OUTPUT_CELLS + 5)]
        Cell.objects.bulk_create(cells)
        Notebook.objects.filter(pk=notebook.pk).update(revision=notebook.revision + 1)

    await fill()
    alice = await ws(users["alice"], notebook, batch=True)
    await alice.send(type="run_all")
    last = alice.order[-1]
    await alice.wait_for(lambda e: e["type"] == "cell_status" and e["cellId"] == last and e["status"] == "success", timeout=120)
    fresh = await ws(users["carol"], notebook)  # a viewer
    first, later = fresh.state[fresh.order[0]], fresh.state[last]
    assert first["outputs"] == alice.state[fresh.order[0]]["outputs"] and "outputsRef" not in first
    assert later["outputs"] == [] and later["outputsRef"]["count"] == 1
    assert [fresh.state[c].get("outputsRef") is not None for c in fresh.order] == [False] * STATE_INLINE_OUTPUT_CELLS + [True] * 5
    response = await fetch(users["carol"], later["outputsRef"]["url"])
    assert response.status_code == 200 and response.json()["outputs"] == alice.state[last]["outputs"]
    assert response.json()["outputs"][0]["data"] == str(STATE_INLINE_OUTPUT_CELLS + 4)
    assert (await fetch(users["dave"], later["outputsRef"]["url"])).status_code == 404  # a stranger
    assert (await fetch(None, later["outputsRef"]["url"])).status_code == 404  # anonymous
