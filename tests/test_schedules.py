"""Schedules (docs/api.md#schedules): next times in a time zone, the API's CRUD and its checks,
`tick(now)` driven by the test (each due time fires once, even for two ticks at once; a schedule
whose run is still going is skipped), and a failed scheduled run's email and signed webhook."""
import datetime
import http.server
import json
import threading

import pytest
from asgiref.sync import async_to_sync
from django.core import mail
from django.db import connection
from django.test import Client

from notebooks_app import run_store, schedules
from notebooks_app.models import NotebookRun, NotebookSchedule
from notebooks_app.run_store import RunStore
from tests.test_api import call, error_of, issue
from tests.test_api_runs import slider_cell

UTC = datetime.timezone.utc
# Far from the real clock, so a live kernel worker's own scheduler never finds these due.
DUE = datetime.datetime(2099, 1, 5, 9, 0, tzinfo=UTC)


@pytest.fixture
def sent(monkeypatch):
    """The runs tick() sends to kernel workers (none is running for these tests)."""
    runs = []
    monkeypatch.setattr(run_store, "send_run", runs.append)
    return runs


def schedule_for(notebook, owner, **fields):
    values = {"name": "nightly", "cron": "0 9 * * *", "timezone": "UTC", "next_run_at": DUE} | fields
    return NotebookSchedule.objects.create(notebook=notebook, owner=owner, **values)


def test_the_next_time_is_read_on_the_schedules_clock_across_a_change_of_summer_time():
    after = datetime.datetime(2026, 3, 28, 12, 0, tzinfo=UTC)
    assert schedules.next_time("0 9 * * *", "Europe/Paris", after) == datetime.datetime(2026, 3, 29, 7, 0, tzinfo=UTC)  # 09:00 CEST
    assert schedules.next_time("0 9 * * *", "UTC", after) == datetime.datetime(2026, 3, 29, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize("cron", ["61 * * * *", "* * *", "@reboot", "0 9 * * * *"])
def test_a_cron_expression_of_other_than_five_valid_fields_is_refused(cron):
    with pytest.raises(schedules.InvalidSchedule):
        schedules.check_cron(cron)


# --- the API ------------------------------------------------------------------------------------------


@pytest.mark.django_db
class TestScheduleApi:
    def test_an_editor_schedules_runs_with_parameters_and_sees_the_next_time(self, users, notebook):
        slider_cell(notebook)
        body = {"name": "morning", "cron": "30 6 * * 1-5", "timezone": "Europe/Paris", "parameters": {"threshold": 30}, "webhookUrl": "https://hooks.example.com/x"}
        response = call("post", f"/api/v1/notebooks/{notebook.pk}/schedules", issue(users["bob"]), body)
        assert response.status_code == 201, response.content
        made = response.json()
        assert made["owner"] == "bob" and made["nextRunAt"] and made["webhookSecret"] and made["enabled"] is True
        listed = call("get", f"/api/v1/notebooks/{notebook.pk}/schedules", issue(users["carol"], ("read",))).json()
        assert [s["name"] for s in listed] == ["morning"] and listed[0]["webhookSecret"] is None  # a viewer reads, without the key
        paused = call("patch", f"/api/v1/schedules/{made['id']}", issue(users["alice"]), {"enabled": False}).json()
        assert paused["enabled"] is False and paused["nextRunAt"] is None and paused["cron"] == "30 6 * * 1-5"
        assert call("delete", f"/api/v1/schedules/{made['id']}", issue(users["alice"])).status_code == 204
        assert NotebookSchedule.objects.count() == 0

    @pytest.mark.parametrize("change", [{"cron": "99 * * * *"}, {"timezone": "Mars/Olympus"}, {"parameters": {"threshold": 35}}, {"parameters": {"nope": 1}}, {"webhookUrl": "ftp://x"}])
    def test_a_bad_field_is_400_and_makes_no_schedule(self, users, notebook, change):
        slider_cell(notebook)
        body = {"name": "n", "cron": "0 9 * * *"} | change
        response = call("post", f"/api/v1/notebooks/{notebook.pk}/schedules", issue(users["alice"]), body)
        assert response.status_code == 400 and error_of(response) == "invalid_field" and NotebookSchedule.objects.count() == 0

    @pytest.mark.parametrize("who, status", [("carol", 403), ("dave", 404)])
    def test_a_viewer_or_stranger_cannot_schedule(self, users, notebook, who, status):
        response = call("post", f"/api/v1/notebooks/{notebook.pk}/schedules", issue(users[who]), {"name": "n", "cron": "0 9 * * *"})
        assert response.status_code == status and NotebookSchedule.objects.count() == 0

    def test_the_schedules_page_lists_the_next_run_and_is_linked_from_the_notebook(self, users, notebook):
        schedule_for(notebook, users["alice"], name="nightly report")
        client = Client()
        client.force_login(users["carol"])
        page = client.get(f"/notebooks/{notebook.pk}/schedules/").content.decode()
        assert "nightly report" in page and "2099-01-05 09:00" in page
        assert f"/notebooks/{notebook.pk}/schedules/" in client.get(f"/notebooks/{notebook.pk}/").content.decode()


# --- tick(now) ----------------------------------------------------------------------------------------


@pytest.mark.django_db
class TestTick:
    def test_a_schedule_fires_once_at_its_due_time_and_moves_to_the_next(self, users, notebook, sent):
        schedule = schedule_for(notebook, users["alice"], parameters={"threshold": 30})
        assert schedules.tick(DUE - datetime.timedelta(minutes=1)) == []
        (run,) = schedules.tick(DUE + datetime.timedelta(seconds=5))
        assert (run.source, run.kind, run.status, run.due_at, run.parameters, run.started_by) == ("schedule", "copy", "queued", DUE, {"threshold": 30}, users["alice"])
        schedule.refresh_from_db()
        assert schedule.next_run_at == DUE + datetime.timedelta(days=1) and schedule.last_run == run and sent == [run]
        assert schedules.tick(DUE + datetime.timedelta(seconds=6)) == []

    def test_a_schedule_whose_run_is_still_going_is_skipped_with_a_log_line(self, users, notebook, sent, caplog):
        running = NotebookRun.objects.create(notebook=notebook, started_by=users["alice"], status="running")
        schedule = schedule_for(notebook, users["alice"], last_run=running)
        assert schedules.tick(DUE) == [] and sent == []
        schedule.refresh_from_db()
        assert schedule.next_run_at > DUE and "still running" in caplog.text

    def test_a_paused_schedule_never_fires(self, users, notebook, sent):
        schedule_for(notebook, users["alice"], enabled=False)
        assert schedules.tick(DUE) == []


@pytest.mark.django_db(transaction=True)
def test_two_ticks_at_once_start_one_run(users, notebook, sent):
    schedule_for(notebook, users["alice"])
    barrier, made = threading.Barrier(2), []

    def worker():
        try:
            barrier.wait()
            made.extend(schedules.tick(DUE))
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert len(made) == 1 and NotebookRun.objects.filter(due_at=DUE).count() == 1


# --- a failed scheduled run ------------------------------------------------------------------------------


class Sink(http.server.BaseHTTPRequestHandler):
    """A webhook receiver that fails its first request (500) and takes the next."""

    received = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Sink.received.append((dict(self.headers), body))
        self.send_response(500 if len(Sink.received) == 1 else 204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def sink():
    Sink.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()


@pytest.mark.django_db(transaction=True)
def test_a_failed_scheduled_run_emails_its_owner_and_posts_a_signed_webhook_retried_once(users, notebook, sink, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    users["alice"].email = "alice@example.com"
    users["alice"].save()
    schedule = schedule_for(notebook, users["alice"], webhook_url=sink)
    run = NotebookRun.objects.create(notebook=notebook, started_by=users["alice"], source="schedule", schedule=schedule, due_at=DUE, status="running")

    async_to_sync(RunStore(on_failed=schedules.notify_failure).finish)(run.pk, "error", [], "1 cell failed, the first cell 2.")

    assert [m.to for m in mail.outbox] == [["alice@example.com"]] and "nightly" in mail.outbox[0].subject and "1 cell failed" in mail.outbox[0].body
    assert len(Sink.received) == 2  # the first answered 500: one retry
    headers, body = Sink.received[1]
    assert headers[schedules.SIGNATURE_HEADER] == schedules.signature(schedule.webhook_secret, body)
    payload = json.loads(body)
    assert payload["event"] == "run.failed" and payload["status"] == "error" and payload["runId"] == str(run.pk)


@pytest.mark.django_db(transaction=True)
def test_a_run_started_over_the_api_that_fails_notifies_nobody(users, notebook, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    run = NotebookRun.objects.create(notebook=notebook, started_by=users["alice"], status="running")
    async_to_sync(RunStore(on_failed=schedules.notify_failure).finish)(run.pk, "error", [], "boom")
    assert mail.outbox == [] and NotebookRun.objects.get(pk=run.pk).status == "error"
