"""`manage.py environments [list|gc] [--hours H]`: the built environments of notebooks' own
packages (docs/packages.md) and the disk they take; `gc` removes the ones no notebook's lock
names that went unused for `--hours` (ENVIRONMENTS_GC_HOURS; the kernel worker also does this
every hour by itself)."""
from django.conf import settings
from django.core.management.base import BaseCommand

from notebooks_app.kernel.environments import Environments
from notebooks_app.kernel.worker import environments_in_use, package_settings


def megabytes(size):
    return f"{size / 1e6:,.1f} MB"


class Command(BaseCommand):
    help = "List the environments of notebooks' own packages, or remove the unused ones (gc)."

    def add_arguments(self, parser):
        parser.add_argument("action", nargs="?", choices=["list", "gc"], default="list")
        parser.add_argument("--hours", type=float, default=None, help="gc: remove environments unused for this long (default ENVIRONMENTS_GC_HOURS)")

    def handle(self, *args, action, hours, **options):
        environments = Environments(package_settings())
        if action == "gc":
            grace = settings.ENVIRONMENTS_GC_HOURS if hours is None else max(0.0, hours)
            removed, freed = environments.collect_garbage(environments_in_use(environments), grace_seconds=grace * 3600)
            self.stdout.write(f"Removed {len(removed)} unused environment{'s' if len(removed) != 1 else ''}, {megabytes(freed)} freed.")
        found = environments.usage()
        used = environments_in_use(environments)
        total = sum(entry["bytes"] for entry in found)
        self.stdout.write(f"{len(found)} environment{'s' if len(found) != 1 else ''} in {settings.ENVIRONMENTS_DIR}, {megabytes(total)} (files shared with uv's cache counted here):")
        for entry in found:
            packages = ", ".join(f"{p['name']} {p['version']}" for p in entry["packages"]) or "?"
            state = "used by a notebook" if entry["key"] in used else "unused"
            self.stdout.write(f"  {entry['key']}  {megabytes(entry['bytes']):>10}  {state}: {packages}")
