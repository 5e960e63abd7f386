"""Runs with an id and parameters (docs/api.md#runs): on the real kernel worker, a run's outputs
follow its parameters while the notebook, its statuses and an open page hear nothing of it; bad
parameters refused with nothing written; cancel; RUN_TIME_LIMIT; the run log; the run's page
and report; named inputs (kernel/parameters.py) on their own."""
import asyncio

import pytest
from channels.db import database_sync_to_async
from django.test import Client

from notebooks_app.kernel.parameters import InvalidParameters, named_inputs, resolve
from notebooks_app.kernel.ui import UI_MIME
from notebooks_app.models import Cell, NotebookRun
from tests.conftest import create, run_and_wait
from tests.test_api import api, call, error_of, issue, snapshot
from tests.waiting import eventually

SLIDER = "from reactive_notebook import ui\nthreshold = ui.slider(0, 100, step=10, value=10, label='Threshold')"
READER = "doubled = threshold.value * 2\nprint('doubled', doubled)\ndoubled"


def slider_cell(notebook, position=1):
    """A cell that has run and shows its slider (as the kernel stores it), without a kernel."""
    cell = Cell.objects.create(notebook=notebook, position=position, code=SLIDER, status="success")
    cell.outputs = [{"mimeType": UI_MIME, "data": {"id": f"{cell.pk}:0", "kind": "slider", "label": "Threshold", "props": {"start": 0, "stop": 100, "step": 10}, "value": 10}}]
    cell.save(update_fields=["outputs"])
    return cell


def text_of(result):
    return next((o["data"] for o in result["outputs"] if o["mimeType"] == "text/plain"), None)


@database_sync_to_async
def run_row(run_id):
    return NotebookRun.objects.get(pk=run_id)


async def finished_run(run_id, token, *, final=("success", "error", "cancelled", "timed_out"), until=lambda row: True):
    """The run as the API shows it, once its row has ended (polled in the database: the API's
    rate limit is not what is tested here)."""

    async def ended():
        row = await run_row(run_id)
        return row.status in final and until(row)

    await eventually(ended, timeout=60, what=f"run {run_id} to end")
    return (await api("get", f"/api/v1/runs/{run_id}", token)).json()


def cell_rows(notebook):
    return list(Cell.objects.filter(notebook=notebook).order_by("position").values_list("id", "code", "status", "outputs", "stdout", "error", "inputs"))


# --- named inputs, on their own ---------------------------------------------------------------


def row(cell_id, code, outputs=(), inputs=None):
    return {"id": cell_id, "type": "python", "code": code, "outputs": list(outputs), "inputs": inputs or {}}


def ui_output(widget_id, kind="slider", props=None, value=10, label=""):
    return {"mimeType": UI_MIME, "data": {"id": widget_id, "kind": kind, "label": label, "props": props or {"start": 0, "stop": 100, "step": 10}, "value": value}}


def test_a_widget_assigned_to_a_variable_is_a_named_input_with_its_current_value():
    found = named_inputs([row("c1", SLIDER, [ui_output("c1:0")], inputs={"c1:0": 40})])
    assert list(found) == ["threshold"] and found["threshold"].widget_id == "c1:0" and found["threshold"].value == 40


def test_widgets_made_in_a_loop_or_assigned_twice_name_nothing():
    loop = "from reactive_notebook import ui\nsliders = [ui.slider(0, 9) for _ in range(2)]\nfirst = ui.slider(0, 9)"
    twice = [row("a", SLIDER, [ui_output("a:0")]), row("b", SLIDER, [ui_output("b:0")])]
    assert named_inputs([row("c", loop, [ui_output("c:0"), ui_output("c:1"), ui_output("c:2")])]) == {}
    assert named_inputs(twice) == {}


def test_a_cell_not_run_yet_names_no_input():
    assert named_inputs([row("c1", SLIDER)]) == {}


@pytest.mark.parametrize("parameters, why", [
    ({"threshold": 35}, "whole number of steps"),
    ({"threshold": 200}, "between 0 and 100"),
    ({"threshold": "high"}, "must be a number"),
    ({"limit": 3}, "not a named input"),
    ([1], "must be an object"),
])
def test_parameters_are_checked_as_set_input_checks_a_value(parameters, why):
    with pytest.raises(InvalidParameters, match=why):
        resolve(named_inputs([row("c1", SLIDER, [ui_output("c1:0")])]), parameters)


def test_parameters_resolve_to_the_widgets_values():
    assert resolve(named_inputs([row("c1", SLIDER, [ui_output("c1:0")])]), {"threshold": 30}) == {"c1": {"c1:0": 30}}


# --- refused runs: nothing written ------------------------------------------------------------------


@pytest.mark.django_db
class TestRefusedRuns:
    @pytest.mark.parametrize("body", [
        {"parameters": {"threshold": 35}},
        {"parameters": {"threshold": 1000}},
        {"parameters": {"threshold": "x"}},
        {"parameters": {"nope": 1}},
        {"parameters": [1]},
        {"parameters": {"threshold": 30}, "extra": 1},
    ])
    def test_bad_parameters_are_400_and_leave_no_run(self, users, notebook, body):
        slider_cell(notebook)
        before = snapshot(notebook)
        response = call("post", f"/api/v1/notebooks/{notebook.pk}/run", issue(users["alice"]), body)
        assert response.status_code == 400 and error_of(response) == "invalid_field", response.content
        assert NotebookRun.objects.count() == 0 and snapshot(notebook) == before

    @pytest.mark.parametrize("who, scopes, status", [("carol", ("read", "run"), 403), ("dave", ("read", "run"), 404), ("bob", ("read",), 403)])
    def test_who_may_not_run_gets_the_apis_error(self, users, notebook, who, scopes, status):
        slider_cell(notebook)
        response = call("post", f"/api/v1/notebooks/{notebook.pk}/run", issue(users[who], scopes), {"parameters": {"threshold": 30}})
        assert response.status_code == status and NotebookRun.objects.count() == 0


# --- the run log, a run, its page and report (rows made here) ------------------------------------


def finished_row(notebook, user, *, threshold=30):
    slider = slider_cell(notebook)
    results = [
        {"cellId": str(slider.pk), "type": "python", "code": SLIDER, "status": "success", "stdout": "", "error": None,
         "outputs": [ui_output(f"{slider.pk}:0", value=threshold, label="Threshold")]},
        {"cellId": "5b0c4a84-4c39-4a8e-9d0e-2f7f7d0d0c01", "type": "python", "code": READER, "status": "success", "stdout": f"doubled {threshold * 2}\n", "error": None,
         "outputs": [{"mimeType": "text/plain", "data": str(threshold * 2)}]},
    ]
    return NotebookRun.objects.create(notebook=notebook, started_by=user, parameters={"threshold": threshold}, status="success", results=results)


@pytest.mark.django_db
class TestRunLogAndPages:
    def test_the_run_log_is_newest_first_for_a_reader(self, users, notebook):
        first, second = finished_row(notebook, users["alice"], threshold=20), NotebookRun.objects.create(notebook=notebook, started_by=users["bob"], parameters={"threshold": 40})
        body = call("get", f"/api/v1/notebooks/{notebook.pk}/runs", issue(users["carol"], ("read",))).json()
        assert body["count"] == 2 and [r["id"] for r in body["results"]] == [str(second.pk), str(first.pk)]
        assert body["results"][1]["startedBy"] == "alice" and body["results"][1]["parameters"] == {"threshold": 20}

    def test_a_run_shows_each_cells_result_to_a_reader_and_is_not_found_for_a_stranger(self, users, notebook):
        run = finished_row(notebook, users["alice"])
        body = call("get", f"/api/v1/runs/{run.pk}", issue(users["carol"], ("read",))).json()
        assert body["status"] == "success" and [c["status"] for c in body["cells"]] == ["success", "success"] and text_of(body["cells"][1]) == "60"
        assert body["pageUrl"] == f"/notebooks/{notebook.pk}/runs/{run.pk}/"
        assert call("get", f"/api/v1/runs/{run.pk}", issue(users["dave"], ("read",))).status_code == 404
        assert call("get", "/api/v1/runs/not-a-uuid", issue(users["carol"], ("read",))).status_code == 404

    def test_a_viewer_may_not_cancel(self, users, notebook):
        run = NotebookRun.objects.create(notebook=notebook, started_by=users["alice"], parameters={})
        response = call("post", f"/api/v1/runs/{run.pk}/cancel", issue(users["carol"], ("read", "run")))
        assert response.status_code == 403 and NotebookRun.objects.get(pk=run.pk).status == "queued"

    def test_the_run_page_and_report_show_the_runs_outputs_and_parameters(self, users, notebook):
        run = finished_row(notebook, users["alice"])
        client = Client()
        client.force_login(users["carol"])
        page = client.get(f"/notebooks/{notebook.pk}/runs/{run.pk}/").content.decode()
        assert "threshold = 30" in page and "Success" in page and f"/notebooks/{notebook.pk}/runs/{run.pk}/export/html" in page
        report = client.get(f"/notebooks/{notebook.pk}/runs/{run.pk}/export/html")
        text = report.content.decode()
        assert report.status_code == 200 and "default-src 'none'" in report["Content-Security-Policy"]
        assert "Threshold: 30" in text and "doubled 60" in text and ">60<" in text
        assert "attachment" in client.get(f"/notebooks/{notebook.pk}/runs/{run.pk}/export/html?download=1")["Content-Disposition"]
        log = client.get(f"/notebooks/{notebook.pk}/runs/").content.decode()
        assert f"/notebooks/{notebook.pk}/runs/{run.pk}/" in log
        assert f"/notebooks/{notebook.pk}/runs/" in client.get(f"/notebooks/{notebook.pk}/").content.decode()

    def test_a_stranger_gets_404_on_the_run_page(self, users, notebook):
        run = finished_row(notebook, users["alice"])
        client = Client()
        client.force_login(users["dave"])
        assert client.get(f"/notebooks/{notebook.pk}/runs/{run.pk}/").status_code == 404
        assert client.get(f"/notebooks/{notebook.pk}/runs/{run.pk}/export/html").status_code == 404

    def test_deleting_the_notebook_deletes_its_runs(self, users, notebook):
        NotebookRun.objects.create(notebook=notebook, started_by=users["alice"], parameters={})
        notebook.delete()
        assert NotebookRun.objects.count() == 0


# --- on the real kernel worker ---------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_a_run_with_parameters_reflects_them_and_leaves_the_notebook_and_its_page_alone(live_kernel, ws, users, notebook):
    page = await ws(users["alice"], notebook)
    slider, reader = await create(page, SLIDER), None
    await run_and_wait(page, slider)
    reader = await create(page, READER, afterCellId=slider)
    await run_and_wait(page, reader)
    rows = await database_sync_to_async(cell_rows)(notebook)
    shown = {cell_id: dict(page.state[cell_id]) for cell_id in (slider, reader)}
    token = await database_sync_to_async(issue)(users["bob"])

    started = await api("post", f"/api/v1/notebooks/{notebook.pk}/run", token, {"parameters": {"threshold": 30}})
    assert started.status_code == 202, started.content
    body = started.json()
    assert body["status"] == "queued" and body["url"] == f"/api/v1/runs/{body['runId']}"
    run = await finished_run(body["runId"], token)

    assert run["status"] == "success" and run["startedBy"] == "bob" and run["parameters"] == {"threshold": 30}, run
    assert [c["cellId"] for c in run["cells"]] == [slider, reader]
    assert text_of(run["cells"][1]) == "60" and run["cells"][1]["stdout"] == "doubled 60\n"
    assert run["cells"][0]["outputs"][0]["data"]["value"] == 30 and run["duration"] is not None and run["claimedBy"]
    assert await database_sync_to_async(cell_rows)(notebook) == rows  # code, statuses, outputs, inputs: as they were
    with pytest.raises(asyncio.TimeoutError):
        await page.next(timeout=1)  # no event of the run reached the open page
    assert {cell_id: dict(page.state[cell_id]) for cell_id in (slider, reader)} == shown


@pytest.mark.django_db(transaction=True)
async def test_a_running_run_is_cancelled_and_a_queued_one_never_starts(live_kernel, users, notebook):
    await database_sync_to_async(Cell.objects.create)(notebook=notebook, position=1, code="import time\nprint('started', flush=True)\ntime.sleep(60)")
    token = await database_sync_to_async(issue)(users["bob"])
    run_id = (await api("post", f"/api/v1/notebooks/{notebook.pk}/run", token, {"parameters": {}})).json()["runId"]

    async def sleeping():
        row = await run_row(run_id)
        return row.status == "running" and row.results and row.results[0]["status"] == "running"

    await eventually(sleeping, timeout=30, what="the run's cell running")
    cancelled = await api("post", f"/api/v1/runs/{run_id}/cancel", token)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled" and "bob" in cancelled.json()["error"]
    run = await finished_run(run_id, token, final=("cancelled",), until=lambda row: row.results[0]["status"] == "cancelled")  # the worker stopped it
    assert run["status"] == "cancelled" and run["finishedAt"] and run["cells"][0]["status"] == "cancelled"

    queued = await database_sync_to_async(NotebookRun.objects.create)(notebook=notebook, started_by=users["bob"], parameters={})
    assert (await api("post", f"/api/v1/runs/{queued.pk}/cancel", token)).json()["status"] == "cancelled"
    assert (await api("post", f"/api/v1/runs/{queued.pk}/cancel", token)).json()["status"] == "cancelled"  # stays as it ended


@pytest.mark.django_db(transaction=True)
async def test_a_run_over_run_time_limit_times_out(live_kernel, users, notebook, settings):
    settings.RUN_TIME_LIMIT = 1.5  # carried by the run's message: the worker's own settings do not matter
    await database_sync_to_async(Cell.objects.create)(notebook=notebook, position=1, code="import time\ntime.sleep(60)")
    token = await database_sync_to_async(issue)(users["alice"])
    run_id = (await api("post", f"/api/v1/notebooks/{notebook.pk}/run", token, {"parameters": {}})).json()["runId"]
    run = await finished_run(run_id, token)
    assert run["status"] == "timed_out" and "RUN_TIME_LIMIT" in run["error"], run
    assert run["cells"][0]["status"] == "timed_out" and run["duration"] < 30
