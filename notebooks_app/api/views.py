"""The API's endpoints: each translates a request into the call the WebSocket consumer makes for
the same message (operations.py for edits, runs.queue_run for runs, which also records them)
and its result or error into a response, so rows, history, revisions and the live events of open
pages are the same whichever way a change came. Who may do what is operations.py's (the owner's
role); which token scope each method needs is `scopes` (api/permissions.py)."""
import uuid

from django.conf import settings
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, PolymorphicProxySerializer, extend_schema
from rest_framework import generics, pagination, status
from rest_framework.response import Response
from rest_framework.views import APIView

from .. import operations, permissions, protocol, schedules, views as pages
from ..models import SCOPE_EDIT, SCOPE_READ, SCOPE_RUN, Cell, Notebook, NotebookSchedule
from . import runs
from .errors import ApiError
from .serializers import (
    CellChangeSerializer,
    CellCreateSerializer,
    CellMoveSerializer,
    CellSerializer,
    CellUpdateSerializer,
    ErrorSerializer,
    NotebookSerializer,
    NotebookRunRequestSerializer,
    NotebookSummarySerializer,
    RunDetailSerializer,
    RunQueuedSerializer,
    RunSerializer,
    RunStartedSerializer,
    RunSummarySerializer,
    ScheduleSerializer,
    ScheduleWriteSerializer,
)

ERRORS = {code: OpenApiResponse(ErrorSerializer, description=description) for code, description in [
    (400, "Bad input: invalid_json, invalid_field, too_large."),
    (401, "No token, or one that is unknown, revoked or expired: unauthenticated."),
    (403, "The token lacks the scope, or the owner's role does not allow it: forbidden."),
    (404, "No such notebook for the token's owner (not_found), or no such cell (unknown_cell)."),
    (429, "Over API_RATE_LIMIT: rate_limited, with Retry-After."),
    (503, "busy or unavailable: nothing was changed (unless the message says so); retry."),
]}

ON_NOTEBOOK = [OpenApiParameter("notebook_id", OpenApiTypes.UUID, OpenApiParameter.PATH)]
ON_CELL = [*ON_NOTEBOOK, OpenApiParameter("cell_id", OpenApiTypes.UUID, OpenApiParameter.PATH)]
ON_RUN = [OpenApiParameter("run_id", OpenApiTypes.UUID, OpenApiParameter.PATH)]
ON_SCHEDULE = [OpenApiParameter("schedule_id", OpenApiTypes.INT, OpenApiParameter.PATH)]
RUN_ACCEPTED = PolymorphicProxySerializer(component_name="RunAccepted", serializers=[RunStartedSerializer, RunQueuedSerializer], resource_type_field_name=None)


def new_request_id():
    """The requestId of the events an API request causes (answered to the caller, too)."""
    return f"api-{uuid.uuid4().hex[:20]}"


def checked_id(value, code):
    """A notebook or cell id from the path, as a string; `code` (not_found / unknown_cell) when it is no UUID."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise ApiError(code, "No notebook here." if code == protocol.NOT_FOUND else f"There is no cell {str(value)[:60]} in this notebook.") from None


class NotebookPages(pagination.PageNumberPagination):
    page_size = settings.API_PAGE_SIZE
    page_size_query_param = "pageSize"
    max_page_size = 200


class ApiView(APIView):
    scopes = {}  # HTTP method -> the token scope it needs (api/permissions.py)

    def validated(self, serializer_class):
        serializer = serializer_class(data=self.request.data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data


class ChangeView(ApiView):
    """An edit or a run, whose live events carry `request_id`. (In the embedded default, the
    kernel worker it needs was started by the request's arrival: kernel_client.starting_embedded_worker.)"""

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        self.request_id = new_request_id()

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        if getattr(self, "request_id", None):
            response["X-Request-Id"] = self.request_id
        return response

    def changed(self, cell, *, created=False):
        body = {"cell": CellSerializer(cell).data, "requestId": self.request_id}
        return Response(body, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


@extend_schema(responses={200: NotebookSummarySerializer(many=True), **ERRORS}, summary="The notebooks the token's owner may read")
class NotebookList(generics.ListAPIView):
    scopes = {"GET": SCOPE_READ}
    serializer_class = NotebookSummarySerializer
    pagination_class = NotebookPages

    def get_queryset(self):
        user = self.request.user
        return Notebook.objects.visible_to(user).with_counts().with_role(user).select_related("owner").order_by("-updated_at", "pk")


def readable_notebook(notebook_id, user):
    """The notebook with its cells in order and the user's role, if they may view it."""
    notebook = operations.get_notebook(Notebook.objects.select_related("owner"), checked_id(notebook_id, protocol.NOT_FOUND), user, action=permissions.VIEW)
    notebook.user_role = notebook.role_of(user)
    notebook.ordered_cells = list(notebook.cells.order_by("position"))
    return notebook


class NotebookDetail(ApiView):
    scopes = {"GET": SCOPE_READ}

    @extend_schema(parameters=ON_NOTEBOOK, responses={200: NotebookSerializer, **ERRORS}, summary="A notebook and its cells in order")
    def get(self, request, notebook_id):
        return Response(NotebookSerializer(readable_notebook(notebook_id, request.user)).data)


class CellCollection(ChangeView):
    scopes = {"POST": SCOPE_EDIT}

    @extend_schema(parameters=ON_NOTEBOOK, request=CellCreateSerializer, responses={201: CellChangeSerializer, **ERRORS}, summary="Create a cell (create_cell)")
    def post(self, request, notebook_id):
        data = self.validated(CellCreateSerializer)
        cell = operations.create_cell(
            checked_id(notebook_id, protocol.NOT_FOUND),
            request.user,
            cell_type=data["type"],
            after_cell_id=data.get("after"),
            before_cell_id=data.get("before"),
            code=data["code"],
            request_id=self.request_id,
        )
        return self.changed(cell, created=True)


class CellDetail(ChangeView):
    scopes = {"PATCH": SCOPE_EDIT, "DELETE": SCOPE_EDIT}

    @extend_schema(parameters=ON_CELL, request=CellUpdateSerializer, responses={200: CellChangeSerializer, **ERRORS}, summary="Change a cell's code (cell_update); runs nothing")
    def patch(self, request, notebook_id, cell_id):
        data = self.validated(CellUpdateSerializer)
        notebook_id, cell_id = checked_id(notebook_id, protocol.NOT_FOUND), checked_id(cell_id, protocol.UNKNOWN_CELL)
        operations.update_cell(notebook_id, request.user, cell_id=cell_id, code=data.get("code"), result_variable=data.get("resultVariable"), request_id=self.request_id)
        return self.changed(Cell.objects.get(pk=cell_id, notebook_id=notebook_id))

    @extend_schema(parameters=ON_CELL, responses={204: None, **ERRORS}, summary="Delete a cell (delete_cell); its dependents rerun")
    def delete(self, request, notebook_id, cell_id):
        operations.delete_cell(checked_id(notebook_id, protocol.NOT_FOUND), request.user, cell_id=checked_id(cell_id, protocol.UNKNOWN_CELL), request_id=self.request_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class CellMove(ChangeView):
    scopes = {"POST": SCOPE_EDIT}

    @extend_schema(parameters=ON_CELL, request=CellMoveSerializer, responses={200: CellChangeSerializer, **ERRORS}, summary="Move a cell after another (move_cell)")
    def post(self, request, notebook_id, cell_id):
        data = self.validated(CellMoveSerializer)
        notebook_id, cell_id = checked_id(notebook_id, protocol.NOT_FOUND), checked_id(cell_id, protocol.UNKNOWN_CELL)
        operations.move_cell(notebook_id, request.user, cell_id=cell_id, after_cell_id=data["after"], request_id=self.request_id)
        return self.changed(Cell.objects.get(pk=cell_id, notebook_id=notebook_id))


class CellRun(ChangeView):
    scopes = {"POST": SCOPE_RUN}

    @extend_schema(
        parameters=ON_CELL,
        request=RunSerializer,
        responses={202: RunQueuedSerializer, **ERRORS},
        summary="Run a cell, its out-of-date ancestors and its descendants on the shared kernel (run_cell): a run with an id",
    )
    def post(self, request, notebook_id, cell_id):
        self.validated(RunSerializer)
        queued = runs.queue_run(checked_id(notebook_id, protocol.NOT_FOUND), request.user, cell_id=checked_id(cell_id, protocol.UNKNOWN_CELL), request_id=self.request_id)
        return Response(run_queued(queued), status=status.HTTP_202_ACCEPTED)


class NotebookRun(ChangeView):
    scopes = {"POST": SCOPE_RUN}

    @extend_schema(
        parameters=ON_NOTEBOOK,
        request=NotebookRunRequestSerializer,
        responses={202: RUN_ACCEPTED, **ERRORS},
        summary="Run every cell: on the shared kernel (run_all), or with parameters in a process of its own; either way a run with an id",
    )
    def post(self, request, notebook_id):
        data = self.validated(NotebookRunRequestSerializer)
        notebook_id = checked_id(notebook_id, protocol.NOT_FOUND)
        if "parameters" in data:
            run = runs.start_copy_run(notebook_id, request.user, parameters=data["parameters"])
            return Response(RunStartedSerializer(run_started(run)).data, status=status.HTTP_202_ACCEPTED)
        queued = runs.queue_run(notebook_id, request.user, request_id=self.request_id)
        return Response(run_queued(queued), status=status.HTTP_202_ACCEPTED)


def run_started(run):
    summary = RunSummarySerializer(run)
    return {"runId": run.pk, "status": run.status, "url": summary.get_url(run), "pageUrl": summary.get_pageUrl(run)}


def run_queued(queued):
    """A run on the shared kernel as the API answers it: what was queued, and its row's id and URLs."""
    return RunQueuedSerializer({**queued.describe(), **run_started(queued.run)}).data


@extend_schema(parameters=ON_NOTEBOOK, responses={200: RunSummarySerializer(many=True), **ERRORS}, summary="The notebook's run log, newest first")
class NotebookRunList(generics.ListAPIView):
    scopes = {"GET": SCOPE_READ}
    serializer_class = RunSummarySerializer
    pagination_class = NotebookPages

    def get_queryset(self):
        notebook = readable_notebook_row(self.kwargs["notebook_id"], self.request.user)
        return notebook.runs.select_related("started_by").order_by("-created_at", "pk")


def readable_notebook_row(notebook_id, user):
    return operations.get_notebook(Notebook.objects.only("id", "owner_id"), checked_id(notebook_id, protocol.NOT_FOUND), user, action=permissions.VIEW)


class RunDetail(ApiView):
    scopes = {"GET": SCOPE_READ}

    @extend_schema(parameters=ON_RUN, responses={200: RunDetailSerializer, **ERRORS}, summary="A run: its status, parameters and each cell's result")
    def get(self, request, run_id):
        return Response(RunDetailSerializer(runs.visible_run(checked_id(run_id, protocol.NOT_FOUND), request.user)).data)


class RunCancel(ApiView):
    scopes = {"POST": SCOPE_RUN}

    @extend_schema(parameters=ON_RUN, request=None, responses={200: RunDetailSerializer, **ERRORS}, summary="Cancel a run: a queued one never starts, a running one's process is stopped")
    def post(self, request, run_id):
        return Response(RunDetailSerializer(runs.cancel_run(checked_id(run_id, protocol.NOT_FOUND), request.user)).data)


class OutputData(ApiView):
    """A large output by reference: the page's own view (views.cell_output_data), for the token's owner."""

    scopes = {"GET": SCOPE_READ}

    @extend_schema(parameters=ON_NOTEBOOK, responses={(200, "*/*"): OpenApiResponse(description="The output's bytes, as the page gets them."), **ERRORS}, summary="A large output of a cell")
    def get(self, request, notebook_id, digest):
        return pages.cell_output_data(request._request, notebook_id=checked_id(notebook_id, protocol.NOT_FOUND), digest=digest)


class CellStdout(ApiView):
    """A cell's whole stdout: the page's own view (views.cell_stdout), for the token's owner."""

    scopes = {"GET": SCOPE_READ}

    @extend_schema(parameters=ON_CELL, responses={(200, "text/plain"): OpenApiResponse(description="The whole stdout."), **ERRORS}, summary="A cell's whole stdout")
    def get(self, request, notebook_id, cell_id):
        return pages.cell_stdout(request._request, notebook_id=checked_id(notebook_id, protocol.NOT_FOUND), cell_id=checked_id(cell_id, protocol.UNKNOWN_CELL))


class Unknown(ApiView):
    """Anything else under /api/v1/: a JSON 404 rather than the site's page."""

    permission_classes = []
    authentication_classes = []
    throttle_classes = []

    @extend_schema(exclude=True)
    def get(self, request, rest=""):
        raise ApiError(protocol.NOT_FOUND, "There is no such endpoint; see /api/v1/docs.")

    post = put = patch = delete = get


# --- schedules (docs/api.md#schedules) ---------------------------------------------------------------


def saved_schedule(schedule, fields):
    try:
        return schedules.save_schedule(schedule, fields, timezone.now())
    except schedules.InvalidSchedule as exc:
        raise ApiError(protocol.INVALID_FIELD, f"{exc}.") from None


def schedule_of(schedule_id, user, *, action):
    """The schedule if `user` may do `action` on its notebook; not_found otherwise."""
    schedule = NotebookSchedule.objects.select_related("notebook", "owner", "last_run").filter(pk=schedule_id).first() if str(schedule_id).isdigit() else None
    if schedule is None:
        raise ApiError(protocol.NOT_FOUND, "No schedule here.")
    operations.get_notebook(Notebook.objects.only("id", "owner_id"), schedule.notebook_id, user, action=action)
    return schedule


def may_edit(notebook_id, user):
    return permissions.may(Notebook.objects.only("id", "owner_id").get(pk=notebook_id).role_of(user), permissions.EDIT)


class ScheduleCollection(ApiView):
    scopes = {"GET": SCOPE_READ, "POST": SCOPE_EDIT}

    @extend_schema(parameters=ON_NOTEBOOK, responses={200: ScheduleSerializer(many=True), **ERRORS}, summary="The notebook's schedules")
    def get(self, request, notebook_id):
        notebook = readable_notebook_row(notebook_id, request.user)
        rows = notebook.schedules.select_related("owner", "last_run")
        return Response(ScheduleSerializer(rows, many=True, context={"may_edit": may_edit(notebook.pk, request.user)}).data)

    @extend_schema(parameters=ON_NOTEBOOK, request=ScheduleWriteSerializer, responses={201: ScheduleSerializer, **ERRORS}, summary="Schedule runs of the notebook (an editor)")
    def post(self, request, notebook_id):
        notebook = operations.get_notebook(Notebook.objects.all(), checked_id(notebook_id, protocol.NOT_FOUND), request.user, action=permissions.EDIT)
        fields = self.validated(ScheduleWriteSerializer)
        schedule = saved_schedule(NotebookSchedule(notebook=notebook, owner=request.user), fields)
        return Response(ScheduleSerializer(schedule, context={"may_edit": True}).data, status=status.HTTP_201_CREATED)


class ScheduleDetail(ApiView):
    scopes = {"GET": SCOPE_READ, "PATCH": SCOPE_EDIT, "DELETE": SCOPE_EDIT}

    @extend_schema(parameters=ON_SCHEDULE, responses={200: ScheduleSerializer, **ERRORS}, summary="A schedule")
    def get(self, request, schedule_id):
        schedule = schedule_of(schedule_id, request.user, action=permissions.VIEW)
        return Response(ScheduleSerializer(schedule, context={"may_edit": may_edit(schedule.notebook_id, request.user)}).data)

    @extend_schema(parameters=ON_SCHEDULE, request=ScheduleWriteSerializer(partial=True), responses={200: ScheduleSerializer, **ERRORS}, summary="Change a schedule (an editor)")
    def patch(self, request, schedule_id):
        schedule = schedule_of(schedule_id, request.user, action=permissions.EDIT)
        serializer = ScheduleWriteSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        return Response(ScheduleSerializer(saved_schedule(schedule, serializer.validated_data), context={"may_edit": True}).data)

    @extend_schema(parameters=ON_SCHEDULE, responses={204: None, **ERRORS}, summary="Delete a schedule (an editor); its runs stay in the log")
    def delete(self, request, schedule_id):
        schedule_of(schedule_id, request.user, action=permissions.EDIT).delete()
        return Response(status=status.HTTP_204_NO_CONTENT)
