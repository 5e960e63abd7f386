"""`manage.py import_notebook FILE --owner USER [--name NAME]`: a .ipynb, Jupytext percent .py or
marimo .py file becomes a new notebook of USER's, as an upload from the list page would."""
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from notebooks_app import importing, operations


class Command(BaseCommand):
    help = "Import a notebook file (.ipynb, Jupytext percent .py or marimo .py) as a new notebook owned by --owner."

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("--owner", required=True, help="username of the new notebook's owner")
        parser.add_argument("--name", default="", help="the notebook's name (default: the file's name)")

    def handle(self, *args, file, owner, name, **options):
        try:
            user = get_user_model().objects.get(username=owner)
        except get_user_model().DoesNotExist:
            raise CommandError(f"There is no user called “{owner}”.") from None
        limit = settings.IMPORT_MAX_BYTES
        try:
            with file.open("rb") as handle:
                data = handle.read(limit + 1)
        except OSError as exc:
            raise CommandError(f"Cannot read {file}: {exc.strerror or exc}") from None
        try:
            imported = importing.read_notebook(file.name, data, max_bytes=limit, max_code_bytes=settings.MAX_CODE_BYTES)
        except importing.NotebookFileError as exc:
            raise CommandError(f"{file}: {exc}") from None
        notebook = operations.import_notebook(user, name=name or imported.name, cells=imported.cells, requirements=imported.requirements)
        for note in imported.notes:
            self.stderr.write(note)
        self.stdout.write(self.style.SUCCESS(f"Imported “{notebook.name}” ({len(imported.cells)} cells) for {owner}: {notebook.pk}"))
