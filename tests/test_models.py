"""Models, constraints and the permission questions they answer."""
import pytest
from django.db import IntegrityError, transaction

from notebooks_app.models import Cell, Membership, Notebook
from notebooks_app.secrets import mask_connection_string

pytestmark = pytest.mark.django_db


def test_roles_answer_view_and_edit(notebook, users):
    assert [notebook.role_of(users[u]) for u in ("alice", "bob", "carol", "dave")] == ["owner", "editor", "viewer", None]
    assert [notebook.can_edit(users[u]) for u in ("alice", "bob", "carol", "dave")] == [True, True, False, False]
    assert [notebook.can_view(users[u]) for u in ("alice", "bob", "carol", "dave")] == [True, True, True, False]


def test_visible_to_lists_owned_and_shared_only(notebook, users):
    other = Notebook.objects.create(name="Dave's", owner=users["dave"])
    assert list(Notebook.objects.visible_to(users["bob"])) == [notebook]
    assert set(Notebook.objects.visible_to(users["dave"])) == {other}


def test_cell_position_is_unique_per_notebook(notebook):
    Cell.objects.create(notebook=notebook, position=1024, code="a = 1")
    with pytest.raises(IntegrityError), transaction.atomic():
        Cell.objects.create(notebook=notebook, position=1024, code="b = 2")


def test_cell_status_and_type_are_constrained(notebook):
    with pytest.raises(IntegrityError), transaction.atomic():
        Cell.objects.create(notebook=notebook, position=1, status="exploded")
    with pytest.raises(IntegrityError), transaction.atomic():
        Cell.objects.create(notebook=notebook, position=2, type="rust")


def test_cell_defaults(notebook):
    cell = Cell.objects.create(notebook=notebook, position=1)
    assert (cell.type, cell.status, cell.outputs, cell.reads, cell.writes, cell.error) == ("python", "idle", [], [], [], None)


def test_membership_unique_per_user(notebook, users):
    with pytest.raises(IntegrityError), transaction.atomic():
        Membership.objects.create(notebook=notebook, user=users["bob"], role="viewer")


@pytest.mark.parametrize(
    "raw, shown",
    [
        ("", ""),
        ("postgresql://ann:s3cret@db.example:5432/sales", "postgresql://ann:****@db.example:5432/sales"),
        ("postgres://ann@db/sales", "postgres://ann@db/sales"),
        ("sqlite:///data/x.db", "sqlite:///data/x.db"),
        ("host=db user=ann password=s3cret dbname=x", "host=db user=ann password=**** dbname=x"),
    ],
)
def test_connection_string_is_masked(raw, shown):
    assert mask_connection_string(raw) == shown


def test_notebook_display_never_has_password(users):
    nb = Notebook(name="x", owner=users["alice"])
    nb.connection_string = "postgresql://u:hunter2@h/db"
    nb.save()
    assert "hunter2" not in nb.db_connection_display and nb.db_connection_display == "postgresql://u:****@h/db"
    assert "hunter2" not in Notebook.objects.get(pk=nb.pk).db_connection  # stored encrypted (vault.py)
