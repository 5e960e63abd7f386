"""Runs with an id (docs/api.md#runs): on the real kernel worker, a run's outputs follow its
parameters while the notebook, its statuses and an open page hear nothing of it; bad parameters
refused with nothing written; cancel; RUN_TIME_LIMIT; the run log; the run's page and report;
named inputs (kernel/parameters.py) on their own. Runs on the shared kernel (no parameters): a
row for a cell's run and for run all, each cell's result, a failure, cancel (the cascade
interrupted, a queued one never run); and the runs of a kernel worker SIGKILLed, ended."""
import asyncio
import os
import signal
import time

import pytest
from channels.db import database_sync_to_async
from django.db.models.functions import Now
from django.test import Client

from notebooks_app import run_store
from notebooks_app.kernel.parameters import InvalidParameters, named_inputs, resolve
from notebooks_app.kernel.ui import UI_MIME
from notebooks_app.models import Cell, KernelWorkerRecord, NotebookRun
from tests.conftest import WorkerProcess, create, run_and_wait, text_output
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


# --- runs on the shared kernel (kernel/shared_runs.py) -------------------------------------------------


def python_cells(notebook, *codes):
    return [str(Cell.objects.create(notebook=notebook, position=index, code=code).pk) for index, code in enumerate(codes, start=1)]


@pytest.mark.django_db(transaction=True)
async def test_a_cell_run_on_the_shared_kernel_has_an_id_and_ends_success_with_each_cells_result(live_kernel, ws, users, notebook):
    first, second, apart = await database_sync_to_async(python_cells)(notebook, "x = 6 * 7\nprint('x is', x)", "y = x + 1\ny", "z = 0")
    page = await ws(users["alice"], notebook)
    token = await database_sync_to_async(issue)(users["bob"])

    queued = await api("post", f"/api/v1/notebooks/{notebook.pk}/cells/{first}/run", token)
    body = queued.json()
    assert queued.status_code == 202 and (body["queued"], body["status"], body["url"]) == ("run_cell", "queued", f"/api/v1/runs/{body['runId']}"), body
    run = await finished_run(body["runId"], token)

    assert (run["status"], run["kind"], run["source"], run["startedBy"], run["parameters"], run["error"]) == ("success", "shared", "api", "bob", {}, ""), run
    assert [c["cellId"] for c in run["cells"]] == [first, second]  # the cell and its dependent, not the cell apart
    assert [c["status"] for c in run["cells"]] == ["success", "success"] and run["cells"][0]["stdout"] == "x is 42\n" and text_of(run["cells"][1]) == "43"
    assert run["claimedBy"] and run["startedAt"] and run["finishedAt"] and run["duration"] is not None
    await page.wait_status(second, "success")  # on every open page, and in the notebook: the page's own Run
    assert text_output(page, second) == "43" and (await database_sync_to_async(Cell.objects.get)(pk=second)).status == "success"


@pytest.mark.django_db(transaction=True)
async def test_run_all_on_the_shared_kernel_has_an_id_and_each_cells_result_in_notebook_order(live_kernel, users, notebook):
    later, earlier = await database_sync_to_async(python_cells)(notebook, "y = x + 1\ny", "x = 1")
    token = await database_sync_to_async(issue)(users["alice"])
    body = (await api("post", f"/api/v1/notebooks/{notebook.pk}/run", token)).json()
    assert body["queued"] == "run_all" and body["cellId"] is None and body["runId"], body
    run = await finished_run(body["runId"], token)
    assert (run["status"], run["kind"]) == ("success", "shared"), run
    assert [(c["cellId"], c["status"]) for c in run["cells"]] == [(later, "success"), (earlier, "success")] and text_of(run["cells"][0]) == "2"


@pytest.mark.django_db(transaction=True)
async def test_a_failing_cell_makes_the_shared_run_error_with_its_error(live_kernel, users, notebook):
    cells = await database_sync_to_async(python_cells)(notebook, "x = 1", "raise ValueError('no good')", "y = x + 1\ny")
    token = await database_sync_to_async(issue)(users["alice"])
    run = await finished_run((await api("post", f"/api/v1/notebooks/{notebook.pk}/run", token)).json()["runId"], token)
    assert run["status"] == "error" and run["error"] == "1 cell failed, the first cell 2 (raise ValueError('no good'))." and run["finishedAt"], run
    assert [c["status"] for c in run["cells"]] == ["success", "error", "success"] and [c["cellId"] for c in run["cells"]] == cells
    assert (run["cells"][1]["error"]["ename"], run["cells"][1]["error"]["evalue"]) == ("ValueError", "no good")


@pytest.mark.django_db(transaction=True)
async def test_cancel_interrupts_a_shared_runs_cell_and_a_cancelled_queued_run_never_runs(live_kernel, ws, users, notebook):
    sleeper, second, marker = await database_sync_to_async(python_cells)(notebook, "import time\nprint('started', flush=True)\ntime.sleep(60)", "print('second ran')", "z = 3")
    page = await ws(users["alice"], notebook)
    token = await database_sync_to_async(issue)(users["bob"])
    running = (await api("post", f"/api/v1/notebooks/{notebook.pk}/cells/{sleeper}/run", token)).json()["runId"]
    await page.wait_for(lambda e: e["type"] == "cell_stdout" and e["cellId"] == sleeper, what="the long cell running")
    queued = (await api("post", f"/api/v1/notebooks/{notebook.pk}/cells/{second}/run", token)).json()["runId"]  # behind it

    cancelled = (await api("post", f"/api/v1/runs/{queued}/cancel", token)).json()
    assert cancelled["status"] == "cancelled" and "bob" in cancelled["error"]
    cancelled = (await api("post", f"/api/v1/runs/{running}/cancel", token)).json()
    assert cancelled["status"] == "cancelled" and "bob" in cancelled["error"]
    run = await finished_run(running, token, final=("cancelled",), until=lambda row: bool(row.results))  # the worker interrupted it
    assert run["status"] == "cancelled" and "bob" in run["error"] and run["cells"][0]["status"] == "cancelled", run
    assert run["cells"][0]["error"]["ename"] == "KeyboardInterrupt" and run["cells"][0]["stdout"] == "started\n"
    await page.wait_status(sleeper, "error")  # interrupted for everyone, as Stop does

    await run_and_wait(page, marker)  # the session has handled every message before it, the cancelled run's too
    never = await run_row(queued)
    assert (never.status, never.started_at, never.results) == ("cancelled", None, [])
    assert not [e for e in page.events if e.get("cellId") == second] and (await database_sync_to_async(Cell.objects.get)(pk=second)).status == "idle"


@pytest.mark.django_db(transaction=True)
async def test_stop_on_the_page_ends_a_shared_run_cancelled_and_a_crash_of_its_kernel_error(live_kernel, ws, users, notebook):
    sleeper, crasher = await database_sync_to_async(python_cells)(notebook, "import time\nprint('started', flush=True)\ntime.sleep(60)", "import os\nos._exit(3)")
    page = await ws(users["alice"], notebook)
    token = await database_sync_to_async(issue)(users["bob"])
    stopped = (await api("post", f"/api/v1/notebooks/{notebook.pk}/cells/{sleeper}/run", token)).json()["runId"]
    await page.wait_for(lambda e: e["type"] == "cell_stdout" and e["cellId"] == sleeper, what="the long cell running")
    await page.send(type="interrupt")  # alice presses Stop
    run = await finished_run(stopped, token)
    assert (run["status"], run["error"], run["cells"][0]["status"]) == ("cancelled", "Interrupted while it ran: Stop on the notebook's page, or a restart of its kernel.", "cancelled"), run

    crashed = await finished_run((await api("post", f"/api/v1/notebooks/{notebook.pk}/cells/{crasher}/run", token)).json()["runId"], token)
    assert crashed["status"] == "error" and crashed["cells"][0]["error"]["ename"] == "KernelDied" and crashed["finishedAt"], crashed


@pytest.fixture
def own_worker(settings, live_kernel):
    """A kernel worker of a fleet of the test's own, to kill: the API sends to it, not to the
    session's worker."""
    settings.KERNEL_FLEET = f"runs{os.getpid()}x{time.monotonic_ns() % 10**6}"
    settings.KERNEL_VSHARDS, settings.KERNEL_LEASE_SECONDS = 4, 2
    env = {"KERNEL_FLEET": settings.KERNEL_FLEET, "KERNEL_VSHARDS": "4", "KERNEL_LEASE_SECONDS": "2"}
    worker = WorkerProcess([settings.KERNEL_FLEET], extra_env=env).start()
    yield worker
    worker.kill(signal.SIGTERM)


@pytest.mark.django_db(transaction=True)
async def test_the_runs_of_a_killed_kernel_worker_end_error_saying_so(own_worker, users, notebook):
    sleeper = (await database_sync_to_async(python_cells)(notebook, "import time\ntime.sleep(60)"))[0]
    token = await database_sync_to_async(issue)(users["bob"])
    shared = (await api("post", f"/api/v1/notebooks/{notebook.pk}/cells/{sleeper}/run", token)).json()["runId"]
    copy = (await api("post", f"/api/v1/notebooks/{notebook.pk}/run", token, {"parameters": {}})).json()["runId"]

    async def both_running():
        rows = [await run_row(shared), await run_row(copy)]
        return all(row.status == "running" and row.claimed_by for row in rows) and rows

    rows = await eventually(both_running, timeout=40, what="both runs running on the worker")
    assert rows[0].claimed_by == rows[1].claimed_by
    make = database_sync_to_async(NotebookRun.objects.create)
    elsewhere = await make(notebook=notebook, kind="shared", status="running", claimed_by=f"alive-{os.getpid()}")  # a worker that renews
    waiting = await make(notebook=notebook, kind="copy")  # queued, no worker took it yet: its message waits
    await database_sync_to_async(KernelWorkerRecord.objects.create)(fleet="elsewhere", name=elsewhere.claimed_by, host="h", pid=1)
    own_worker.kill()  # SIGKILL: its leases and its record are no longer renewed

    def swept():
        KernelWorkerRecord.objects.filter(name=elsewhere.claimed_by).update(heartbeat_at=Now())
        run_store.end_orphaned_runs()  # what every worker's scheduler loop calls
        return all(NotebookRun.objects.get(pk=pk).status == "error" for pk in (shared, copy))

    try:
        await eventually(database_sync_to_async(swept), timeout=30, what="the dead worker's runs ended")
        for pk in (shared, copy):
            row = await run_row(pk)
            assert row.error == run_store.WORKER_STOPPED_RUNNING and row.finished_at, row
        assert (await run_row(elsewhere.pk)).status == "running" and (await run_row(waiting.pk)).status == "queued"
    finally:
        await database_sync_to_async(KernelWorkerRecord.objects.filter(name=elsewhere.claimed_by).delete)()
