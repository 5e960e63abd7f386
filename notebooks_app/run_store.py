"""The rows of runs with an id (models.NotebookRun) as the kernel worker writes them while it
carries a run out: a run with parameters (kernel/copy_runs.py: `RunStore`, claimed once, its
results as cells finish, its end) or a run on the shared kernel (kernel/shared_runs.py:
`SharedRunStore`, taken as its cascade starts, ended with its results); and the runs of kernel
workers that died, ended (`end_orphaned_runs`, from every worker's scheduler loop).

Every write is conditional on the row's status, so a run cancelled over the API (which sets
`cancelled` itself: api/runs.py) is never claimed afterwards nor brought back to life, and a
deleted notebook's run (its row gone with it) writes nothing. It touches no other table but
reads the kernel workers' records; a run that fails is told to `on_failed` (the worker's:
schedules.notify_failure).
"""
import datetime
import logging

from asgiref.sync import async_to_sync, sync_to_async
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import connection, transaction
from django.db.models import DateTimeField, ExpressionWrapper
from django.db.models.functions import Now
from django.utils import timezone

from . import kernel_client
from .constants import RUN_ERROR, RUN_KIND_SHARED, RUN_QUEUED, RUN_RUNNING, RUN_TIMED_OUT
from .kernel.copy_runs import RUN_COPY
from .layers import REDIS_ERRORS
from .models import KernelWorkerRecord, NotebookRun

logger = logging.getLogger(__name__)


def send_run(run):
    """`kernel.run_copy` for a queued run, to its notebook's kernel worker (the API's runs and the
    schedules' alike); Redis out of reach: as `send`."""
    send(run, {"type": RUN_COPY, "notebook": str(run.notebook_id), "run": str(run.pk), "parameters": run.parameters, "timeLimit": settings.RUN_TIME_LIMIT})


def send(run, message):
    """`message`, which carries the queued `run`, to its notebook's kernel worker; Redis out of
    reach: the run is marked `error` (it never started) and the error raised."""
    try:
        async_to_sync(kernel_client.send)(run.notebook_id, message)
    except REDIS_ERRORS:
        NotebookRun.objects.filter(pk=run.pk).update(status=RUN_ERROR, error="The kernel workers could not be reached; the run never started.", finished_at=timezone.now())
        raise


class RunStore:
    def __init__(self, *, on_failed=None):
        self.on_failed = on_failed  # (run id) -> None, in a thread of its own: a run ended error / timed_out

    @database_sync_to_async
    def accept(self, run_id, worker):
        """The run's message reached `worker`: the row names it while the run waits for a place
        (still `queued`), so that the run ends if that worker dies (end_orphaned_runs)."""
        NotebookRun.objects.filter(pk=run_id, status=RUN_QUEUED).update(claimed_by=worker[:200])

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

    async def end_orphaned(self, alive=()):
        """end_orphaned_runs, each scheduled one's failure told to `on_failed`: how many ended."""
        ended = await database_sync_to_async(end_orphaned_runs)(alive=alive)
        for run_id, schedule in ended:
            if schedule is not None and self.on_failed is not None:
                await sync_to_async(self._tell_failed, thread_sensitive=False)(run_id)
        return len(ended)

    def _tell_failed(self, run_id):
        try:
            self.on_failed(run_id)
        except Exception:  # noqa: BLE001 - the run's row is written; only the notice is lost
            logger.exception("could not notify of the failed run %s", run_id)
        finally:
            connection.close()  # this thread's own connection


class SharedRunStore:
    """The rows of runs on the shared kernel (kernel/shared_runs.py) for one kernel worker, named
    by `worker_name()`. `call` makes each write a coroutine on the ORM thread (the worker's
    retries while PostgreSQL is down)."""

    def __init__(self, *, worker_name, call=database_sync_to_async):
        self.worker_name = worker_name
        self.start = call(self._start)
        self.finish = call(self._finish)

    def _start(self, run_id):
        """True if the run is this worker's to carry out now: it was queued, or `running` under a
        worker that lost the notebook (a takeover runs its journal again: run_journal.py). A
        run cancelled, or ended by end_orphaned_runs, is not."""
        runs = NotebookRun.objects.filter(pk=run_id, kind=RUN_KIND_SHARED, status__in=[RUN_QUEUED, RUN_RUNNING])
        return bool(runs.update(status=RUN_RUNNING, started_at=timezone.now(), claimed_by=self.worker_name()[:200], results=[], error=""))

    def _finish(self, run_id, status, results, error):
        """The run's end, if this worker still has it running; one cancelled meanwhile keeps its
        status and gets the results."""
        mine = NotebookRun.objects.filter(pk=run_id, claimed_by=self.worker_name()[:200])
        if not mine.filter(status=RUN_RUNNING).update(status=status, results=results, error=error, finished_at=timezone.now()):
            mine.update(results=results)


WORKER_STOPPED_RUNNING = "The kernel worker running it stopped (killed, or cut off from the database) before the run ended; run it again."
WORKER_STOPPED_QUEUED = "The kernel worker it was sent to stopped before the run started; run it again."


def end_orphaned_runs(*, alive=(), lease_seconds=None):
    """Runs `queued` or `running` under a kernel worker that is dead end `error`, saying so: one
    named by a run's `claimed_by` whose record (models.KernelWorkerRecord) has not been renewed
    within the lease time, or is gone; `alive`: names known to live without a record (the
    embedded worker). A run no worker took yet (`claimed_by` empty) waits for its message. The
    rows are locked as they are ended, so a worker taking one at the same moment
    (SharedRunStore.start) finds it ended. The ended runs' ids, with their schedule's or None."""
    lease = datetime.timedelta(seconds=lease_seconds or settings.KERNEL_LEASE_SECONDS)
    live = KernelWorkerRecord.objects.filter(heartbeat_at__gt=ExpressionWrapper(Now() - lease, output_field=DateTimeField())).values("name")
    orphaned = NotebookRun.objects.filter(status__in=[RUN_QUEUED, RUN_RUNNING]).exclude(claimed_by="").exclude(claimed_by__in=live).exclude(claimed_by__in=list(alive))
    with transaction.atomic():
        rows = list(orphaned.select_for_update(skip_locked=True).values_list("pk", "status", "schedule_id"))
        for status, error in ((RUN_RUNNING, WORKER_STOPPED_RUNNING), (RUN_QUEUED, WORKER_STOPPED_QUEUED)):
            ids = [pk for pk, was, _ in rows if was == status]
            if ids:
                NotebookRun.objects.filter(pk__in=ids).update(status=RUN_ERROR, error=error, finished_at=timezone.now())
    for pk, was, _ in rows:
        logger.warning("run %s was %s under a kernel worker that stopped: ended error", pk, was)
    return [(pk, schedule) for pk, _, schedule in rows]
