"""The notebook's execution subprocess: holds its namespace and runs cells in it.

Started by `runner.Runner` as `python -m notebooks_app.kernel._child`; never imports
Django.  It talks JSON lines with its parent over two private file descriptors (the
original stdin and stdout, duplicated at start-up), so user code cannot read or corrupt
the protocol:

* fd 0 becomes /dev/null (`input()` gets EOF instead of eating commands);
* fds 1 and 2 become one pipe read by a thread that forwards everything the cell
  prints, from Python or from C, as `stdout` messages while the cell runs;
* a second thread reads commands.  `interrupt` is handled there at once (SIGINT to the
  main thread, and a cancel of the SQL query in flight); every other command is queued
  for the main thread, which runs one at a time and answers each with `result`.
  `run_batch` carries a cascade's Python cells, each with its own request id: they run
  in order, each answered with its own `result` as soon as it is done.

A SQL cell on the notebook's own database sends its bound query out (`query`) and
waits for the trusted side's `query_result`: the connection string never comes in here.
Before any user code runs the child caps itself with rlimits (memory, file size,
processes, open files) from its environment.  The child exits when its command stream
ends, so it never outlives its parent.  What a value becomes as outputs is
`value_outputs.py`'s.
"""
import ast
import builtins
import errno
import fcntl
import io
import json
import linecache
import os
import queue
import resource
import select
import signal
import struct
import sys
import termios
import threading
import time
import traceback

from notebooks_app.kernel import display, egress_forwarder, file_reads, value_outputs

CHILD_FILE = os.path.abspath(__file__)
# This process's own frames, never shown in a cell's traceback.
KERNEL_FILES = frozenset({CHILD_FILE, os.path.abspath(value_outputs.__file__)})
WARM_UP_AFTER_IDLE = 1.0  # seconds without a command before jedi is loaded (warm_up_completion)
ASSIST_IDLE_WAIT = 0.05  # seconds a completion waits for a just-finished command (Activity.idle_soon)
DRAIN_TIMEOUT = 2.0


class Protocol:
    def __init__(self, fd_in, fd_out):
        self.reader = os.fdopen(fd_in, "rb", buffering=0)
        self.out = os.fdopen(fd_out, "wb", buffering=0)
        self.lock = threading.Lock()

    # One encoder: json.dumps with options builds a new one per message.
    encode = json.JSONEncoder(ensure_ascii=False, default=str).encode

    def send(self, message):
        data = (self.encode(message) + "\n").encode("utf-8", "replace")
        with self.lock:
            self.out.write(data)

    def messages(self):
        buffer = b""
        while True:
            chunk = self.reader.read(1 << 16)
            if not chunk:
                return
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line.strip():
                    yield json.loads(line)


class Capture:
    """Everything written to fds 1 and 2, forwarded as `stdout` messages of the current request.

    `drain()` (main thread, after a cell) makes sure every byte the cell printed goes out
    before its `result`: when the pipe is empty and the forwarder holds nothing back
    (checked under its lock, the usual case for a quiet cell) there is nothing to wait
    for; otherwise it writes a random marker through the same pipe and waits until the
    forwarder reaches it.  At most `cap` characters go out per request.
    """

    def __init__(self, protocol, cap):
        self.protocol = protocol
        self.cap = cap
        self.request = None
        self.sent = 0
        self.dropped = 0
        self.marker = b"\0drain-" + os.urandom(8).hex().encode() + b"\0"
        self.drained = threading.Event()
        self.lock = threading.Lock()  # held by the forwarder from a read until it is sent
        self.idle = True  # everything read so far has been sent
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 1)
        os.dup2(write_fd, 2)
        os.close(write_fd)
        self.read_fd = read_fd
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="replace", line_buffering=True)
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="replace", line_buffering=True)
        threading.Thread(target=self._forward, name="stdout-forwarder", daemon=True).start()

    def begin(self, request):
        self.request, self.sent, self.dropped = request, 0, 0

    def drain(self):
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # a cell may have closed or replaced its streams
                pass
        if self.lock.acquire(blocking=False):
            try:
                quiet = self.idle and _unread_bytes(self.read_fd) == 0
            finally:
                self.lock.release()
        else:
            quiet = False  # the forwarder is busy: the marker tells it to finish now
        if not quiet:
            self.drained.clear()
            os.write(1, self.marker)
            self.drained.wait(DRAIN_TIMEOUT)
        if self.dropped:
            self.protocol.send({"op": "stdout", "id": self.request, "text": f"\n[output truncated: {self.dropped:,} more characters not shown]\n"})
        self.request = None

    def _forward(self):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        import codecs

        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._pending = b""
        while True:
            select.select([self.read_fd], [], [])  # wait for data without holding the lock
            with self.lock:
                if not self._forward_chunk():
                    return

    def _forward_chunk(self):
        """Read what is there and send it (under the lock); False at end of file."""
        data = os.read(self.read_fd, 1 << 16)
        if not data:
            return False
        # Coalesce a burst of small writes (a print loop) into one message.
        # Not past the end-of-cell marker: waiting then would delay every result by 20 ms.
        while len(data) < (1 << 16) and self.marker not in data and select.select([self.read_fd], [], [], 0.02)[0]:
            more = os.read(self.read_fd, 1 << 16)
            if not more:
                break
            data += more
        pending, decoder = self._pending + data, self._decoder
        while True:
            index = pending.find(self.marker)
            if index < 0:
                # Hold back only a tail that could be the start of a marker.
                keep = next((n for n in range(min(len(pending), len(self.marker) - 1), 0, -1) if self.marker.startswith(pending[-n:])), 0)
                head, pending = (pending[: len(pending) - keep], pending[len(pending) - keep :])
                self._emit(decoder.decode(head))
                break
            self._emit(decoder.decode(pending[:index]) + decoder.decode(b"", final=True))
            pending = pending[index + len(self.marker) :]
            self.drained.set()
        self._pending = pending
        self.idle = not pending and not decoder.getstate()[0]
        return True

    def _emit(self, text):
        if not text or self.request is None:
            return
        room = self.cap - self.sent
        if room <= 0:
            self.dropped += len(text)
            return
        if len(text) > room:
            self.dropped += len(text) - room
            text = text[:room]
        self.sent += len(text)
        self.protocol.send({"op": "stdout", "id": self.request, "text": text})


def _unread_bytes(fd):
    """Bytes waiting in a pipe (FIONREAD)."""
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]


class Activity:
    """What the main thread is doing, shared with the command thread under one lock.

    The main thread marks the request it takes (`begin`, `end`) and the span of user code
    in it (`start_executing`, `stop_executing`); the command thread counts the commands it
    queues for it (`queued`, `done`), asks whether it is free (`idle_soon`), and asks
    `interrupt` whether an interrupt stops what runs now.  An interrupt can arrive before the
    main thread has started the cell it targets (the command is queued, or being set up): it
    must stop that cell, not be lost.
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.current = None  # request the main thread is handling
        self.interrupt_pending = False  # the current request was interrupted before it ran code
        self.cancelled = set()  # queued requests interrupted before they started
        self.executing = False  # user code runs (the SIGINT handler raises only then)
        self.sql_running = False
        self.commands = 0  # commands given to the main thread and not finished (under the lock)

    def queued(self):
        with self.lock:
            self.commands += 1

    def done(self):
        with self.lock:
            self.commands -= 1

    def idle_soon(self, wait=ASSIST_IDLE_WAIT):
        """Whether the main thread has no command, waiting up to `wait` seconds for it: a command
        whose result was just sent is still finishing its bookkeeping, and a completion asked
        right after a run should see the run's names rather than a `busy` answer."""
        deadline = time.monotonic() + wait
        while True:
            with self.lock:
                if self.commands == 0:
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.002)

    def begin(self, request, op):
        """The main thread takes `request`; False if it was interrupted before it started
        (then it is not run: only cells are interruptible)."""
        with self.lock:
            skip = request in self.cancelled and op in ("run", "run_sql")
            self.cancelled.discard(request)
            self.current, self.interrupt_pending = (None, False) if skip else (request, False)
        return not skip

    def end(self):
        with self.lock:
            self.current = None

    def start_executing(self, sql=False):
        """Mark user code as running, unless an interrupt for this request came first."""
        with self.lock:
            if self.interrupt_pending:
                self.interrupt_pending = False
                raise KeyboardInterrupt("interrupted before it started")
            self.executing = True
            self.sql_running = sql

    def stop_executing(self):
        self.executing = self.sql_running = False

    def interrupt(self, requests):
        """Called on the command thread; `requests`: the parent's pending request ids, or None
        for whatever runs.  Those not started are cancelled; True if user code runs now that
        the interrupt names (a time limit names one cell of a batch: the next one may be
        running by now), which the caller then stops."""
        with self.lock:
            if requests is not None:
                for request in requests:
                    if request != self.current:
                        self.cancelled.add(request)  # still queued
                if self.current not in requests:
                    return False
            if not self.executing:
                if requests is not None:
                    self.interrupt_pending = True  # started, but no user code yet
                return False
        return True


class Kernel:
    def __init__(self, protocol, capture, output_cap, sql_row_cap=200, image_cap=16 << 20):
        self.protocol = protocol
        self.capture = capture
        self.outputs = value_outputs.ValueOutputs(output_cap, image_cap)
        self.sql_row_cap = sql_row_cap
        self.namespace = {"__name__": "__main__", "__builtins__": builtins}
        self.names = {}  # cell id -> names it bound at its last run
        self.compiled = {}  # cell id -> (code, filename, compiled body, compiled last expression)
        self.owner = {}  # name -> cell id that bound it last
        self.activity = Activity()
        self._loop = None  # for cells with a top-level await; made on first use
        self._sql = None
        self.answers = queue.Queue()
        self.asking = None  # request whose database query is out with the parent

    # --- commands ------------------------------------------------------------------------
    def handle(self, message):
        op = message.get("op")
        if op == "run_batch":
            # A cascade's Python cells in one command: each has its own request id, so each
            # streams its stdout and gets its `result` as if it had been sent alone, in order.
            # An interrupt names the ids still pending, so the cells after the one it stops
            # are answered "interrupted before it started" without running.
            for cell in message.get("cells") or ():
                self._answer(cell.get("id"), "run", cell)
            return
        self._answer(message.get("id"), op, message)

    def _answer(self, request, op, message):
        if not self.activity.begin(request, op):
            reply = {"status": "error", "outputs": [], "error": {"ename": "KeyboardInterrupt", "evalue": "interrupted before it started", "traceback": []}}
            reply.update(op="result", id=request)
            self.protocol.send(reply)
            return
        try:
            if op == "run":
                reply = self.run(request, message["cell"], message["code"], message.get("writes") or [], message.get("inputs") or {})
            elif op == "run_sql":
                reply = self.run_sql(request, message["cell"], message["code"], message.get("result_variable") or "", message.get("engine") or "")
            elif op == "set_input":
                from notebooks_app.kernel import ui

                widget = ui.registry.get(message.get("widget"))
                try:
                    if widget is None:
                        raise LookupError(f"no input {message.get('widget')!r} in this process")
                    widget.set(message.get("value"))
                    reply = {"status": "success"}
                except (LookupError, ValueError) as exc:  # the cell that makes it runs again instead
                    reply = {"status": "error", "error": {"ename": type(exc).__name__, "evalue": str(exc), "traceback": []}}
            elif op == "run_markdown":
                reply = self.run_markdown(request, message["cell"], message["code"])
            elif op == "forget":
                self.forget(message["cell"])
                reply = {"status": "success"}
            elif op == "files_changed":
                file_reads.link()
                reply = {"status": "success"}
            else:
                reply = {"status": "error", "error": {"ename": "ProtocolError", "evalue": f"unknown op {op!r}", "traceback": []}}
        except KeyboardInterrupt:  # an interrupt that arrived between cells
            reply = {"status": "error", "error": {"ename": "KeyboardInterrupt", "evalue": "interrupted", "traceback": []}}
        self.activity.end()
        reply.update(op="result", id=request)
        self.protocol.send(reply)

    def assist(self, message):
        """`complete` / `inspect`, answered on the command thread, never behind a cell.

        Over the live namespace only while the main thread has no command: it then waits for
        one, and only this thread gives it one, so no cell runs until the answer is sent.
        While a cell runs or waits, a static answer (no namespace) marked `busy`."""
        from notebooks_app.kernel import completion

        idle = self.activity.idle_soon()
        op, code, cursor = message.get("op"), message.get("code") or "", message.get("cursor") or 0
        try:
            if op == "inspect":
                reply = completion.python_inspection(code, cursor, self.namespace) if idle else {}
            elif message.get("language") == "sql":
                tables = dict(message.get("tables") or {})
                if idle:
                    if not message.get("engine") and self._sql is not None:
                        tables.update(self._sql.tables())
                    tables.update(completion.frame_tables(self.namespace))
                reply = completion.sql_completions(code, cursor, tables)
            elif idle:
                reply = completion.python_completions(code, cursor, self.namespace)
            else:
                reply = completion.static_completions(code, cursor)
            reply["status"] = "success"
        except Exception as exc:  # noqa: BLE001 - jedi failing on odd code or values answers nothing
            reply = {"status": "error", "error": {"ename": type(exc).__name__, "evalue": str(exc)[:500], "traceback": []}}
        if not idle:
            reply["busy"] = True
        reply.update(op="result", id=message.get("id"))
        self.protocol.send(reply)

    @property
    def sql(self):
        """The embedded DuckDB (over this namespace's DataFrames)."""
        if self._sql is None:
            from notebooks_app.kernel.sql import DuckDbEngine

            self._sql = DuckDbEngine()
        return self._sql

    def ask_parent(self, request, query, params):
        """Send a bound query to the trusted side and wait for its answer (interruptible)."""
        return self._ask({"op": "query", "id": request, "sql": query, "params": params})

    def save_file(self, path, data):
        """A cell's files.save: sent to the trusted side, which stores it; its answer."""
        request = self.activity.current
        if request is None:
            return {"error": "files.save works only while a cell runs"}
        return self._ask({"op": "save_file", "id": request, "path": path, "data": data})

    def _ask(self, message):
        """`message` to the trusted side for the running request; its `query_result` (answer())."""
        self.answers = queue.Queue()
        self.asking = message["id"]
        try:
            self.protocol.send(message)
            return self.answers.get()
        finally:
            self.asking = None

    def answer(self, message):
        """Called on the command thread with a `query_result`; one for an abandoned query is dropped."""
        if message.get("id") == self.asking and self.asking is not None:
            self.answers.put(message)

    def forget(self, cell_id):
        for name in self.names.pop(cell_id, ()):
            if self.owner.get(name) == cell_id:
                del self.owner[name]
                self.namespace.pop(name, None)

    def _bind(self, cell_id, names):
        self.names[cell_id] = set(names)
        for name in names:
            self.owner[name] = cell_id

    def run(self, request, cell_id, code, writes, inputs=None):
        from notebooks_app.kernel import ui

        self.forget(cell_id)
        ui.begin_run(cell_id, inputs)
        filename = f"<cell {cell_id[:8]}>"  # short: tracebacks are read by people
        # The newest name before the run: names the run inserts come after it (O(new names),
        # where a set of the namespace before and after cost O(namespace) a cell).
        newest = next(reversed(self.namespace), None)
        self.capture.begin(request)
        outputs, error = [], None
        try:
            linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
            body, last = self._compiled(cell_id, code, filename)
            self.activity.start_executing()
            file_reads.begin()
            try:
                self._exec(body)
                value = self._exec(last) if last is not None else None
            finally:
                self.activity.stop_executing()
            widgets = [w for w in ui.end_run() if w is not value]
            outputs = [{"mimeType": ui.UI_MIME, "data": w.definition()} for w in widgets] + self.outputs.cap(display.shown_charts()) + self._outputs(value)
        except BaseException as exc:  # noqa: BLE001 - every failure of user code is the cell's error
            ui.end_run()
            error = self._error(exc)
            outputs = self.outputs.cap(display.shown_charts()) + self.outputs.open_figures()
        finally:
            self.capture.drain()
            bound = self._inserted_after(newest) | {name for name in writes if name in self.namespace}
            self._bind(cell_id, bound)
            files = file_reads.end()
        return {"status": "error" if error else "success", "outputs": outputs, "error": error, "files": files}

    def run_sql(self, request, cell_id, code, result_variable, engine=""):
        from notebooks_app.kernel.sql import SqlError, load, run_external

        self.forget(cell_id)
        self.capture.begin(request)
        outputs, error = [], None
        try:
            # The engine's imports and connection before the cell is interruptible: an
            # interrupt meanwhile waits for start_executing (Activity.interrupt_pending).
            load(engine)
            if not engine:
                self.sql.connect()
            self.activity.start_executing(sql=True)
            try:
                if engine:
                    ask = lambda query, params: self.ask_parent(request, query, params)  # noqa: E731
                    frame, outputs = run_external(engine, code, self.namespace, ask, row_cap=self.sql_row_cap)
                else:
                    frame, outputs = self.sql.execute(code, self.namespace, row_cap=self.sql_row_cap)
            finally:
                self.activity.stop_executing()
            if result_variable and frame is not None:
                self.namespace[result_variable] = frame
                self._bind(cell_id, [result_variable])
        except SqlError as exc:
            error = {"ename": exc.ename, "evalue": exc.evalue, "traceback": []}
        except KeyboardInterrupt:
            error = {"ename": "KeyboardInterrupt", "evalue": "the query was cancelled", "traceback": []}
        except Exception as exc:  # noqa: BLE001 - a driver failure is the cell's error
            error = {"ename": type(exc).__name__, "evalue": str(exc), "traceback": []}
        finally:
            self.capture.drain()
        return {"status": "error" if error else "success", "outputs": self.outputs.cap(outputs), "error": error}

    def run_markdown(self, request, cell_id, code):
        """A markdown cell's fields formatted with this namespace's values (escaped as text);
        the trusted side renders the markdown.  A missing name is a NameError, as in Python."""
        from notebooks_app.kernel.markdown import escape_value, segments

        self.capture.begin(request)
        parts, error = [], None
        try:
            self.activity.start_executing()
            try:
                for kind, value in segments(code):
                    parts.append(value if kind == "text" else escape_value(self._field(*value[:3])))
            finally:
                self.activity.stop_executing()
        except BaseException as exc:  # noqa: BLE001 - a bad field is the cell's error
            error = self._error(exc)
        finally:
            self.capture.drain()
        if error:
            return {"status": "error", "outputs": [], "error": error}
        return {"status": "success", "outputs": [{"mimeType": "text/markdown", "data": "".join(parts)}], "error": None}

    def _field(self, name, steps, spec):
        if name not in self.namespace:
            raise NameError(f"name '{name}' is not defined (used as {{{name}}} in this markdown cell)")
        from notebooks_app.kernel.markdown import follow

        return format(follow(self.namespace[name], steps), spec or "")

    def interrupt(self, requests=None):
        """Called on the command thread; `requests`: the parent's pending request ids.  Those
        not started are cancelled; the running cell is stopped only when it is one of them
        (Activity.interrupt): SIGINT to the main thread, and a cancel of its DuckDB query."""
        if not self.activity.interrupt(requests):
            return
        if self.activity.sql_running and self._sql is not None:
            self._sql.interrupt()
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    # --- helpers -------------------------------------------------------------------------
    def _inserted_after(self, newest):
        """Names inserted into the namespace after `newest` (a name deleted and bound again
        counts).  If `newest` itself went, every name no other cell bound."""
        inserted = set()
        for name in reversed(self.namespace):
            if name == newest:
                return inserted
            inserted.add(name)
        return {name for name in self.namespace if name not in self.owner and not name.startswith("__")}

    def _compiled(self, cell_id, code, filename):
        """The cell's code compiled, reused while its code is the same (a cascade reruns
        unchanged cells: parsing and compiling twice was a third of a trivial cell's time)."""
        cached = self.compiled.get(cell_id)
        if cached is not None and cached[0] == code and cached[1] == filename:
            return cached[2], cached[3]
        body, last = self._compile(code, filename)
        self.compiled[cell_id] = (code, filename, body, last)
        return body, last

    def _compile(self, code, filename):
        flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        tree = ast.parse(code, filename, "exec")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr) and not _silenced(code, tree.body[-1]):
            last = compile(ast.Expression(tree.body.pop().value), filename, "eval", flags=flags)
        return compile(tree, filename, "exec", flags=flags), last

    def _exec(self, code):
        result = eval(code, self.namespace)  # noqa: S307 - running the user's cell is the product
        if code.co_flags & 0x80:  # CO_COROUTINE: top-level await
            import asyncio  # here, not at start-up: its import is half the child's start (docs/performance.md)

            if asyncio.iscoroutine(result):
                if self._loop is None:
                    self._loop = asyncio.new_event_loop()
                result = self._loop.run_until_complete(result)
        return result

    def _outputs(self, value):
        # One place a cell's value becomes its outputs: a cell that replaces it on this object
        # forges outputs, which the trusted side must refuse (tests/test_sandbox.py).
        return self.outputs.of(value)

    def _error(self, exc):
        # The user's frames only: never the kernel's own (the exec call, the SIGINT handler, outputs).
        frames = [frame for frame in traceback.extract_tb(exc.__traceback__) if frame.filename not in KERNEL_FILES]
        lines = traceback.format_list(frames) if frames else []
        if lines:
            lines.insert(0, "Traceback (most recent call last):\n")
        evalue = str(exc)
        if failed_for_no_network(exc):
            evalue = f"{NO_NETWORK} ({evalue})"
            exc.add_note(NO_NETWORK)
        if lines:
            # Without frames of the user's (a markdown field, say) the line would only repeat
            # the error's title, which the page shows already.
            lines += traceback.format_exception_only(type(exc), exc)
        if isinstance(exc, KeyboardInterrupt):
            evalue = evalue or "interrupted"
        return {"ename": type(exc).__name__, "evalue": evalue, "traceback": [line.rstrip("\n") for line in "".join(lines).splitlines()]}


NO_NETWORK = (
    "this notebook has no network: its cells cannot connect to other machines "
    "(an operator enables outbound connections with KERNEL_NETWORK=outbound, docs/security.md)"
)
_NO_ROUTE = {errno.ENETUNREACH, errno.EHOSTUNREACH}


def failed_for_no_network(exc):
    """Whether `exc` is, or was caused by, a failure to reach another machine while the sandbox
    has no network (the runner sets NOTEBOOK_NETWORK=none): a name that does not resolve
    (socket.gaierror), or no route.  Followed through `__cause__` / `__context__`, since
    urllib, requests and httpx wrap it in their own errors."""
    if os.environ.get("NOTEBOOK_NETWORK") != "none":
        return False
    import socket

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, socket.gaierror) or (isinstance(exc, OSError) and exc.errno in _NO_ROUTE):
            return True
        reason = getattr(exc, "reason", None)  # urllib's URLError keeps the OSError there
        exc = exc.__cause__ or exc.__context__ or (reason if isinstance(reason, BaseException) else None)
    return False


RLIMITS = (
    # (environment variable, resource, multiplier)
    ("NOTEBOOK_MEMORY_LIMIT_MB", resource.RLIMIT_AS, 1024 * 1024),
    ("NOTEBOOK_FILE_SIZE_LIMIT_MB", resource.RLIMIT_FSIZE, 1024 * 1024),
    ("NOTEBOOK_PROCESS_LIMIT", resource.RLIMIT_NPROC, 1),
    ("NOTEBOOK_OPEN_FILES_LIMIT", resource.RLIMIT_NOFILE, 1),
)


def set_limits():
    """Soft and hard limits both: user code cannot raise them again."""
    for variable, kind, unit in RLIMITS:
        value = int(os.environ.get(variable, "0") or 0)
        if value <= 0:
            continue
        _, hard = resource.getrlimit(kind)
        limit = value * unit if hard == resource.RLIM_INFINITY else min(value * unit, hard)
        resource.setrlimit(kind, (limit, limit))


def set_environment(variables):
    """The notebook's secrets as environment variables of this process and of what it starts
    (`os.environ["OPENAI_API_KEY"]`). The runner sends them before any command, so they are set
    before any cell runs; they come down the protocol pipe, never on a command line."""
    for name, value in (variables or {}).items():
        os.environ[str(name)] = str(value)


def _silenced(code, statement):
    """Whether the cell's last expression ends with `;`, which hides its value (as in Jupyter)."""
    line = code.split("\n")[statement.end_lineno - 1]
    rest = line.encode("utf-8")[statement.end_col_offset:].decode("utf-8", errors="replace")
    return rest.lstrip().startswith(";")


MODULE = "reactive_notebook"  # what cells import: `from reactive_notebook import ui, files`
ALIAS = "notebook"  # the old name, kept while no installed package is called that (Jupyter's is)


def install_notebook_module():
    """`from reactive_notebook import ui, files` in cells: the inputs of kernel/ui.py and the
    notebook's files (file_reads.save).  `notebook` is the same module while it does not shadow a
    package of that name the notebook's environment holds (Jupyter's `notebook`, which its own
    requirements may pull in): then that package wins and only the new name works."""
    import importlib.util
    import types

    from notebooks_app.kernel import ui

    package = types.ModuleType(MODULE, "What a notebook's cells can import from the notebook itself (docs/frontend.md#inputs).")
    package.ui = ui
    files = types.ModuleType(f"{MODULE}.files", "The notebook's files: save(path, data) stores one for everyone (docs/notebook-files.md).")
    files.save = file_reads.save
    package.files = files
    package.__path__ = []
    names = [MODULE]
    if importlib.util.find_spec(ALIAS) is None:
        names.append(ALIAS)
    for name in names:
        sys.modules[name] = package
        sys.modules[f"{name}.ui"] = ui
        sys.modules[f"{name}.files"] = files


def warm_up_completion():
    """Load jedi (1-2 s of CPU) once the kernel has been idle a moment, so the first completion
    is quick. On the main thread, so no cell's imports run beside it (in a thread of its own it
    raced them: `dataclasses` reads sys.modules["typing"] without the import lock and found it
    half made). A completion asked meanwhile waits for it on completion's lock."""
    from notebooks_app.kernel import completion

    try:
        completion.warm()
    except Exception:  # noqa: BLE001 - completion then loads jedi on first use
        pass


def add_notebook_environment():
    """The notebook's own packages (kernel/environments.py), read-only, after the server's: a
    site directory, so the `.pth` files of its wheels are honoured."""
    import site

    directory = os.environ.get("NOTEBOOK_ENVIRONMENT", "")
    if directory and os.path.isdir(directory):
        site.addsitedir(directory)


def main():
    add_notebook_environment()
    file_reads.install()
    egress_forwarder.install()
    install_notebook_module()
    display.install()
    output_cap = int(os.environ.get("NOTEBOOK_OUTPUT_CAP", "1000000"))
    sql_row_cap = int(os.environ.get("NOTEBOOK_SQL_ROW_CAP", "200"))
    set_limits()

    protocol = Protocol(os.dup(0), os.dup(1))
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    capture = Capture(protocol, output_cap)
    image_cap = int(os.environ.get("NOTEBOOK_IMAGE_CAP", str(16 << 20)))
    kernel = Kernel(protocol, capture, output_cap, sql_row_cap, image_cap)
    file_reads.install_sender(kernel.save_file)
    display.install_display(kernel.outputs.value_outputs)

    def on_sigint(signum, frame):
        if kernel.activity.executing:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    commands = queue.Queue()

    def read_commands():
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            for message in protocol.messages():
                if message.get("op") == "environment":
                    set_environment(message.get("variables"))
                elif message.get("op") == "interrupt":
                    kernel.interrupt(message.get("requests"))
                elif message.get("op") == "query_result":
                    kernel.answer(message)
                elif message.get("op") in ("complete", "inspect"):
                    kernel.assist(message)
                else:
                    kernel.activity.queued()
                    commands.put(message)
        finally:
            os._exit(0)  # the parent went away: nothing left to serve

    threading.Thread(target=read_commands, name="commands", daemon=True).start()
    protocol.send({"op": "ready", "pid": os.getpid()})
    warmed = False
    while True:
        try:
            if warmed:
                message = commands.get()
            else:
                try:
                    message = commands.get(timeout=WARM_UP_AFTER_IDLE)
                except queue.Empty:
                    warmed = True
                    warm_up_completion()
                    continue
            try:
                kernel.handle(message)
            finally:
                kernel.activity.done()
        except KeyboardInterrupt:  # arrived just after a cell finished
            continue


if __name__ == "__main__":
    main()
