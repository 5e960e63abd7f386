"""`manage.py demo` creates a user and a sample notebook, idempotently."""
import pytest
from django.core.management import call_command

from notebooks_app.models import Notebook

pytestmark = pytest.mark.django_db


def test_demo_is_idempotent_and_logs_in(client, capsys):
    call_command("demo")
    call_command("demo")
    notebook = Notebook.objects.get()
    assert notebook.cells.count() == 4
    out = capsys.readouterr().out
    assert "demo / demo-notebook" in out
    assert client.login(username="demo", password="demo-notebook")
    page = client.get(f"/notebooks/{notebook.pk}/").content.decode()
    assert "rate = 0.05" in page


def test_demo_links_use_the_given_base_url(capsys):
    call_command("demo", base_url="http://127.0.0.1:8765/")
    out = capsys.readouterr().out
    notebook = Notebook.objects.get()
    assert "http://127.0.0.1:8765/accounts/login/ as demo / demo-notebook" in out
    assert f"http://127.0.0.1:8765/notebooks/{notebook.pk}/" in out
    assert ":8000" not in out
