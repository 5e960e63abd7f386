"""The pipes of one notebook's execution process, seen from the kernel worker (asyncio).

`ChildChannel` speaks the JSON-lines protocol with the process a `runner.Runner` started
and attached to it: it sends commands down its stdin; it reads its stdout and hands each
`result` to the future its request id waits on, each `stdout` to that request's callback
(capped here too: user code can write to the protocol pipe itself), and each `query` for
the notebook's own database to `database.py`, answering it from this side of the sandbox;
it keeps the last lines of the process's stderr for the error of a start that failed.
When the process ends it says why (`describe_exit`) and fails every reply still awaited
with `RunnerDied`.  It never starts a process: that, and the time limit, are the runner's.
"""
import asyncio
import contextlib
import json
import logging
import os
import signal
from collections import deque

logger = logging.getLogger(__name__)


# Seconds a cell's result waits for the query it started on the notebook's database to end
# (the interrupt cancels it there; a cancel takes a round trip to the server).  Less than
# the runner's KILL_GRACE: a cell past its time limit is not killed for its query's sake.
QUERY_SETTLE = 2.0


class RunnerDied(Exception):
    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


class ChildChannel:
    def __init__(self, *, database, notebook_id, on_exit, on_save_file=None):
        self.database = database  # database.ExternalDatabase: the child's queries run here
        self.notebook_id = notebook_id
        self.on_exit = on_exit  # async (): the attached process ended (give back what it held)
        # async (path, data bytes) -> reply dict: a cell's files.save (file_reads.py), stored
        # out here; None: this process cannot save files.
        self.on_save_file = on_save_file
        self.process = None
        self.death = None  # why the attached process ended, once it has
        self.kill_reason = None  # why it is being killed on purpose (Runner.kill), said instead
        self.pending = {}  # request id -> (future, on_stdout)
        self.assists = {}  # request id -> future of a complete / inspect (never interrupted)
        self.stderr_tail = deque(maxlen=5)
        self._sandboxed = False
        self._stdout_cap = 0
        self._reader = None
        self._stderr_reader = None
        self._queries = set()  # tasks answering the child's database queries
        self._settling = set()  # tasks holding a result until its query ended (_settle_after_query)
        self._stdout_counts = {}  # request id -> characters of stdout relayed

    def attach(self, process, *, sandboxed, stdout_cap):
        """Start reading a process just started; returns the future of its `ready` line."""
        self.process, self.death = process, None
        self._sandboxed, self._stdout_cap = sandboxed, stdout_cap
        self.stderr_tail.clear()
        ready = asyncio.get_running_loop().create_future()
        self.pending = {"ready": (ready, None)}
        self._reader = asyncio.create_task(self._read(process))
        self._stderr_reader = asyncio.create_task(self._read_stderr(process))
        return ready

    @property
    def alive(self):
        return self.process is not None and self.process.returncode is None and self.death is None

    @property
    def querying(self):
        """Whether a query on the notebook's database is running out here for the child."""
        return bool(self._queries)

    def expect(self, request, on_stdout=None):
        """The future of `request`'s reply; its stdout goes to `on_stdout(text)` meanwhile."""
        future = asyncio.get_running_loop().create_future()
        self.pending[request] = (future, on_stdout)
        return future

    def drop(self, request):
        """Stop waiting for `request`; True if it was still awaited."""
        return self.pending.pop(request, None) is not None

    def in_flight(self):
        """The requests sent and not answered yet."""
        return [key for key in self.pending if key != "ready"]

    async def send(self, message):
        if not self.alive:
            raise RunnerDied(self.death or "the kernel process is not running")
        try:
            self.process.stdin.write((json.dumps(message) + "\n").encode())
            await self.process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            await self.wait_closed()
            raise RunnerDied(self.death or "the kernel process exited") from None

    async def ask(self, request, message, timeout):
        """Send a request the child answers on its command thread (never behind a running
        cell): its reply, or None when none came within `timeout` or the process is gone."""
        future = asyncio.get_running_loop().create_future()
        self.assists[request] = future
        try:
            await self.send({**message, "id": request})
            return await asyncio.wait_for(future, timeout)
        except (asyncio.TimeoutError, RunnerDied):
            return None
        finally:
            self.assists.pop(request, None)

    async def kill(self):
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        await self.wait_closed()

    async def wait_closed(self):
        """Until the reader has seen the process end (5 s at most)."""
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._reader), 5)

    async def detach(self):
        """Stop reading the attached process (once it has ended, or is being let go)."""
        if self._stderr_reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._stderr_reader), 1)
            self._stderr_reader.cancel()
            self._stderr_reader = None
        if self._reader is not None:
            await self.wait_closed()
            if not self._reader.done():
                self._reader.cancel()
            self._reader = None
        if self.process is not None and self.process.stdin is not None:
            with contextlib.suppress(Exception):
                self.process.stdin.close()

    # --- reading -------------------------------------------------------------------------
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
                    entry = self.pending.pop("ready", None)
                    if entry and not entry[0].done():
                        entry[0].set_result(message)
                elif op == "stdout":
                    entry = self.pending.get(request)
                    text = message.get("text", "")
                    if entry and entry[1] is not None and isinstance(text, str) and self._within_stdout_cap(request, text):
                        try:
                            entry[1](text)
                        except Exception:  # a failing callback must not kill the reader
                            logger.exception("stdout callback failed")
                elif op == "result":
                    entry = self.pending.get(request)
                    future = entry[0] if entry else self.assists.get(request)
                    if future is not None and not future.done():
                        if entry and self._queries:
                            self._settle_after_query(future, message)
                        else:
                            future.set_result(message)
                elif op in ("query", "save_file") and request in self.pending and not self._queries:
                    # One query or save at a time, for a request that is running: user code that
                    # writes to the protocol pipe itself cannot pile work up out here.
                    answer = self._answer_query if op == "query" else self._answer_save
                    task = asyncio.create_task(answer(message))
                    self._queries.add(task)
                    task.add_done_callback(self._queries.discard)
        except (ValueError, asyncio.LimitOverrunError) as exc:
            logger.error("kernel process protocol broken: %s", exc)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        returncode = await process.wait()
        if process is self.process:
            self.death = self.kill_reason or describe_exit(returncode, sandboxed=self._sandboxed)
            self.kill_reason = None
            await self.on_exit()
            for future in [entry[0] for entry in self.pending.values()] + list(self.assists.values()):
                if not future.done():
                    future.set_exception(RunnerDied(self.death))
                    # Whoever still waits gets it; one that gave up (a completion past its
                    # deadline, a start that failed first) leaves no "never retrieved" warning.
                    future.exception()
            self.pending.clear()

    def _settle_after_query(self, future, message):
        """A cell's result that came while its query still runs out here (an interrupt stopped
        the child's wait first): handed over once the query has ended, QUERY_SETTLE seconds at
        most, so the cell never reads as stopped while its database still runs the query."""
        async def settle():
            if self._queries:  # it may have ended since
                await asyncio.wait(set(self._queries), timeout=QUERY_SETTLE)
            if not future.done():
                future.set_result(message)

        task = asyncio.create_task(settle())
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    def _within_stdout_cap(self, request, text):
        """The child caps a cell's output, but user code can write to the protocol pipe itself:
        past the cap given at `attach` (twice the child's), stdout of a request is dropped here too."""
        sent = self._stdout_counts.get(request, 0) + len(text)
        self._stdout_counts = {request: sent}  # only the running request counts
        return sent <= self._stdout_cap

    async def _answer_query(self, message):
        """Run a query the child sent for the notebook's database; send back its answer."""
        reply = await asyncio.to_thread(self.database.execute, message.get("sql"), message.get("params") or [])
        with contextlib.suppress(RunnerDied):
            await self.send({"op": "query_result", "id": message.get("id"), **reply})

    async def _answer_save(self, message):
        """A cell's `files.save(path, data)`: the bytes (base64 on the pipe) handed to
        `on_save_file`, which checks and stores them; its answer goes back as a query's does."""
        import base64
        import binascii

        try:
            data = base64.b64decode(message.get("data") or "", validate=True)
        except (binascii.Error, ValueError, TypeError):
            reply = {"error": "the file's bytes did not arrive whole"}
        else:
            if self.on_save_file is None:
                reply = {"error": "this execution process cannot save notebook files"}
            else:
                try:
                    reply = await self.on_save_file(str(message.get("path") or ""), data)
                except Exception as exc:  # noqa: BLE001 - the cell hears why; the channel lives on
                    logger.exception("saving a file for notebook %s failed", self.notebook_id)
                    reply = {"error": f"the file could not be saved: {exc}"}
        with contextlib.suppress(RunnerDied):
            await self.send({"op": "query_result", "id": message.get("id"), **reply})

    async def _read_stderr(self, process):
        """What bubblewrap or Python say before the child takes over its fds: logged, and
        kept for the error when the process does not start."""
        while True:
            line = await process.stderr.readline()
            if not line:
                return
            text = line.decode("utf-8", "replace").rstrip()
            if text:
                self.stderr_tail.append(text)
                logger.warning("kernel process of notebook %s: %s", self.notebook_id, text)


def describe_exit(returncode, *, sandboxed=False):
    if returncode is None:
        return "the kernel process stopped"
    if sandboxed and 128 < returncode <= 128 + 64:
        returncode = 128 - returncode  # bubblewrap reports a child killed by signal N as 128 + N
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        if -returncode == signal.SIGKILL:
            return f"the kernel process was killed ({name}; out of memory or stopped)"
        return f"the kernel process was killed by {name}"
    return f"the kernel process exited with code {returncode}"
