"""The notebook's Schedules page (schedule_views.py, docs/api.md#schedules) with the Django test
client on PostgreSQL: owners and editors add, edit, pause, resume and delete schedules through its
forms (POST, redirect, a message); viewers read the list without forms and are refused a change,
strangers get a 404; a bad cron expression, time zone or parameter is told next to its field
with what was typed kept, in the API's words, and nothing is saved."""
import datetime
import re

import pytest
from django.test import Client

from notebooks_app.models import NotebookRun, NotebookSchedule
from tests.test_api import call, issue
from tests.test_api_runs import slider_cell
from tests.test_schedules import DUE, schedule_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def as_user(users):
    """Factory: `as_user("bob")` -> a test client logged in as bob."""

    def client_for(username):
        client = Client()
        client.force_login(users[username])
        return client

    return client_for


def page_url(notebook, action=""):
    return f"/notebooks/{notebook.pk}/schedules/{action}"


def filled(**fields):
    """The add / edit form's fields as a browser posts them (`enabled` ticked)."""
    return {"name": "morning", "cron": "30 6 * * 1-5", "timezone": "Europe/Paris", "enabled": "on", "webhook_url": ""} | fields


def field_html(page, name):
    """The HTML of the form field `name` in the (one) form of `page` that has errors, with its errors."""
    match = re.search(rf'<div class="schedule-field has-error">\s*<label for="[^"]*_{name}">.*?</div>', page, re.S)
    assert match, f"no error next to {name}"
    return match.group(0)


def test_an_editor_adds_a_schedule_with_a_parameter_and_sees_it_with_its_next_runs(as_user, users, notebook):
    slider_cell(notebook)
    bob = as_user("bob")
    response = bob.post(page_url(notebook, "add/"), filled(param_threshold="30", webhook_url="https://hooks.example.com/x"))
    assert response.status_code == 302 and response["Location"] == page_url(notebook)
    schedule = NotebookSchedule.objects.get()
    assert (schedule.name, schedule.owner, schedule.cron, schedule.timezone, schedule.parameters, schedule.enabled) == ("morning", users["bob"], "30 6 * * 1-5", "Europe/Paris", {"threshold": 30}, True)
    assert schedule.next_run_at is not None and schedule.webhook_url == "https://hooks.example.com/x"
    page = bob.get(page_url(notebook)).content.decode()
    assert "Added the schedule “morning”: next run" in page
    assert page.count('class="next-run"') == 3 and "06:30 CE" in page and "UTC)" in page  # on Paris' clock, and in UTC
    assert "threshold = 30" in page and schedule.webhook_secret in page  # the signing key, for who may edit


def test_a_blank_parameter_leaves_the_input_at_its_value_in_the_notebook(as_user, notebook):
    slider_cell(notebook)
    assert as_user("alice").post(page_url(notebook, "add/"), filled(param_threshold="")).status_code == 302
    assert NotebookSchedule.objects.get().parameters == {}


def test_the_next_three_runs_are_shown_on_the_schedules_clock_and_in_utc(as_user, users, notebook):
    eight_utc = datetime.datetime(2099, 1, 5, 8, 0, tzinfo=datetime.timezone.utc)  # 09:00 in Paris (winter)
    schedule_for(notebook, users["alice"], cron="0 9 * * *", timezone="Europe/Paris", next_run_at=eight_utc)
    page = as_user("carol").get(page_url(notebook)).content.decode()
    assert "Mon 2099-01-05 09:00 CET" in page and "(2099-01-05 08:00 UTC)" in page
    assert "Tue 2099-01-06 09:00 CET" in page and "Wed 2099-01-07 09:00 CET" in page


def test_the_last_runs_outcome_links_to_its_run(as_user, users, notebook):
    run = NotebookRun.objects.create(notebook=notebook, started_by=users["alice"], source="schedule", status="error")
    schedule_for(notebook, users["alice"], last_run=run)
    page = as_user("carol").get(page_url(notebook)).content.decode()
    assert f'href="/notebooks/{notebook.pk}/runs/{run.pk}/">Error</a>' in page


def test_an_editor_edits_a_schedule_and_its_next_time_is_computed_again(as_user, users, notebook):
    schedule = schedule_for(notebook, users["alice"])
    response = as_user("bob").post(page_url(notebook, f"{schedule.pk}/edit/"), filled(name="weekly", cron="0 7 * * 1", timezone="UTC"))
    assert response.status_code == 302
    schedule.refresh_from_db()
    assert (schedule.name, schedule.cron, schedule.owner) == ("weekly", "0 7 * * 1", users["alice"])  # the owner stays
    assert schedule.next_run_at != DUE and schedule.next_run_at.weekday() == 0 and schedule.next_run_at.hour == 7


def test_an_editor_pauses_and_resumes_a_schedule(as_user, users, notebook):
    schedule = schedule_for(notebook, users["alice"])
    bob = as_user("bob")
    assert bob.post(page_url(notebook, f"{schedule.pk}/enabled/"), {"enabled": "false"}).status_code == 302
    schedule.refresh_from_db()
    assert schedule.enabled is False and schedule.next_run_at is None
    page = bob.get(page_url(notebook)).content.decode()
    assert "Paused the schedule “nightly”" in page and '<span class="paused">paused</span>' in page and ">Resume</button>" in page
    bob.post(page_url(notebook, f"{schedule.pk}/enabled/"), {"enabled": "true"})
    schedule.refresh_from_db()
    assert schedule.enabled is True and schedule.next_run_at is not None


def test_the_owner_deletes_a_schedule_and_its_runs_stay(as_user, users, notebook):
    schedule = schedule_for(notebook, users["alice"])
    run = NotebookRun.objects.create(notebook=notebook, started_by=users["alice"], source="schedule", schedule=schedule, due_at=DUE)
    response = as_user("alice").post(page_url(notebook, f"{schedule.pk}/delete/"), follow=True)
    assert "Deleted the schedule “nightly”" in response.content.decode()
    assert not NotebookSchedule.objects.exists() and NotebookRun.objects.filter(pk=run.pk).exists()


@pytest.mark.parametrize("who, forms", [("alice", True), ("bob", True), ("carol", False)])
def test_owners_and_editors_get_the_forms_and_viewers_only_the_list(as_user, users, notebook, who, forms):
    schedule_for(notebook, users["alice"], name="nightly report", webhook_url="https://hooks.example.com/x")
    page = as_user(who).get(page_url(notebook)).content.decode()
    assert "nightly report" in page
    assert ('id="add-schedule"' in page, "Edit “nightly report”" in page, ">Pause</button>" in page) == (forms, forms, forms)
    assert (NotebookSchedule.objects.get().webhook_secret in page) is forms


@pytest.mark.parametrize("action", ["add/", "{pk}/edit/", "{pk}/enabled/", "{pk}/delete/"])
@pytest.mark.parametrize("who, status", [("carol", 403), ("dave", 404)])
def test_a_viewer_or_stranger_cannot_change_schedules(as_user, users, notebook, action, who, status):
    schedule = schedule_for(notebook, users["alice"])
    before = list(NotebookSchedule.objects.values())
    response = as_user(who).post(page_url(notebook, action.format(pk=schedule.pk)), filled(name="changed") | {"enabled": "false"})
    assert response.status_code == status and list(NotebookSchedule.objects.values()) == before
    if status == 403:
        assert "You may view this notebook but not change it." in response.content.decode()


def test_a_stranger_does_not_see_the_page(as_user, notebook):
    assert as_user("dave").get(page_url(notebook)).status_code == 404


@pytest.mark.parametrize(
    "field, typed, api_body, said",
    [
        ("cron", "99 * * * *", {"cron": "99 * * * *"}, "is not a cron expression of five fields"),
        ("timezone", "Mars/Olympus", {"timezone": "Mars/Olympus"}, "is not a time zone"),
        ("param_threshold", "500", {"parameters": {"threshold": 500}}, "must be between 0 and 100"),
        ("param_threshold", "35", {"parameters": {"threshold": 35}}, "whole number of steps of 10"),
        ("param_threshold", "lots", {"parameters": {"threshold": "lots"}}, "must be a number"),
    ],
)
def test_a_bad_field_is_told_next_to_it_in_the_apis_words_and_nothing_is_saved(as_user, users, notebook, field, typed, api_body, said):
    slider_cell(notebook)
    response = as_user("bob").post(page_url(notebook, "add/"), filled(**{field: typed}))
    assert response.status_code == 400 and not NotebookSchedule.objects.exists()
    shown = field_html(response.content.decode(), field)
    assert said in shown and f'value="{typed}"' in shown  # what was typed is kept
    assert 'value="morning"' in response.content.decode()  # and so are the other fields
    api = call("post", f"/api/v1/notebooks/{notebook.pk}/schedules", issue(users["bob"]), {"name": "n", "cron": "0 9 * * *"} | api_body)
    assert api.status_code == 400 and said in api.json()["error"]["message"]


def test_a_bad_edit_changes_nothing_and_comes_back_open_with_the_error(as_user, users, notebook):
    schedule = schedule_for(notebook, users["alice"])
    response = as_user("alice").post(page_url(notebook, f"{schedule.pk}/edit/"), filled(cron="every day"))
    assert response.status_code == 400
    page = response.content.decode()
    assert f'id="edit-schedule-{schedule.pk}" open' in page and "is not a cron expression" in field_html(page, "cron")
    schedule.refresh_from_db()
    assert (schedule.name, schedule.cron, schedule.next_run_at) == ("nightly", "0 9 * * *", DUE)
