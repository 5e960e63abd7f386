"""`manage.py demo`: a demo user and a sample notebook of dependent cells, made only on a database
that has no users yet. It never touches an existing account: the demo's password is public, so
resetting it at every start would reopen a server whose operator changed it."""
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
    help = "On a database without users: a demo superuser and a sample notebook of cells that depend on each other."

    def add_arguments(self, parser):
        parser.add_argument(
            "--base-url",
            default="http://127.0.0.1:8000",
            help="where the server will be reached, for the links printed (scripts/run passes its port)",
        )

    def handle(self, *args, base_url, **options):
        notebook = create_demo()
        if notebook is None:
            if options["verbosity"] >= 1:
                self.stdout.write("This database has users already: no demo made, no account changed.")
            return
        base_url = base_url.rstrip("/")
        self.stdout.write(self.style.SUCCESS("Demo ready."))
        self.stdout.write(f"  Log in at {base_url}/accounts/login/ as {DEMO_USERNAME} / {DEMO_PASSWORD}")
        self.stdout.write(
            f"  The password is public: change it at {base_url}/admin/password_change/ or with manage.py changepassword {DEMO_USERNAME}"
        )
        self.stdout.write(f"  Notebook: {base_url}/notebooks/{notebook.pk}/")


def create_demo():
    """The demo superuser and its sample notebook, if the database has no users; else None."""
    User = get_user_model()
    with transaction.atomic():
        if User.objects.exists():
            return None
        user = User.objects.create_superuser(username=DEMO_USERNAME, email="", password=DEMO_PASSWORD)
        notebook = Notebook.objects.create(owner=user, name=DEMO_NOTEBOOK)
        for index, code in enumerate(DEMO_CELLS, start=1):
            notebook.cells.create(position=index * POSITION_STEP, type=CELL_PYTHON, code=code)
        notebook.revision += 1
        notebook.save(update_fields=["revision", "updated_at"])
    return notebook
