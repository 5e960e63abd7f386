"""Who may do what on a notebook: the roles, what each role allows, and the one check.

Every refusal in the web process comes from `check()` (operations, consumer, views), so
a new action or role is added here and nowhere else.  Pure: the caller supplies the
role (`Notebook.role_of`), this module never queries the database.
"""

ROLE_OWNER = "owner"
ROLE_EDITOR = "editor"
ROLE_VIEWER = "viewer"
# The roles a member can be given; the owner's role comes with the notebook.
MEMBER_ROLES = [(ROLE_VIEWER, "Viewer"), (ROLE_EDITOR, "Editor")]

VIEW = "view"
EDIT = "edit"  # cells, their order and code, runs, the database connection
SHARE = "share"  # who else has access, and with which role
MANAGE = "manage"  # the notebook itself: its name, deleting it

ALLOWED = {
    ROLE_OWNER: frozenset({VIEW, EDIT, SHARE, MANAGE}),
    ROLE_EDITOR: frozenset({VIEW, EDIT}),
    ROLE_VIEWER: frozenset({VIEW}),
}

REFUSALS = {
    EDIT: "You may view this notebook but not change it.",
    SHARE: "Only the owner of this notebook can change who has access.",
    MANAGE: "Only the owner of this notebook can rename or delete it.",
}


class PermissionDenied(Exception):
    """`code` is the protocol's error code: `not_found` for someone who may not even view
    the notebook (its existence is never revealed), `forbidden` for a member."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def may(role, action):
    """True when `role` (None: no access) allows `action`."""
    return action in ALLOWED.get(role, ())


def check(role, action):
    """Raise PermissionDenied unless `role` allows `action`."""
    if may(role, action):
        return
    if not may(role, VIEW):
        raise PermissionDenied("not_found", "This notebook does not exist.")
    raise PermissionDenied("forbidden", REFUSALS[action])
