from django.contrib import admin
from django.urls import include, path

from notebooks_app import health

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/v1/", include("notebooks_app.api.urls")),  # the REST API (docs/api.md)
    path("", include("notebooks_app.urls")),
]
