"""What the API reads and answers. Request fields are checked by protocol.CHECKS, the WebSocket
protocol's own checks, so a cell id, code (MAX_CODE_BYTES: too_large) or result variable is
valid over HTTP exactly when it is over the socket; unknown fields are refused, as there.
Responses are the notebook and its cells as the database holds them (docs/api.md)."""
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from .. import protocol
from ..constants import CELL_PYTHON, CELL_STATUSES, CELL_TYPES, RUN_KINDS, RUN_SOURCES, RUN_STATUSES
from ..kernel.ui import UI_MIME
from ..permissions import ALLOWED


class ProtocolField(serializers.Field):
    """A field checked by protocol.CHECKS[kind]; its errors carry the protocol's code."""

    kind = None

    def to_internal_value(self, data):
        try:
            return protocol.CHECKS[self.kind](self.field_name, data)
        except protocol.ProtocolError as exc:
            raise serializers.ValidationError(exc.message, code=exc.code) from None
        except ValueError as exc:
            raise serializers.ValidationError(f"{exc}.", code=protocol.INVALID_FIELD) from None

    def to_representation(self, value):
        return value


@extend_schema_field({"type": "string", "description": "Cell code: at most MAX_CODE_BYTES (256 KiB) of UTF-8, no NUL."})
class CodeField(ProtocolField):
    kind = "code"


@extend_schema_field(OpenApiTypes.UUID)
class CellIdField(ProtocolField):
    kind = "cell_id"


@extend_schema_field({"type": "string", "maxLength": 100, "description": "A Python identifier (SQL cells' result variable)."})
class IdentifierField(ProtocolField):
    kind = "identifier"


class StrictSerializer(serializers.Serializer):
    """Refuses fields it does not know, as the protocol does (a typo is an error, not a no-op)."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                names = ", ".join(repr(str(name)[:40]) for name in unknown[:5])
                raise serializers.ValidationError({"non_field_errors": [f"Unexpected field(s): {names}."]}, code=protocol.INVALID_FIELD)
        return super().to_internal_value(data)


CELL_TYPE_NAMES = [name for name, _ in CELL_TYPES]


class CellCreateSerializer(StrictSerializer):
    type = serializers.ChoiceField(choices=CELL_TYPE_NAMES, default=CELL_PYTHON)
    code = CodeField(required=False, default="")
    after = CellIdField(required=False, allow_null=True, help_text="Insert just after this cell (absent, null or not a cell of the notebook: at the end).")
    before = CellIdField(required=False, help_text="Insert just above this cell instead (not a cell of the notebook: at the end).")

    def validate(self, data):
        if data.get("after") and data.get("before"):
            raise serializers.ValidationError("Give 'after' or 'before', not both.", code=protocol.INVALID_FIELD)
        return data


class CellUpdateSerializer(StrictSerializer):
    code = CodeField(required=False)
    resultVariable = IdentifierField(required=False, help_text="SQL cells only: the variable their result is bound to.")

    def validate(self, data):
        if not data:
            raise serializers.ValidationError("Give 'code' or 'resultVariable'.", code=protocol.INVALID_FIELD)
        return data


class CellMoveSerializer(StrictSerializer):
    after = CellIdField(allow_null=True, help_text="The cell to move after; null for the top.")


class RunSerializer(StrictSerializer):
    """A cell's run takes no parameters (docs/api.md, "Runs")."""


MAX_PARAMETERS = 100


class NotebookRunRequestSerializer(StrictSerializer):
    """Run every cell: on the shared kernel, or with `parameters` in a process of its own."""

    parameters = serializers.DictField(
        required=False,
        allow_empty=True,
        child=serializers.JSONField(),
        help_text="{input name: value}: the notebook's named inputs (`name = ui.slider(...)`) to set for this run; given, the run is a copy in a process of its own.",
    )

    def validate_parameters(self, value):
        if len(value) > MAX_PARAMETERS:
            raise serializers.ValidationError(f"At most {MAX_PARAMETERS} parameters.", code=protocol.INVALID_FIELD)
        return value


# --- responses ---------------------------------------------------------------------------------


def api_output_url(notebook_id, digest):
    return reverse("api:output", args=[notebook_id, digest])


def api_stdout_url(notebook_id, cell_id):
    return reverse("api:stdout", args=[notebook_id, cell_id])


class InputSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="<cell id>:<index>")
    kind = serializers.CharField()
    label = serializers.CharField(allow_null=True)
    props = serializers.DictField()
    value = serializers.JSONField(help_text="The current value: the one last set, else the input's own.")


class CellSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    type = serializers.ChoiceField(choices=CELL_TYPE_NAMES)
    code = serializers.CharField()
    resultVariable = serializers.CharField(source="result_variable")
    status = serializers.ChoiceField(choices=[name for name, _ in CELL_STATUSES])
    outputs = serializers.SerializerMethodField()
    stdout = serializers.CharField(source="stdout_tail", help_text="The last 64 KiB; `stdoutRef` has the whole of a longer one.")
    stdoutRef = serializers.SerializerMethodField()
    error = serializers.JSONField(allow_null=True)
    reads = serializers.ListField(child=serializers.CharField())
    writes = serializers.ListField(child=serializers.CharField())
    inputs = serializers.SerializerMethodField()

    @extend_schema_field({"type": "array", "items": {"type": "object", "additionalProperties": True}, "description": "As stored; a large one is {mimeType, ref, size, url, apiUrl}: fetch `apiUrl` with the token."})
    def get_outputs(self, cell):
        return [{**output, "apiUrl": api_output_url(cell.notebook_id, output["ref"])} if "ref" in output else output for output in cell.outputs or []]

    @extend_schema_field({"type": "object", "nullable": True, "properties": {"url": {"type": "string"}, "apiUrl": {"type": "string"}, "size": {"type": "integer"}}})
    def get_stdoutRef(self, cell):
        if len(cell.stdout) <= len(cell.stdout_tail):
            return None
        return {"url": reverse("notebooks:stdout", args=[cell.notebook_id, cell.pk]), "apiUrl": api_stdout_url(cell.notebook_id, cell.pk), "size": len(cell.stdout)}

    @extend_schema_field(InputSerializer(many=True))
    def get_inputs(self, cell):
        """The inputs the cell shows (docs/protocol.md#inputs), each with its current value."""
        inputs = []
        for output in cell.outputs or []:
            data = output.get("data")
            if output.get("mimeType") == UI_MIME and isinstance(data, dict):
                value = (cell.inputs or {}).get(data.get("id"), data.get("value"))
                inputs.append({"id": data.get("id"), "kind": data.get("kind"), "label": data.get("label"), "props": data.get("props") or {}, "value": value})
        return inputs


ROLE_NAMES = list(ALLOWED)


class NotebookSummarySerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    owner = serializers.CharField(source="owner.get_username")
    role = serializers.ChoiceField(choices=ROLE_NAMES, source="user_role", help_text="What the token's owner is on it.")
    updatedAt = serializers.DateTimeField(source="updated_at")
    cellCount = serializers.IntegerField(source="cell_count")


class NotebookSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    owner = serializers.CharField(source="owner.get_username")
    role = serializers.ChoiceField(choices=ROLE_NAMES, source="user_role")
    revision = serializers.IntegerField(help_text="Goes up with every change of cells, order or code.")
    updatedAt = serializers.DateTimeField(source="updated_at")
    cells = CellSerializer(many=True, source="ordered_cells")


class CellChangeSerializer(serializers.Serializer):
    cell = CellSerializer()
    requestId = serializers.CharField(help_text="Carried by the live events this change causes.")


class ErrorBodySerializer(serializers.Serializer):
    code = serializers.CharField(help_text="One of the codes of docs/api.md, e.g. not_found, forbidden, invalid_field.")
    message = serializers.CharField()
    fields = serializers.DictField(required=False, help_text="For invalid_field / too_large: the errors of each field.")


class ErrorSerializer(serializers.Serializer):
    error = ErrorBodySerializer()


class RunStartedSerializer(serializers.Serializer):
    runId = serializers.UUIDField()
    status = serializers.ChoiceField(choices=RUN_STATUSES)
    url = serializers.CharField(help_text="The run in the API: GET it until `status` is not queued or running.")
    pageUrl = serializers.CharField(help_text="The run's page, for a browser.")


class RunQueuedSerializer(RunStartedSerializer):
    """A run on the shared kernel (docs/api.md#runs): its row, and what was queued."""

    queued = serializers.ChoiceField(choices=["run_cell", "run_all"])
    notebookId = serializers.UUIDField()
    cellId = serializers.UUIDField(allow_null=True)
    requestId = serializers.CharField(help_text="Carried by the live events of the run.")
    revision = serializers.IntegerField()


class RunCellResultSerializer(serializers.Serializer):
    cellId = serializers.UUIDField()
    type = serializers.ChoiceField(choices=CELL_TYPE_NAMES)
    code = serializers.CharField(help_text="The code the run ran (the notebook's at the run's start).")
    status = serializers.CharField(help_text="queued, running, success, error, blocked, skipped (never ran), cancelled or timed_out.")
    outputs = serializers.ListField(child=serializers.DictField())
    stdout = serializers.CharField(help_text="Its last 64 KiB.")
    error = serializers.JSONField(allow_null=True)


class RunSummarySerializer(serializers.Serializer):
    id = serializers.UUIDField()
    notebookId = serializers.UUIDField(source="notebook_id")
    kind = serializers.ChoiceField(choices=RUN_KINDS)
    source = serializers.ChoiceField(choices=RUN_SOURCES)
    status = serializers.ChoiceField(choices=RUN_STATUSES)
    parameters = serializers.DictField(child=serializers.JSONField())
    startedBy = serializers.CharField(source="started_by.get_username", allow_null=True, default=None)
    createdAt = serializers.DateTimeField(source="created_at")
    startedAt = serializers.DateTimeField(source="started_at", allow_null=True)
    finishedAt = serializers.DateTimeField(source="finished_at", allow_null=True)
    duration = serializers.FloatField(allow_null=True, help_text="Seconds from its start to its end (to now while it runs).")
    error = serializers.CharField(help_text="Why the run failed, was cancelled or timed out; empty otherwise.")
    url = serializers.SerializerMethodField()
    pageUrl = serializers.SerializerMethodField()

    def get_url(self, run) -> str:
        return reverse("api:run", args=[run.pk])

    def get_pageUrl(self, run) -> str:
        return reverse("notebooks:run", args=[run.notebook_id, run.pk])


class RunDetailSerializer(RunSummarySerializer):
    claimedBy = serializers.CharField(source="claimed_by", help_text="The kernel worker that carried it out.")
    cells = RunCellResultSerializer(many=True, source="results")


class ScheduleWriteSerializer(StrictSerializer):
    """A schedule's fields; on PATCH any of them."""

    name = serializers.CharField(max_length=100)
    cron = serializers.CharField(max_length=200, help_text="Five fields: minute hour day month weekday, e.g. '0 9 * * 1-5'.")
    timezone = serializers.CharField(max_length=64, default="UTC", help_text="An IANA time zone, e.g. Europe/Paris: the clock the cron expression reads.")
    parameters = serializers.DictField(child=serializers.JSONField(), default=dict, help_text="As for a run with parameters: named inputs and values.")
    enabled = serializers.BooleanField(default=True)
    webhookUrl = serializers.URLField(max_length=500, required=False, allow_blank=True, source="webhook_url", help_text="Told of a failed run: a signed POST (docs/api.md#schedules).")


class ScheduleSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    notebookId = serializers.UUIDField(source="notebook_id")
    name = serializers.CharField()
    owner = serializers.CharField(source="owner.get_username")
    cron = serializers.CharField()
    timezone = serializers.CharField()
    parameters = serializers.DictField(child=serializers.JSONField())
    enabled = serializers.BooleanField()
    nextRunAt = serializers.DateTimeField(source="next_run_at", allow_null=True)
    webhookUrl = serializers.CharField(source="webhook_url")
    webhookSecret = serializers.SerializerMethodField(help_text="The key of the webhook's X-Notebook-Signature; only for those who may edit the notebook.")
    lastRunId = serializers.UUIDField(source="last_run_id", allow_null=True)
    lastRunStatus = serializers.CharField(source="last_run.status", allow_null=True, default=None)

    def get_webhookSecret(self, schedule) -> str | None:
        return schedule.webhook_secret if self.context.get("may_edit") else None
