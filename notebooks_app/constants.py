"""Names and limits shared by the web process and the kernel worker: defined once here."""

CELL_PYTHON = "python"
CELL_SQL = "sql"
CELL_TYPES = [(CELL_PYTHON, "Python"), (CELL_SQL, "SQL")]

STATUS_IDLE = "idle"
STATUS_QUEUED = "queued"
STATUS_RUNNING = "running"
STATUS_SUCCESS = "success"
STATUS_ERROR = "error"
STATUS_BLOCKED = "blocked"
STATUS_STALE = "stale"
CELL_STATUSES = [
    (STATUS_IDLE, "Idle"),
    (STATUS_QUEUED, "Queued"),
    (STATUS_RUNNING, "Running"),
    (STATUS_SUCCESS, "Success"),
    (STATUS_ERROR, "Error"),
    (STATUS_BLOCKED, "Blocked"),
    (STATUS_STALE, "Stale"),
]

ROLE_OWNER = "owner"
ROLE_EDITOR = "editor"
ROLE_VIEWER = "viewer"
ROLES = [(ROLE_VIEWER, "Viewer"), (ROLE_EDITOR, "Editor")]

NOTEBOOK_NAME_MAX = 200
