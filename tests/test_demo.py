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
