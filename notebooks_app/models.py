"""Notebooks, their members and their cells: the source of truth in the database.

Domain questions (a user's role, how a connection string is shown) live here as
methods; what a role allows is permissions.py's, and every edit, sharing included,
is a transactional function in operations.py.
"""
import hashlib
import secrets as stdlib_secrets
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import Case, Count, OuterRef, Q, Subquery, Value, When
from django.utils import timezone

from . import permissions, vault
from .constants import CELL_PYTHON, CELL_STATUSES, CELL_TYPES, NOTEBOOK_NAME_MAX, OUTPUT_HTML_STYLE, POSITION_STEP, STATE_STDOUT_LIMIT, STATUS_IDLE
from .constants import RUN_FINISHED, RUN_KIND_COPY, RUN_KINDS, RUN_QUEUED, RUN_SOURCE_API, RUN_SOURCES, RUN_STATUSES
from .kernel.parameters import named_inputs
from .permissions import MEMBER_ROLES, ROLE_OWNER, ROLE_VIEWER
from .secrets import mask_connection_string


class NotebookQuerySet(models.QuerySet):
    def visible_to(self, user):
        if not user.is_authenticated:
            return self.none()
        return self.filter(Q(owner=user) | Q(memberships__user=user)).distinct()

    def with_counts(self):
        return self.annotate(
            cell_count=Count("cells", distinct=True),
            member_count=Count("memberships", distinct=True),
        )

    def with_role(self, user):
        """Each notebook's `user_role`: what `user` is on it (owner, editor or viewer)."""
        membership = Membership.objects.filter(notebook=OuterRef("pk"), user=user).values("role")[:1]
        return self.annotate(user_role=Case(When(owner=user, then=Value(ROLE_OWNER)), default=Subquery(membership)))


class Notebook(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="owned_notebooks")
    # A secret: encrypted (vault.py, SECRETS_KEY); read it as `connection_string`, show it only
    # through db_connection_display (mask_connection_string), never in full.
    db_connection = models.TextField(blank=True, default="")
    # The notebook's own packages (docs/packages.md): PEP 508 requirements as its editors wrote
    # them, and the lock they resolved to (exact versions and hashes; "" until resolved).
    requirements = models.JSONField(default=list, blank=True)
    requirements_lock = models.TextField(blank=True, default="")
    # Where its cells may connect when the server gives notebooks outbound network: "host:port"
    # entries ("*.example.com:443"), enforced by a proxy outside the sandbox (kernel/egress.py).
    egress_allowlist = models.JSONField(default=list, blank=True)
    # Runs the kernel worker received and has not finished ({"pending": [...], "done": [request
    # ids]}, kernel/run_journal.py): a worker that takes the notebook over runs them once.
    run_journal = models.JSONField(default=dict, blank=True)
    # Bumped by every structural or code change; the kernel worker compares it
    # with its own to know whether its graph is behind the database.
    revision = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = NotebookQuerySet.as_manager()

    class Meta:
        ordering = ["-updated_at"]

    def __str__(self):
        return self.name

    def named_inputs(self):
        """{name: kernel.parameters.NamedInput}: the inputs a run's parameters may set, as stored now."""
        return named_inputs(self.cells.order_by("position").values("id", "type", "code", "outputs", "inputs"))

    def role_of(self, user):
        """permissions.ROLE_OWNER, ROLE_EDITOR, ROLE_VIEWER, or None for no access."""
        if not user or not user.is_authenticated:
            return None
        if user.pk == self.owner_id:
            return ROLE_OWNER
        membership = self.memberships.filter(user=user).only("role").first()
        return membership.role if membership else None

    def can_view(self, user):
        return permissions.may(self.role_of(user), permissions.VIEW)

    def can_edit(self, user):
        return permissions.may(self.role_of(user), permissions.EDIT)

    @property
    def connection_string(self):
        """The database connection in clear, decrypted from `db_connection`: for the kernel worker
        (which holds the connection outside the sandbox) and the masked display, nothing else."""
        return vault.decrypt_connection(self.db_connection)

    @connection_string.setter
    def connection_string(self, value):
        self.db_connection = vault.encrypt_connection(value)

    @property
    def db_connection_display(self):
        try:
            return mask_connection_string(self.connection_string)
        except vault.Unreadable:
            return "(unreadable with SECRETS_KEY)"


class Membership(models.Model):
    notebook = models.ForeignKey(Notebook, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notebook_memberships")
    role = models.CharField(max_length=10, choices=MEMBER_ROLES, default=ROLE_VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["notebook", "user"], name="unique_membership")]

    def __str__(self):
        return f"{self.user} ({self.role}) on {self.notebook}"


class Cell(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    notebook = models.ForeignKey(Notebook, on_delete=models.CASCADE, related_name="cells")
    # Gap-based order (constants.POSITION_STEP, operations.py).
    position = models.BigIntegerField()
    type = models.CharField(max_length=10, choices=CELL_TYPES, default=CELL_PYTHON)
    code = models.TextField(blank=True, default="")
    # SQL cells only: the Python name their result DataFrame is bound to.
    result_variable = models.CharField(max_length=100, blank=True, default="")
    status = models.CharField(max_length=10, choices=CELL_STATUSES, default=STATUS_IDLE)
    outputs = models.JSONField(default=list, blank=True)
    stdout = models.TextField(blank=True, default="")
    reads = models.JSONField(default=list, blank=True)
    writes = models.JSONField(default=list, blank=True)
    # The rest of the kernel's analysis of `code` (builtins read, SQL tables, syntax error) and
    # the key of what it was computed from: a worker loading the notebook analyses again only
    # the cells whose key does not match (kernel/session.py, CellState.restore_analysis).
    analysis = models.JSONField(null=True, blank=True, editable=False)
    error = models.JSONField(null=True, blank=True)
    # The shared text's Yjs document (kernel/shared_text.py), kept so that pages merging into
    # it across a worker restart share one history; rebuilt from `code` when they disagree.
    ydoc = models.BinaryField(null=True, blank=True, editable=False)
    ydoc_generation = models.PositiveIntegerField(default=0, editable=False)
    # shared_text.code_key() of the text `ydoc` holds, written with it: a worker loading the
    # notebook sends a stored state whose key is that of `code` as it is, without building the
    # document (10,000 of them took a second); anyone who changes `code` alone leaves a key that
    # no longer matches, and the document is then built and checked as before.
    ydoc_key = models.CharField(max_length=32, blank=True, default="", db_default="", editable=False)
    # Values people set on the cell's inputs (kernel/ui.py), by widget id: kept across reruns,
    # reloads and restarts.
    inputs = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["notebook", "position"]
        constraints = [
            models.UniqueConstraint(fields=["notebook", "position"], name="unique_cell_position"),
            models.CheckConstraint(condition=Q(type__in=[t for t, _ in CELL_TYPES]), name="cell_type_valid"),
            models.CheckConstraint(condition=Q(status__in=[s for s, _ in CELL_STATUSES]), name="cell_status_valid"),
        ]

    @classmethod
    def end_position(cls, notebook_id):
        """The position after every cell of the notebook."""
        last = cls.objects.filter(notebook_id=notebook_id).aggregate(m=models.Max("position"))["m"]
        return (last or 0) + POSITION_STEP

    def save(self, *args, **kwargs):
        """A cell created without a position (in the shell, a script) goes to the end."""
        if self.position is None:
            self.position = Cell.end_position(self.notebook_id)
        super().save(*args, **kwargs)

    def __str__(self):
        first_line = (self.code.strip().splitlines() or [""])[0]
        return f"[{self.type}] {first_line[:60]}"

    def shown_outputs(self):
        """The outputs a page shows: a value's `text/plain` is dropped when its `text/html`
        follows it (the richest form wins, as static/notebooks/js/dom.js does); HTML comes
        with the base style of output frames."""
        outputs = self.outputs or []
        shown = []
        for index, output in enumerate(outputs):
            following = outputs[index + 1] if index + 1 < len(outputs) else {}
            if output.get("mimeType") == "text/plain" and following.get("mimeType") == "text/html":
                continue
            if output.get("mimeType") == "text/html":
                output = {**output, "data": OUTPUT_HTML_STYLE + str(output.get("data", ""))}
            shown.append(output)
        return shown

    @property
    def stdout_tail(self):
        """What a page shows of the stdout: its last STATE_STDOUT_LIMIT characters."""
        return self.stdout[-STATE_STDOUT_LIMIT:]

    def to_message(self):
        """The cell as the protocol sends it (docs/protocol.md)."""
        return cell_message(self.id, self.type, self.code, self.result_variable, self.status, self.outputs, self.stdout, self.reads, self.writes, self.error)


def cell_message(cell_id, cell_type, code, result_variable="", status=STATUS_IDLE, outputs=None, stdout="", reads=None, writes=None, error=None):
    """Cell.to_message from its values, without a model instance; the defaults are a new cell's
    (operations.NewCell announces one from its INSERT's values: a model instance there cost
    ~0.1 ms of the edit, docs/performance.md "Where a paced create's 3 ms go")."""
    return {
        "id": str(cell_id),
        "type": cell_type,
        "code": code,
        "resultVariable": result_variable,
        "status": status,
        "outputs": [] if outputs is None else outputs,
        "stdout": stdout,
        "reads": [] if reads is None else reads,
        "writes": [] if writes is None else writes,
        "error": error,
    }


class OutputBlob(models.Model):
    """A cell output too large to travel in events (constants.OUTPUT_INLINE_LIMIT): stored once,
    named by the SHA-256 of its MIME type and data, served by views.cell_output_data.  It lives
    as long as its cell shows it (the worker drops a cell's blobs its new outputs no longer use)."""

    cell = models.ForeignKey(Cell, on_delete=models.CASCADE, related_name="output_blobs")
    digest = models.CharField(max_length=64)
    mime_type = models.CharField(max_length=100)
    data = models.TextField()  # as in the output: text, or base64 for images
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["cell", "digest"], name="unique_output_blob")]
        indexes = [models.Index(fields=["digest"])]

    def __str__(self):
        return f"{self.mime_type} output {self.digest[:12]} of {self.cell_id}"


# --- a notebook's files and secrets (docs/notebook-files.md, docs/security.md) ----------------
class NotebookFile(models.Model):
    """One version of one file of a notebook. The bytes live in Django's storage (the default
    storage, under `notebook-files/<sha256>`), once per content; rows only point at them. The
    current version of a path is its row with `current`; a deleted file has none current, and
    restoring it makes its last version current again."""

    notebook = models.ForeignKey(Notebook, on_delete=models.CASCADE, related_name="files")
    path = models.CharField(max_length=255)  # relative, "/"-separated: "sales.csv", "data/x.json"
    sha256 = models.CharField(max_length=64)
    size = models.PositiveBigIntegerField()
    version = models.PositiveIntegerField()
    current = models.BooleanField(default=True)
    added_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    added_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["notebook", "path", "version"], name="unique_file_version"),
            models.UniqueConstraint(fields=["notebook", "path"], condition=models.Q(current=True), name="one_current_file_version"),
        ]
        indexes = [models.Index(fields=["sha256"])]
        ordering = ["path", "-version"]

    def __str__(self):
        return f"{self.path} v{self.version} ({self.size} bytes)"


class NotebookSecret(models.Model):
    """A named secret of a notebook: write-only. `value` is its encrypted token (notebooks_app/
    vault.py, SECRETS_KEY), never the clear text; the kernel worker decrypts it into the
    execution process's environment, nowhere else."""

    notebook = models.ForeignKey(Notebook, on_delete=models.CASCADE, related_name="secrets")
    name = models.CharField(max_length=64)  # an environment variable name: [A-Z_][A-Z0-9_]*
    value = models.BinaryField()
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["notebook", "name"], name="unique_secret_name")]
        ordering = ["name"]

    def __str__(self):
        return f"secret {self.name} of {self.notebook_id}"

    def summary(self):
        """What anyone on the notebook may know of it: its name, who set it, when (never the value)."""
        return {"name": self.name, "by": self.updated_by.get_username() if self.updated_by else None, "at": self.updated_at.isoformat()}


# --- history (docs/history.md) ------------------------------------------------------------
EVENT_CREATED = "created"
EVENT_DELETED = "deleted"
EVENT_RESTORED = "restored"
EVENT_MOVED = "moved"
EVENT_EDITED = "edited"
EVENT_CONNECTION = "connection"
EVENT_RENAMED = "renamed"
EVENT_SHARED = "shared"
EVENT_UNSHARED = "unshared"
EVENT_VERSION_SAVED = "version_saved"
EVENT_VERSION_RESTORED = "version_restored"
EVENT_PACKAGES = "packages"
EVENT_FILE_ADDED = "file_added"
EVENT_FILE_DELETED = "file_deleted"
EVENT_FILE_RESTORED = "file_restored"
EVENT_FILE_RENAMED = "file_renamed"
EVENT_SECRET_SET = "secret_set"
EVENT_SECRET_DELETED = "secret_deleted"
EVENT_EGRESS = "egress"
EVENT_KERNEL_RESTARTED = "kernel_restarted"
EVENT_KERNEL_STOPPED = "kernel_stopped"  # by the lifecycle (kernel/lifecycle.py): its reason in `after`
EVENT_KINDS = [
    (EVENT_CREATED, "created a cell"),
    (EVENT_DELETED, "deleted a cell"),
    (EVENT_RESTORED, "restored a cell"),
    (EVENT_MOVED, "moved a cell"),
    (EVENT_EDITED, "edited a cell"),
    (EVENT_CONNECTION, "changed the database connection"),
    (EVENT_RENAMED, "renamed the notebook"),
    (EVENT_SHARED, "shared the notebook"),
    (EVENT_UNSHARED, "removed a member"),
    (EVENT_VERSION_SAVED, "saved a version"),
    (EVENT_VERSION_RESTORED, "restored a version"),
    (EVENT_PACKAGES, "changed the packages"),
    (EVENT_FILE_ADDED, "added a file"),
    (EVENT_FILE_DELETED, "deleted a file"),
    (EVENT_FILE_RESTORED, "restored a file"),
    (EVENT_FILE_RENAMED, "renamed a file"),
    (EVENT_SECRET_SET, "set a secret"),
    (EVENT_SECRET_DELETED, "deleted a secret"),
    (EVENT_EGRESS, "changed the egress allowlist"),
    (EVENT_KERNEL_RESTARTED, "restarted the kernel"),
    (EVENT_KERNEL_STOPPED, "the kernel stopped"),
]
# Edits of one cell by one person within this many seconds are one event (the history shows
# "edited", not every keystroke; undo goes back to the text before the burst).
EDIT_COALESCE_SECONDS = 60


class NotebookEventQuerySet(models.QuerySet):
    def record(self, notebook, user, kind, *, cell_id=None, before=None, after=None, reverts=None, is_undo=False):
        """Append one event, in the caller's transaction.  An edit of the same cell by the same
        person right after their previous one extends it instead (its `after` moves on)."""
        user_id = getattr(user, "pk", user)
        if kind == EVENT_EDITED and reverts is None:
            last = self.filter(notebook=notebook).order_by("-id").only("id", "user_id", "kind", "cell_id", "is_undo", "reverted", "reverts_id", "created_at").first()
            recent = last is not None and (timezone.now() - last.created_at).total_seconds() < EDIT_COALESCE_SECONDS
            if recent and last.kind == EVENT_EDITED and last.user_id == user_id and str(last.cell_id) == str(cell_id) and not (last.is_undo or last.reverted or last.reverts_id):
                self.filter(pk=last.pk).update(after=after)
                return last
        return self.create(notebook=notebook, user_id=user_id, kind=kind, cell_id=cell_id, before=before, after=after, reverts=reverts, is_undo=is_undo)


class NotebookEvent(models.Model):
    """One change to a notebook, by whom and when, written in the change's own transaction.
    Append-only (except the `reverted` mark an undo sets and the `after` a coalesced edit moves);
    undo and redo stacks are derived from it per person (notebooks_app/history.py)."""

    notebook = models.ForeignKey(Notebook, on_delete=models.CASCADE, related_name="events")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="notebook_events")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    kind = models.CharField(max_length=20, choices=EVENT_KINDS)
    cell_id = models.UUIDField(null=True, blank=True, db_index=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    # Undo: the event this one reverts (is_undo); redo: the undo this one reverts.
    reverts = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    is_undo = models.BooleanField(default=False)
    reverted = models.BooleanField(default=False)

    objects = NotebookEventQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["notebook", "user", "-id"], name="event_notebook_user")]

    def __str__(self):
        who = self.user.get_username() if self.user_id and self.user else "someone"
        return f"{who} {self.get_kind_display()}"


class NotebookVersion(models.Model):
    """A named snapshot of every cell (type, code, result variable, order), to go back to."""

    notebook = models.ForeignKey(Notebook, on_delete=models.CASCADE, related_name="versions")
    name = models.CharField(max_length=NOTEBOOK_NAME_MAX)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    cells = models.JSONField(default=list)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.name} ({len(self.cells)} cells)"


THEME_SYSTEM = "system"
THEMES = [("light", "Light"), ("dark", "Dark"), (THEME_SYSTEM, "System")]


class UserPreference(models.Model):
    """What a person chose for every page: the colour theme ("system" follows the browser's
    prefers-color-scheme). Absent means the defaults; docs/frontend.md, "Themes"."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="preference")
    theme = models.CharField(max_length=10, choices=THEMES, default=THEME_SYSTEM)

    def __str__(self):
        return f"{self.user} prefers {self.theme}"


class KernelLease(models.Model):
    """Which kernel worker owns one virtual shard of a fleet (kernel/fleet.py, docs/operations.md
    "A fleet of kernel workers"). Notebooks are spread over a fixed number of shards by a hash of
    their id; the owner renews the lease before `expires_at` and every write it makes for a
    notebook of the shard checks (owner, epoch) in the same transaction, so a worker that stopped
    renewing (killed, partitioned, paused) can no longer write once another has taken the shard
    (its epoch + 1)."""

    fleet = models.CharField(max_length=50)
    shard = models.PositiveIntegerField()
    owner = models.CharField(max_length=200, blank=True, default="")  # a worker's name; "" when free
    epoch = models.BigIntegerField(default=0)  # + 1 at every change of owner
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["fleet", "shard"], name="kernel_lease_fleet_shard")]
        ordering = ["fleet", "shard"]

    def __str__(self):
        return f"{self.fleet}.{self.shard}: {self.owner or 'free'} (epoch {self.epoch})"


class KernelWorkerRecord(models.Model):
    """A kernel worker of a fleet as it last said of itself (every lease renewal): the live ones
    share the shards; `manage.py kernels`, /readyz and the admin read what it runs from here."""

    fleet = models.CharField(max_length=50)
    name = models.CharField(max_length=200, unique=True)  # host:pid:random, made at start
    host = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField(default=timezone.now)
    heartbeat_at = models.DateTimeField(default=timezone.now, db_index=True)
    draining = models.BooleanField(default=False)  # stopping: takes no shard, hands its own over
    shards = models.JSONField(default=list)
    state = models.JSONField(default=dict)  # KernelService.describe(): processes, memory, limits

    class Meta:
        ordering = ["fleet", "name"]

    def __str__(self):
        return f"{self.name} ({len(self.shards)} shards)"


# --- personal API tokens (docs/api.md) -----------------------------------------------------
SCOPE_READ = "read"
SCOPE_RUN = "run"
SCOPE_EDIT = "edit"
SCOPES = [
    (SCOPE_READ, "read: list notebooks, read cells and outputs"),
    (SCOPE_RUN, "run: run a cell or the whole notebook"),
    (SCOPE_EDIT, "edit: create, change, move and delete cells"),
]
TOKEN_PREFIX = "nbk_"  # what a token starts with, so a leaked one is recognisable (secret scanners)
TOKEN_SHOWN_CHARS = 12  # the token's first characters, kept to tell tokens apart in lists
TOKEN_NAME_MAX = 100
TOKEN_MAX_DAYS = 3650
TOKEN_TOUCH_SECONDS = 60  # last_used_at is written at most this often per token


def parse_scopes(scopes):
    """The scopes of `scopes` (a list, or text such as "read,run"), in SCOPES' order; ValueError
    for an unknown one or none at all."""
    if isinstance(scopes, str):
        scopes = [scope.strip() for scope in scopes.split(",") if scope.strip()]
    known = [scope for scope, _ in SCOPES]
    unknown = sorted(set(scopes) - set(known))
    if unknown:
        raise ValueError(f"Unknown scope {', '.join(unknown)}: choose from {', '.join(known)}.")
    if not scopes:
        raise ValueError(f"Give a token at least one scope: {', '.join(known)}.")
    return [scope for scope in known if scope in scopes]


def token_digest(secret):
    """What is stored of a token: its SHA-256. A token is 256 random bits, so no salt or slow
    hash is needed for the digest to reveal nothing, and a lookup is one indexed equality."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


class ApiTokenQuerySet(models.QuerySet):
    def issue(self, owner, *, name, scopes, expires_in_days=None):
        """(token row, the token itself): the only moment the token exists outside its owner's
        hands; only its digest is stored."""
        secret = TOKEN_PREFIX + stdlib_secrets.token_urlsafe(32)
        expires_at = timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None
        token = self.create(owner=owner, name=name, scopes=parse_scopes(scopes), prefix=secret[:TOKEN_SHOWN_CHARS], digest=token_digest(secret), expires_at=expires_at)
        return token, secret

    def find(self, secret):
        """The token row whose digest `secret` has (revoked and expired ones too), or None."""
        return self.filter(digest=token_digest(secret)).select_related("owner").first()

    def active(self):
        now = timezone.now()
        return self.filter(Q(revoked_at__isnull=True), Q(expires_at__isnull=True) | Q(expires_at__gt=now))


class ApiToken(models.Model):
    """A personal API token: it acts as its owner, with the owner's role on each notebook and no
    more, and only within its scopes (docs/api.md). The token is shown once, when it is made;
    the database holds its SHA-256 and its first characters, never the token."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=TOKEN_NAME_MAX)
    scopes = models.JSONField(default=list)  # a subset of SCOPES, in their order
    prefix = models.CharField(max_length=TOKEN_SHOWN_CHARS, editable=False)
    digest = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["owner", "name"], condition=Q(revoked_at__isnull=True), name="unique_active_token_name")]

    def __str__(self):
        return f"{self.name} ({self.prefix}…) of {self.owner}"

    def refusal(self, now=None):
        """Why the token may not be used now (revoked, expired), or None."""
        now = now or timezone.now()
        if self.revoked_at is not None:
            return "This API token was revoked."
        if self.expires_at is not None and self.expires_at <= now:
            return f"This API token expired on {self.expires_at:%Y-%m-%d %H:%M} UTC."
        return None

    def allows(self, scope):
        return scope in self.scopes

    def touch(self, now=None):
        """Note that the token was used: written at most once every TOKEN_TOUCH_SECONDS, so that a
        busy script does not write a row per request."""
        now = now or timezone.now()
        stale = now - timedelta(seconds=TOKEN_TOUCH_SECONDS)
        if self.last_used_at is not None and self.last_used_at > stale:
            return
        ApiToken.objects.filter(Q(last_used_at__isnull=True) | Q(last_used_at__lte=stale), pk=self.pk).update(last_used_at=now)
        self.last_used_at = now

    def revoke(self):
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])


class NotebookRun(models.Model):
    """One run of a notebook with an id (docs/api.md#runs): who asked, with which parameters, and
    each cell's result in notebook order. A `copy` run executes in a process of its own from the
    notebook's code at its start (kernel/copy_runs.py) and never changes the notebook's cells."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    notebook = models.ForeignKey(Notebook, on_delete=models.CASCADE, related_name="runs")
    started_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="notebook_runs")
    source = models.CharField(max_length=16, choices=RUN_SOURCES, default=RUN_SOURCE_API)
    kind = models.CharField(max_length=16, choices=RUN_KINDS, default=RUN_KIND_COPY)
    parameters = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=RUN_STATUSES, default=RUN_QUEUED)
    # [{cellId, type, status, outputs, stdout, error}] in notebook order, filled as cells finish.
    results = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    claimed_by = models.CharField(max_length=200, blank=True, default="")  # the kernel worker that ran it
    schedule = models.ForeignKey("NotebookSchedule", null=True, blank=True, on_delete=models.SET_NULL, related_name="runs")
    due_at = models.DateTimeField(null=True, blank=True)  # a scheduled run's due time: each fires once

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["notebook", "-created_at"], name="run_log")]
        constraints = [models.UniqueConstraint(fields=["schedule", "due_at"], name="one_run_per_due_time")]

    def __str__(self):
        return f"run {self.pk} of {self.notebook_id} ({self.status})"

    @property
    def finished(self):
        return self.status in RUN_FINISHED

    @property
    def duration(self):
        """Seconds from its start to its end (or to now while it runs); None before it starts."""
        if self.started_at is None:
            return None
        return ((self.finished_at or timezone.now()) - self.started_at).total_seconds()


SCHEDULE_NAME_MAX = 100


def new_webhook_secret():
    return stdlib_secrets.token_urlsafe(32)


class NotebookSchedule(models.Model):
    """A notebook run with parameters at the times of a cron expression in a time zone
    (docs/api.md#schedules). Kernel workers claim due rows (schedules.tick); a failed run emails
    its owner and POSTs to `webhook_url`, signed with `webhook_secret`."""

    notebook = models.ForeignKey(Notebook, on_delete=models.CASCADE, related_name="schedules")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notebook_schedules")
    name = models.CharField(max_length=SCHEDULE_NAME_MAX)
    cron = models.CharField(max_length=200)
    timezone = models.CharField(max_length=64, default="UTC")
    parameters = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True)
    next_run_at = models.DateTimeField(null=True, blank=True, db_index=True)
    webhook_url = models.URLField(max_length=500, blank=True, default="")
    webhook_secret = models.CharField(max_length=64, default=new_webhook_secret, editable=False)
    last_run = models.ForeignKey(NotebookRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "pk"]

    def __str__(self):
        return f"{self.name} ({self.cron} {self.timezone})"
