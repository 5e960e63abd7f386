"""A notebook's packages in its kernel session: the changes its editors ask for, and the
environment its execution process starts on.

A change (`kernel.set_packages`) is resolved and built in a task of its own, beside the
session's queue (a build can take minutes; cells keep running meanwhile), with its progress
told to everyone on the notebook (`packages_progress`).  Only a change that built is saved:
it then comes back through the queue (`on_built`), where the session stores it, restarts the
execution process on the new environment and reruns what had run.  A change that fails leaves
the notebook, its environment and its running process as they were.

`environment_for(config)` gives ExecutionHost the site-packages directory to start on, resolving
a notebook that has requirements but no lock yet (an imported one) or whose lock no longer
fits the server's packages, and building an environment that is not on this host yet.
"""
import logging

from ..constants import ERROR_TEXT_LIMIT
from .environments import PackageError, locked_packages
from .outputs import cut

logger = logging.getLogger(__name__)


class PackageBuilds:
    def __init__(self, notebook_id, *, environments, store, events, on_built):
        self.notebook_id = notebook_id
        self.environments = environments  # environments.Environments of this worker, or None
        self.store = store
        self.events = events
        self._on_built = on_built  # (requirements, lock, message) -> queued apply, by the session
        self.change = None  # the task of the change under way
        self.progress = None  # its last progress event (a page that opens meanwhile shows it)
        self.key = None  # the environment the execution process runs on

    @property
    def enabled(self):
        return self.environments is not None and self.environments.settings.enabled

    def summary(self, config):
        """What notebook_state says of the packages."""
        own = self.environments.own_lines(config.lock) if self.environments and config.lock else []
        return {
            "enabled": self.enabled,
            "requirements": list(config.requirements),
            "locked": [p.as_json() for p in locked_packages("\n".join(own))],
            "progress": self.progress,
        }

    # --- a change -----------------------------------------------------------------------------------
    def request(self, message, loop_task):
        """`kernel.set_packages`: start building the new list, unless a change is under way."""
        request_id = message.get("requestId")
        if self.change is not None and not self.change.done():
            self._tell("error", "Another change of this notebook's packages is under way; try again when it is done.", message, request_id=request_id, keep=True)
            return
        if not self.enabled:
            self._tell("error", "Notebook packages are turned off on this server (NOTEBOOK_PACKAGES=off).", message, request_id=request_id)
            return
        self.change = loop_task(self._build(message), name=f"packages-{self.notebook_id}")

    async def _build(self, message):
        requirements = list(message.get("requirements") or [])

        async def phase(state, text):
            self._tell(state, text, message)
            await self.events.flush()

        try:
            self._tell("resolving", "Resolving…", message, request_id=message.get("requestId"))
            await self.events.flush()
            lock = await self.environments.resolve(requirements, on_phase=phase)
            await self.environments.ensure(lock, on_phase=phase)
        except PackageError as exc:
            await self._failed(str(exc), message)
            return
        except Exception as exc:  # noqa: BLE001 - the notebook keeps what it had; the log has why
            logger.exception("packages of notebook %s could not be built", self.notebook_id)
            await self._failed(f"The packages could not be built: {exc}", message)
            return
        self._tell("restarting", "Built; restarting the kernel on the new packages", message)
        await self.events.flush()
        self._on_built(requirements, lock, message)

    async def _failed(self, text, message):
        self._tell("error", text, message)
        self.progress = None
        await self.events.flush()

    def finished(self, message, requirements, config):
        """The change is saved and the process restarted: everyone hears the new list."""
        self.progress = None
        summary = self.summary(config)
        self.events.emit({"type": "packages_updated", "requirements": requirements, "locked": summary["locked"], "by": message.get("by"), "requestId": message.get("requestId")})

    def _tell(self, state, text, message, *, request_id=None, keep=False):
        """A progress event to everyone on the notebook (`keep`: a refusal that leaves the change
        under way as the current progress)."""
        event = {
            "type": "packages_progress",
            "state": state,
            "message": cut(text, ERROR_TEXT_LIMIT),
            "requirements": list(message.get("requirements") or []),
            "by": message.get("by"),
        }
        if request_id is not None:
            event["requestId"] = request_id
        if not keep:
            self.progress = None if state == "error" else {k: event[k] for k in ("state", "message", "requirements", "by")}
        self.events.emit(event)

    # --- the environment a process starts on ------------------------------------------------------------
    async def environment_for(self, config):
        """(site-packages directory, lock) for `config` (execution.RunnerConfig): the directory
        built if need be, or None when the server's packages are all it needs; the lock resolved
        again if it had none or no longer fits the server.  PackageError when it cannot be had."""
        if not config.requirements:
            self._use(None)
            return None, config.lock
        if not self.enabled:
            raise PackageError("this notebook lists packages, but notebook packages are turned off on this server (NOTEBOOK_PACKAGES=off)")
        lock = config.lock
        message = {"requirements": list(config.requirements), "by": None}

        async def phase(state, text):
            self._tell(state, text, message)
            await self.events.flush()

        worked = False
        try:
            if not lock or self.environments.stale(lock):
                worked = True
                lock = await self.environments.resolve(list(config.requirements), on_phase=phase)
                await self.store.save_lock(self.notebook_id, list(config.requirements), lock)
            site = self.environments.built(lock)
            if site is None and self.environments.key(lock):
                worked = True
                site = await self.environments.ensure(lock, on_phase=phase)
        except PackageError as exc:
            self._tell("error", str(exc), message)
            raise
        self._use(site.parent.name if site is not None else None)
        if worked:  # the pages showed progress: now the versions it came to
            self.progress = None
            own = self.environments.own_lines(lock)
            self.events.emit({"type": "packages_updated", "requirements": list(config.requirements), "locked": [p.as_json() for p in locked_packages("\n".join(own))], "by": None})
        return site, lock

    def _use(self, key):
        """This notebook's process runs on environment `key` (never collected meanwhile)."""
        if self.environments is None or key == self.key:
            return
        self.environments.release(self.key)
        self.environments.acquire(key)
        self.key = key

    def close(self):
        self._use(None)
        if self.change is not None and not self.change.done():
            self.change.cancel()
