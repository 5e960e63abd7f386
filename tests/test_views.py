"""The server-rendered pages, for every role."""
import pytest
from django.urls import reverse

from notebooks_app.models import Cell, Notebook

pytestmark = pytest.mark.django_db


def login(client, user):
    client.force_login(user)
    return client


def test_list_requires_login(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_login_page_and_login(client, users):
    assert client.get("/accounts/login/").status_code == 200
    response = client.post("/accounts/login/", {"username": "alice", "password": "alice-pass-123"})
    assert response.status_code == 302
    assert client.get("/").status_code == 200


def test_bad_login_says_so(client, users):
    response = client.post("/accounts/login/", {"username": "alice", "password": "wrong"})
    assert "didn&#x27;t match" in response.content.decode() or "didn't match" in response.content.decode()


def test_logout_is_a_post(client, users):
    login(client, users["alice"])
    response = client.post("/accounts/logout/")
    assert response.status_code == 302
    assert client.get("/").status_code == 302


@pytest.mark.parametrize("username, sees", [("alice", True), ("bob", True), ("carol", True), ("dave", False)])
def test_list_shows_owned_and_shared_notebooks(client, users, notebook, username, sees):
    page = login(client, users[username]).get("/").content.decode()
    assert ("Shared analysis" in page) is sees


def test_create_notebook_from_the_form(client, users):
    response = login(client, users["dave"]).post("/", {"name": "  Fresh ideas  "})
    nb = Notebook.objects.get(owner=users["dave"])
    assert nb.name == "Fresh ideas"
    assert response["Location"] == reverse("notebooks:detail", kwargs={"notebook_id": nb.pk})


@pytest.mark.parametrize("name, message", [("", "Give the notebook a name."), ("x" * 201, "at most 200 characters")])
def test_create_notebook_bad_input_gets_a_clear_message(client, users, name, message):
    response = login(client, users["dave"]).post("/", {"name": name})
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not Notebook.objects.exists()


def test_create_notebook_needs_csrf(users):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(users["dave"])
    assert client.post("/", {"name": "x"}).status_code == 403


@pytest.mark.parametrize("username, status", [("alice", 200), ("bob", 200), ("carol", 200), ("dave", 404)])
def test_detail_for_every_role(client, users, notebook, username, status):
    assert login(client, users[username]).get(f"/notebooks/{notebook.pk}/").status_code == status


def test_detail_of_unknown_notebook_is_404_like_a_foreign_one(client, users):
    assert login(client, users["alice"]).get("/notebooks/00000000-0000-0000-0000-000000000000/").status_code == 404


def test_detail_renders_cells_server_side(client, users, notebook):
    Cell.objects.create(notebook=notebook, position=2048, code="b = a * 2", status="error", error={"ename": "NameError", "evalue": "name 'a' is not defined", "traceback": []})
    Cell.objects.create(notebook=notebook, position=1024, code="a = 5\na", status="success", outputs=[{"mimeType": "text/plain", "data": "5"}], stdout="hello <b>")
    page = login(client, users["carol"]).get(f"/notebooks/{notebook.pk}/").content.decode()
    assert page.index("a = 5") < page.index("b = a * 2")
    assert "NameError" in page and "status-success" in page and "status-error" in page
    assert "hello &lt;b&gt;" in page


def test_detail_masks_the_connection_string(client, users, notebook):
    notebook.connection_string = "postgresql://ann:topsecret@db/sales"  # stored encrypted (vault.py)
    notebook.save()
    page = login(client, users["alice"]).get(f"/notebooks/{notebook.pk}/").content.decode()
    assert "topsecret" not in page and "ann:****@db" in page


def test_owner_shares_by_username(client, users, notebook):
    response = login(client, users["alice"]).post(f"/notebooks/{notebook.pk}/share/", {"username": "dave", "role": "viewer"})
    assert response.status_code == 302
    assert notebook.can_view(users["dave"]) and not notebook.can_edit(users["dave"])


def test_owner_removes_a_member(client, users, notebook):
    login(client, users["alice"]).post(f"/notebooks/{notebook.pk}/share/", {"username": "bob", "role": "editor", "action": "remove"})
    assert not notebook.can_view(users["bob"])


@pytest.mark.parametrize("data, message", [({"username": "nobody", "role": "viewer"}, "There is no user called"), ({"username": "dave", "role": "god"}, "Select a valid choice"), ({"username": "alice", "role": "viewer"}, "The owner already has full access"), ({"username": "", "role": "viewer"}, "Enter a username")])
def test_share_bad_input_gets_a_clear_message(client, users, notebook, data, message):
    response = login(client, users["alice"]).post(f"/notebooks/{notebook.pk}/share/", data)
    assert response.status_code == 400
    assert message in response.content.decode()


@pytest.mark.parametrize("username, status", [("bob", 403), ("carol", 403), ("dave", 404)])
def test_only_the_owner_shares(client, users, notebook, username, status):
    response = login(client, users[username]).post(f"/notebooks/{notebook.pk}/share/", {"username": "dave", "role": "editor"})
    assert response.status_code == status
    assert not notebook.can_edit(users["dave"])


def test_share_form_shown_to_owner_only(client, users, notebook):
    assert "share-form" in login(client, users["alice"]).get(f"/notebooks/{notebook.pk}/").content.decode()
    assert "share-form" not in login(client, users["bob"]).get(f"/notebooks/{notebook.pk}/").content.decode()


def test_pages_send_a_content_security_policy(client, users, notebook):
    response = login(client, users["alice"]).get(f"/notebooks/{notebook.pk}/")
    assert "script-src 'self'" in response["Content-Security-Policy"]


@pytest.mark.django_db
def test_page_shows_the_richest_form_of_an_output(client, users, notebook):
    notebook.cells.create(
        position=1,
        code="df",
        status="success",
        outputs=[{"mimeType": "text/plain", "data": "PLAIN-REPR"}, {"mimeType": "text/html", "data": "<table><tr><td>RICH</td></tr></table>"}, {"mimeType": "text/plain", "data": "ALONE"}],
    )
    client.force_login(users["alice"])
    page = client.get(f"/notebooks/{notebook.pk}/").content.decode()
    assert "PLAIN-REPR" not in page and "RICH" in page and "ALONE" in page
    assert "border-collapse" in page  # the frame's base style
