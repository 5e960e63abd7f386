"""One notebook's execution subprocess, seen from the kernel worker (asyncio).

The child (`_child.py`) holds the notebook's namespace; this side starts it on demand,
sends it one command at a time over JSON lines, streams its stdout to a callback,
enforces the time limit, interrupts it, and notices when it dies.  A dead child never
takes the worker down: the pending call raises `RunnerDied` and the next call starts a
fresh child with an empty namespace.
"""
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# After an interrupt (by the user or the time limit) a cell has this long to stop
# before its process is killed and restarted.
KILL_GRACE = 3.0
READ_LIMIT = 1 << 26  # longest protocol line (an output near the cap, JSON-escaped)


class RunnerDied(Exception):
    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


@dataclass
class RunResult:
    status: str  # "success" | "error"
    outputs: list = field(default_factory=list)
    error: dict | None = None


class Runner:
    def __init__(self, *, time_limit=60.0, output_cap=1_000_000, memory_limit_mb=None, sql_row_cap=200):
        self.time_limit = time_limit
        self.output_cap = output_cap
        self.sql_row_cap = sql_row_cap
        self.memory_limit_mb = memory_limit_mb
        self.process = None
        self._reader = None
        self._pending = {}  # request id -> (future, on_stdout)
        self._next_id = 0
        self._lock = asyncio.Lock()
        self._death = None  # reason the current process died, once it has

    @property
    def alive(self):
        return self.process is not None and self.process.returncode is None and self._death is None

    @property
    def pid(self):
        return self.process.pid if self.process is not None else None

    async def start(self):
        if self.alive:
            return
        await self._reap()
        env = dict(os.environ)
        env.update(
            PYTHONPATH=os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH", "")])),
            PYTHONUNBUFFERED="1",
            MPLBACKEND="Agg",
            NOTEBOOK_OUTPUT_CAP=str(self.output_cap),
            NOTEBOOK_SQL_ROW_CAP=str(self.sql_row_cap),
            NOTEBOOK_MEMORY_LIMIT_MB=str(self.memory_limit_mb or 0),
        )
        # The child must not see the web process's secrets or Django settings.
        for name in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DJANGO_SETTINGS_MODULE"):
            env.pop(name, None)
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "notebooks_app.kernel._child",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,
            cwd=str(PROJECT_ROOT),
            env=env,
            limit=READ_LIMIT,
            start_new_session=True,  # a terminal's Ctrl-C reaches the server, not the cells
        )
        self._death = None
        ready = asyncio.get_running_loop().create_future()
        self._pending = {"ready": (ready, None)}
        self._reader = asyncio.create_task(self._read(self.process))
        try:
            await asyncio.wait_for(ready, 30)
        except (asyncio.TimeoutError, RunnerDied) as exc:
            await self._kill()
            raise RunnerDied(f"the kernel process did not start: {exc}") from None

    async def close(self):
        if self.process is None:
            return
        if self.process.returncode is None:
            with contextlib.suppress(Exception):
                self.process.stdin.close()
            try:
                await asyncio.wait_for(self.process.wait(), 2)
            except asyncio.TimeoutError:
                await self._kill()
        await self._reap()

    async def run(self, cell_id, code, *, writes=(), on_stdout=None):
        reply = await self._request({"op": "run", "cell": cell_id, "code": code, "writes": sorted(writes)}, on_stdout, timed=True)
        return self._result(reply)

    async def run_sql(self, cell_id, code, *, result_variable="", on_stdout=None):
        reply = await self._request({"op": "run_sql", "cell": cell_id, "code": code, "result_variable": result_variable}, on_stdout, timed=True)
        return self._result(reply)

    async def forget(self, cell_id):
        await self.call("forget", cell=cell_id)

    async def call(self, op, **arguments):
        reply = await self._request({"op": op, **arguments}, None, timed=False)
        if reply.get("status") != "success":
            error = reply.get("error") or {}
            raise RuntimeError(f"{error.get('ename')}: {error.get('evalue')}")
        return reply

    async def interrupt(self):
        """Interrupt the running cell (KeyboardInterrupt inside it); True if one was running."""
        pending = [key for key in self._pending if key != "ready"]
        if not self.alive or not pending:
            return False
        # The ids let the child stop a cell it has not started yet (an interrupt right after run).
        await self._send({"op": "interrupt", "requests": pending})
        return True

    # --- internals -----------------------------------------------------------------------
    def _result(self, reply):
        return RunResult(status=reply.get("status", "error"), outputs=reply.get("outputs") or [], error=reply.get("error"))

    async def _request(self, message, on_stdout, *, timed):
        async with self._lock:
            if not self.alive:
                await self.start()
            self._next_id += 1
            request = self._next_id
            future = asyncio.get_running_loop().create_future()
            self._pending[request] = (future, on_stdout)
            try:
                await self._send({**message, "id": request})
                if not timed or not self.time_limit:
                    return await future
                try:
                    return await asyncio.wait_for(asyncio.shield(future), self.time_limit)
                except asyncio.TimeoutError:
                    logger.info("cell exceeded the %ss time limit; interrupting", self.time_limit)
                    await self._send({"op": "interrupt", "requests": [request]})
                    reply = await self._await_or_kill(future)
                    error = reply.get("error") or {}
                    if error.get("ename") == "KeyboardInterrupt":
                        reply["error"] = {
                            "ename": "TimeoutError",
                            "evalue": f"the cell ran longer than the {self.time_limit:g} s time limit and was interrupted",
                            "traceback": error.get("traceback", []),
                        }
                    return reply
            except asyncio.CancelledError:
                await self._kill()
                raise
            finally:
                self._pending.pop(request, None)

    async def _await_or_kill(self, future):
        try:
            return await asyncio.wait_for(asyncio.shield(future), KILL_GRACE)
        except asyncio.TimeoutError:
            await self._kill()
            raise RunnerDied(f"the cell did not stop within {KILL_GRACE:g} s of being interrupted, so its kernel was killed") from None

    async def _send(self, message):
        if not self.alive:
            raise RunnerDied(self._death or "the kernel process is not running")
        try:
            self.process.stdin.write((json.dumps(message) + "\n").encode())
            await self.process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            await self._wait_death()
            raise RunnerDied(self._death or "the kernel process exited") from None

    async def _read(self, process):
        try:
            while True:
                line = await process.stdout.readline()
                if not line:
                    break
                try:
                    message = json.loads(line)
                except ValueError:
                    logger.warning("unreadable line from the kernel process: %r", line[:200])
                    continue
                op, request = message.get("op"), message.get("id")
                if op == "ready":
                    entry = self._pending.pop("ready", None)
                    if entry and not entry[0].done():
                        entry[0].set_result(message)
                elif op == "stdout":
                    entry = self._pending.get(request)
                    if entry and entry[1] is not None:
                        try:
                            entry[1](message.get("text", ""))
                        except Exception:  # a failing callback must not kill the reader
                            logger.exception("stdout callback failed")
                elif op == "result":
                    entry = self._pending.get(request)
                    if entry and not entry[0].done():
                        entry[0].set_result(message)
        except (ValueError, asyncio.LimitOverrunError) as exc:
            logger.error("kernel process protocol broken: %s", exc)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        returncode = await process.wait()
        if process is self.process:
            self._death = describe_exit(returncode)
            for future, _ in list(self._pending.values()):
                if not future.done():
                    future.set_exception(RunnerDied(self._death))
            self._pending.clear()

    async def _wait_death(self):
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._reader), 5)

    async def _kill(self):
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        await self._wait_death()

    async def _reap(self):
        if self._reader is not None:
            await self._wait_death()
            if not self._reader.done():
                self._reader.cancel()
            self._reader = None
        if self.process is not None and self.process.stdin is not None:
            with contextlib.suppress(Exception):
                self.process.stdin.close()


def describe_exit(returncode):
    if returncode is None:
        return "the kernel process stopped"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        if -returncode == signal.SIGKILL:
            return f"the kernel process was killed ({name}; out of memory or stopped)"
        return f"the kernel process was killed by {name}"
    return f"the kernel process exited with code {returncode}"
