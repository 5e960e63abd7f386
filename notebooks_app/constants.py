"""Names and limits shared by the web process and the kernel worker: defined once here."""

CELL_PYTHON = "python"
CELL_SQL = "sql"
CELL_MARKDOWN = "markdown"
CELL_TYPES = [(CELL_PYTHON, "Python"), (CELL_SQL, "SQL"), (CELL_MARKDOWN, "Markdown")]
# A markdown cell's output: HTML rendered and sanitized by the kernel worker (kernel/markdown.py),
# shown in the page itself (not in a frame); `$…$` math is left for KaTeX on the page.
MARKDOWN_MIME = "text/vnd.notebook.markdown+html"

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

NOTEBOOK_NAME_MAX = 200

# Cells are ordered by gap-based positions: an insert between two cells takes the
# midpoint, and the notebook is renumbered this far apart only when no gap is left.
POSITION_STEP = 1024

# Prepended to every text/html output's document (its sandboxed frame has no other style;
# the page's CSP allows inline styles, not scripts). The live page gets it from the template.
# Light or dark as the page is: dark when the frame's <html data-theme="dark"> says so (the page
# tells its frames: outputs.js, frame.js) or, with no data-theme (the page without JavaScript,
# exports), when its prefers-color-scheme is, which follows its <iframe>'s color-scheme. Both
# palettes give text at least 7:1 contrast on their background.
_OUTPUT_HTML_DARK = (
    ("body", "color:#e3e7ef;background:#1c2029"),
    ("th", "background:#262c38"),
    ("th,td,table", "border-color:#3a4150"),
    ("caption,small", "color:#a9b1c2"),
    ("td.null", "color:#8d96a8"),
    ("a", "color:#9db4ff"),
)
OUTPUT_HTML_STYLE = (
    "<style>body{margin:4px;font:13px/1.4 system-ui,sans-serif;color:#1d2433;background:#fff}"
    "table{border-collapse:collapse;border-color:#d5d9e2}th,td{border:1px solid #d5d9e2;padding:2px 8px;text-align:right}"
    "th{background:#f3f5f9}caption{text-align:left;color:#5b6478;padding:2px 0}"
    "td.null{color:#9aa1ae;font-style:italic}small{color:#5b6478;font-weight:normal}"
    ":root{color-scheme:light dark}:root[data-theme=light]{color-scheme:light}:root[data-theme=dark]{color-scheme:dark}"
    "@media (prefers-color-scheme:dark){"
    + "".join(f":root:not([data-theme=light]) :is({selector}){{{rules}}}" for selector, rules in _OUTPUT_HTML_DARK)
    + "}"
    + "".join(f":root[data-theme=dark] :is({selector}){{{rules}}}" for selector, rules in _OUTPUT_HTML_DARK)
    + "</style>"
)

# --- Sizes on the wire (docs/protocol.md#sizes) --------------------------------------------
# Daphne refuses to send a WebSocket message over 1 MiB (and so should every frame we make):
# events are kept under EVENT_BYTES_LIMIT, and the consumer packs them into frames of at
# most FRAME_BYTES_BUDGET.
FRAME_BYTES_LIMIT = 1024 * 1024
FRAME_BYTES_BUDGET = 768 * 1024
# An output's data longer than this (characters; base64 for images) is stored apart and sent
# as a reference the page fetches over HTTP (OutputBlob, /notebooks/<id>/outputs/<digest>/).
OUTPUT_INLINE_LIMIT = 64 * 1024
# A cell's stdout in a notebook_state: its last this-many characters (the rest by reference).
STATE_STDOUT_LIMIT = 64 * 1024
# An error's message and traceback are each cut to this many characters.
ERROR_TEXT_LIMIT = 64 * 1024
# A notebook_state carries the outputs of its first this-many cells; a later cell's final outputs
# are left out for `outputsRef`, which the page fetches as the cell comes near the viewport
# (/notebooks/<id>/cells/<cell>/outputs/): a 10,000-cell notebook's state without its 50 MB.
STATE_INLINE_OUTPUT_CELLS = 100
# A notebook_state is split into chunks of cells of about this many bytes each.
STATE_CHUNK_BYTES = 256 * 1024

# Runs with an id (models.NotebookRun, docs/api.md#runs): where one runs, why, and how it ended.
RUN_KIND_SHARED = "shared"  # on the notebook's shared kernel, no parameters: what Run does on the page (kernel/shared_runs.py)
RUN_KIND_COPY = "copy"  # parameters given: an execution process of its own (kernel/copy_runs.py)
RUN_KINDS = [(RUN_KIND_SHARED, "Shared kernel"), (RUN_KIND_COPY, "Own process")]
RUN_SOURCE_API = "api"
RUN_SOURCE_SCHEDULE = "schedule"
RUN_SOURCE_PAGE = "page"
RUN_SOURCES = [(RUN_SOURCE_API, "API"), (RUN_SOURCE_SCHEDULE, "Schedule"), (RUN_SOURCE_PAGE, "Page")]
RUN_QUEUED = "queued"
RUN_RUNNING = "running"
RUN_SUCCESS = "success"
RUN_ERROR = "error"
RUN_CANCELLED = "cancelled"
RUN_TIMED_OUT = "timed_out"
RUN_STATUSES = [(RUN_QUEUED, "Queued"), (RUN_RUNNING, "Running"), (RUN_SUCCESS, "Success"), (RUN_ERROR, "Error"), (RUN_CANCELLED, "Cancelled"), (RUN_TIMED_OUT, "Timed out")]
RUN_FINISHED = frozenset({RUN_SUCCESS, RUN_ERROR, RUN_CANCELLED, RUN_TIMED_OUT})
# A run's per-cell stdout: its last this-many characters; an output's data over RUN_OUTPUT_LIMIT
# (characters; base64 for images) is left out of the run's row, said in a text output instead.
RUN_STDOUT_LIMIT = 64 * 1024
RUN_OUTPUT_LIMIT = 2 * 1024 * 1024
