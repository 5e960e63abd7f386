"""Admin for inspecting notebooks, members and cells; the connection string is always masked."""
import json

from django.contrib import admin
from django.utils.html import format_html, format_html_join

from . import kernel_client
from .models import ApiToken, Cell, KernelLease, KernelWorkerRecord, Membership, Notebook, NotebookEvent, NotebookRun, NotebookSchedule, NotebookSecret, NotebookVersion


def render_outputs(cell):
    """A readable, escaped rendering of a cell's outputs and error (never raw HTML)."""
    parts = []
    for output in cell.outputs or []:
        mime = output.get("mimeType", "?")
        data = output.get("data", "")
        if mime == "image/png":
            parts.append(format_html('<div><small>{}</small><br><img alt="cell output" src="data:image/png;base64,{}" style="max-width:400px"></div>', mime, data))
        else:
            parts.append(format_html("<div><small>{}</small><pre>{}</pre></div>", mime, str(data)[:5000]))
    if cell.stdout:
        parts.append(format_html("<div><small>stdout</small><pre>{}</pre></div>", cell.stdout[:5000]))
    if cell.error:
        error = cell.error
        parts.append(
            format_html(
                '<div style="color:#b00"><strong>{}: {}</strong><pre>{}</pre></div>',
                error.get("ename", "Error"),
                error.get("evalue", ""),
                "\n".join(error.get("traceback") or []),
            )
        )
    return format_html_join("", "{}", ((p,) for p in parts)) if parts else "—"


class CellInline(admin.TabularInline):
    model = Cell
    extra = 0
    ordering = ["position"]
    fields = ["position", "type", "status", "code_block", "reads_writes", "rendered_outputs"]
    readonly_fields = ["position", "type", "status", "code_block", "reads_writes", "rendered_outputs"]
    show_change_link = True
    can_delete = False

    # Cells change only through operations.py, so the kernel's graph stays exact.
    def has_add_permission(self, request, obj=None):
        return False

    @admin.display(description="code")
    def code_block(self, cell):
        return format_html("<pre style='max-width:40em;white-space:pre-wrap'>{}</pre>", cell.code)

    @admin.display(description="reads / writes")
    def reads_writes(self, cell):
        return format_html("reads: {}<br>writes: {}", ", ".join(cell.reads) or "—", ", ".join(cell.writes) or "—")

    @admin.display(description="outputs")
    def rendered_outputs(self, cell):
        return render_outputs(cell)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


def _tell_member(membership):
    """Sharing changed here rather than through operations.py: the member's open sockets
    re-check their access all the same (closed, or told their new role)."""
    kernel_client.notify_access_changed_on_commit(membership.notebook_id, membership.user_id)


@admin.register(Notebook)
class NotebookAdmin(admin.ModelAdmin):
    list_display = ["name", "owner", "member_count", "cell_count", "revision", "updated_at"]
    search_fields = ["name", "owner__username"]
    list_select_related = ["owner"]
    readonly_fields = ["id", "revision", "connection", "created_at", "updated_at"]
    fields = ["id", "name", "owner", "connection", "revision", "created_at", "updated_at"]
    inlines = [MembershipInline, CellInline]

    def get_queryset(self, request):
        return super().get_queryset(request).with_counts()

    def save_formset(self, request, form, formset, change):
        super().save_formset(request, form, formset, change)
        if formset.model is Membership:
            for membership in [*formset.new_objects, *(obj for obj, _ in formset.changed_objects), *formset.deleted_objects]:
                _tell_member(membership)

    @admin.display(description="members", ordering="member_count")
    def member_count(self, notebook):
        return notebook.member_count

    @admin.display(description="cells", ordering="cell_count")
    def cell_count(self, notebook):
        return notebook.cell_count

    @admin.display(description="database connection")
    def connection(self, notebook):
        return notebook.db_connection_display or "—"


@admin.register(Cell)
class CellAdmin(admin.ModelAdmin):
    list_display = ["short_code", "notebook", "type", "status", "position", "updated_at"]
    list_filter = ["status", "type"]
    search_fields = ["code", "notebook__name"]
    list_select_related = ["notebook"]
    readonly_fields = ["id", "notebook", "reads_json", "writes_json", "rendered_outputs", "created_at", "updated_at"]
    fields = ["id", "notebook", "position", "type", "result_variable", "status", "code", "reads_json", "writes_json", "rendered_outputs", "created_at", "updated_at"]

    # Read-only: edits go through the notebook page (operations.py) so the kernel hears of them.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="cell")
    def short_code(self, cell):
        return str(cell)

    @admin.display(description="reads")
    def reads_json(self, cell):
        return json.dumps(cell.reads)

    @admin.display(description="writes")
    def writes_json(self, cell):
        return json.dumps(cell.writes)

    @admin.display(description="outputs and error")
    def rendered_outputs(self, cell):
        return render_outputs(cell)


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["notebook", "user", "role", "created_at"]
    list_filter = ["role"]
    search_fields = ["notebook__name", "user__username"]

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        _tell_member(obj)

    def delete_model(self, request, obj):
        super().delete_model(request, obj)
        _tell_member(obj)

    def delete_queryset(self, request, queryset):
        members = list(queryset)
        super().delete_queryset(request, queryset)
        for membership in members:
            _tell_member(membership)


class ReadOnlyAdmin(admin.ModelAdmin):
    """History is written by operations.py in each change's transaction; here it is only read."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(NotebookEvent)
class NotebookEventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "notebook", "user", "kind", "cell_id", "is_undo", "reverted"]
    list_filter = ["kind", "is_undo", ("notebook", admin.RelatedOnlyFieldListFilter), ("user", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["notebook__name", "user__username", "cell_id"]
    date_hierarchy = "created_at"
    list_select_related = ["notebook", "user"]


@admin.register(NotebookVersion)
class NotebookVersionAdmin(ReadOnlyAdmin):
    list_display = ["name", "notebook", "user", "created_at", "cell_count"]
    list_filter = [("notebook", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["name", "notebook__name"]

    @admin.display(description="cells")
    def cell_count(self, version):
        return len(version.cells)


@admin.register(NotebookSecret)
class NotebookSecretAdmin(ReadOnlyAdmin):
    """Names, who set them and when: never the value, not even encrypted (the notebook page's
    Secrets panel sets and deletes them, so the kernel hears of it)."""

    list_display = ["name", "notebook", "updated_by", "updated_at"]
    list_filter = [("notebook", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["name", "notebook__name"]
    list_select_related = ["notebook", "updated_by"]
    fields = ["notebook", "name", "updated_by", "updated_at"]


@admin.register(KernelWorkerRecord)
class KernelWorkerRecordAdmin(ReadOnlyAdmin):
    """The kernel fleet's workers as each said of itself at its last lease renewal (kernel/fleet.py):
    its shards, its execution processes and their memory. `manage.py kernels` prints the same."""

    list_display = ["name", "fleet", "heartbeat_at", "live", "draining", "shard_count", "processes", "pending", "memory_mb"]
    list_filter = ["fleet", "draining"]
    search_fields = ["name", "host"]
    fields = ["name", "fleet", "host", "pid", "started_at", "heartbeat_at", "draining", "shards", "running"]
    readonly_fields = ["running"]

    @admin.display(boolean=True, description="renewing")
    def live(self, record):
        from django.conf import settings
        from django.utils import timezone

        return (timezone.now() - record.heartbeat_at).total_seconds() < settings.KERNEL_LEASE_SECONDS

    @admin.display(description="shards")
    def shard_count(self, record):
        return len(record.shards or ())

    @admin.display(description="running")
    def processes(self, record):
        return (record.state or {}).get("live", 0)

    @admin.display(description="pending")
    def pending(self, record):
        return (record.state or {}).get("pending", 0)

    @admin.display(description="memory (MB)")
    def memory_mb(self, record):
        return (record.state or {}).get("memory_mb", 0)

    @admin.display(description="execution processes")
    def running(self, record):
        rows = (record.state or {}).get("processes") or []
        return format_html_join(
            "\n", "<div><code>{}</code> {} {}, {} MB, started by {}</div>",
            ((p["notebook"], "pending" if p.get("pending") else ("busy" if p.get("busy") else "idle"), "" if p.get("pending") else f"{p.get('idle', 0):.0f} s idle", p.get("rss_mb", 0), p.get("user") or "-") for p in rows),
        ) or "none"


@admin.register(KernelLease)
class KernelLeaseAdmin(ReadOnlyAdmin):
    """Which worker holds each virtual shard, at which epoch, until when (kernel/fleet.py)."""

    list_display = ["fleet", "shard", "owner", "epoch", "expires_at"]
    list_filter = ["fleet", "owner"]
    ordering = ["fleet", "shard"]


@admin.register(ApiToken)
class ApiTokenAdmin(ReadOnlyAdmin):
    """Personal API tokens (docs/api.md): who has which, for what, used when. The token itself is
    never stored and its hash is not shown; made at /accounts/tokens/ or with `manage.py api_token`
    (the only places the token is shown, once), revoked here with the action or by their owner."""

    list_display = ["name", "owner", "prefix", "scope_list", "created_at", "last_used_at", "expires_at", "revoked_at"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter), ("owner", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["name", "owner__username", "prefix"]
    list_select_related = ["owner"]
    fields = ["name", "owner", "prefix", "scope_list", "created_at", "last_used_at", "expires_at", "revoked_at"]
    actions = ["revoke"]

    @admin.display(description="scopes")
    def scope_list(self, token):
        return ", ".join(token.scopes)

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request, queryset):
        from django.utils import timezone

        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} token(s).")



@admin.register(NotebookRun)
class NotebookRunAdmin(ReadOnlyAdmin):
    """Runs with an id (docs/api.md#runs): written by the API and the kernel worker, read here;
    cancelled over the API (POST /api/v1/runs/{id}/cancel)."""

    list_display = ["created_at", "notebook", "status", "kind", "source", "started_by", "started_at", "finished_at", "claimed_by"]
    list_filter = ["status", "kind", "source"]
    search_fields = ["notebook__name", "started_by__username", "claimed_by"]
    list_select_related = ["notebook", "started_by"]
    fields = ["notebook", "status", "kind", "source", "started_by", "parameters", "error", "created_at", "started_at", "finished_at", "claimed_by"]



@admin.register(NotebookSchedule)
class NotebookScheduleAdmin(ReadOnlyAdmin):
    """Schedules (docs/api.md#schedules): managed over the API by the notebook's editors, read here."""

    list_display = ["name", "notebook", "owner", "cron", "timezone", "enabled", "next_run_at", "last_run"]
    list_filter = ["enabled"]
    search_fields = ["name", "notebook__name", "owner__username"]
    list_select_related = ["notebook", "owner", "last_run"]
    fields = ["name", "notebook", "owner", "cron", "timezone", "parameters", "enabled", "next_run_at", "webhook_url", "last_run", "created_at"]
