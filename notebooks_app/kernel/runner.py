"""One notebook's execution subprocess, seen from the kernel worker (asyncio).

The child (`_child.py`) holds the notebook's namespace and runs inside the sandbox
(`sandbox.py`, bubblewrap) unless it is turned off.  This side starts it on demand,
sends it one command at a time over JSON lines (a cascade's Python cells as one
`run_batch` command, their results streamed back one by one), streams its stdout to a callback,
enforces the time limit, interrupts it, and notices when it dies; what travels on the
pipes (replies, stdout, the child's queries for the notebook's own database, whose
connection lives here, outside the sandbox) is `child_channel.py`'s.  A dead child never
takes the worker down: the pending call raises `RunnerDied` and the next call starts a
fresh child with an empty namespace.
"""
import asyncio
import contextlib
import functools
import json
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from . import completion
from . import sandbox as sandboxing
from .child_channel import ChildChannel, RunnerDied
from .database import ExternalDatabase
from .egress import EgressProxy

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# After an interrupt (by the user or the time limit) a cell has this long to stop
# before its process is killed and restarted.
KILL_GRACE = 3.0
READ_LIMIT = 1 << 26  # longest protocol line (an output near the cap, JSON-escaped)
START_TIMEOUT = 30.0
# A completion or inspection the child has not answered by then is answered statically
# (its first one loads jedi, about a second).
ASSIST_TIMEOUT = 5.0
SCHEMA_TIMEOUT = 2.0  # the notebook database's table names, for SQL completion
# The sandbox as configured by default (the worker passes the settings' own).
DEFAULT_SANDBOX = sandboxing.SandboxConfig()
_uid_pool = None


def uid_pool(base):
    global _uid_pool
    if _uid_pool is None or _uid_pool.base != base:
        _uid_pool = sandboxing.UidPool(base)
    return _uid_pool


SandboxUnavailable = sandboxing.SandboxUnavailable


@dataclass
class RunResult:
    status: str  # "success" | "error"
    outputs: list = field(default_factory=list)
    error: dict | None = None
    files: list = field(default_factory=list)  # the notebook files the cell opened (file_reads.py)


_NICE = shutil.which("nice", path="/usr/bin:/bin") or "nice"


class Runner:
    def __init__(self, *, time_limit=60.0, output_cap=1_000_000, image_cap_mb=16, memory_limit_mb=None, sql_row_cap=200, notebook_id="", sandbox=DEFAULT_SANDBOX, database_policy=None, nice=0):
        """`sandbox`: a `sandbox.SandboxConfig`, or None to run the child unsandboxed
        (KERNEL_SANDBOX=off); `memory_limit_mb` overrides its memory limit.  `environment`: the
        site-packages directory of the notebook's own packages (kernel/environments.py), or None;
        set before the process starts (a change means a restart)."""
        self.time_limit = time_limit
        self.output_cap = output_cap
        self.image_cap_mb = image_cap_mb
        self.sql_row_cap = sql_row_cap
        self.memory_limit_mb = memory_limit_mb
        # The process's CPU priority below the server's (KERNEL_NICE): a `while True` in every
        # notebook leaves Daphne and the worker the CPU first (docs/security.md, "Which mechanism is in force").
        self.nice = nice
        self.notebook_id = str(notebook_id)
        self.sandbox = sandbox
        self.database = ExternalDatabase(database_policy)
        self.environment = None
        self.egress_allowlist = ()  # the owner's egress allowlist (egress.py); applies with network "outbound"
        self._egress = None
        self._egress_dir = None
        self.files = None  # the directory of the notebook's files (kernel/notebook_files_dir.py), or None
        # The notebook's secrets, {name: value}: the environment of the next process started,
        # sent down its protocol pipe as its first message (never argv nor bwrap's environment).
        self.secrets = {}
        self.process = None
        self._channel = ChildChannel(database=self.database, notebook_id=self.notebook_id, on_exit=self._release, on_save_file=self._save_file)
        self.save_file = None  # async (path, bytes) -> reply: a cell's files.save, given by ExecutionHost
        self._next_id = 0
        self._lock = asyncio.Lock()
        self._uid = None
        self._network = None  # the slirp4netns process of an outbound sandbox

    @property
    def alive(self):
        return self._channel.alive

    @property
    def pid(self):
        return self.process.pid if self.process is not None else None

    def set_connection(self, connection_string):
        """The notebook's database connection; it stays on this side of the sandbox."""
        self.database.set_connection(connection_string)

    @property
    def limits(self):
        limits = self.sandbox.limits if self.sandbox is not None else sandboxing.Limits(processes=0)
        if self.memory_limit_mb is not None:
            limits = sandboxing.Limits(memory_mb=self.memory_limit_mb, disk_mb=limits.disk_mb, processes=limits.processes, open_files=limits.open_files)
        return limits

    def _child_env(self):
        env = {
            "NOTEBOOK_OUTPUT_CAP": str(self.output_cap),
            "NOTEBOOK_IMAGE_CAP": str(int(self.image_cap_mb * 1024 * 1024)),
            "NOTEBOOK_SQL_ROW_CAP": str(self.sql_row_cap),
            **self.limits.child_env(),
        }
        if self.sandbox is not None and self.sandbox.network == "none":
            # The child then says "no network" rather than a DNS error (_child.failed_for_no_network).
            env["NOTEBOOK_NETWORK"] = "none"
        return env

    async def start(self):
        if self.alive:
            return
        try:
            await self._start_once()
        except RunnerDied as exc:
            # bubblewrap failing while it sets the sandbox up (seen once: the new network
            # namespace's loopback, "Failed RTM_NEWADDR") is worth one more try, not a dead cell.
            if "bwrap:" not in str(exc):
                raise
            logger.warning("kernel process of notebook %s did not start (%s); trying once more", self.notebook_id, exc)
            await self._start_once()

    async def _start_once(self):
        await self._reap()
        if self.sandbox is not None:
            reason = await asyncio.to_thread(sandboxing.probe, self.sandbox.bwrap)
            if reason:
                raise SandboxUnavailable(reason)
            self.process = await self._start_sandboxed()
        else:
            self.process = await self._start_unsandboxed()
        ready = self._channel.attach(self.process, sandboxed=self.sandbox is not None, stdout_cap=2 * self.output_cap + 1000)
        try:
            if self.secrets:
                # Through the pipe, before any command: on bubblewrap's command line (--setenv)
                # they would be in /proc/<pid>/cmdline, which any user of the host can read.
                await asyncio.wait_for(self._channel.send({"op": "environment", "variables": self.secrets}), START_TIMEOUT)
            await asyncio.wait_for(ready, START_TIMEOUT)
            if self._network is not None:
                await self._network.ready()
            if self.nice > 0:  # the sessions' autogroups too (lifecycle.deprioritize)
                from .lifecycle import tree_rss

                await asyncio.to_thread(tree_rss, self.process.pid, self.nice)
        except (asyncio.TimeoutError, RunnerDied, OSError) as exc:
            await self._channel.kill()
            detail = "; ".join(self._channel.stderr_tail) or str(exc) or type(exc).__name__
            raise RunnerDied(f"the kernel process did not start: {detail}") from None

    async def _start_sandboxed(self):
        config = self.sandbox
        if sandboxing.running_as_root():
            self._uid = uid_pool(config.uid_base).acquire(self.notebook_id or id(self))
        pass_fds, info_fd, resolv = [], None, None
        # An owner's egress allowlist (egress.py): no network of its own, one proxy out.
        outbound = config.network == "outbound" and not self.egress_allowlist
        egress_socket = None
        if config.network == "outbound" and self.egress_allowlist:
            self._egress_dir = tempfile.mkdtemp(prefix="nb-egress-")
            self._egress = await EgressProxy(self.egress_allowlist, os.path.join(self._egress_dir, "egress.sock")).start()
            egress_socket = self._egress.socket_path
        if outbound:
            resolv_read, resolv_write = os.pipe()
            os.write(resolv_write, sandboxing.OUTBOUND_RESOLV_CONF.encode())
            os.close(resolv_write)
            info_read, info_fd = os.pipe()
            pass_fds, resolv = [resolv_read, info_fd], resolv_read
        argv = sandboxing.bwrap_arguments(config, uid=self._uid, env=self._child_env(), resolv_conf_fd=resolv, environment=self.environment, files=self.files, egress_socket=egress_socket)
        if info_fd is not None:
            argv[1:1] = ["--info-fd", str(info_fd)]
        try:
            # bubblewrap itself gets no more of the server's environment than the child does.
            process = await self._spawn(argv, cwd="/", env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, pass_fds=pass_fds)
        finally:
            for fd in pass_fds:
                os.close(fd)
        if outbound:
            self._network = OutboundNetwork(info_read)
            await self._network.start()
        return process

    async def _start_unsandboxed(self):
        env = dict(os.environ)
        # Off means off (KERNEL_SANDBOX=off, docs/security.md), but the server's
        # secrets and settings still stay out of the child's environment.
        for name in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "SECRETS_KEY", "DJANGO_SETTINGS_MODULE"):
            env.pop(name, None)
        env.update(
            PYTHONPATH=os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH", "")])),
            PYTHONUNBUFFERED="1",
            MPLBACKEND="Agg",
            NOTEBOOK_ENVIRONMENT=self.environment or "",
            **self._child_env(),
        )
        return await self._spawn([sys.executable, "-m", "notebooks_app.kernel._child"], cwd=str(PROJECT_ROOT), env=env)

    async def _spawn(self, argv, *, cwd, env=None, pass_fds=()):
        if self.nice > 0:
            # nice(1) execs the command at the lower priority: everything under it inherits it
            # (bubblewrap, the child, what user code forks), and no preexec_fn runs in a thread.
            argv = [_NICE, "-n", str(self.nice), *argv]
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=cwd,
            env=env,
            pass_fds=pass_fds,
            limit=READ_LIMIT,
            start_new_session=True,  # a terminal's Ctrl-C reaches the server, not the cells
        )

    async def close(self):
        await asyncio.to_thread(self.database.close)
        if self.process is None:
            return
        if self.process.returncode is None:
            with contextlib.suppress(Exception):
                self.process.stdin.close()
            try:
                await asyncio.wait_for(self.process.wait(), 2)
            except asyncio.TimeoutError:
                await self._channel.kill()
        await self._reap()

    async def kill(self, reason):
        """Kill the process now; whoever waits on it hears `reason` (RunnerDied)."""
        self._channel.kill_reason = reason
        await self._channel.kill()

    async def run(self, cell_id, code, *, writes=(), inputs=None, on_stdout=None):
        """Run a Python cell; `inputs`: the persisted values of the widgets it makes."""
        message = {"op": "run", "cell": cell_id, "code": code, "writes": sorted(writes), "inputs": inputs or {}}
        reply = await self._request(message, on_stdout, timed=True)
        return self._result(reply)

    async def run_batch(self, cells, *, on_stdout=None):
        """Run Python cells in order as one request; yield each one's RunResult as it finishes.

        `cells`: dicts with `cell`, `code`, `writes`, `inputs` (as `run` takes them).  Each
        cell has a request id of its own, so its stdout (`on_stdout(index, text)`, the cell's
        index in `cells`) and its result are its own, and the time limit counts from the
        moment the cell before it finished.  An interrupt names every cell not finished: the
        running one stops, the others answer "interrupted before it started".  If the
        process dies, the cell it died under raises RunnerDied; results that arrived before
        are still yielded first.  Use it with `contextlib.aclosing`: a consumer that stops
        early cancels the cells not started yet."""
        async with self._lock:
            if not self.alive:
                await self.start()
            requests, futures, items = [], [], []
            for index, cell in enumerate(cells):
                self._next_id += 1
                request = self._next_id
                future = self._channel.expect(request, None if on_stdout is None else functools.partial(on_stdout, index))
                requests.append(request)
                futures.append(future)
                items.append({"id": request, "cell": cell["cell"], "code": cell["code"], "writes": sorted(cell.get("writes") or ()), "inputs": cell.get("inputs") or {}})
            done = 0
            try:
                await self._channel.send({"op": "run_batch", "cells": items})
                for request, future in zip(requests, futures):
                    # Results that arrived while the caller handled earlier ones cost no wait.
                    reply = future.result() if future.done() else await self._await_reply(request, future, timed=True)
                    self._channel.drop(request)
                    done += 1
                    yield self._result(reply)
            except asyncio.CancelledError:
                await self._channel.kill()
                raise
            finally:
                rest = [request for request in requests[done:] if self._channel.drop(request)]
                for future in futures[done:]:  # never awaited: retrieved or cancelled here
                    if future.done():
                        future.cancelled() or future.exception()
                    else:
                        future.cancel()
                if rest and self.alive:
                    with contextlib.suppress(RunnerDied):
                        await self._interrupt(rest)

    async def run_markdown(self, cell_id, code):
        """A markdown cell's `{name}` fields formatted with the notebook's values (as text)."""
        reply = await self._request({"op": "run_markdown", "cell": cell_id, "code": code}, None, timed=True)
        return self._result(reply)

    async def run_sql(self, cell_id, code, *, result_variable="", on_stdout=None):
        message = {"op": "run_sql", "cell": cell_id, "code": code, "result_variable": result_variable, "engine": self.database.engine or ""}
        reply = await self._request(message, on_stdout, timed=True)
        return self._result(reply)

    async def set_input(self, widget_id, value):
        await self.call("set_input", widget=widget_id, value=value)

    async def _save_file(self, path, data):
        if self.save_file is None:
            return {"error": "this execution process cannot save notebook files"}
        return await self.save_file(path, data)

    async def forget(self, cell_id):
        await self.call("forget", cell=cell_id)

    async def call(self, op, **arguments):
        reply = await self._request({"op": op, **arguments}, None, timed=False)
        if reply.get("status") != "success":
            error = reply.get("error") or {}
            raise RuntimeError(f"{error.get('ename')}: {error.get('evalue')}")
        return reply

    async def assist(self, op, *, code, cursor, language):
        """`complete` or `inspect` at `cursor` (UTF-16 offset) of a cell's code.

        Answered by the child's command thread, never behind the lock a running cell holds
        (so it is `busy` and static then).  Without a process (none is started for this) or
        without an answer in time, a static one from here: keywords, builtins, the cell's
        own names, or for SQL the keywords and the notebook database's tables.  Nothing here
        reads a namespace or imports jedi."""
        tables = await self._external_tables() if language == "sql" and op == "complete" else {}
        if self.alive:
            self._next_id += 1
            message = {"op": op, "code": code, "cursor": cursor, "language": language, "tables": tables, "engine": self.database.engine or ""}
            reply = await self._channel.ask(self._next_id, message, ASSIST_TIMEOUT)
            if reply is not None and reply.get("status") == "success":
                return {key: value for key, value in reply.items() if key not in ("op", "id", "status")}
            if reply is not None:
                logger.info("%s failed in the kernel process: %s", op, reply.get("error"))
        if op == "inspect":
            return {}
        if language == "sql":
            return completion.sql_completions(code, cursor, tables)
        return completion.static_completions(code, cursor)

    async def _external_tables(self):
        """The notebook database's {table: columns}, or {} (none set, or it did not answer in time)."""
        if not self.database.engine:
            return {}
        try:
            return await asyncio.wait_for(asyncio.to_thread(self.database.schema), SCHEMA_TIMEOUT)
        except asyncio.TimeoutError:
            return {}

    async def interrupt(self):
        """Interrupt the running cell (KeyboardInterrupt inside it); True if one was running."""
        pending = self._channel.in_flight()
        if not self.alive or not pending:
            return False
        await self._interrupt(pending)
        return True

    async def _interrupt(self, requests):
        # The ids let the child stop a cell it has not started yet (an interrupt right after run).
        await self._channel.send({"op": "interrupt", "requests": requests})
        if self._channel.querying:  # a query on the notebook's database is running out here
            await asyncio.to_thread(self.database.interrupt)

    # --- internals -----------------------------------------------------------------------
    def _result(self, reply):
        return RunResult(status=reply.get("status", "error"), outputs=reply.get("outputs") or [], error=reply.get("error"), files=reply.get("files") or [])

    async def _request(self, message, on_stdout, *, timed):
        async with self._lock:
            if not self.alive:
                await self.start()
            self._next_id += 1
            request = self._next_id
            future = self._channel.expect(request, on_stdout)
            try:
                await self._channel.send({**message, "id": request})
                return await self._await_reply(request, future, timed=timed)
            except asyncio.CancelledError:
                await self._channel.kill()
                raise
            finally:
                self._channel.drop(request)

    async def _await_reply(self, request, future, *, timed):
        """The reply to `request`; a timed one is interrupted at the time limit (TimeoutError)."""
        if not timed or not self.time_limit:
            return await future
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.time_limit)
        except asyncio.TimeoutError:
            logger.info("cell exceeded the %ss time limit; interrupting", self.time_limit)
            await self._interrupt([request])
            reply = await self._await_or_kill(future)
            error = reply.get("error") or {}
            if error.get("ename") == "KeyboardInterrupt":
                reply["error"] = {
                    "ename": "TimeoutError",
                    "evalue": f"the cell ran longer than the {self.time_limit:g} s time limit and was interrupted",
                    "traceback": error.get("traceback", []),
                }
            return reply

    async def _await_or_kill(self, future):
        try:
            return await asyncio.wait_for(asyncio.shield(future), KILL_GRACE)
        except asyncio.TimeoutError:
            await self._channel.kill()
            raise RunnerDied(f"the cell did not stop within {KILL_GRACE:g} s of being interrupted, so its kernel was killed") from None

    async def _release(self):
        """Give back what this process held: its uid, its network helper."""
        if self._uid is not None:
            uid_pool(self.sandbox.uid_base).release(self._uid)
            self._uid = None
        network, self._network = self._network, None
        if network is not None:
            await network.stop()
        egress, self._egress = self._egress, None
        if egress is not None:
            await egress.close()
            shutil.rmtree(self._egress_dir, ignore_errors=True)

    async def _reap(self):
        await self._release()
        await self._channel.detach()


class OutboundNetwork:
    """slirp4netns giving a sandbox outbound access, with host loopback disabled.

    Started once bubblewrap has said (on its --info-fd) which PID holds the sandbox's
    network namespace; `ready()` returns when the interface is up.
    """

    def __init__(self, info_fd):
        self.info_fd = info_fd
        self.process = None
        self._ready_read = None

    async def start(self):
        info = await asyncio.to_thread(self._read_info)
        pid = info.get("child-pid")
        if not pid:
            raise RunnerDied("the sandbox did not report its process id")
        ready_read, ready_write = os.pipe()
        try:
            self.process = await asyncio.create_subprocess_exec(
                "slirp4netns", "--configure", "--mtu=65520", "--disable-host-loopback",
                f"--ready-fd={ready_write}", str(pid), sandboxing.SLIRP_INTERFACE,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=None,  # its complaints go to the worker's log
                pass_fds=[ready_write], start_new_session=True,
            )
        except FileNotFoundError:
            os.close(ready_read)
            raise RunnerDied("KERNEL_NETWORK=outbound needs slirp4netns (Debian: apt-get install slirp4netns)") from None
        finally:
            os.close(ready_write)
        self._ready_read = ready_read

    def _read_info(self):
        with os.fdopen(self.info_fd, "rb") as stream:
            data = stream.read()
        try:
            return json.loads(data.decode() or "{}")
        except ValueError:
            return {}

    async def ready(self):
        def wait():
            with os.fdopen(self._ready_read, "rb") as stream:
                return stream.read(1)

        if not await asyncio.wait_for(asyncio.to_thread(wait), START_TIMEOUT):
            raise RunnerDied("slirp4netns could not give the sandbox a network")

    async def stop(self):
        if self.process is None:
            return
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        await self.process.wait()
