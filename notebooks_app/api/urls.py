"""/api/v1/: the endpoints (docs/api.md), the OpenAPI document and its Swagger UI."""
from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from . import views

app_name = "api"
urlpatterns = [
    path("notebooks", views.NotebookList.as_view(), name="notebooks"),
    path("notebooks/<str:notebook_id>", views.NotebookDetail.as_view(), name="notebook"),
    path("notebooks/<str:notebook_id>/run", views.NotebookRun.as_view(), name="run_all"),
    path("notebooks/<str:notebook_id>/runs", views.NotebookRunList.as_view(), name="runs"),
    path("notebooks/<str:notebook_id>/schedules", views.ScheduleCollection.as_view(), name="schedules"),
    path("schedules/<str:schedule_id>", views.ScheduleDetail.as_view(), name="schedule"),
    path("runs/<str:run_id>", views.RunDetail.as_view(), name="run"),
    path("runs/<str:run_id>/cancel", views.RunCancel.as_view(), name="cancel_run"),
    path("notebooks/<str:notebook_id>/cells", views.CellCollection.as_view(), name="cells"),
    path("notebooks/<str:notebook_id>/cells/<str:cell_id>", views.CellDetail.as_view(), name="cell"),
    path("notebooks/<str:notebook_id>/cells/<str:cell_id>/move", views.CellMove.as_view(), name="move"),
    path("notebooks/<str:notebook_id>/cells/<str:cell_id>/run", views.CellRun.as_view(), name="run_cell"),
    path("notebooks/<str:notebook_id>/cells/<str:cell_id>/stdout", views.CellStdout.as_view(), name="stdout"),
    path("notebooks/<str:notebook_id>/outputs/<str:digest>", views.OutputData.as_view(), name="output"),
    path("schema", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's start-up script as a file of its own: the page's CSP
    # runs no inline script. Its assets come from /static/ (drf-spectacular-sidecar).
    path("docs", SpectacularSwaggerSplitView.as_view(url_name="api:schema"), name="docs"),
    re_path(r"^(?P<rest>.*)$", views.Unknown.as_view()),
]
