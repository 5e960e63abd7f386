"""`manage.py demo` creates a user and a sample notebook on a database without users, and never
touches an account after that."""
import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from notebooks_app.models import Notebook

pytestmark = pytest.mark.django_db


def test_demo_is_made_once_and_logs_in(client, capsys):
    call_command("demo")
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
    call_command("demo")
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
    call_command("demo", base_url="http://127.0.0.1:8765/")
    out = capsys.readouterr().out
    notebook = Notebook.objects.get()
    assert "http://127.0.0.1:8765/accounts/login/ as demo / demo-notebook" in out
    assert f"http://127.0.0.1:8765/notebooks/{notebook.pk}/" in out
    assert ":8000" not in out
