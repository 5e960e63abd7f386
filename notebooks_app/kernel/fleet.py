"""A fleet of kernel workers: which worker serves which notebooks, and failover between them
(docs/operations.md, "A fleet of kernel workers").

Notebooks are spread over a fixed number of virtual shards (settings.KERNEL_VSHARDS, a hash of
their id: addresses.shard_of); each shard has a channel of its own that waits in Redis for
whoever holds the shard.  Who holds it is a lease in PostgreSQL (models.KernelLease: owner, epoch,
expiry) that its worker renews every third of KERNEL_LEASE_SECONDS:

* **Sharing**: every live worker (a KernelWorkerRecord renewed within the lease time) takes free
  or expired shards up to its fair share, ceil(shards / live workers); one holding more than its
  share hands the extra over.  A worker that joins takes its share without anyone restarting.
* **Failover**: a worker that stops renewing (killed, partitioned, paused) loses its shards when
  its leases expire; the others take them (epoch + 1) and load their notebooks from the database.
  A run the dead worker had queued or was running is run again by the new owner (session.py).
* **Fencing**: every write a worker makes for a notebook checks, in the same transaction, that it
  still holds the notebook's shard at the epoch it took it with (LeaseTable.check), so a paused
  worker that wakes up cannot write over its successor; it also stops reading, running and
  publishing for a shard once its lease may have expired by its own clock, until a renewal says
  whether it still holds it.
* **Handing over** (SIGTERM, or a share to give): the worker stops reading the shard's channel,
  closes its sessions (typing saved, state persisted, processes stopped) and frees the lease, so
  the next owner takes it at once; messages sent meanwhile wait in the channel.

The embedded default (no Redis) has one worker in the server process, which holds every shard
without leases.  This module and worker.py are the only ones under kernel/ that import Django.
"""
import asyncio
import concurrent.futures
import contextlib
import datetime
import functools
import logging
import math
import os
import secrets
import socket
import time

from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import DateTimeField, ExpressionWrapper, F, Q
from django.db.models.functions import Now

from ..models import KernelLease, KernelWorkerRecord
from .addresses import shard_channel, shard_of
from .leases import Fenced

logger = logging.getLogger(__name__)

DATABASE_DOWN = (OperationalError, InterfaceError)
RECORD_KEPT = datetime.timedelta(hours=1)  # a worker's record after its last renewal, for operators
READ_WAIT = 1.0  # seconds a shard's reader waits for a message before it looks whether to stop


def worker_name():
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class LeaseTable:
    """The leases and worker records of one fleet, in the database (synchronous: the ORM thread)."""

    def __init__(self, fleet, shards, lease_seconds):
        self.fleet, self.shards, self.lease_seconds = fleet, shards, lease_seconds
        self.lease = datetime.timedelta(seconds=lease_seconds)

    def _in(self, delta):
        return ExpressionWrapper(Now() + delta, output_field=DateTimeField())

    def setup(self):
        """Every shard has its row (made once per fleet; ignored when there)."""
        KernelLease.objects.bulk_create([KernelLease(fleet=self.fleet, shard=k) for k in range(self.shards)], ignore_conflicts=True)

    def renew(self, name, held, *, draining, state, started_at, host, pid):
        """This worker's record, and its leases extended: {shard: epoch} of those it still holds
        (one taken over meanwhile is missing), and how many workers of the fleet are live."""
        with transaction.atomic():
            KernelWorkerRecord.objects.update_or_create(
                name=name,
                defaults={"fleet": self.fleet, "host": host, "pid": pid, "started_at": started_at, "heartbeat_at": Now(), "draining": draining, "shards": sorted(held), "state": state},
            )
            mine = KernelLease.objects.filter(fleet=self.fleet, owner=name)
            mine.update(expires_at=self._in(self.lease))
            still = dict(mine.values_list("shard", "epoch"))
            live = KernelWorkerRecord.objects.filter(fleet=self.fleet, draining=False, heartbeat_at__gt=self._in(-self.lease)).count()
        return still, live

    def acquire(self, name, count):
        """Up to `count` free or expired shards for `name`: ({shard: new epoch}, {shard: the
        owner whose lease expired}: a worker that stopped renewing, not one that handed over)."""
        if count <= 0:
            return {}, {}
        self.setup()  # rows deleted by hand are made again (a no-op when all are there)
        with transaction.atomic():
            free = list(
                KernelLease.objects.select_for_update(skip_locked=True)
                .filter(fleet=self.fleet)
                .filter(Q(owner="") | Q(expires_at__isnull=True) | Q(expires_at__lt=Now()))
                .order_by("shard")
                .values_list("pk", "shard", "owner")[:count]
            )
            if not free:
                return {}, {}
            ids = [pk for pk, _, _ in free]
            KernelLease.objects.filter(pk__in=ids).update(owner=name, epoch=F("epoch") + 1, expires_at=self._in(self.lease))
            return dict(KernelLease.objects.filter(pk__in=ids).values_list("shard", "epoch")), {shard: owner for _, shard, owner in free if owner and owner != name}

    def last_words(self, names):
        """What workers said of themselves last ({name: {host, pid, processes}}): a dead one's
        execution processes, whose notebooks lost their namespaces with it."""
        rows = KernelWorkerRecord.objects.filter(name__in=list(names)).values("name", "host", "pid", "state")
        return {row["name"]: {"host": row["host"], "pid": row["pid"], "processes": (row["state"] or {}).get("processes") or []} for row in rows}

    def release(self, name, shard, epoch):
        """Free a shard this worker handed over: the next owner need not wait for it to expire."""
        KernelLease.objects.filter(fleet=self.fleet, shard=shard, owner=name, epoch=epoch).update(owner="", expires_at=Now())

    def forget(self, name):
        KernelWorkerRecord.objects.filter(name=name).delete()
        KernelWorkerRecord.objects.filter(fleet=self.fleet, heartbeat_at__lt=self._in(-RECORD_KEPT)).delete()

    @staticmethod
    def check(fence):
        """Inside a write's transaction: raise Fenced unless (fleet, shard, owner, epoch) is still
        the shard's lease.  Its expiry does not matter here: another worker taking the shard
        changes the owner and the epoch, and until one does, a write of this worker's is still
        the only one (a result computed during a PostgreSQL outage is written when it is back,
        before the next renewal).  On PostgreSQL the row stays share-locked until the write
        commits, so no one takes the shard in between."""
        fleet, shard, owner, epoch = fence
        table, quote = KernelLease._meta.db_table, connection.ops.quote_name
        sql = (
            f"SELECT 1 FROM {quote(table)} WHERE {quote('fleet')} = %s AND {quote('shard')} = %s"
            f" AND {quote('owner')} = %s AND {quote('epoch')} = %s"
        )
        if connection.vendor == "postgresql":
            sql += " FOR SHARE"
        params = [fleet, shard, owner, epoch]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            if cursor.fetchone() is None:
                raise Fenced(f"shard {shard} of fleet {fleet} is no longer held by {owner} at epoch {epoch}")


def fleet_status(fleet, shards, lease_seconds):
    """What /readyz and `manage.py kernels` read: the live workers of the fleet (their own
    description), and the shards no live worker holds."""
    lease = datetime.timedelta(seconds=lease_seconds)
    fresh = ExpressionWrapper(Now() - lease, output_field=DateTimeField())
    held = set(KernelLease.objects.filter(fleet=fleet, shard__lt=shards).exclude(owner="").filter(expires_at__gt=Now()).values_list("shard", flat=True))
    workers = list(KernelWorkerRecord.objects.filter(fleet=fleet).order_by("name").values("name", "host", "pid", "started_at", "heartbeat_at", "draining", "shards", "state"))
    live = set(KernelWorkerRecord.objects.filter(fleet=fleet, heartbeat_at__gt=fresh).values_list("name", flat=True))
    for worker in workers:
        worker["live"] = worker["name"] in live
    return {"workers": workers, "uncovered": sorted(set(range(shards)) - held)}


class Fleet:
    """This worker's part of the fleet: its leases, a reader per shard it holds, hand-overs."""

    def __init__(self, service, layer, *, fleet, shards, lease_seconds, embedded=False, name=None):
        self.service = service
        self.layer = layer
        self.fleet, self.shards, self.lease_seconds = fleet, shards, lease_seconds
        self.embedded = embedded
        self.name = name or worker_name()
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.started_at = datetime.datetime.now(datetime.timezone.utc)
        self.table = None if embedded else LeaseTable(fleet, shards, lease_seconds)
        self.held = {}  # shard -> epoch
        self.valid_until = {}  # shard -> time.monotonic() until which it surely still holds it
        self._readers = {}  # shard -> task reading its channel
        self._reading = {None}  # shards whose channel is read (None: the fleet's own channel)
        self._renewed = asyncio.Event()  # set after each renewal
        self.draining = False
        self._handing = None  # a hand-over of shards beyond this worker's share, under way
        self.last_renewal = None
        self._task = None
        self._control = None
        self._thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{fleet}-leases")

    # --- what the worker asks ---------------------------------------------------------------------
    def shard(self, notebook_id):
        return shard_of(notebook_id, self.shards)

    def fence(self, notebook_id):
        """(fleet, shard, owner, epoch) a write for `notebook_id` must still hold, or None."""
        if self.embedded:
            return None
        shard = self.shard(notebook_id)
        epoch = self.held.get(shard)
        if epoch is None:
            raise Fenced(f"notebook {notebook_id}'s shard {shard} is not held by {self.name}")
        return (self.fleet, shard, self.name, epoch)

    def may_act(self, notebook_id):
        """Whether this worker surely still holds the notebook's shard, by its own clock."""
        if self.embedded:
            return True
        shard = self.shard(notebook_id)
        return shard in self.held and time.monotonic() < self.valid_until.get(shard, 0)

    async def wait_held(self, notebook_id):
        """Whether this worker still holds the notebook's shard, waiting for the next renewal if
        its own clock says the lease may have expired (False once it knows it lost it)."""
        return self.embedded or await self._still_ours(self.shard(notebook_id))

    def describe(self):
        return {"name": self.name, "fleet": self.fleet, "shards": sorted(self.held), "renewed": self.last_renewal}

    # --- running ----------------------------------------------------------------------------------
    async def start(self):
        """Take this worker's share (the embedded one: every shard) and keep it."""
        self._control = asyncio.get_running_loop().create_task(self._read(None), name=f"{self.fleet}-control")
        if self.embedded:
            for shard in range(self.shards):
                self._gained(shard, 0)
            await self.service.resume_shards(set(self.held))  # runs a stopped server left unfinished
            return
        await self._db(self.table.setup)
        await self.tick()
        self._task = asyncio.get_running_loop().create_task(self._ticks(), name=f"{self.fleet}-leases")

    async def _ticks(self):
        """A renewal every third of the lease time, counted from the start of the last (a slow
        one does not push the next back)."""
        period = self.lease_seconds / 3
        next_at = time.monotonic() + period
        while True:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at = max(next_at + period, time.monotonic())
            try:
                await self.tick()
            except Exception:  # noqa: BLE001 - the next tick tries again
                logger.exception("lease renewal of %s failed", self.name)

    async def _db(self, func, *args, **kwargs):
        """`func` on the fleet's own thread and database connection: a renewal must not wait
        behind the sessions' work on the ORM thread (a 10,000-cell notebook loads for seconds),
        or a busy worker would lose its leases."""
        def call():
            try:
                return func(*args, **kwargs)
            except DATABASE_DOWN:
                connection.close()  # this thread's connection: the next call connects afresh
                raise

        return await asyncio.get_running_loop().run_in_executor(self._thread, functools.partial(call))

    async def tick(self):
        """Renew, learn what was lost, take or give shards toward this worker's fair share."""
        began = time.monotonic()
        try:
            still, live = await self._db(
                self.table.renew, self.name, self.held, draining=self.draining, state=self.service.describe(), started_at=self.started_at, host=self.host, pid=self.pid
            )
        except DATABASE_DOWN as exc:
            logger.warning("kernel worker %s cannot renew its leases (%s): its shards wait until it can", self.name, exc)
            return
        self.last_renewal = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        for shard, epoch in list(self.held.items()):
            if still.get(shard) != epoch:
                await self._lost(shard)
        # Surely still ours until the lease time after the renewal was asked, less a margin for
        # the database's and this host's clocks running apart.
        until = began + self.lease_seconds * 0.8
        for shard in self.held:
            self.valid_until[shard] = until
        self._renewed.set()
        self._renewed = asyncio.Event()
        self.service.lease_renewed()
        target = 0 if self.draining else math.ceil(self.shards / max(1, live))
        if len(self.held) < target:
            taken, expired = await self._db(self.table.acquire, self.name, target - len(self.held))
            for shard, epoch in taken.items():
                self.valid_until[shard] = began + self.lease_seconds * 0.8
                self._gained(shard, epoch)
            if taken:
                logger.info("kernel worker %s took shard(s) %s of %s (%d live workers)", self.name, ",".join(map(str, sorted(taken))), self.fleet, live)
            if expired:
                await self._failed_over(expired)
            if taken:
                await self.service.resume_shards(set(taken))
        elif len(self.held) > target and not self.draining:
            extra = sorted(self.held)[target:]
            if self._handing is None or self._handing.done():
                logger.info("kernel worker %s hands shard(s) %s over (%d live workers)", self.name, ",".join(map(str, extra)), live)
                # Beside the renewals: closing sessions may take seconds (a running cell's grace),
                # and the leases this worker keeps must not expire meanwhile.
                self._handing = asyncio.get_running_loop().create_task(self._hand_over(*extra), name=f"{self.fleet}-hand-over")

    async def _failed_over(self, expired):
        """Shards taken from workers that stopped renewing: their notebooks' execution processes
        died with them, which their pages and history hear when each is next loaded here."""
        try:
            words = await self._db(self.table.last_words, set(expired.values()))
        except DATABASE_DOWN:
            words = {}
        for owner in set(expired.values()):
            shards = {shard for shard, previous in expired.items() if previous == owner}
            said = words.get(owner) or {"processes": []}
            logger.warning("kernel worker %s took shard(s) %s over from %s, which stopped renewing its leases", self.name, ",".join(map(str, sorted(shards))), owner)
            # Said to the notebook's members: no host name nor process id (the log has them).
            reason = "Kernel stopped: the kernel worker that ran it stopped answering and another took the notebook over; the next run starts it and reruns what that cell needs"
            self.service.shards_orphaned(shards, reason)
            for process in said["processes"]:
                if not process.get("pending") and self.shard(process["notebook"]) in shards:
                    self.service.session(process["notebook"]).resume()  # heard now, not at its next message

    def _gained(self, shard, epoch):
        self.held[shard] = epoch
        self._reading.add(shard)
        if self.embedded:
            self.valid_until[shard] = math.inf
        self._readers[shard] = asyncio.get_running_loop().create_task(self._read(shard), name=f"{self.fleet}.{shard}")

    async def _receive(self, channel):
        """The channel's next message, or None within READ_WAIT seconds.  Never a cancelled
        receive: Redis may hand the message to a BZPOPMIN nobody waits for any more (layers.py)."""
        receive_within = getattr(self.layer, "receive_within", None)
        if receive_within is not None:
            return await receive_within(channel, READ_WAIT)
        try:  # the in-memory layer (the embedded default): cancelling its receive loses nothing
            return await asyncio.wait_for(self.layer.receive(channel), READ_WAIT)
        except asyncio.TimeoutError:
            return None

    async def _read(self, shard):
        """Hand every message of the shard's channel (None: the fleet's own, pings) to the worker,
        while this worker reads it (`_reading`)."""
        channel = self.fleet if shard is None else shard_channel(shard, self.fleet)
        while shard in self._reading:
            message = await self._receive(channel)
            if message is None:
                continue
            if shard is not None and not self.embedded and not await self._still_ours(shard):
                # Lost while it waited here (a paused worker): back in the channel for the owner.
                with contextlib.suppress(Exception):
                    await self.layer.send(channel, message)
                return
            self.service.submit(message)

    async def _still_ours(self, shard):
        """Whether the shard is ours by our own clock; if that ran out, wait for the next renewal."""
        while shard in self.held:
            if time.monotonic() < self.valid_until.get(shard, 0):
                return True
            try:
                await asyncio.wait_for(self._renewed.wait(), self.lease_seconds)
            except asyncio.TimeoutError:
                continue
        return False

    async def _stop_reading(self, *shards):
        """The shards' readers end after their current wait (at most READ_WAIT, all at once): a
        message one gets meanwhile is still handled here, while the lease is still this worker's."""
        tasks = []
        for shard in shards:
            self._reading.discard(shard)
            task = self._readers.pop(shard, None) if shard is not None else self._control
            if task is not None:
                tasks.append(task)
        if tasks:
            await asyncio.wait(tasks)

    async def _lost(self, shard):
        """Another worker holds the shard now: its sessions go without a write or an event."""
        logger.warning("kernel worker %s lost shard %s of %s to another worker: dropping its notebooks unsaved", self.name, shard, self.fleet)
        self.held.pop(shard, None)
        self.valid_until.pop(shard, None)
        self._renewed.set()  # a reader waiting to know whether the shard is still ours: it is not
        self._renewed = asyncio.Event()
        await self._stop_reading(shard)
        await self.service.drop_shard(shard, save=False)

    async def _hand_over(self, *shards):
        """Give shards to the next owner: stop reading them, save and close their sessions, free
        their leases (the next owner need not wait for them to expire)."""
        await self._stop_reading(*shards)
        reason = "Kernel stopped: its notebook moved to another kernel worker; the next run starts it there"
        await asyncio.gather(*(self.service.drop_shard(shard, save=True, reason=reason) for shard in shards))
        for shard in shards:
            epoch = self.held.pop(shard, None)
            self.valid_until.pop(shard, None)
            if epoch is not None and self.table is not None:
                with contextlib.suppress(*DATABASE_DOWN):
                    await self._db(self.table.release, self.name, shard, epoch)

    async def drain(self):
        """SIGTERM: hand every shard over and leave the fleet (renewing what it still holds
        meanwhile, and taking nothing)."""
        self.draining = True
        if self._handing is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._handing
        await self._stop_reading(None)
        await self._hand_over(*sorted(self.held))
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.table is not None:
            with contextlib.suppress(*DATABASE_DOWN):
                await self._db(self.table.forget, self.name)
        logger.info("kernel worker %s drained: every shard handed over", self.name)

    async def stop(self):
        """Stop reading and renewing (tests, the embedded server's end); leases simply expire."""
        self._reading.clear()
        if self._task is not None:
            self._task.cancel()
        tasks = [task for task in [self._control, *self._readers.values()] if task is not None]
        self._readers.clear()
        if tasks:
            await asyncio.wait(tasks)
