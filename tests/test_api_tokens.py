"""Personal API tokens (docs/api.md): made by `manage.py api_token` and the account page, shown
once, stored only as a hash, revoked, listed in the admin; last use noted at most once a minute."""
import hashlib
import io
import re
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.utils import timezone

from notebooks_app.models import ApiToken

pytestmark = pytest.mark.django_db

TOKEN = re.compile(r"nbk_[A-Za-z0-9_-]{43}")


def make_token(username, *, name="script", scopes="read", expires=None):
    out = io.StringIO()
    call_command("api_token", username, name=name, scopes=scopes, expires=expires, stdout=out, stderr=io.StringIO())
    return out.getvalue().strip()


def notebooks_with(token):
    return Client().get("/api/v1/notebooks", headers={"Authorization": f"Bearer {token}"})


def stored_text():
    """Every row of the token table and of the sessions table, as the database holds them."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM notebooks_app_apitoken")
        tokens = cursor.fetchall()
        cursor.execute("SELECT * FROM django_session")
        sessions = cursor.fetchall()
    return repr(tokens) + repr(sessions)


# --- the command ------------------------------------------------------------------------------


def test_command_prints_a_token_that_works_and_stores_only_its_hash(users):
    token = make_token("alice", name="ci", scopes="read,run", expires="30")
    assert TOKEN.fullmatch(token)
    row = ApiToken.objects.get(owner=users["alice"], name="ci")
    assert row.scopes == ["read", "run"] and row.digest == hashlib.sha256(token.encode()).hexdigest()
    assert timedelta(days=29, hours=23) < row.expires_at - timezone.now() <= timedelta(days=30)
    assert token not in stored_text() and token[len(row.prefix):] not in stored_text()
    assert notebooks_with(token).status_code == 200


@pytest.mark.parametrize(
    "username, options, message",
    [
        ("nobody", {"name": "x", "scopes": "read"}, "There is no user called “nobody”"),
        ("alice", {"name": "x", "scopes": "read,admin"}, "Unknown scope admin"),
        ("alice", {"name": "x", "scopes": ""}, "at least one scope"),
        ("alice", {"name": "x", "scopes": "read", "expires": "0"}, "1 to 3650 days"),
        ("alice", {"name": "x", "scopes": "read", "expires": "soon"}, "whole number of days"),
        ("alice", {"name": "", "scopes": "read"}, "--name"),
    ],
)
def test_command_refuses_bad_input_clearly_and_writes_nothing(users, username, options, message):
    with pytest.raises(CommandError, match=message):
        call_command("api_token", username, stdout=io.StringIO(), stderr=io.StringIO(), **options)
    assert not ApiToken.objects.exists()


def test_command_refuses_a_second_live_token_of_the_same_name(users):
    make_token("alice", name="ci")
    with pytest.raises(CommandError, match="already has a live token called “ci”"):
        make_token("alice", name="ci")


def test_command_revokes_by_name_and_the_token_stops_working(users):
    token = make_token("alice", name="ci")
    call_command("api_token", "alice", revoke="ci", stdout=io.StringIO())
    response = notebooks_with(token)
    assert response.status_code == 401 and response.json()["error"]["message"] == "This API token was revoked."
    make_token("alice", name="ci")  # the name is free again
    with pytest.raises(CommandError, match="no live token called “other”"):
        call_command("api_token", "alice", revoke="other", stdout=io.StringIO())


# --- the account page ---------------------------------------------------------------------------


@pytest.fixture
def alice_client(client, users):
    client.force_login(users["alice"])
    return client


def test_page_requires_login(client):
    response = client.get("/accounts/tokens/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_every_page_header_links_to_the_tokens_page(alice_client):
    assert 'href="/accounts/tokens/"' in alice_client.get("/").content.decode()


def test_page_shows_a_new_token_once_and_then_lists_it_without_it(alice_client, users):
    response = alice_client.post("/accounts/tokens/", {"name": "report", "scopes": ["read", "run"], "expires_in_days": "7"})
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    shown = TOKEN.findall(response.content.decode())
    assert len(shown) == 1
    token = shown[0]
    row = ApiToken.objects.get(owner=users["alice"])
    assert (row.name, row.scopes, row.digest) == ("report", ["read", "run"], hashlib.sha256(token.encode()).hexdigest())
    assert token not in stored_text()
    listing = alice_client.get("/accounts/tokens/").content.decode()
    assert token not in listing and not TOKEN.search(listing)
    assert "report" in listing and f"{row.prefix}…" in listing and "read, run" in listing
    assert notebooks_with(token).status_code == 200


@pytest.mark.parametrize(
    "form, message",
    [
        ({"name": "", "scopes": ["read"]}, "Give the token a name"),
        ({"name": "x"}, "Choose at least one scope."),
        ({"name": "x", "scopes": ["admin"]}, "Select a valid choice"),
        ({"name": "x", "scopes": ["read"], "expires_in_days": "0"}, "A token lasts at least 1 day."),
        ({"name": "x", "scopes": ["read"], "expires_in_days": "99999"}, "at most 3650 days"),
        ({"name": "x", "scopes": ["read"], "expires_in_days": "soon"}, "Give a whole number of days"),
        ({"name": "x" * 101, "scopes": ["read"]}, "at most 100 characters"),
    ],
)
def test_page_refuses_bad_input_with_a_clear_message_and_writes_nothing(alice_client, form, message):
    response = alice_client.post("/accounts/tokens/", form)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not ApiToken.objects.exists()


def test_page_refuses_a_name_already_live(alice_client, users):
    ApiToken.objects.issue(users["alice"], name="report", scopes=["read"])
    response = alice_client.post("/accounts/tokens/", {"name": "report", "scopes": ["read"]})
    assert response.status_code == 400 and "You already have a token called “report”" in response.content.decode()
    assert ApiToken.objects.count() == 1


def test_page_posts_need_the_csrf_token(users):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(users["alice"])
    assert browser.post("/accounts/tokens/", {"name": "x", "scopes": ["read"]}).status_code == 403
    assert not ApiToken.objects.exists()


def test_page_revokes_its_owners_tokens_only(alice_client, users):
    mine, token = ApiToken.objects.issue(users["alice"], name="mine", scopes=["read"])
    bobs, _ = ApiToken.objects.issue(users["bob"], name="bobs", scopes=["read"])
    assert alice_client.post(f"/accounts/tokens/{bobs.pk}/revoke/").status_code == 404
    assert alice_client.post(f"/accounts/tokens/{mine.pk}/revoke/").status_code == 302
    bobs.refresh_from_db()
    mine.refresh_from_db()
    assert bobs.revoked_at is None and mine.revoked_at is not None
    assert notebooks_with(token).status_code == 401
    assert "revoked" in alice_client.get("/accounts/tokens/").content.decode()


# --- the admin ----------------------------------------------------------------------------------


def test_admin_lists_tokens_without_their_hash_and_revokes_them(client, users, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("root", "root@example.com", "root-pass-123"))
    row, _ = ApiToken.objects.issue(users["alice"], name="nightly", scopes=["read", "run"], expires_in_days=5)
    listing = client.get("/admin/notebooks_app/apitoken/").content.decode()
    assert "nightly" in listing and row.prefix in listing and "read, run" in listing
    detail = client.get(f"/admin/notebooks_app/apitoken/{row.pk}/change/")
    assert detail.status_code == 200 and row.digest not in detail.content.decode() + listing
    assert client.get("/admin/notebooks_app/apitoken/add/").status_code == 403
    client.post("/admin/notebooks_app/apitoken/", {"action": "revoke", "_selected_action": [row.pk]})
    row.refresh_from_db()
    assert row.revoked_at is not None


# --- use ----------------------------------------------------------------------------------------


def test_last_use_is_written_at_most_once_a_minute(users):
    row, token = ApiToken.objects.issue(users["alice"], name="busy", scopes=["read"])
    notebooks_with(token)
    row.refresh_from_db()
    first = row.last_used_at
    assert first is not None
    notebooks_with(token)
    row.refresh_from_db()
    assert row.last_used_at == first
    ApiToken.objects.filter(pk=row.pk).update(last_used_at=first - timedelta(seconds=61))
    notebooks_with(token)
    row.refresh_from_db()
    assert row.last_used_at > first
