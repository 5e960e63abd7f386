"""The execution process of one notebook (`ExecutionHost`): made in one place from the worker's
runner factory (global settings) and the notebook's own `RunnerConfig` (per-notebook settings,
loaded with its snapshot), started on demand, stopped or restarted with a reason clients hear.

It owns the `Runner` and nothing else: it must not change cells nor publish; what a lost
namespace means for the cells is the `on_gone(reason)` callback's (statuses.namespace_gone), and
what clients and the history hear of its state is `on_status(status)`'s.  The worker's
`ProcessPool` (lifecycle.py) decides whether it may start now, and stops it when idle or over a
cap, through `evict` (the session's queue).
"""
import asyncio
import dataclasses
import datetime
import logging
import time
from dataclasses import dataclass

from ..constants import CELL_MARKDOWN, CELL_SQL
from .runner import RunnerDied

logger = logging.getLogger(__name__)

EVICT = "kernel.evict"  # the lifecycle's stop, as a job of the session's queue (no activity)


@dataclass(frozen=True)
class RunnerConfig:
    """A notebook's settings of its execution process. A field a running process can take as it
    is belongs in LIVE_FIELDS (and in `apply`); any other change restarts the process."""

    db_connection: str = dataclasses.field(default="", repr=False)  # held outside the sandbox (kernel/database.py)
    db_display: str = dataclasses.field(default="", compare=False)  # the connection, masked, for clients
    requirements: tuple = ()  # the notebook's own packages (docs/packages.md)
    lock: str = ""  # what they resolved to ("" until resolved): the environment it starts on
    # The notebook's secrets, ((name, value), ...) sorted by name: the process's environment, set
    # at its start (a change restarts it), and what outputs are redacted of (outputs.Redactor).
    # Never in repr: a logged config must not carry them.
    secrets: tuple = dataclasses.field(default=(), repr=False)
    secret_list: tuple = dataclasses.field(default=(), compare=False)  # ({name, by, at}, ...): for clients
    files_dir: str = dataclasses.field(default="", compare=False)  # the notebook's files, mirrored (file_store.py)
    egress_allowlist: tuple = ()  # where cells may connect with outbound network (egress.py)

    LIVE_FIELDS = frozenset({"db_connection"})

    @classmethod
    def from_snapshot(cls, snapshot):
        return cls(
            db_connection=snapshot.get("db_connection") or "",
            db_display=snapshot.get("db_display") or "",
            requirements=tuple(snapshot.get("requirements") or ()),
            lock=snapshot.get("requirements_lock") or "",
            secrets=tuple(tuple(pair) for pair in snapshot.get("secrets") or ()),
            secret_list=tuple(snapshot.get("secret_list") or ()),
            files_dir=snapshot.get("files_dir") or "",
            egress_allowlist=tuple(snapshot.get("egress_allowlist") or ()),
        )

    def changed_fields(self, other):
        return {f.name for f in dataclasses.fields(self) if f.compare and getattr(self, f.name) != getattr(other, f.name)}

    def apply(self, runner):
        """Give `runner` these settings (the one place they reach it)."""
        runner.set_connection(self.db_connection)
        runner.secrets = dict(self.secrets)  # taken at the process's next start (Runner.start)


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class ExecutionHost:
    def __init__(self, notebook_id, *, runner_factory, on_gone, environment_for=None, save_file=None, pool=None, on_status=None, in_order=None, interrupt_cells=None):
        self.notebook_id = notebook_id
        self.pool = pool  # lifecycle.ProcessPool of the worker, or None: no caps nor idle stop
        # (status) -> None: {"state": "pending" | "running" | "stopped", ...} for clients and history
        self._on_status = on_status or (lambda status: None)
        # (name, job) -> bool: queue `job` in order with the notebook's messages (False: closed)
        self._in_order = in_order
        self._interrupt_cells = interrupt_cells  # async (): stop the running cascade
        self.user = ""  # who started the process (a person's cap counts it)
        self.busy = False  # the notebook is handling a message: never stopped as idle
        self.last_active = time.monotonic()
        self.status = {"state": "none"}
        self._starting = False
        self._factory = runner_factory  # () -> Runner, from global settings
        self._on_gone = on_gone  # (reason) -> None: the namespace is gone, say so
        # async (config) -> (site-packages directory or None, lock): the notebook's own packages
        # (package_builds.PackageBuilds.environment_for); None: the server's packages only.
        self._environment_for = environment_for
        self._save_file = save_file  # async (path, bytes) -> reply: a cell's files.save (file_reads.py)
        self.config = RunnerConfig()
        self.runner = None
        self.closed = False

    @property
    def alive(self):
        return self.runner is not None and self.runner.alive

    @property
    def pid(self):
        return self.runner.pid if self.alive else None

    @property
    def nice(self):
        return getattr(self.runner, "nice", 0) if self.runner is not None else 0

    def touch(self, *, busy=None, clock=True):
        """A run, an edit or an input change: the idle clock starts again (and when the message
        is handled, `busy=False`, once more: a long cell's end restarts it)."""
        if clock:
            self.last_active = time.monotonic()
        if busy is not None:
            self.busy = busy
            if not busy and self.pool is not None:
                self.pool.became_idle(self)

    def _announce(self, status):
        self.status = status
        self._on_status(status)

    def lost(self, reason):
        """The process died with another worker (a failover): nothing ran here yet."""
        logger.warning("notebook %s: %s", self.notebook_id, reason)
        self._announce({"state": "stopped", "cause": "failover", "reason": reason, "at": _now()})

    def pending(self, info):
        """The pool's word while this start waits for a place ({position, reason}), or None."""
        if info is not None:
            self._announce({"state": "pending", **info})

    def made(self):
        """The runner, made if need be but not started (its database answers SQL completion)."""
        if self.runner is None:
            self.runner = self._factory()
            self.runner.save_file = self._save_file
            self.config.apply(self.runner)
        return self.runner

    async def start(self):
        """The execution process, started if it is not running, on the notebook's packages
        (RunnerDied, SandboxUnavailable, environments.PackageError when it cannot start)."""
        if self.closed:
            raise RunnerDied("the notebook's session is closed")
        runner = self.made()
        if runner.alive:
            return runner
        self._starting = True
        try:
            if self.pool is not None:
                await self.pool.admit(self)
            site = None
            if self._environment_for is not None:
                site, lock = await self._environment_for(self.config)
                if lock != self.config.lock:
                    self.config = dataclasses.replace(self.config, lock=lock)
            runner = self.made()  # the same, unless a stop came while this waited
            runner.environment = str(site) if site else None
            runner.files = self.config.files_dir or None
            runner.egress_allowlist = self.config.egress_allowlist
            if self.pool is not None:
                async with self.pool.starting():
                    await runner.start()
            else:
                await runner.start()
        except BaseException:
            if self.pool is not None and not self.alive:
                self.pool.released(self)
            raise
        finally:
            self._starting = False
        self.touch()
        self._announce({"state": "running", "since": _now(), "user": self.user})
        return runner

    @property
    def starting(self):
        return self._starting

    async def evict(self, cause, reason, *, even_busy=False):
        """Stop the process in order with the notebook's messages (the pool's idle stop, a cap,
        the memory watermark, an operator): when its turn comes, unless something ran, was
        edited or typed since it was asked (`even_busy`: an operator's or a drain's stop, which
        interrupts a running cell first).  Whether it stopped."""
        if self._in_order is None:
            return await self.stop(reason, cause=cause)
        if self.closed:
            return False
        seen = self.last_active
        if even_busy and self._interrupt_cells is not None:
            await self._interrupt_cells()
        done = asyncio.get_running_loop().create_future()

        async def stop():
            if not even_busy and self.last_active != seen:
                done.set_result(False)
                return
            done.set_result(await self.stop(reason, cause=cause))

        if not self._in_order(EVICT, stop):
            return False
        try:
            return await done
        except asyncio.CancelledError:
            return False

    async def kill(self, cause, reason):
        """Over its own memory limit: killed now, even mid-cell (the running cell fails with
        `reason`); an idle one is stopped in order like any other."""
        if not self.busy:
            return await self.evict(cause, reason)
        if self.runner is not None and self.runner.alive:
            logger.warning("execution process of notebook %s killed: %s", self.notebook_id, reason)
            await self.runner.kill(reason)
            self._announce({"state": "stopped", "cause": cause, "reason": reason, "at": _now()})
        return True

    async def stop(self, reason, *, cause=None):
        """Drop the execution process and its namespace; clients hear `reason` and every result
        that lived in it turns stale.  False if none was running.  `cause`: why, for the
        lifecycle's stops (lifecycle.IDLE, EVICTED, ...): the page and the history say it."""
        runner, self.runner = self.runner, None
        if runner is None:
            return False
        was_alive = runner.alive
        await runner.close()
        if self.pool is not None:
            self.pool.released(self)
        if was_alive:
            logger.info("execution process of notebook %s stopped%s: %s", self.notebook_id, f" ({cause})" if cause else "", reason)
            self._on_gone(reason, cause=cause)
            self._announce({"state": "stopped", "cause": cause or "restart", "reason": reason, "at": _now()})
        return was_alive

    async def restart(self, reason):
        await self.stop(reason)
        return await self.start()

    async def configure(self, config, reason):
        """The notebook's settings changed: a running process takes live ones as it is; any other
        change restarts it (`reason`)."""
        old, self.config = self.config, config
        changed = config.changed_fields(old)
        if self.runner is None or not changed:
            return
        if changed <= RunnerConfig.LIVE_FIELDS:
            config.apply(self.runner)
        else:
            await self.restart(reason)

    async def files_changed(self):
        """The notebook's files changed (their mirror already is): a running process links them
        into its working directory again (file_reads.py)."""
        if not self.alive:
            return
        try:
            await self.runner.call("files_changed")
        except (RunnerDied, RuntimeError):
            logger.warning("execution process of notebook %s could not take its new files", self.notebook_id)

    async def forget(self, cell_ids):
        """The names `cell_ids` bound leave the namespace (if there is one)."""
        for cell_id in cell_ids:
            if not self.alive:
                return
            try:
                await self.runner.forget(cell_id)
            except RunnerDied:
                logger.warning("runner of notebook %s died while forgetting a cell", self.notebook_id)

    async def assist(self, op, *, cell_type, code, cursor):
        """Completion or inspection (`op`) in a cell of `cell_type`, from the namespace if there is
        one; never starts the execution process (Runner.assist)."""
        if cell_type == CELL_MARKDOWN:
            return {} if op == "inspect" else {"from": cursor, "to": cursor, "items": []}
        language = "sql" if cell_type == CELL_SQL else "python"
        return await self.made().assist(op, code=code, cursor=cursor, language=language)

    async def interrupt(self):
        if self.pool is not None and self._starting and self.pool.withdraw(self):
            return True  # it was waiting for a place (pending): it no longer does
        if self.runner is not None:
            return await self.runner.interrupt()
        return False

    async def close(self):
        """For good: the process and its database connection go, and nothing starts again."""
        self.closed = True
        runner, self.runner = self.runner, None
        if runner is not None:
            await runner.close()
        if self.pool is not None:
            self.pool.released(self)
