"""Shared fixtures: the four roles, a notebook, the real kernel worker process, WebSocket clients.

Tests run on the PostgreSQL and Redis that scripts/test started (DATABASE_URL,
REDIS_URL); the kernel worker is a real `manage.py runworker kernel` process on
the same test database.
"""
import asyncio
import contextlib
import os
import signal
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import connections
from django.test import Client

from notebookproject.postgresql import POSTGRESQL_ENGINES
from tests.client import NotebookClient

ROOT = Path(__file__).resolve().parent.parent

FIRST_XDIST_REDIS_DB = 8  # without TEST_REDIS_URLS, xdist worker gwN uses Redis database 8 + N (test_bench.py uses 3 to 7)


def _redis_of_this_xdist_worker():
    """Under pytest-xdist (the fast tier runs on several workers, scripts/run_tests.py) each
    worker process has a test database of its own (pytest-django) and starts a kernel worker of
    its own on it; its Redis must be its own too, or one kernel worker would read the other's
    kernel channels and find none of its notebooks. Django is set up before this conftest is
    imported but no channel layer is made yet: REDIS_URL (read by every process the tests
    start) and the settings the layers are made from are pointed at gwN's Redis server, the Nth
    of TEST_REDIS_URLS (scripts/run_tests.py starts one per worker). Given only REDIS_URL, at
    its database FIRST_XDIST_REDIS_DB + N: enough for the kernel channels, but pub/sub and
    Redis's command counts (tests/test_edit_path.py) are the whole server's."""
    from urllib.parse import urlsplit, urlunsplit

    worker, url = os.environ.get("PYTEST_XDIST_WORKER", ""), os.environ.get("REDIS_URL")
    if not worker.startswith("gw") or not url:
        return
    index, own = int(worker[2:]), os.environ.get("TEST_REDIS_URLS", "").split()
    url = own[index] if index < len(own) else urlunsplit(urlsplit(url)._replace(path=f"/{FIRST_XDIST_REDIS_DB + index}"))
    os.environ["REDIS_URL"] = settings.REDIS_URL = url
    for layer in settings.CHANNEL_LAYERS.values():
        hosts = layer.get("CONFIG", {}).get("hosts")
        if hosts:
            # (a Sentinel's hosts, REDIS_SENTINELS, name no address: left as they are)
            layer["CONFIG"]["hosts"] = [url if isinstance(host, str) else dict(host, address=url) if "address" in host else host for host in hosts]
    from channels.layers import channel_layers

    channel_layers.backends.clear()


_redis_of_this_xdist_worker()


def _kernels_not_below_the_other_xdist_workers():
    """Under pytest-xdist the execution processes the tests start run at the servers' CPU
    priority (KERNEL_NICE=0) unless KERNEL_NICE is given. Its default, 10 (an autogroup nice of
    10 too: kernel/lifecycle.py), puts a deployment's kernels behind its own server; here they
    were behind another xdist worker's Chromium, Daphnes and benchmarks as well, and what the
    product times out loses: a completion falls back to the static answer after 5 s
    (runner.ASSIST_TIMEOUT) while jedi loads. tests/test_completion.py failed so with two
    CPU-bound processes beside it, and passed with KERNEL_NICE=0. The priority itself is tested
    with a worker of its own (test_lifecycle.py, KERNEL_NICE=7) and measured by
    bench/lifecycle.py, which set it for their workers."""
    if os.environ.get("PYTEST_XDIST_WORKER", "").startswith("gw") and "KERNEL_NICE" not in os.environ:
        os.environ["KERNEL_NICE"] = "0"
        settings.KERNEL_NICE = 0


_kernels_not_below_the_other_xdist_workers()


# The modules that take longest, in seconds (setup and teardown included) on one of 2 pytest-xdist
# workers on 2 cores. --dist loadfile hands whole modules to the workers in collection order
# (scripts/run_tests.py asks it not to reorder them), so these go out first, the longest first:
# a long module handed out last would leave the other workers idle while it runs.
MODULE_SECONDS = {
    "test_bench.py": 293, "test_browser.py": 109, "test_run_script.py": 104, "test_faults.py": 72,
    "test_fleet.py": 57, "test_jupyter_corpus.py": 57, "test_lifecycle.py": 52, "test_browser_big.py": 44,
    "test_fanout.py": 40, "test_protocol.py": 39, "test_scaleout.py": 35, "test_browser_files.py": 34,
    "test_sql.py": 31, "test_browser_papercuts.py": 30, "test_browser_coedit.py": 27,
    "test_browser_history.py": 26, "test_browser_charts.py": 25, "test_browser_lifecycle.py": 25,
    "test_browser_packages.py": 24, "test_convergence.py": 24, "test_browser_theme.py": 23,
    "test_browser_inputs.py": 23, "test_browser_keys.py": 22, "test_browser_completion.py": 17,
    "test_charts.py": 15, "test_browser_resync.py": 14, "test_api.py": 14, "test_sizes.py": 13,
    "test_inputs.py": 12, "test_sandbox.py": 11, "test_browser_api.py": 10,
}


def pytest_collection_modifyitems(items):
    """The longest modules first (MODULE_SECONDS), the others in their order; a module's tests
    stay together and in order (a stable sort)."""
    items.sort(key=lambda item: -MODULE_SECONDS.get(item.path.name, 0))


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # PBKDF2's deliberate slowness is not under test; it would dominate the suite's time.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(scope="session", autouse=True)
def _flush_by_delete():
    """A transactional test ends with Django's flush: a TRUNCATE of every table (new files for
    each), then post_migrate to make the content types and permissions again; together most of
    the test's teardown. Here it DELETEs the rows of every other table, a fraction of the time,
    and the rows migrate made stay, so nothing needs making again; after its commit the kernel
    worker forgets the notebooks deleted (forget_notebooks). Django's foreign keys are
    DEFERRABLE INITIALLY DEFERRED on PostgreSQL: checked at the flush's commit, when every
    table that refers to another is empty.

    The kernel worker may still be writing the test's notebook then (it hears of the flush only
    after it): its UPDATE of the cells and these DELETEs lock rows in different orders, and
    PostgreSQL ends a deadlock by failing one of the two transactions. The flush's is made again
    (a warning says so), as PostgreSQL's documentation advises for a deadlock; left failed, every
    row would stay and the next test would find the users it makes there."""
    import warnings

    from django.core.management.commands import flush
    from django.db import OperationalError
    from django.db.backends.postgresql.operations import DatabaseOperations
    from psycopg.errors import DeadlockDetected

    # And the kernel fleet's leases and worker records: the session's worker holds its shards
    # across tests, as a deployment's workers do across requests (kernel/fleet.py).
    kept = {"django_content_type", "auth_permission", "notebooks_app_kernellease", "notebooks_app_kernelworkerrecord"}
    truncate, post_migrate = DatabaseOperations.sql_flush, flush.emit_post_migrate_signal

    def sql_flush(self, style, tables, *, reset_sequences=False, allow_cascade=False):
        tables = [table for table in tables if table not in kept]
        if reset_sequences or allow_cascade:
            return truncate(self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade)
        return [f"DELETE FROM {self.quote_name(table)};" for table in tables]

    execute = DatabaseOperations.execute_sql_flush

    def execute_sql_flush(self, sql_list, attempts=3):
        for attempt in range(1, attempts + 1):
            try:
                return execute(self, sql_list)
            except OperationalError as exc:  # rolled back whole: nothing of it stays
                if attempt == attempts or not isinstance(exc.__cause__, DeadlockDetected):
                    raise
                warnings.warn(f"the flush after a test deadlocked, made again: {exc}")

    DatabaseOperations.sql_flush, flush.emit_post_migrate_signal = sql_flush, lambda *args, **kwargs: forget_notebooks()
    DatabaseOperations.execute_sql_flush = execute_sql_flush
    yield
    DatabaseOperations.sql_flush, flush.emit_post_migrate_signal = truncate, post_migrate
    DatabaseOperations.execute_sql_flush = execute


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


@contextlib.contextmanager
def scratch_database(prefix):
    """A database of its own on the test PostgreSQL server (cells may not use the server's
    own), dropped afterwards: (its URL, its name, the admin URL it was made with)."""
    import secrets as tokens
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    parts = urlsplit(database_url_for_tests())
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    name = f"{prefix}_{os.getpid()}_{tokens.token_hex(3)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(parts._replace(path=f"/{name}")), name, admin_url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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
    """The real worker, with committed (transactional) test data it can read; after the test's
    flush it forgets the test's notebooks (forget_notebooks)."""
    if kernel_worker.proc.poll() is not None:
        kernel_worker.start()
    yield kernel_worker
    from notebooks_app.models import Notebook

    _deleted_by_the_flush.extend(Notebook.objects.values_list("pk", flat=True))


_deleted_by_the_flush = []  # notebooks of a test on the live kernel: forget_notebooks() after the flush


def forget_notebooks():
    """After the flush: the worker drops the notebooks it deleted, their sessions and execution
    processes, as it does for a deleted notebook (kernel_client.notebook_deleted_on_commit: after
    the commit, so that closing a session never races the DELETEs). Untold, it would keep each
    process for KERNEL_IDLE_MINUTES (up to KERNEL_MAX_PROCESSES of them, each loading jedi a
    second after its last command): CPU that later tests, and other xdist workers', wait for.
    Not waited for; best effort (a test may have stopped Redis or the worker: a message left in
    Redis names a notebook that no longer exists)."""
    from asgiref.sync import async_to_sync

    from notebooks_app import kernel_client

    async def forget(ids):
        for notebook_id in ids:
            await kernel_client.send(notebook_id, {"type": "kernel.forget_notebook", "notebook": str(notebook_id)})

    ids = list(_deleted_by_the_flush)
    _deleted_by_the_flush.clear()
    if ids:
        try:
            async_to_sync(forget)(ids)
        except Exception:  # noqa: BLE001 - cleanup only
            pass


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
    """The Cookie header of a browser logged in as `user`."""
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


@pytest.fixture
async def ws(live_kernel):
    """Factory: `await ws(user, notebook)` -> a connected NotebookClient that has its state."""
    clients = []

    async def connect(user, notebook, *, wait_state=True, batch=False):
        client = NotebookClient(notebook.pk, await database_sync_to_async(session_cookie)(user) if user else None, batch=batch)
        clients.append(client)
        return await client.connect(wait_state=wait_state)

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


@pytest.fixture(scope="session", autouse=True)
def notebook_media(tmp_path_factory):
    """Notebook files (docs/notebook-files.md) of every process the tests start go to the
    session's own MEDIA_ROOT and mirrors, never the checkout's var/."""
    from django.conf import settings
    from django.core.signals import setting_changed

    root = tmp_path_factory.mktemp("media")
    values = {"MEDIA_ROOT": root / "media", "NOTEBOOK_FILES_CACHE_DIR": root / "mirrors"}
    saved = {name: (os.environ.get(name), getattr(settings, name)) for name in values}
    for name, value in values.items():
        os.environ[name] = str(value)
        setattr(settings, name, value)
        setting_changed.send(sender=None, setting=name, value=value, enter=True)  # the storage forgets its location
    yield root
    for name, (variable, setting) in saved.items():
        if variable is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = variable
        setattr(settings, name, setting)
        setting_changed.send(sender=None, setting=name, value=setting, enter=False)
