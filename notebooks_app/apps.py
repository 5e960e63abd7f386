from django.apps import AppConfig


class NotebooksAppConfig(AppConfig):
    name = "notebooks_app"
    verbose_name = "Notebooks"
    default_auto_field = "django.db.models.BigAutoField"
