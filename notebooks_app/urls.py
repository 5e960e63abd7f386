from django.urls import path

from . import output_documents, schedule_views, views

app_name = "notebooks"
urlpatterns = [
    path("", views.notebook_list, name="list"),
    path("accounts/signup/", views.signup, name="signup"),
    path("accounts/tokens/", views.api_tokens, name="api_tokens"),
    path("accounts/tokens/<int:token_id>/revoke/", views.api_token_revoke, name="api_token_revoke"),
    path("preferences/theme/", views.set_theme, name="set_theme"),
    path("notebooks/import/", views.notebook_import, name="import"),
    path("notebooks/<uuid:notebook_id>/", views.notebook_detail, name="detail"),
    path("notebooks/<uuid:notebook_id>/app/", views.notebook_app, name="app"),
    path("notebooks/<uuid:notebook_id>/export/<str:fmt>/", views.notebook_export, name="export"),
    path("notebooks/<uuid:notebook_id>/runs/", views.notebook_runs, name="runs"),
    path("notebooks/<uuid:notebook_id>/schedules/", schedule_views.notebook_schedules, name="schedules"),
    path("notebooks/<uuid:notebook_id>/schedules/add/", schedule_views.schedule_add, name="schedule_add"),
    path("notebooks/<uuid:notebook_id>/schedules/<int:schedule_id>/edit/", schedule_views.schedule_edit, name="schedule_edit"),
    path("notebooks/<uuid:notebook_id>/schedules/<int:schedule_id>/enabled/", schedule_views.schedule_enabled, name="schedule_enabled"),
    path("notebooks/<uuid:notebook_id>/schedules/<int:schedule_id>/delete/", schedule_views.schedule_delete, name="schedule_delete"),
    path("notebooks/<uuid:notebook_id>/runs/<uuid:run_id>/", views.run_detail, name="run"),
    path("notebooks/<uuid:notebook_id>/runs/<uuid:run_id>/export/html", views.run_export, name="run_export"),
    path("notebooks/<uuid:notebook_id>/share/", views.notebook_share, name="share"),
    path("notebooks/<uuid:notebook_id>/rename/", views.notebook_rename, name="rename"),
    path("notebooks/<uuid:notebook_id>/egress/", views.notebook_egress, name="egress"),
    path("notebooks/<uuid:notebook_id>/delete/", views.notebook_delete, name="delete"),
    path("notebooks/<uuid:notebook_id>/outputs/<str:digest>/", views.cell_output_data, name="output"),
    path("notebooks/<uuid:notebook_id>/files/", views.notebook_files_view, name="files"),
    path("notebooks/<uuid:notebook_id>/files/<path:path>", views.notebook_file_download, name="file"),
    path("frames/chart/", output_documents.chart_frame, name="chart_frame"),
    path("notebooks/<uuid:notebook_id>/cells/<uuid:cell_id>/stdout/", views.cell_stdout, name="stdout"),
    path("notebooks/<uuid:notebook_id>/cells/<uuid:cell_id>/outputs/", views.cell_outputs, name="cell_outputs"),
]
