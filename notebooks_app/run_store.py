"""The rows of runs with an id (models.NotebookRun) as the kernel worker writes them while it
carries a run out (kernel/copy_runs.py): claimed once, its results as cells finish, its end.

Every write is conditional on the row's status, so a run cancelled over the API (which sets
`cancelled` itself: api/runs.py) is never claimed afterwards nor brought back to life, and a
deleted notebook's run (its row gone with it) writes nothing. It touches no other table; a
run that fails is told to `on_failed` (the worker's: schedules.notify_failure).
"""
import logging

from asgiref.sync import async_to_sync, sync_to_async
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import connection
from django.utils import timezone

from . import kernel_client
from .constants import RUN_ERROR, RUN_QUEUED, RUN_RUNNING, RUN_TIMED_OUT
from .kernel.copy_runs import RUN_COPY
from .layers import REDIS_ERRORS
from .models import NotebookRun

logger = logging.getLogger(__name__)


def send_run(run):
    """`kernel.run_copy` for a queued run, to its notebook's kernel worker (the API's runs and the
    schedules' alike); Redis out of reach: the run is marked `error` (it never started) and the
    error raised."""
    message = {"type": RUN_COPY, "notebook": str(run.notebook_id), "run": str(run.pk), "parameters": run.parameters, "timeLimit": settings.RUN_TIME_LIMIT}
    try:
        async_to_sync(kernel_client.send)(run.notebook_id, message)
    except REDIS_ERRORS:
        NotebookRun.objects.filter(pk=run.pk).update(status=RUN_ERROR, error="The kernel workers could not be reached; the run never started.", finished_at=timezone.now())
        raise


class RunStore:
    def __init__(self, *, on_failed=None):
        self.on_failed = on_failed  # (run id) -> None, in a thread of its own: a run ended error / timed_out

    @database_sync_to_async
    def claim(self, run_id, worker):
        """True if this worker takes the run (it was queued); one UPDATE, so exactly one does."""
        return bool(NotebookRun.objects.filter(pk=run_id, status=RUN_QUEUED).update(status=RUN_RUNNING, started_at=timezone.now(), claimed_by=worker[:200]))

    @database_sync_to_async
    def progress(self, run_id, results):
        NotebookRun.objects.filter(pk=run_id).update(results=results)

    async def finish(self, run_id, status, results, error):
        """The run's end, unless it was cancelled meanwhile (then only its results are kept); a
        failure is told to `on_failed` in a thread of its own (a slow webhook holds up no write)."""
        ended = await self._finish(run_id, status, results, error)
        if ended and self.on_failed is not None and status in (RUN_ERROR, RUN_TIMED_OUT):
            await sync_to_async(self._tell_failed, thread_sensitive=False)(run_id)

    @database_sync_to_async
    def _finish(self, run_id, status, results, error):
        updated = NotebookRun.objects.filter(pk=run_id, status=RUN_RUNNING).update(status=status, results=results, error=error, finished_at=timezone.now())
        if not updated:
            NotebookRun.objects.filter(pk=run_id).update(results=results)
        return bool(updated)

    def _tell_failed(self, run_id):
        try:
            self.on_failed(run_id)
        except Exception:  # noqa: BLE001 - the run's row is written; only the notice is lost
            logger.exception("could not notify of the failed run %s", run_id)
        finally:
            connection.close()  # this thread's own connection
