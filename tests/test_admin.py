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


def test_the_kernel_fleet_is_shown_read_only(admin_client):
    """Each worker's shards, execution processes, memory and last renewal; each shard's lease."""
    from django.utils import timezone

    from notebooks_app.models import KernelLease, KernelWorkerRecord

    state = {"live": 1, "pending": 1, "memory_mb": 61.5, "processes": [
        {"notebook": "8a1f0000-0000-0000-0000-000000000000", "user": "ann", "idle": 12.0, "busy": False, "rss_mb": 61.5, "pid": 5120},
        {"notebook": "91d20000-0000-0000-0000-000000000000", "user": "bob", "pending": True},
    ]}
    record = KernelWorkerRecord.objects.create(fleet="admin-test", name="host-1:4121:abc", host="host-1", pid=4121, heartbeat_at=timezone.now(), shards=[0, 1, 2], state=state)
    KernelLease.objects.create(fleet="admin-test", shard=0, owner=record.name, epoch=3, expires_at=timezone.now())
    listing = admin_client.get("/admin/notebooks_app/kernelworkerrecord/").content.decode()
    assert "host-1:4121:abc" in listing and "61.5" in listing
    page = admin_client.get(f"/admin/notebooks_app/kernelworkerrecord/{record.pk}/change/").content.decode()
    assert "8a1f0000-0000-0000-0000-000000000000" in page and "started by ann" in page and "pending" in page
    assert 'name="_save"' not in page  # read only
    leases = admin_client.get("/admin/notebooks_app/kernellease/?fleet=admin-test").content.decode()
    assert "host-1:4121:abc" in leases
