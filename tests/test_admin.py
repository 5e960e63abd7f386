"""The admin loads and shows notebooks, members and cells, with the connection masked."""
import pytest

from notebooks_app.models import Cell

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, django_user_model):
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "root-pass-123")
    client.force_login(admin)
    return client


def test_notebook_changelist_shows_counts_and_search(admin_client, notebook):
    Cell.objects.create(notebook=notebook, position=1, code="a = 1")
    Cell.objects.create(notebook=notebook, position=2, code="b = 2")
    Cell.objects.create(notebook=notebook, position=3, code="c = 3")
    page = admin_client.get("/admin/notebooks_app/notebook/?q=alice").content.decode()
    assert "Shared analysis" in page
    assert '<td class="field-member_count">2</td>' in page  # bob and carol
    assert '<td class="field-cell_count">3</td>' in page
    assert admin_client.get("/admin/notebooks_app/notebook/?q=nomatch").content.decode().count("Shared analysis") == 0


def test_notebook_page_shows_cells_in_order_with_outputs(admin_client, notebook):
    notebook.connection_string = "postgresql://ann:topsecret@db/sales"  # stored encrypted (vault.py)
    notebook.save()
    Cell.objects.create(notebook=notebook, position=2, code="second = 2", reads=["first"], writes=["second"], status="error", error={"ename": "NameError", "evalue": "name 'first' is not defined", "traceback": ["line 1"]})
    Cell.objects.create(notebook=notebook, position=1, code="first = 1", writes=["first"], status="success", outputs=[{"mimeType": "text/plain", "data": "<1>"}])
    page = admin_client.get(f"/admin/notebooks_app/notebook/{notebook.pk}/change/").content.decode()
    assert page.index("first = 1") < page.index("second = 2")
    assert "NameError" in page and "&lt;1&gt;" in page
    assert "topsecret" not in page and "ann:****@db" in page


def test_cells_filter_by_status_and_type(admin_client, notebook):
    Cell.objects.create(notebook=notebook, position=1, code="ok_cell = 1", status="success")
    Cell.objects.create(notebook=notebook, position=2, code="bad_cell = 1", status="error")
    page = admin_client.get("/admin/notebooks_app/cell/?status__exact=error&type__exact=python").content.decode()
    assert "bad_cell" in page and "ok_cell" not in page


def test_cell_admin_page_loads_read_only(admin_client, notebook):
    cell = Cell.objects.create(notebook=notebook, position=1, code="x = 1")
    response = admin_client.get(f"/admin/notebooks_app/cell/{cell.pk}/change/")
    assert response.status_code == 200
    assert admin_client.post(f"/admin/notebooks_app/cell/{cell.pk}/change/", {"code": "x = 2"}).status_code == 403
