"""`manage.py demo`: an idempotent demo user and a sample notebook of dependent cells."""
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from notebooks_app.constants import CELL_PYTHON, POSITION_STEP
from notebooks_app.models import Notebook

DEMO_USERNAME = "demo"
DEMO_PASSWORD = "demo-notebook"
DEMO_NOTEBOOK = "Welcome: a reactive notebook"
DEMO_CELLS = [
    "# Change `rate` and run this cell: every cell below that depends on it reruns.\nrate = 0.05\nyears = 10",
    "principal = 1_000",
    "final = principal * (1 + rate) ** years\nround(final, 2)",
    "for year in range(1, years + 1):\n    print(year, round(principal * (1 + rate) ** year, 2))",
]


class Command(BaseCommand):
    help = "Create (or refresh) a demo user and a sample notebook of cells that depend on each other."

    def add_arguments(self, parser):
        parser.add_argument(
            "--base-url",
            default="http://127.0.0.1:8000",
            help="where the server will be reached, for the links printed (scripts/run passes its port)",
        )

    def handle(self, *args, base_url, **options):
        User = get_user_model()
        with transaction.atomic():
            user, created = User.objects.get_or_create(username=DEMO_USERNAME, defaults={"is_staff": True, "is_superuser": True})
            if created or not user.check_password(DEMO_PASSWORD):
                user.set_password(DEMO_PASSWORD)
                user.save()
            notebook, nb_created = Notebook.objects.get_or_create(owner=user, name=DEMO_NOTEBOOK)
            if nb_created or not notebook.cells.exists():
                for index, code in enumerate(DEMO_CELLS, start=1):
                    notebook.cells.create(position=index * POSITION_STEP, type=CELL_PYTHON, code=code)
                notebook.revision += 1
                notebook.save(update_fields=["revision", "updated_at"])
        self.stdout.write(self.style.SUCCESS("Demo ready."))
        base_url = base_url.rstrip("/")
        self.stdout.write(f"  Log in at {base_url}/accounts/login/ as {DEMO_USERNAME} / {DEMO_PASSWORD}")
        self.stdout.write(f"  Notebook: {base_url}/notebooks/{notebook.pk}/")
