"""Who may do what: the role table, the one check, and sharing as an operation."""
import pytest

from notebooks_app import operations, permissions
from notebooks_app.models import Membership
from notebooks_app.operations import OperationError
from notebooks_app.permissions import EDIT, SHARE, VIEW

pytestmark = pytest.mark.django_db

EVERYONE = ("alice", "bob", "carol", "dave")


@pytest.mark.parametrize(
    "action, allowed",
    [(VIEW, [True, True, True, False]), (EDIT, [True, True, False, False]), (SHARE, [True, False, False, False])],
)
def test_each_role_may_do_exactly_its_actions(notebook, users, action, allowed):
    assert [permissions.may(notebook.role_of(users[u]), action) for u in EVERYONE] == allowed


@pytest.mark.parametrize("action, refusals", [(EDIT, [None, None, "forbidden", "not_found"]), (SHARE, [None, "forbidden", "forbidden", "not_found"])])
def test_check_refuses_members_as_forbidden_and_strangers_as_not_found(notebook, users, action, refusals):
    codes = []
    for username in EVERYONE:
        try:
            permissions.check(notebook.role_of(users[username]), action)
            codes.append(None)
        except permissions.PermissionDenied as exc:
            codes.append(exc.code)
    assert codes == refusals


def test_owner_shares_and_changes_a_role(notebook, users):
    operations.share_notebook(notebook.pk, users["alice"], member=users["dave"], role=permissions.ROLE_VIEWER)
    assert notebook.role_of(users["dave"]) == "viewer"
    operations.share_notebook(notebook.pk, users["alice"], member=users["dave"], role=permissions.ROLE_EDITOR)
    assert notebook.role_of(users["dave"]) == "editor"
    assert Membership.objects.filter(notebook=notebook, user=users["dave"]).count() == 1


def test_owner_unshares(notebook, users):
    assert operations.unshare_notebook(notebook.pk, users["alice"], member=users["bob"]) is True
    assert notebook.role_of(users["bob"]) is None
    assert operations.unshare_notebook(notebook.pk, users["alice"], member=users["bob"]) is False


@pytest.mark.parametrize("username, code", [("bob", "forbidden"), ("carol", "forbidden"), ("dave", "not_found")])
def test_only_the_owner_shares_or_unshares(notebook, users, username, code):
    with pytest.raises(OperationError) as refused:
        operations.share_notebook(notebook.pk, users[username], member=users["dave"], role=permissions.ROLE_EDITOR)
    assert refused.value.code == code
    with pytest.raises(OperationError) as refused:
        operations.unshare_notebook(notebook.pk, users[username], member=users["carol"])
    assert refused.value.code == code
    assert [notebook.role_of(users[u]) for u in ("carol", "dave")] == ["viewer", None]


@pytest.mark.parametrize("member, role, message", [("alice", "viewer", "owner already has full access"), ("dave", "admin", "Unknown role"), ("dave", "owner", "Unknown role")])
def test_share_refuses_the_owner_and_unknown_roles(notebook, users, member, role, message):
    with pytest.raises(OperationError, match=message) as refused:
        operations.share_notebook(notebook.pk, users["alice"], member=users[member], role=role)
    assert refused.value.code == "invalid_field"
    assert notebook.role_of(users["dave"]) is None
