"""Shared fixtures: the four roles, a notebook, the real kernel worker process, WebSocket clients.

Tests run on the PostgreSQL and Redis that scripts/test started (DATABASE_URL,
REDIS_URL); the kernel worker is a real `manage.py runworker kernel` process on
the same test database.
"""
import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import connections
from django.test import Client

from notebookproject.postgresql import POSTGRESQL_ENGINES

ROOT = Path(__file__).resolve().parent.parent
EVENT_TIMEOUT = 20


def pytest_collection_modifyitems(items):
    """Browser tests on Playwright's sync API last: it keeps an event loop on the main thread
    from its first use to the end of the session, which the async tests (async Playwright
    ones included) cannot share."""
    def uses_sync_playwright(item):
        is_async = asyncio.iscoroutinefunction(getattr(item, "function", None))
        return item.get_closest_marker("browser") is not None and not is_async

    items.sort(key=uses_sync_playwright)


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # PBKDF2's deliberate slowness is not under test; it would dominate the suite's time.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def users(django_user_model):
    """alice owns, bob edits, carol views, dave is a stranger."""
    make = django_user_model.objects.create_user
    return {
        "alice": make("alice", password="alice-pass-123"),
        "bob": make("bob", password="bob-pass-123"),
        "carol": make("carol", password="carol-pass-123"),
        "dave": make("dave", password="dave-pass-123"),
    }


@pytest.fixture
def notebook(users):
    from notebooks_app.models import Notebook
    from notebooks_app.permissions import ROLE_EDITOR, ROLE_VIEWER

    nb = Notebook.objects.create(name="Shared analysis", owner=users["alice"])
    nb.memberships.create(user=users["bob"], role=ROLE_EDITOR)
    nb.memberships.create(user=users["carol"], role=ROLE_VIEWER)
    return nb


def database_url_for_tests():
    """DATABASE_URL pointing at the test database pytest-django created."""
    db = settings.DATABASES["default"]
    if db["ENGINE"] not in POSTGRESQL_ENGINES:
        raise RuntimeError("these tests need PostgreSQL (run them with scripts/test)")
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{db['USER']}{password}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


class WorkerProcess:
    """A real kernel worker process (`manage.py runworker ...`), restartable by tests."""

    def __init__(self, channels=("kernel",), extra_env=None):
        self.channels = list(channels)
        self.extra_env = extra_env or {}
        self.proc = None
        self.log_path = ROOT / "var" / f"worker-{os.getpid()}-{'-'.join(self.channels)}.log"

    def start(self):
        from tests.live import start_worker

        self.log_path.parent.mkdir(exist_ok=True)
        env = dict(os.environ, DATABASE_URL=database_url_for_tests(), KERNEL_TIME_LIMIT="20", **self.extra_env)
        self.proc = start_worker(self.channels, env, self.log_path)  # returns once it listens
        return self

    def kill(self, sig=signal.SIGKILL):
        """Stop the worker and its runner subprocesses (its whole process group)."""
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            self.proc.wait(20)

    def restart(self):
        self.kill()
        return self.start()


@pytest.fixture(scope="session")
def kernel_worker(django_db_setup, django_db_blocker):
    worker = WorkerProcess().start()
    yield worker
    worker.kill(signal.SIGTERM)


@pytest.fixture
def live_kernel(kernel_worker, transactional_db):
    """The real worker, with committed (transactional) test data it can read."""
    if kernel_worker.proc.poll() is not None:
        kernel_worker.start()
    return kernel_worker


# --- the live server of the browser tests ---------------------------------------------------

BROWSER_PASSWORDS = {"alice": "alice-pass-123", "bob": "bob-pass-123", "carol": "carol-pass-123"}


@pytest.fixture(scope="session")
def browser_server(django_db_setup, django_db_blocker):
    """One Daphne (the production shape: DEBUG off, WhiteNoise) for every browser test of the
    session, sync and async: each test brings its own users and notebook (`browser_passwords`)."""
    from tests.live import Server

    server = Server(f"browser-daphne-{os.getpid()}.log").start()
    yield server
    server.stop()


@pytest.fixture
def browser_passwords(users):
    """The users' passwords as the live server checks them: its settings hash with PBKDF2, not
    the tests' MD5 (few iterations keep it cheap; Daphne upgrades them at login)."""
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    hasher = PBKDF2PasswordHasher()
    for username, password in BROWSER_PASSWORDS.items():
        users[username].password = hasher.encode(password, hasher.salt(), iterations=1000)
        users[username].save(update_fields=["password"])
    return BROWSER_PASSWORDS


@pytest.fixture(autouse=True)
def _close_thread_connections(request):
    """ORM calls from consumers run on asgiref's thread; close its connections after each test."""
    yield
    if "transactional_db" in request.fixturenames or "live_kernel" in request.fixturenames:
        from asgiref.sync import async_to_sync

        async_to_sync(database_sync_to_async(connections.close_all))()


def session_cookie(user):
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


class NotebookClient:
    """A WebSocket client of one notebook that keeps state the way the page does."""

    def __init__(self, notebook_id, cookie, application, query=""):
        self.notebook_id = str(notebook_id)
        headers = [(b"origin", b"http://testserver"), (b"host", b"testserver")]
        if cookie:
            headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()))
        self.comm = WebsocketCommunicator(application, f"/ws/notebooks/{self.notebook_id}/{query}", headers=headers)
        self.frames = 0  # WebSocket frames received
        self.events = []  # every notebook event with a seq, in arrival order
        self.replies = []  # errors and other frames without seq
        self.state = None
        self.seq = None
        self.close_code = None
        # As the page does: a gap in `seq` sends `sync` and skips events until the state.
        # Off by default, so that any other test fails on a gap the server should not make.
        self.resync_on_gap = False
        self.resyncs = 0
        self._syncing = False
        self._drop = None  # predicate: the next matching event is lost on its way here
        self._partial_state = None  # a chunked notebook_state still waiting for its chunks
        self.presences = []  # presence frames (no seq), in arrival order
        self.watch_presence = False  # True: next()/wait_for() also return presence frames
        self.early = []  # early announcements (no seq; docs/protocol.md), in arrival order
        self.watch_early = False  # True: next()/wait_for() also return them

    async def connect(self):
        connected, _ = await self.comm.connect(timeout=EVENT_TIMEOUT)
        assert connected
        return self

    async def send(self, **message):
        await self.comm.send_json_to(message)

    async def _receive_frame(self, timeout):
        # receive_output() cancels the application when it times out; waiting with
        # receive_nothing() first keeps the connection open across a quiet spell.
        if await self.comm.receive_nothing(timeout, interval=0.005):
            raise asyncio.TimeoutError
        message = await self.comm.receive_output(EVENT_TIMEOUT)
        self.frames += 1
        if message["type"] == "websocket.close":
            self.close_code = message.get("code")
            raise ConnectionError(f"closed with {self.close_code}")
        self.largest_frame = max(getattr(self, "largest_frame", 0), len(message["text"].encode()))
        return json.loads(message["text"])

    def _apply(self, frame):
        frames = frame["events"] if frame.get("type") == "batch" else [frame]
        out = []
        for event in frames:
            if event["type"] == "presence":  # who is where: kept apart unless a test watches it
                self.presences.append(event)
                if self.watch_presence:
                    out.append(event)
                continue
            if event["type"] == "notebook_state" and event.get("chunks", 1) > 1:
                self._partial_state = event  # its other cells follow in notebook_state_chunk frames
                continue
            if event["type"] == "notebook_state_chunk":
                partial = self._partial_state
                assert partial is not None and event["stateSeq"] == partial["seq"] and event["chunks"] == partial["chunks"], event
                partial["notebook"]["cells"].extend(event["cells"])
                partial["received"] = partial.get("received", 1) + 1
                if partial["received"] < partial["chunks"]:
                    continue
                event, self._partial_state = partial, None
                self.state_chunks = partial["chunks"]
            if event["type"] == "notebook_state":
                self._syncing = False
                self.state = {c["id"]: c for c in event["notebook"]["cells"]}
                self.order = [c["id"] for c in event["notebook"]["cells"]]
                self.seq = event["seq"]
                out.append(event)
                continue
            if event.get("early"):
                # An early announcement (docs/protocol.md): its change comes again in seq order,
                # which is what tests fold and wait for unless they watch these.
                self.early.append(event)
                if self.watch_early:
                    out.append(event)
                continue
            if "seq" not in event:
                self.replies.append(event)
                out.append(event)
                continue
            if self._drop is not None and self._drop(event):
                self._drop = None
                continue
            if self._syncing or (self.seq is not None and event["seq"] <= self.seq):
                continue  # the coming state holds it, or the one we hold already does
            if self.resync_on_gap and self.seq is not None and event["seq"] != self.seq + 1:
                self.resyncs += 1
                self._syncing = True
                continue
            assert self.seq is None or event["seq"] == self.seq + 1, f"gap: {self.seq} -> {event['seq']}"
            self.seq = event["seq"]
            self.events.append(event)
            self._fold(event)
            out.append(event)
        return out

    def _fold(self, event):
        if self.state is None:
            return
        kind, cell_id = event["type"], event.get("cellId")
        if kind == "cell_created":
            self.state[cell_id] = event["cell"]
            self.order.insert(event["index"], cell_id)
        elif kind == "cell_deleted":
            self.state.pop(cell_id, None)
            self.order.remove(cell_id)
        elif kind == "cell_moved":
            self.order.remove(cell_id)
            self.order.insert(event["index"], cell_id)
        elif kind == "cell_updated":
            self.state[cell_id].update(code=event["code"], reads=event["reads"], writes=event["writes"], resultVariable=event["resultVariable"])
        elif kind == "cell_status":
            cell = self.state[cell_id]
            cell["status"] = event["status"]
            if event["status"] in ("running", "blocked"):
                cell.update(outputs=[], stdout="", error=None)
            if event["status"] in ("queued", "running"):  # a new run: by whom, if anyone asked
                if "by" in event:
                    cell["runBy"] = event["by"]
                else:
                    cell.pop("runBy", None)
            if "error" in event:
                cell["error"] = event["error"]
        elif kind == "cell_output":
            self.state[cell_id]["outputs"] = event["outputs"]
        elif kind == "input_changed":
            for output in self.state[cell_id]["outputs"]:
                if isinstance(output.get("data"), dict) and output["data"].get("id") == event["widgetId"]:
                    output["data"]["value"] = event["value"]
        elif kind == "cell_stdout":
            self.state[cell_id]["stdout"] += event["text"]
        elif kind == "cell_error":
            self.state[cell_id]["error"] = event["error"]

    async def next(self, timeout=EVENT_TIMEOUT):
        """The next event (or reply) in order."""
        while True:
            pending = getattr(self, "_pending", [])
            if pending:
                return pending.pop(0)
            was_syncing = self._syncing
            self._pending = self._apply(await self._receive_frame(timeout))
            if self._syncing and not was_syncing:
                await self.send(type="sync")

    def drop_next(self, predicate):
        """Lose the next event matching `predicate`, as a socket whose server lost its Redis would."""
        self._drop = predicate

    async def wait_for(self, predicate, timeout=EVENT_TIMEOUT, what="event"):
        """Events up to and including the first one matching `predicate`."""
        seen = []
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out waiting for {what}; saw {[e.get('type') for e in seen][-20:]}")
            try:
                event = await self.next(remaining)
            except asyncio.TimeoutError:
                raise AssertionError(f"timed out waiting for {what}; saw {seen[-10:]}") from None
            seen.append(event)
            if predicate(event):
                return seen

    async def wait_state(self):
        return await self.wait_for(lambda e: e["type"] == "notebook_state", what="notebook_state")

    async def wait_status(self, cell_id, status, timeout=EVENT_TIMEOUT):
        return await self.wait_for(lambda e: e["type"] == "cell_status" and e.get("cellId") == cell_id and e["status"] == status, timeout, f"{cell_id} {status}")

    async def request(self, timeout=EVENT_TIMEOUT, **message):
        """Send a message with a fresh requestId; return the reply/event that carries it."""
        self._rid = getattr(self, "_rid", 0) + 1
        rid = f"{id(self):x}-r{self._rid}"  # unique across clients: every client sees every requestId
        await self.send(requestId=rid, **message)
        seen = await self.wait_for(lambda e: e.get("requestId") == rid, timeout, f"reply to {message['type']}")
        return seen[-1]

    async def expect_silence(self, seconds=0.5):
        """Nothing but presence (people coming and going) and early announcements (which may
        come just after the same change in seq order) arrives for `seconds`."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            if await self.comm.receive_nothing(remaining, interval=0.005):
                return
            message = await self.comm.receive_output(EVENT_TIMEOUT)
            frame = json.loads(message.get("text") or "{}")
            events = frame["events"] if frame.get("type") == "batch" else [frame]
            self._apply(frame)
            assert all(e.get("type") == "presence" or e.get("early") for e in events), f"expected no message, got {frame}"
            self.presences.extend(events)

    async def close(self):
        await self.comm.disconnect()


@pytest.fixture
async def ws(live_kernel):
    """Factory: `await ws(user, notebook)` -> a connected NotebookClient that has its state."""
    from notebookproject.asgi import application

    clients = []

    async def connect(user, notebook, *, wait_state=True, query=""):
        client = NotebookClient(notebook.pk, await database_sync_to_async(session_cookie)(user) if user else None, application, query)
        await client.connect()
        clients.append(client)
        if wait_state:
            await client.wait_state()
        return client

    yield connect
    from notebooks_app import edit_lane

    try:
        for client in clients:
            try:
                await client.close()
            except (Exception, asyncio.CancelledError):  # already closed, or the test timed out under it
                pass
    finally:
        # This test's event loop's connection, always: left open, the test database cannot be
        # dropped and every later test finds the last one's users.
        await edit_lane.close()


# --- helpers shared by the protocol, worker and SQL tests ---------------------------------


async def eventually(check, timeout=EVENT_TIMEOUT, what="condition"):
    """Await until `check()` (sync or async) returns something truthy; return it."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@database_sync_to_async
def db_cells(notebook):
    from notebooks_app.models import Cell

    return list(Cell.objects.filter(notebook=notebook).order_by("position").values_list("id", flat=True))


@database_sync_to_async
def db_cell(cell_id):
    from notebooks_app.models import Cell

    return Cell.objects.get(pk=cell_id)


@database_sync_to_async
def revision(notebook):
    from notebooks_app.models import Notebook

    return Notebook.objects.get(pk=notebook.pk).revision


async def create(client, code="", **extra):
    """Create a cell through `client`; its id once the cell_created event is back."""
    reply = await client.request(type="create_cell", code=code, **extra)
    assert reply["type"] == "cell_created", reply
    return reply["cellId"]


async def run_and_wait(client, cell_id, final=("success", "error")):
    """Run a cell; the events up to its final status."""
    await client.send(type="run_cell", cellId=cell_id)
    return await client.wait_for(lambda e: e["type"] == "cell_status" and e["cellId"] == cell_id and e["status"] in final)


def text_output(client, cell_id):
    outputs = client.state[cell_id]["outputs"]
    return next((o["data"] for o in outputs if o["mimeType"] == "text/plain"), None)


# --- notebooks' own packages: an offline index of tiny wheels (tests/package_index.py) -------------
@pytest.fixture(scope="session", autouse=True)
def package_index(tmp_path_factory):
    """Every process the tests start (workers, Daphne) installs packages from this index, into
    environments of the session's own: no test reaches the real index unless it asks to."""
    from tests.package_index import PackageIndex

    index = PackageIndex(tmp_path_factory.mktemp("package-index"))
    saved = {name: os.environ.get(name) for name in ("PACKAGE_INDEX_URL", "ENVIRONMENTS_DIR")}
    os.environ["PACKAGE_INDEX_URL"] = index.url
    os.environ["ENVIRONMENTS_DIR"] = str(tmp_path_factory.mktemp("environments"))
    from django.conf import settings

    saved_settings = (settings.PACKAGE_INDEX_URL, settings.ENVIRONMENTS_DIR)
    settings.PACKAGE_INDEX_URL, settings.ENVIRONMENTS_DIR = os.environ["PACKAGE_INDEX_URL"], os.environ["ENVIRONMENTS_DIR"]
    yield index
    settings.PACKAGE_INDEX_URL, settings.ENVIRONMENTS_DIR = saved_settings
    index.stop()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
