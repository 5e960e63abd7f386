"""`manage.py export_notebook ID --format ipynb|py|html [--code] [--output FILE]`: a notebook
written out as the notebook page's Download links give it, to standard output or a file."""
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from notebooks_app import exporting
from notebooks_app.models import Notebook


class Command(BaseCommand):
    help = "Export a notebook as .ipynb (with outputs), percent-format .py, or an HTML report."

    def add_arguments(self, parser):
        parser.add_argument("notebook_id", help="the notebook's id (the UUID in its address)")
        parser.add_argument("--format", dest="fmt", choices=sorted(exporting.FORMATS), default="ipynb")
        parser.add_argument("--code", action="store_true", help="html: show the cells' code too")
        parser.add_argument("--output", type=Path, help="write to this file instead of standard output")

    def handle(self, *args, notebook_id, fmt, code, output, **options):
        try:
            notebook = Notebook.objects.select_related("owner").get(pk=notebook_id)
        except (Notebook.DoesNotExist, ValidationError, ValueError):
            raise CommandError(f"There is no notebook {notebook_id}.") from None
        exported = exporting.export_notebook(notebook, fmt, show_code=code)
        if output is None:
            self.stdout.write(exported.content, ending="")
            return
        try:
            output.write_text(exported.content, encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"Cannot write {output}: {exc.strerror or exc}") from None
        self.stderr.write(f"Wrote {output}")
