"""`manage.py notebook_files ID list | add FILE [--name NAME] | get NAME [--output FILE] | rm NAME`:
a notebook's files from a script (docs/notebook-files.md), as its owner. A bad name or size is
a one-line error and a non-zero exit."""
import sys
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from notebooks_app import notebook_files
from notebooks_app.models import Notebook
from notebooks_app.operations import OperationError


class Command(BaseCommand):
    help = "List, add, get or remove a notebook's files."

    def add_arguments(self, parser):
        parser.add_argument("notebook_id", help="the notebook's id (the UUID in its address)")
        parser.add_argument("action", choices=["list", "add", "get", "rm"])
        parser.add_argument("target", nargs="?", help="add: the file to upload; get, rm: the notebook file's name")
        parser.add_argument("--name", help="add: the name in the notebook (default: the file's own name)")
        parser.add_argument("--output", type=Path, help="get: write here instead of standard output")

    def handle(self, *args, notebook_id, action, target, name, output, **options):
        try:
            notebook = Notebook.objects.select_related("owner").get(pk=notebook_id)
        except (Notebook.DoesNotExist, ValidationError, ValueError):
            raise CommandError(f"There is no notebook {notebook_id}.") from None
        owner = notebook.owner
        try:
            if action == "list":
                for row in notebook_files.current_files(notebook.pk):
                    self.stdout.write(f"{row.path}\t{row.size}\tv{row.version}\t{row.added_by.get_username() if row.added_by else '-'}\t{row.added_at:%Y-%m-%d %H:%M}")
                return
            if not target:
                raise CommandError(f"'{action}' needs a file name.")
            if action == "add":
                source = Path(target)
                if not source.is_file():
                    raise CommandError(f"{source} is not a file.")
                with source.open("rb") as stream:
                    row = notebook_files.add_file(notebook.pk, owner, path=name or source.name, stream=stream, size=source.stat().st_size)
                self.stdout.write(f"Added {row.path} ({row.size:,} bytes, version {row.version}).")
            elif action == "get":
                row, handle = notebook_files.open_file(notebook.pk, owner, target)
                with handle:
                    sink = output.open("wb") if output else sys.stdout.buffer
                    try:
                        while chunk := handle.read(1 << 20):
                            sink.write(chunk)
                    finally:
                        if output:
                            sink.close()
            elif action == "rm":
                row = notebook_files.delete_file(notebook.pk, owner, path=target)
                self.stdout.write(f"Deleted {row.path} (it can be restored from the notebook's Files panel).")
        except OperationError as exc:
            raise CommandError(exc.message) from None
        except OSError as exc:
            raise CommandError(f"{exc.filename or target}: {exc.strerror or exc}") from None
