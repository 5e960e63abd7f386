"""The kernel worker: the Channels consumer behind `manage.py runworker kernel`.

It owns one NotebookSession per notebook (graph + runner), loads it from the
database on first use, and is the only sender of notebook events to the group
`notebook.<id>`.  Its handler only hands a message to the notebook's session
queue and returns (runworker drops a consumer instance that raises, together
with its queued messages), so one notebook's failure or long cell never stalls
another.  This is the only module under kernel/ that imports Django, and it
imports nothing of the web side (consumers, operations, views): the web side
reaches it through kernel_client.py.
"""
import asyncio
import datetime
import functools
import io
import json
import logging
import os
import socket

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.urls import reverse

from notebookproject.postgresql import POSTGRESQL_ENGINES

from .. import protocol, vault
from ..layers import REDIS_ERRORS, Outage, backoff_delays
from .. import file_store
from ..models import EVENT_EDITED, EVENT_KERNEL_STOPPED, EVENT_PACKAGES, Cell, Notebook, NotebookEvent, NotebookFile, NotebookSecret, OutputBlob
from .. import schedules
from ..run_store import RunStore, SharedRunStore
from ..secrets import mask_connection_string
from .addresses import group_name
from .database import DatabasePolicy
from .environments import Environments, PackageError, PackageSettings
from .copy_runs import CANCEL_RUN, CopyRuns
from .copy_runs import MESSAGES as RUN_MESSAGES
from .fleet import Fleet, LeaseTable
from .lifecycle import OPERATOR, PoolLimits, ProcessPool
from .runner import Runner
from .sandbox import Limits, SandboxConfig, probe, running_as_root
from .cell_state import PERSISTED_FIELDS
from .event_stream import Encoded
from .session import NotebookSession
from .shared_text import code_key

logger = logging.getLogger(__name__)

DATABASE_DOWN = (OperationalError, InterfaceError)
PROBE_GROUP = "kernel-probe"  # a group nobody joins: publishing to it tells whether Redis is back
_database_outage = Outage("kernel worker", resource="PostgreSQL")


def retried_while_database_down(func):
    """`func` on the ORM thread, retried with backoff while PostgreSQL is unreachable, so a
    result computed during an outage is written when the database is back, not dropped
    (channels' database_sync_to_async drops the broken connection between attempts)."""
    call = database_sync_to_async(func)

    async def retrying(*args, **kwargs):
        delays = backoff_delays()
        while True:
            try:
                result = await call(*args, **kwargs)
            except DATABASE_DOWN as exc:
                _database_outage.failed(exc)
                await asyncio.sleep(next(delays))
                continue
            _database_outage.recovered()
            return result

    return retrying


def sandbox_config():
    """The sandbox of every execution process, from settings (None: KERNEL_SANDBOX=off)."""
    if not settings.KERNEL_SANDBOX:
        return None
    return SandboxConfig(
        network=settings.KERNEL_NETWORK,
        uid_base=settings.KERNEL_SANDBOX_UID_BASE,
        limits=Limits(
            memory_mb=settings.KERNEL_MEMORY_LIMIT_MB,
            disk_mb=settings.KERNEL_DISK_LIMIT_MB,
            processes=settings.KERNEL_PROCESS_LIMIT,
            open_files=settings.KERNEL_OPEN_FILES_LIMIT,
        ),
    )


def pool_limits():
    """The lifecycle of this worker's execution processes (lifecycle.py), from settings."""
    return PoolLimits.defaults(
        idle_minutes=settings.KERNEL_IDLE_MINUTES,
        max_processes=settings.KERNEL_MAX_PROCESSES or None,
        user_max=settings.KERNEL_USER_MAX,
        start_concurrency=settings.KERNEL_START_CONCURRENCY,
        high_mb=settings.KERNEL_MEMORY_HIGH_MB or None,
        low_mb=settings.KERNEL_MEMORY_LOW_MB or None,
        process_mb=settings.KERNEL_MEMORY_LIMIT_MB,
    )


def package_settings():
    """Where and how notebooks' own packages are built (docs/packages.md), from settings."""
    return PackageSettings(
        enabled=settings.NOTEBOOK_PACKAGES,
        root=str(settings.ENVIRONMENTS_DIR),
        index_url=settings.PACKAGE_INDEX_URL,
        build_timeout=settings.PACKAGE_BUILD_TIMEOUT,
    )


def environments_in_use(environments):
    """The environment keys of every notebook's lock: never collected (kernel/environments.py)."""
    locks = Notebook.objects.exclude(requirements_lock="").values_list("requirements_lock", flat=True).distinct()
    return {key for key in (environments.key(lock) for lock in locks.iterator()) if key}


ENVIRONMENTS_GC_EVERY = 3600.0  # seconds between two collections of unused environments


def database_policy():
    """Keeps SQL cells off the server's own database (its file, its project, its PostgreSQL)."""
    db = settings.DATABASES["default"]
    paths, postgres = [str(settings.BASE_DIR)], []
    if db["ENGINE"] == "django.db.backends.sqlite3":
        paths.append(str(db["NAME"]))
    elif db["ENGINE"] in POSTGRESQL_ENGINES:
        postgres.append((db.get("HOST") or "", db.get("PORT") or 5432, db.get("NAME") or ""))
    return DatabasePolicy(denied_paths=tuple(paths), denied_postgres=tuple(postgres))


def notebooks_with_pending_runs():
    """Ids of the notebooks whose run journal holds a run not finished (run_journal.py)."""
    return [str(pk) for pk in Notebook.objects.filter(run_journal__pending__0__isnull=False).values_list("pk", flat=True)]


class DatabaseStore:
    """Reads notebooks for a session and writes back final cell states, in batches.

    Every write is fenced (fleet.py): inside its transaction it checks that this worker still
    holds the notebook's shard at the epoch it took it with, and raises leases.Fenced if not."""

    def __init__(self):
        self.fence = None  # notebook id -> (fleet, shard, owner, epoch) or None (embedded): set by the fleet

    def _fenced(self, notebook_id):
        """In a write's transaction: this worker still owns the notebook (else leases.Fenced)."""
        if self.fence is not None:
            args = self.fence(notebook_id)
            if args is not None:
                LeaseTable.check(args)

    @retried_while_database_down
    def load(self, notebook_id):
        """The notebook's revision and its cells as of one moment. Two autocommit reads could
        see an edit committed between them (cells of revision R + 1 under revision R: the edit's
        own message then finds its cell already there); under READ COMMITTED a transaction is
        not enough, so PostgreSQL reads both in one REPEATABLE READ snapshot."""
        with transaction.atomic():
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            notebook = Notebook.objects.filter(pk=notebook_id).first()
            if notebook is None:
                return None
            cells = list(
                notebook.cells.order_by("position").values(
                    "id", "type", "code", "result_variable", "position", *PERSISTED_FIELDS, "ydoc", "ydoc_generation", "ydoc_key", "inputs"
                )
            )
            connection_string = self._connection_string(notebook)
            secrets, secret_list = self._secrets(notebook_id)
        return {
            "name": notebook.name,
            "revision": notebook.revision,
            "db_connection": connection_string,
            "db_display": mask_connection_string(connection_string),
            "secrets": secrets,  # ((name, value), ...), decrypted: for the execution process alone
            "secret_list": secret_list,  # [{name, by, at}]: what clients may know
            "requirements": notebook.requirements or [],
            "requirements_lock": notebook.requirements_lock,
            "egress_allowlist": notebook.egress_allowlist or [],
            "run_journal": notebook.run_journal or {},
            **self._files(notebook_id),
            "cells": cells,
        }

    def _files(self, notebook_id):
        """The notebook's current files, described, and mirrored for its sandbox (file_store.py)."""
        rows = list(NotebookFile.objects.filter(notebook_id=notebook_id, current=True).select_related("added_by").order_by("path"))
        directory = file_store.mirror(notebook_id, [(row.path, row.sha256) for row in rows])
        described = [
            {"path": row.path, "size": row.size, "version": row.version, "by": row.added_by.get_username() if row.added_by else None, "at": row.added_at.isoformat()}
            for row in rows
        ]
        return {"files": described, "files_dir": str(directory)}

    @retried_while_database_down
    def load_files(self, notebook_id):
        return self._files(notebook_id)

    @database_sync_to_async
    def save_file(self, notebook_id, path, data):
        """A cell's files.save (file_reads.py): checked and stored like an upload, a new version
        with its history event and one revision, in one transaction: {"path", "version",
        "revision"}, or {"error"} (a bad name or size, said in a sentence)."""
        try:
            path = file_store.clean_path(path)
            file_store.check_size(len(data), notebook_id, path)
            sha256, size = file_store.store_bytes(io.BytesIO(data), expected_size=len(data))
            with transaction.atomic():
                self._fenced(notebook_id)
                notebook = Notebook.objects.select_for_update().filter(pk=notebook_id).first()
                if notebook is None:
                    return {"error": "the notebook no longer exists"}
                row = file_store.record_version(notebook, None, path, sha256, size)
                notebook.revision += 1
                notebook.save(update_fields=["revision", "updated_at"])
        except file_store.FileRefused as exc:
            return {"error": exc.message}
        return {"path": path, "version": row.version, "revision": notebook.revision}

    @database_sync_to_async
    def save_requirements(self, notebook_id, requirements, lock, user_id):
        """A change of packages that built (package_builds.py): the list, its lock, a history
        event and one bump of the revision, in one transaction; the new revision, or None if the
        notebook is gone."""
        with transaction.atomic():
            self._fenced(notebook_id)
            notebook = Notebook.objects.select_for_update().filter(pk=notebook_id).first()
            if notebook is None:
                return None
            NotebookEvent.objects.record(notebook, user_id, EVENT_PACKAGES, before={"requirements": notebook.requirements or []}, after={"requirements": requirements})
            notebook.requirements, notebook.requirements_lock = requirements, lock
            notebook.revision += 1
            notebook.save(update_fields=["requirements", "requirements_lock", "revision", "updated_at"])
            return notebook.revision

    @retried_while_database_down
    def save_lock(self, notebook_id, requirements, lock):
        """The lock of requirements that had none (imported) or whose lock no longer fitted the
        server's packages: bookkeeping, no revision (nothing anyone wrote changed)."""
        with transaction.atomic():
            self._fenced(notebook_id)
            Notebook.objects.filter(pk=notebook_id, requirements=requirements).update(requirements_lock=lock)

    @retried_while_database_down
    def record_kernel_stop(self, notebook_id, cause, reason):
        """A line in the notebook's history for a stop the lifecycle made (idle, evicted, memory,
        drain, operator): no revision, nothing anyone wrote changed."""
        with transaction.atomic():
            self._fenced(notebook_id)
            notebook = Notebook.objects.filter(pk=notebook_id).only("id").first()
            if notebook is not None:
                NotebookEvent.objects.record(notebook, None, EVENT_KERNEL_STOPPED, after={"cause": cause, "reason": reason})

    @retried_while_database_down
    def save_run_journal(self, notebook_id, journal):
        """The runs received and not finished (run_journal.py): bookkeeping, no revision."""
        with transaction.atomic():
            self._fenced(notebook_id)
            Notebook.objects.filter(pk=notebook_id).update(run_journal=journal)

    @database_sync_to_async
    def save_blobs(self, notebook_id, cell_id, blobs):
        """Store a cell's large outputs (`blobs`: digest, mimeType, data) and drop the ones its
        new outputs no longer use, in one transaction; a cell deleted meanwhile stores none."""
        with transaction.atomic():
            self._fenced(notebook_id)
            if not Cell.objects.filter(pk=cell_id, notebook_id=notebook_id).exists():
                return
            digests = [blob["digest"] for blob in blobs]
            OutputBlob.objects.filter(cell_id=cell_id).exclude(digest__in=digests).delete()
            OutputBlob.objects.bulk_create(
                [OutputBlob(cell_id=cell_id, digest=b["digest"], mime_type=b["mimeType"], data=b["data"]) for b in blobs],
                ignore_conflicts=True,
            )

    @database_sync_to_async
    def save_code(self, notebook_id, texts):
        """Merged shared text (`texts`: cell id -> (code, Yjs state, generation, typists' user
        ids)), its history events (an edit per typist, coalesced like any edit) and one bump of
        the notebook's revision, in one transaction; the new revision, or None if it is gone."""
        with transaction.atomic():
            self._fenced(notebook_id)
            notebook = Notebook.objects.select_for_update().filter(pk=notebook_id).first()
            if notebook is None:
                return None
            old = {str(k): v for k, v in Cell.objects.filter(pk__in=list(texts), notebook_id=notebook_id).values_list("id", "code")}
            for cell_id, (code, state, generation, typists) in texts.items():
                Cell.objects.filter(pk=cell_id, notebook_id=notebook_id).update(code=code, ydoc=state, ydoc_generation=generation, ydoc_key=code_key(code))
                for user_id in typists or [None]:
                    NotebookEvent.objects.record(notebook, user_id, EVENT_EDITED, cell_id=cell_id, before={"code": old.get(str(cell_id))}, after={"code": code})
            notebook.revision += 1
            notebook.save(update_fields=["revision", "updated_at"])
            return notebook.revision

    @retried_while_database_down
    def save_text_states(self, notebook_id, texts):
        """Yjs states whose text the database already holds (`texts`: cell id -> (state,
        generation, code_key of its text)), as one executemany like persist(): the first open of
        a big notebook stores thousands (one UPDATE each through the ORM took 3 s for 10,000)."""
        quote = connection.ops.quote_name
        sql = (
            f"UPDATE {quote(Cell._meta.db_table)} SET {quote('ydoc')} = %s, {quote('ydoc_generation')} = %s, {quote('ydoc_key')} = %s"
            f" WHERE {quote(Cell._meta.pk.column)} = %s AND {quote('notebook_id')} = %s"
        )
        pk, notebook = Cell._meta.pk, Cell._meta.get_field("notebook")
        params = [
            [bytes(state), generation, key, pk.get_db_prep_save(cell_id, connection), notebook.get_db_prep_save(notebook_id, connection)]
            for cell_id, (state, generation, key) in texts.items()
        ]
        with transaction.atomic(), connection.cursor() as cursor:
            self._fenced(notebook_id)
            cursor.executemany(sql, params)

    def output_url(self, notebook_id, digest):
        return reverse("notebooks:output", args=[notebook_id, digest])

    def stdout_url(self, notebook_id, cell_id):
        return reverse("notebooks:stdout", args=[notebook_id, cell_id])

    def outputs_url(self, notebook_id, cell_id):
        return reverse("notebooks:cell_outputs", args=[notebook_id, cell_id])

    @retried_while_database_down
    def load_connection(self, notebook_id):
        notebook = Notebook.objects.filter(pk=notebook_id).only("id", "db_connection").first()
        value = self._connection_string(notebook) if notebook is not None else ""
        return value, mask_connection_string(value)

    @retried_while_database_down
    def load_secrets(self, notebook_id):
        """The notebook's secrets decrypted, ((name, value), ...), and what clients may know of
        them, [{name, by, at}] (kernel/edits.py)."""
        return self._secrets(notebook_id)

    def _connection_string(self, notebook):
        try:
            return notebook.connection_string
        except vault.Unreadable:
            logger.error("notebook %s: its database connection cannot be decrypted with SECRETS_KEY; SQL cells run without it", notebook.pk)
            return ""

    def _secrets(self, notebook_id):
        """A secret SECRETS_KEY cannot open is left out of the environment (and said so in the
        log, by name); the list still names it, so its editors can set it again."""
        pairs, listing = [], []
        for secret in NotebookSecret.objects.filter(notebook_id=notebook_id).select_related("updated_by").order_by("name"):
            listing.append(secret.summary())
            try:
                pairs.append((secret.name, vault.decrypt(secret.value)))
            except vault.Unreadable:
                logger.error("notebook %s: secret %s cannot be decrypted with SECRETS_KEY; left out of its environment", notebook_id, secret.name)
        return tuple(pairs), listing

    @retried_while_database_down
    def persist(self, notebook_id, rows, journal=None):
        """Final states in one statement; rows of cells deleted meanwhile simply match nothing.

        On PostgreSQL the rows travel as one JSON document that `jsonb_to_recordset` turns back
        into a relation the UPDATE joins: 1,000 rows take one statement and about 10 ms, where an
        executemany of 1,000 UPDATEs (pipelined into one round trip, but still 1,000 statements)
        took 150 - 250 ms, the larger part of an edit-then-run of a 1,000-cell chain
        (docs/performance.md, "Cascades").  Elsewhere (SQLite) an executemany of a plain UPDATE.
        Not bulk_update: its CASE WHEN per row and field cost about 1 ms of Python per cell.
        """
        with transaction.atomic(), connection.cursor() as cursor:
            self._fenced(notebook_id)
            if rows and connection.vendor == "postgresql":
                cursor.execute(_persist_sql(), [json.dumps(rows, separators=(",", ":"))])
            elif rows:
                fields = [Cell._meta.get_field(name) for name in PERSISTED_FIELDS]
                quote = connection.ops.quote_name
                sql = f"UPDATE {quote(Cell._meta.db_table)} SET {', '.join(f'{quote(f.column)} = %s' for f in fields)} WHERE {quote(Cell._meta.pk.column)} = %s"
                cursor.executemany(sql, [[f.get_db_prep_save(row[f.name], connection) for f in fields] + [Cell._meta.pk.get_db_prep_save(row["id"], connection)] for row in rows])
            if journal is not None:  # the runs these results end, in the same transaction
                Notebook.objects.filter(pk=notebook_id).update(run_journal=journal)


@functools.cache
def _persist_sql():
    """DatabaseStore.persist's statement on PostgreSQL: table, columns and their types from the
    model's _meta (the JSON document's keys are the field names, PERSISTED_FIELDS and `id`)."""
    quote = connection.ops.quote_name
    fields = [Cell._meta.get_field(name) for name in PERSISTED_FIELDS]
    pk = Cell._meta.pk
    record = ", ".join(f"{quote(f.name)} {f.db_type(connection)}" for f in [pk, *fields])
    assignments = ", ".join(f"{quote(f.column)} = r.{quote(f.name)}" for f in fields)
    return (
        f"UPDATE {quote(Cell._meta.db_table)} AS c SET {assignments}"
        f" FROM jsonb_to_recordset(%s::jsonb) AS r({record}) WHERE c.{quote(pk.column)} = r.{quote(pk.name)}"
    )


class KernelService:
    """Every notebook session of this process; one per process."""

    def __init__(self, channel_layer=None):
        self.channel_layer = channel_layer or get_channel_layer(settings.EVENTS_CHANNEL_LAYER)  # publishes to sockets
        self.sessions = {}
        self.store = DatabaseStore()
        self.environments = Environments(package_settings())
        # Notebooks whose events were lost on their way (Redis down): every client gets a
        # fresh state once it is back, so none is left showing a cell `running`.
        self._unannounced = set()
        self._recovery = None
        self._redis_outage = Outage("kernel worker publish")
        self._housekeeping = None
        self.pool = ProcessPool(pool_limits())
        self.started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        self.fleet = None  # fleet.Fleet once this worker serves shards
        self._orphaned = {}  # shard -> why its notebooks' kernels are gone (taken from a dead worker)
        self._scheduler = None  # the loop of start_scheduler()
        # Runs with parameters (copy_runs.py): tasks beside the sessions, in processes of their own.
        self.run_store = RunStore(on_failed=schedules.notify_failure)
        self.copy_runs = CopyRuns(
            store=self.run_store,
            load=self.store.load,
            runner_factory=self._runner_factory,
            environment_for=self._run_environment,
            concurrency=settings.RUN_CONCURRENCY,
            worker_name=self.worker_name,
        )
        # The rows of runs on the shared kernel, which the sessions keep (shared_runs.py).
        self.shared_run_store = SharedRunStore(worker_name=self.worker_name, call=retried_while_database_down)

    def worker_name(self):
        """This worker's name, as a run it carries out records it (`claimed_by`)."""
        return self.fleet.name if self.fleet is not None else f"{socket.gethostname()}:{os.getpid()}"

    async def _collect_environments(self):
        """Every hour: environments no notebook's lock names, unused for ENVIRONMENTS_GC_HOURS, go."""
        while True:
            await asyncio.sleep(ENVIRONMENTS_GC_EVERY)
            try:
                keep = await database_sync_to_async(environments_in_use)(self.environments)
                removed, freed = await asyncio.to_thread(self.environments.collect_garbage, keep, grace_seconds=settings.ENVIRONMENTS_GC_HOURS * 3600)
                if removed:
                    logger.info("removed %d unused environment(s), %.1f MB", len(removed), freed / 1e6)
            except Exception:  # noqa: BLE001 - the next hour tries again
                logger.exception("could not collect unused environments")

    def _runner_factory(self, notebook_id=""):
        return Runner(
            time_limit=settings.KERNEL_TIME_LIMIT,
            output_cap=settings.KERNEL_OUTPUT_CAP,
            image_cap_mb=settings.KERNEL_IMAGE_CAP_MB,
            sql_row_cap=settings.KERNEL_SQL_ROW_CAP,
            notebook_id=notebook_id,
            sandbox=sandbox_config(),
            database_policy=database_policy(),
            nice=settings.KERNEL_NICE,
        )

    def start_scheduler(self):
        """Look for due schedules every SCHEDULE_TICK_SECONDS (schedules.tick: each due time fires
        once across every worker), and end the runs of kernel workers that died
        (run_store.end_orphaned_runs), until close()."""
        if self._scheduler is None and settings.SCHEDULE_TICK_SECONDS > 0:
            self._scheduler = asyncio.get_running_loop().create_task(self._schedule_loop(), name="schedules")

    async def _schedule_loop(self):
        tick = database_sync_to_async(schedules.tick)
        while True:
            try:
                made = await tick(datetime.datetime.now(datetime.timezone.utc))
                if made:
                    logger.info("started %d scheduled run(s)", len(made))
            except Exception:  # noqa: BLE001 - the next tick tries again (a due schedule stays due)
                logger.exception("could not start due schedules")
            try:
                await self.run_store.end_orphaned(alive=(self.worker_name(),))  # the embedded worker has no record
            except Exception:  # noqa: BLE001 - the next tick looks again
                logger.exception("could not end the runs of kernel workers that stopped")
            await asyncio.sleep(settings.SCHEDULE_TICK_SECONDS)

    def _run_environment(self, notebook_id):
        """The packages of a run with parameters: the notebook's lock's environment, resolved and
        built if need be as for its shared kernel, but never written back (the run changes nothing)."""

        async def environment_for(config):
            if not config.requirements:
                return None, config.lock
            if not settings.NOTEBOOK_PACKAGES:
                raise PackageError("this notebook lists packages, but notebook packages are turned off on this server (NOTEBOOK_PACKAGES=off)")
            lock = config.lock
            if not lock or self.environments.stale(lock):
                lock = await self.environments.resolve(list(config.requirements))
            site = self.environments.built(lock)
            if site is None and self.environments.key(lock):
                site = await self.environments.ensure(lock)
            return site, lock

        return environment_for

    def session(self, notebook_id):
        notebook_id = str(notebook_id)
        session = self.sessions.get(notebook_id)
        if session is None:
            session = NotebookSession(
                notebook_id,
                store=self.store,
                publish=lambda target, events, _id=notebook_id: self.publish(_id, target, events),
                runner_factory=lambda _id=notebook_id: self._runner_factory(_id),
                environments=self.environments,
                max_code_bytes=settings.MAX_CODE_BYTES,
                pool=self.pool,
                runs=self.shared_run_store,
            )
            session.on_fenced = self._fenced
            session.takeover.orphan_reason = lambda _id=notebook_id: self._orphan_reason(_id)
            self.sessions[notebook_id] = session
        return session

    async def publish(self, notebook_id, target, events):
        """Send `events` to the notebook's group (target None) or one socket, in one send.

        Each event is encoded once, here (or already by the session: `Encoded`, a cascade's
        statuses); the consumers relay the texts untouched, as
        separate frames or as one `batch` frame to a client that asked for batches
        (docs/protocol.md).
        """
        if self.fleet is not None and not self.fleet.may_act(notebook_id):
            # This worker may have lost the notebook (a pause, a partition, or PostgreSQL out of
            # reach): a reply to one socket waits for the next renewal (nothing else would answer
            # it); events for everyone are held back, and once a renewal says it still holds
            # the notebook its clients get a fresh state instead (lease_renewed). Waiting here
            # would hold the events' lock, and a result computed during an outage of PostgreSQL
            # would then not even be tried until it is back.
            if target is None or not await self.fleet.wait_held(notebook_id):
                self._unannounced.add(str(notebook_id))
                return
        event = {"type": "notebook.event", "texts": [e.text if type(e) is Encoded else protocol.dumps(e) for e in events]}
        try:
            if target is None:
                await self.channel_layer.group_send(group_name(notebook_id), event)
            else:
                await self.channel_layer.send(target, event)
        except REDIS_ERRORS as exc:
            self._redis_outage.failed(exc)
            self._unannounced.add(str(notebook_id))
            if self._recovery is None or self._recovery.done():
                self._recovery = asyncio.get_running_loop().create_task(self._announce_when_back())

    async def _announce_when_back(self):
        """Wait for Redis, then send every notebook that lost events a fresh state."""
        for delay in backoff_delays():
            await asyncio.sleep(delay)
            try:
                await self.channel_layer.group_send(PROBE_GROUP, {"type": "kernel.probe"})
                break
            except REDIS_ERRORS:
                continue
        self._redis_outage.recovered()
        pending, self._unannounced = self._unannounced, set()
        for notebook_id in pending:
            session = self.sessions.get(notebook_id)
            if session is not None:
                await self._guard(session.announce_state(), notebook_id)

    # --- the fleet (fleet.py) ----------------------------------------------------------------
    def join(self, fleet):
        """`fleet` decides which notebooks this worker serves; every write is fenced by it."""
        self.fleet = fleet
        self.store.fence = fleet.fence

    def _fenced(self, notebook_id):
        """A session found another worker owns its notebook: forget it (it dropped itself)."""
        self.sessions.pop(str(notebook_id), None)

    async def drop_shard(self, shard, *, save, reason=None):
        """The sessions of a shard this worker no longer serves: closed with their state saved
        (`save`: a hand-over, `reason` said to their pages) or abandoned (lost to another)."""
        gone = [nid for nid in self.sessions if self.fleet.shard(nid) == shard]
        for notebook_id in gone:
            session = self.sessions.pop(notebook_id)
            self._unannounced.discard(notebook_id)
            if save:
                await self._guard(session.close(stop_reason=reason), notebook_id)
            else:
                await self._guard(session.abandon(), notebook_id)

    def shards_orphaned(self, shards, reason):
        """Shards taken from a worker that died (fleet.py): a notebook of theirs loaded here for
        the first time whose results lived in that worker's processes says `reason`."""
        for shard in shards:
            self._orphaned[shard] = reason

    def _orphan_reason(self, notebook_id):
        return self._orphaned.get(self.fleet.shard(notebook_id)) if self.fleet is not None else None

    async def resume_shards(self, shards):
        """Shards just taken: their notebooks with runs the last owner never finished are loaded
        now and run them (nothing else would wake them: no message may come)."""
        try:
            pending = await database_sync_to_async(notebooks_with_pending_runs)()
        except DATABASE_DOWN:
            return  # their next message loads them and runs what is pending
        for notebook_id in pending:
            if self.fleet.shard(notebook_id) in shards:
                self.session(notebook_id).resume()

    def lease_renewed(self):
        """The leases were renewed: notebooks whose events were held back while this worker was
        unsure of them get a fresh state (those it lost are dropped by then)."""
        held = [nid for nid in self._unannounced if nid in self.sessions and self.fleet.may_act(nid)]
        if held and (self._recovery is None or self._recovery.done()):
            for notebook_id in held:
                self._unannounced.discard(notebook_id)
                asyncio.get_running_loop().create_task(self._guard(self.sessions[notebook_id].announce_state(), notebook_id))

    def submit(self, message):
        """Route one kernel message; never blocks and never raises."""
        if isinstance(message, dict) and message.get("type") == "kernel.ping":
            asyncio.get_running_loop().create_task(self._pong(message.get("replyChannel")))
            return
        try:
            notebook_id = message["notebook"]
            kind = message["type"]
        except (KeyError, TypeError):
            logger.warning("malformed kernel message ignored: %r", message)
            return
        if kind in RUN_MESSAGES:  # a run with parameters: never the notebook's session
            self.copy_runs.submit(message)
            session = self.sessions.get(str(notebook_id)) if kind == CANCEL_RUN else None
            if session is not None:  # or a run on the shared kernel, whose cascade stops (shared_runs.py)
                asyncio.get_running_loop().create_task(self._guard(session.shared_runs.cancel(str(message.get("run"))), notebook_id))
            return
        if kind == "kernel.forget_notebook":  # deleted: its namespace and process go too
            self.copy_runs.forget_notebook(notebook_id)
            session = self.sessions.pop(str(notebook_id), None)
            if session is not None:
                asyncio.get_running_loop().create_task(self._guard(session.close(), notebook_id))
            return
        loop = asyncio.get_running_loop()
        if kind == "kernel.stop_process":  # an operator's (manage.py kernels --stop)
            reason = f"Kernel stopped by an operator{': ' + message['reason'] if message.get('reason') else ''}; the next run starts it again"
            loop.create_task(self._guard(self.pool.stop(notebook_id, OPERATOR, reason), notebook_id))
            return
        session = self.session(notebook_id)
        if self._housekeeping is None:
            self._housekeeping = loop.create_task(self._collect_environments(), name="environments-gc")
            self.pool.run()
        if kind == "kernel.set_input":
            session.input_set(message)  # coalesced: a dragged slider runs its readers for its last value
        elif kind == "kernel.text_update" and session.loaded:
            session.text_update(message)  # at once: typing never waits behind a running cell
        elif kind == "kernel.sync":
            loop.create_task(self._guard(session.sync(message["replyChannel"], message.get("requestId"), message.get("revision")), notebook_id))
        elif kind in ("kernel.complete", "kernel.inspect"):  # to the sender alone, never behind a cell
            loop.create_task(self._guard(session.assist(message), notebook_id))
        elif kind == "kernel.interrupt":
            loop.create_task(self._guard(session.interrupt(), notebook_id))
        else:
            session.submit(message)

    def describe(self):
        """This worker and its execution processes, for `/readyz` and `manage.py kernels`."""
        processes = self.pool.describe()
        limits = self.pool.limits
        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": self.started,
            "fleet": self.fleet.describe() if self.fleet is not None else None,
            "processes": processes,
            "live": sum(1 for p in processes if not p.get("pending")),
            "pending": sum(1 for p in processes if p.get("pending")),
            "memory_mb": round(sum(p.get("rss_mb", 0) for p in processes), 1),
            "limits": {
                "max_processes": limits.max_processes,
                "user_max": limits.user_max,
                "idle_minutes": round(limits.idle_seconds / 60, 2),
                "memory_high_mb": limits.memory_high_mb,
                "memory_low_mb": limits.memory_low_mb,
            },
        }

    async def _pong(self, reply_channel):
        """Answer a readiness check (`/readyz`, `manage.py kernels`) on the core layer, where it
        waits, with what this worker runs."""
        if not isinstance(reply_channel, str):
            return
        try:
            await get_channel_layer().send(reply_channel, {"type": "kernel.pong", "worker": self.describe()})
        except REDIS_ERRORS as exc:
            self._redis_outage.failed(exc)

    async def _guard(self, coroutine, notebook_id):
        try:
            await coroutine
        except Exception:
            logger.exception("kernel task for notebook %s failed", notebook_id)

    async def close(self):
        if self._scheduler is not None:
            self._scheduler.cancel()
        await self.copy_runs.close()
        await self.pool.close()
        if self._housekeeping is not None:
            self._housekeeping.cancel()
        for session in list(self.sessions.values()):
            await session.close()
        self.sessions.clear()


_service = None


def get_service():
    global _service
    if _service is None:
        _service = KernelService()
        report_sandbox()
    return _service


def report_sandbox():
    """Say once, at start, whether cells can run and how isolated they are (docs/security.md)."""
    config = sandbox_config()
    if config is None:
        logger.warning("KERNEL_SANDBOX=off: cells run unsandboxed, with this server's own privileges")
        return
    reason = probe(config.bwrap)
    if reason:
        logger.error("the sandbox cannot start (%s): no cell will run until it can; or set KERNEL_SANDBOX=off (docs/security.md)", reason)
    else:
        mode = "a uid of its own per notebook" if running_as_root() else "the server's uid inside a user namespace"
        logger.info("cells run sandboxed (bubblewrap, %s, network %s)", mode, config.network)


def fleet_for(service, layer, *, embedded=False):
    """This process's part of the fleet of settings.KERNEL_FLEET (fleet.py)."""
    return Fleet(service, layer, fleet=settings.KERNEL_FLEET, shards=settings.KERNEL_VSHARDS, lease_seconds=settings.KERNEL_LEASE_SECONDS, embedded=embedded)


async def run_worker(stop, ready=None):
    """`manage.py runworker kernel`: join the fleet, serve this worker's share of its shards
    until `stop` (an asyncio.Event: SIGTERM or SIGINT) is set, then hand every shard over.
    `ready()` once its first share is taken."""
    service = get_service()
    fleet = fleet_for(service, get_channel_layer())
    service.join(fleet)
    await fleet.start()
    service.start_scheduler()
    if ready is not None:
        ready()
    logger.info("kernel worker %s serves fleet %s (%d shards, leases of %g s)", fleet.name, fleet.fleet, fleet.shards, fleet.lease_seconds)
    try:
        await stop.wait()
    finally:
        logger.info("kernel worker %s stopping: handing its shards over", fleet.name)
        await fleet.drain()
        await service.close()


_embedded_task = None


def ensure_embedded_worker():
    """Embedded default: the kernel worker on the server's own event loop, holding every shard
    (no leases: it is the only one).  Daphne has no ASGI lifespan, so the first WebSocket
    connection starts it; the guard makes that happen once per process."""
    global _embedded_task
    if _embedded_task is not None and not _embedded_task.done():
        return
    service = get_service()
    fleet = fleet_for(service, get_channel_layer(), embedded=True)
    service.join(fleet)
    _embedded_task = asyncio.get_running_loop().create_task(fleet.start(), name="embedded-kernel-worker")
    service.start_scheduler()
    _embedded_task.add_done_callback(_log_embedded_exit)
    logger.info("embedded kernel worker started (%d shards)", fleet.shards)


def _log_embedded_exit(task):
    if not task.cancelled() and task.exception() is not None:
        logger.error("embedded kernel worker stopped", exc_info=task.exception())
