"""A notebook's owner renames and deletes it from its page; accounts for a first user."""
import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from notebooks_app.models import Cell, Notebook
from tests.conftest import create

pytestmark = pytest.mark.django_db


def login(client, user):
    client.force_login(user)
    return client


def test_list_shows_each_notebooks_role_owner_and_last_change(client, notebook, users):
    Notebook.objects.create(name="Carol's own", owner=users["carol"])
    page = login(client, users["carol"]).get("/").content.decode()
    assert "Your role" in page and page.count('class="role"') == 2
    assert '<td class="role">viewer</td>' in page and '<td class="role">owner</td>' in page
    assert "alice" in page and " ago</time>" in page


def test_owner_renames_and_the_name_is_validated(client, notebook, users):
    login(client, users["alice"])
    response = client.post(f"/notebooks/{notebook.pk}/rename/", {"name": "  Q3 revenue  "})
    assert response.status_code == 302
    notebook.refresh_from_db()
    assert notebook.name == "Q3 revenue" and notebook.revision == 1
    response = client.post(f"/notebooks/{notebook.pk}/rename/", {"name": "   "})
    assert response.status_code == 400 and "Give the notebook a name." in response.content.decode()
    notebook.refresh_from_db()
    assert notebook.name == "Q3 revenue"


@pytest.mark.parametrize("who, status", [("bob", 403), ("carol", 403), ("dave", 404)])
def test_only_the_owner_may_rename_or_delete(client, notebook, users, who, status):
    login(client, users[who])
    assert client.post(f"/notebooks/{notebook.pk}/rename/", {"name": "mine now"}).status_code == status
    assert client.get(f"/notebooks/{notebook.pk}/delete/").status_code == status
    assert client.post(f"/notebooks/{notebook.pk}/delete/").status_code == status
    notebook.refresh_from_db()
    assert notebook.name == "Shared analysis"


def test_delete_asks_first_then_deletes_with_cells(client, notebook, users):
    Cell.objects.create(notebook=notebook, code="a = 1")
    login(client, users["alice"])
    page = client.get(f"/notebooks/{notebook.pk}/").content.decode()
    assert f"/notebooks/{notebook.pk}/delete/" in page and "Rename" in page
    confirm = client.get(f"/notebooks/{notebook.pk}/delete/").content.decode()
    assert "Delete “Shared analysis”?" in confirm and "1 cell," in confirm and "2 members" in confirm
    assert Notebook.objects.filter(pk=notebook.pk).exists()  # asking deletes nothing
    response = client.post(f"/notebooks/{notebook.pk}/delete/")
    assert response.status_code == 302 and response["Location"] == "/"
    assert not Notebook.objects.filter(pk=notebook.pk).exists() and not Cell.objects.filter(notebook_id=notebook.pk).exists()


def test_editor_sees_no_rename_or_delete_controls(client, notebook, users):
    page = login(client, users["bob"]).get(f"/notebooks/{notebook.pk}/").content.decode()
    assert "notebook-settings" not in page and "/delete/" not in page


def test_server_rendered_cells_carry_their_numbers(client, notebook, users):
    for i in range(3):
        Cell.objects.create(notebook=notebook, code=f"x{i} = {i}")
    page = login(client, users["carol"]).get(f"/notebooks/{notebook.pk}/").content.decode()
    assert "[1]" in page and "[3]" in page and "[4]" not in page


@pytest.mark.django_db(transaction=True)
async def test_rename_and_delete_reach_open_sockets(ws, notebook, users):
    from channels.db import database_sync_to_async

    from notebooks_app import operations

    bob = await ws(users["bob"], notebook)
    await database_sync_to_async(operations.rename_notebook)(notebook.pk, users["alice"], name="Renamed")
    event = await bob.wait_for(lambda e: e["type"] == "notebook_renamed")
    assert event[-1]["name"] == "Renamed"
    await create(bob, "kept = 1")
    await database_sync_to_async(operations.delete_notebook)(notebook.pk, users["alice"])
    seen = await bob.wait_for(lambda e: e.get("code") == "not_found")
    assert "deleted" in seen[-1]["message"]
    with pytest.raises(ConnectionError):
        await bob.next(5)
    assert bob.close_code == 4404


def test_adduser_creates_a_user_who_can_log_in(client, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("a-long-password-1\n"))
    out = io.StringIO()
    call_command("adduser", "erin", "--password-stdin", stdout=out)
    assert "Created a user “erin”" in out.getvalue()
    assert client.login(username="erin", password="a-long-password-1")
    user = get_user_model().objects.get(username="erin")
    assert not user.is_staff
    monkeypatch.setattr("sys.stdin", io.StringIO("another-password-2\n"))
    with pytest.raises(CommandError, match="already a user"):
        call_command("adduser", "erin", "--password-stdin")
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    with pytest.raises(CommandError, match="too short"):
        call_command("adduser", "frank", "--password-stdin")
    assert not get_user_model().objects.filter(username="frank").exists()


@pytest.mark.parametrize("enabled", [True, False])
def test_signup_only_where_enabled(client, settings, enabled):
    settings.SIGNUP_ENABLED = enabled
    login_page = client.get("/accounts/login/").content.decode()
    assert ("Sign up" in login_page) is enabled
    response = client.post("/accounts/signup/", {"username": "gina", "password1": "gina-pass-long-1", "password2": "gina-pass-long-1"})
    if enabled:
        assert response.status_code == 302 and get_user_model().objects.filter(username="gina").exists()
        assert client.get("/").status_code == 200  # logged in
    else:
        assert response.status_code == 404 and not get_user_model().objects.filter(username="gina").exists()
