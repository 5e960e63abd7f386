"""`manage.py demo` creates a user and a sample notebook on a database without users, and never
touches an account after that."""
import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from notebooks_app.constants import STATUS_SUCCESS
from notebooks_app.models import Notebook

pytestmark = pytest.mark.django_db


@pytest.mark.django_db(transaction=True)  # the cells run in a kernel session, on threads of its own
def test_demo_opens_with_its_results(client, capsys):
    """Run once at creation, in the sandbox: every cell succeeded and its output is on the page."""
    call_command("demo")
    notebook = Notebook.objects.get()
    cells = list(notebook.cells.order_by("position"))
    assert [cell.status for cell in cells] == [STATUS_SUCCESS] * 4, [(c.status, c.error) for c in cells]
    assert cells[2].outputs[0]["data"] == "1628.89"
    assert cells[3].stdout.startswith("1 1050.0\n2 1102.5\n")
    assert "principal" in cells[2].reads and "final" in cells[2].writes
    assert client.login(username="demo", password="demo-notebook")
    page = client.get(f"/notebooks/{notebook.pk}/").content.decode()
    assert "1628.89" in page and "10 1628.89" in page


def test_demo_is_made_once_and_logs_in(client, capsys):
    call_command("demo", no_run=True)
    call_command("demo")
    notebook = Notebook.objects.get()
    assert notebook.cells.count() == 4
    out = capsys.readouterr().out
    assert out.count("demo / demo-notebook") == 1
    assert "/admin/password_change/ or with manage.py changepassword demo" in out
    assert "no demo made, no account changed" in out
    assert client.login(username="demo", password="demo-notebook")
    page = client.get(f"/notebooks/{notebook.pk}/").content.decode()
    assert "rate = 0.05" in page


def test_demo_never_resets_a_changed_password(client, capsys):
    call_command("demo", no_run=True)
    demo = get_user_model().objects.get(username="demo")
    demo.set_password("a-secret-of-ours")
    demo.save()
    call_command("demo")
    assert not client.login(username="demo", password="demo-notebook")
    assert client.login(username="demo", password="a-secret-of-ours")


def test_demo_is_not_made_where_users_exist(capsys):
    get_user_model().objects.create_user(username="alice", password="alice-password")
    call_command("demo", verbosity=0)
    assert capsys.readouterr().out == ""
    assert not get_user_model().objects.filter(username="demo").exists()
    assert not Notebook.objects.exists()


def test_demo_links_use_the_given_base_url(capsys):
    call_command("demo", base_url="http://127.0.0.1:8765/", no_run=True)
    out = capsys.readouterr().out
    notebook = Notebook.objects.get()
    assert "http://127.0.0.1:8765/accounts/login/ as demo / demo-notebook" in out
    assert f"http://127.0.0.1:8765/notebooks/{notebook.pk}/" in out
    assert ":8000" not in out
