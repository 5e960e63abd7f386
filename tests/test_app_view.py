"""The app view, /notebooks/<id>/app/ (docs/frontend.md): for anyone who may view the notebook,
marked for the page's app mode, with no code; 404 to a stranger, the login page to nobody."""
import pytest

pytestmark = pytest.mark.django_db


def test_app_view_is_for_those_who_may_view_and_holds_no_code(client, notebook, users):
    notebook.cells.create(position=1, type="python", code="secret_code = 1")
    url = f"/notebooks/{notebook.pk}/app/"
    assert client.get(url).status_code == 302  # to the login page
    for username, editable in (("alice", "true"), ("bob", "true"), ("carol", "false")):
        client.force_login(users[username])
        response = client.get(url)
        assert response.status_code == 200
        page = response.content.decode()
        assert 'data-mode="app"' in page and f'data-can-edit="{editable}"' in page
        assert "secret_code" not in page
    client.force_login(users["dave"])
    assert client.get(url).status_code == 404


def test_notebook_page_links_to_its_app_view(client, notebook, users):
    client.force_login(users["carol"])
    assert f'href="/notebooks/{notebook.pk}/app/"' in client.get(f"/notebooks/{notebook.pk}/").content.decode()
