"""`manage.py prune_history --older-than 90d`: bound the history log (docs/history.md)."""
import re
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from notebooks_app.models import EVENT_DELETED, NotebookEvent

UNITS = {"d": "days", "h": "hours", "w": "weeks"}


def parse_age(text):
    match = re.fullmatch(r"\s*(\d+)\s*([dhw])\s*", text or "")
    if not match:
        raise CommandError(f"--older-than takes an age such as 90d, 12w or 48h, not {text!r}")
    return timedelta(**{UNITS[match.group(2)]: int(match.group(1))})


class Command(BaseCommand):
    help = (
        "Delete history events older than an age (default 90d). Saved versions are kept, and so is the "
        "last 'deleted' event of each cell that is still deleted, so that it can be restored."
    )

    def add_arguments(self, parser):
        parser.add_argument("--older-than", default="90d", help="age such as 90d, 12w or 48h")
        parser.add_argument("--dry-run", action="store_true", help="count what would go, delete nothing")

    def handle(self, *args, older_than, dry_run, **options):
        cutoff = timezone.now() - parse_age(older_than)
        old = NotebookEvent.objects.filter(created_at__lt=cutoff)
        # The newest deletion of each cell: a restore needs its snapshot (the cell may come back).
        last_deletions = NotebookEvent.objects.filter(kind=EVENT_DELETED).values("cell_id").annotate(last=Max("id")).values_list("last", flat=True)
        doomed = old.exclude(pk__in=list(last_deletions))
        count = doomed.count()
        if not dry_run:
            with transaction.atomic():
                # Undo links into the pruned part are cut, not followed.
                NotebookEvent.objects.filter(reverts__in=doomed).update(reverts=None)
                doomed.delete()
        verb = "would delete" if dry_run else "deleted"
        self.stdout.write(f"{verb} {count:,} history event{'s' if count != 1 else ''} older than {older_than.strip()} (before {cutoff:%Y-%m-%d %H:%M} UTC); versions kept")
