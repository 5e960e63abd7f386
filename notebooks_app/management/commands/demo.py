"""`manage.py demo`: a demo user and a sample notebook of dependent cells, made only on a database
that has no users yet. It never touches an existing account: the demo's password is public, so
resetting it at every start would reopen a server whose operator changed it.  The notebook is run
once as it is made (in its sandbox, as a "Run all" would), so it opens with its results."""
import asyncio
import logging

from channels.layers import InMemoryChannelLayer
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from notebooks_app.constants import CELL_PYTHON, POSITION_STEP
from notebooks_app.models import Notebook

logger = logging.getLogger(__name__)

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
        parser.add_argument("--no-run", action="store_true", help="make the sample notebook without running it once")

    def handle(self, *args, base_url, no_run=False, **options):
        notebook = create_demo()
        if notebook is None:
            if options["verbosity"] >= 1:
                self.stdout.write("This database has users already: no demo made, no account changed.")
            return
        if not no_run:
            problem = run_once(notebook.pk)
            if problem:
                self.stderr.write(f"The sample notebook was made but could not be run ({problem}); it runs when you press Run all.")
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


def run_once(notebook_id):
    """Run every cell of the notebook once, through a kernel session of this process (the same
    sandbox, cascade and persistence as the worker's), and store the results; None, or what went
    wrong in a sentence (the notebook stays, its cells idle)."""
    from notebooks_app.kernel.worker import KernelService

    async def run():
        service = KernelService(channel_layer=InMemoryChannelLayer())  # no page is open yet
        try:
            session = service.session(notebook_id)
            await session.ensure_loaded()
            await session.cascades.run_all()
        finally:
            await service.close()  # persists the final states, stops the execution process

    try:
        asyncio.run(run())
    except Exception as exc:  # noqa: BLE001 - a demo that cannot run is still a demo
        logger.exception("could not run the sample notebook %s", notebook_id)
        return str(exc) or type(exc).__name__
    return None
