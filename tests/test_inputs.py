"""Inputs: widgets defined in Python, moved through the protocol, shared by everyone, persisted."""
import pytest
from channels.db import database_sync_to_async

from notebooks_app.kernel import ui
from notebooks_app.models import Cell
from tests.conftest import create, run_and_wait, text_output

pytestmark = pytest.mark.django_db(transaction=True)

# (definition, a valid new value, invalid values)
WIDGETS = [
    ("ui.slider(0, 100, step=5, value=10, label='Threshold')", 35, [101, -5, 12, "50", True, None]),
    ("ui.number(2.5, start=0, stop=10)", 7.25, [11, "7", [], float("inf")]),
    ("ui.text('hello', max_length=20)", "world", [5, "x" * 21, "a\x00b"]),
    ("ui.dropdown(['north', 'south'], value='south')", "north", ["east", 1, None]),
    ("ui.checkbox(False, label='Include returns')", True, [1, "true", None]),
    ("ui.date('2024-03-01', start='2024-01-01', stop='2024-12-31')", "2024-07-04", ["2025-01-01", "yesterday", 20240704, "2024-13-01"]),
    ("ui.table(pd.DataFrame({'city': ['Oslo', 'Rome', 'Lima'], 'n': [1, 2, 3]}))", [0, 2], [[3], [-1], [0, 0], "0", [True]]),
]


def widget_of(client, cell_id):
    return next(o["data"] for o in client.state[cell_id]["outputs"] if o["mimeType"] == ui.UI_MIME)


@pytest.mark.parametrize("definition, good, bad", WIDGETS, ids=[w[0].split("(")[0] for w in WIDGETS])
async def test_every_widget_takes_a_valid_value_and_refuses_bad_ones(ws, notebook, users, definition, good, bad):
    alice, bob = await ws(users["alice"], notebook), await ws(users["bob"], notebook)
    widget_cell = await create(alice, f"from notebook import ui\nimport pandas as pd\nw = {definition}")
    reader = await create(alice, "w.value")
    await run_and_wait(alice, reader)
    before = widget_of(alice, widget_cell)
    assert before["id"] == f"{widget_cell}:0" and before["kind"] == definition.split("(")[0].split(".")[1]
    for value in bad:
        reply = await bob.request(type="set_input", cellId=widget_cell, value=value)
        assert reply["type"] == "error" and reply["code"] == "invalid_field" and reply["message"], (value, reply)
    assert widget_of(alice, widget_cell)["value"] == before["value"]
    stored = await database_sync_to_async(lambda: Cell.objects.get(pk=widget_cell).inputs)()
    assert stored == {}
    runs_before = sum(1 for e in alice.events if e["type"] == "cell_status" and e["status"] == "running" and e["cellId"] == widget_cell)
    reply = await bob.request(type="set_input", cellId=widget_cell, value=good)
    assert reply["type"] == "input_changed" and reply["value"] == good and reply["by"] == "bob"
    await alice.wait_for(lambda e: e["type"] == "cell_status" and e["cellId"] == reader and e["status"] == "success" and text_output(alice, reader) == repr(good))
    assert widget_of(alice, widget_cell)["value"] == good and widget_of(bob, widget_cell)["value"] == good
    runs_after = sum(1 for e in alice.events if e["type"] == "cell_status" and e["status"] == "running" and e["cellId"] == widget_cell)
    assert runs_after == runs_before  # the widget's own cell is not re-run (it would lose the value)
    assert await database_sync_to_async(lambda: Cell.objects.get(pk=widget_cell).inputs)() == {f"{widget_cell}:0": good}


async def test_a_viewer_sees_inputs_but_cannot_move_them(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    cell = await create(alice, "from notebook import ui\nlevel = ui.slider(0, 10, value=3)")
    await run_and_wait(alice, cell)
    carol = await ws(users["carol"], notebook)
    assert widget_of(carol, cell)["value"] == 3
    reply = await carol.request(type="set_input", cellId=cell, value=4)
    assert reply["type"] == "error" and reply["code"] == "forbidden"


async def test_a_set_value_survives_a_rerun_of_its_cell_and_a_worker_restart(ws, notebook, users, live_kernel):
    alice = await ws(users["alice"], notebook)
    cell = await create(alice, "from notebook import ui\nlevel = ui.slider(0, 10, value=3)")
    reader = await create(alice, "level.value * 100")
    await run_and_wait(alice, reader)
    await alice.request(type="set_input", cellId=cell, value=7)
    await alice.wait_for(lambda e: e.get("cellId") == reader and e.get("status") == "success" and text_output(alice, reader) == "700")
    await run_and_wait(alice, cell)  # re-running the defining cell keeps the value set
    await alice.wait_status(reader, "success")
    assert widget_of(alice, cell)["value"] == 7 and text_output(alice, reader) == "700"
    live_kernel.restart()
    fresh = await ws(users["alice"], notebook)
    await fresh.send(type="run_cell", cellId=reader)  # a fresh process: the cell is made again, with 7
    await fresh.wait_for(lambda e: e.get("cellId") == reader and e.get("status") == "success", timeout=60)
    assert text_output(fresh, reader) == "700" and widget_of(fresh, cell)["value"] == 7


async def test_a_redefined_widget_whose_saved_value_no_longer_fits_takes_its_default(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    cell = await create(alice, "from notebook import ui\nlevel = ui.slider(0, 10, value=3)")
    await run_and_wait(alice, cell)
    await alice.request(type="set_input", cellId=cell, value=9)
    await alice.request(type="cell_update", cellId=cell, code="from notebook import ui\nlevel = ui.slider(0, 5, value=2)")
    await run_and_wait(alice, cell)
    assert widget_of(alice, cell)["value"] == 2


def test_check_matches_the_widgets_own_rules():
    assert ui.check("slider", {"start": 0, "stop": 1, "step": 0.1}, 0.3) == 0.3
    with pytest.raises(ui.InvalidValue):
        ui.check("slider", {"start": 0, "stop": 1, "step": 0.1}, 0.35)
    with pytest.raises(ui.InvalidValue, match="unknown input kind"):
        ui.check("color", {}, "#fff")
    assert ui.check("table", {"total": 3, "selection": "multi"}, [2, 0]) == [0, 2]
    with pytest.raises(ui.InvalidValue):
        ui.check("table", {"total": 3, "selection": "single"}, [0, 1])


async def test_a_value_with_a_nul_or_lone_surrogate_anywhere_inside_is_refused(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    cell = await create(alice, "from notebook import ui\nchoice = ui.dropdown(['a', 'b'])")
    await run_and_wait(alice, cell)
    for value in (["ok", "a\x00b"], {"k\x00": 1}, [["\ud800"]]):
        reply = await alice.request(type="set_input", cellId=cell, value=value)
        assert reply["type"] == "error" and reply["code"] == "invalid_field", (value, reply)
