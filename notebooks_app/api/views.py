"""The API's endpoints: each translates a request into the call the WebSocket consumer makes for
the same message (operations.py for edits, runs.queue_run for runs) and its result or error into
a response, so rows, history, revisions and the live events of open pages are the same whichever
way a change came. Who may do what is operations.py's (the owner's role); which token scope
each method needs is `scopes` (api/permissions.py)."""
import uuid

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, pagination, status
from rest_framework.response import Response
from rest_framework.views import APIView

from .. import operations, permissions, protocol, views as pages
from ..models import SCOPE_EDIT, SCOPE_READ, SCOPE_RUN, Cell, Notebook
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
    NotebookSummarySerializer,
    RunQueuedSerializer,
    RunSerializer,
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

    @extend_schema(parameters=ON_CELL, request=RunSerializer, responses={202: RunQueuedSerializer, **ERRORS}, summary="Run a cell, its out-of-date ancestors and its descendants (run_cell)")
    def post(self, request, notebook_id, cell_id):
        self.validated(RunSerializer)
        queued = runs.queue_run(checked_id(notebook_id, protocol.NOT_FOUND), request.user, cell_id=checked_id(cell_id, protocol.UNKNOWN_CELL), request_id=self.request_id)
        return Response(queued.describe(), status=status.HTTP_202_ACCEPTED)


class NotebookRun(ChangeView):
    scopes = {"POST": SCOPE_RUN}

    @extend_schema(parameters=ON_NOTEBOOK, request=RunSerializer, responses={202: RunQueuedSerializer, **ERRORS}, summary="Run every cell in dependency order (run_all)")
    def post(self, request, notebook_id):
        self.validated(RunSerializer)
        queued = runs.queue_run(checked_id(notebook_id, protocol.NOT_FOUND), request.user, request_id=self.request_id)
        return Response(queued.describe(), status=status.HTTP_202_ACCEPTED)


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
