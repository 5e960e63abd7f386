"""Settings for the notebook server, read from the environment (12-factor).

Unset DATABASE_URL / REDIS_URL give the embedded default: SQLite in WAL mode,
an in-memory channel layer and the kernel worker inside the server process.
"""
import base64
import os
import re
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name, default=False):
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name, default):
    value = os.environ.get(name)
    if not value:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def env_int(name, default):
    value = os.environ.get(name)
    if not value:
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, not {value!r}") from exc


def env_float(name, default):
    value = os.environ.get(name)
    if not value:
        return default
    try:
        return float(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be a number, not {value!r}") from exc


def env_choice(name, choices, default):
    """The value `choices` maps the variable's (case-insensitive) text to."""
    value = (os.environ.get(name) or default).strip().lower()
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return choices[value]


def key_file(path, random_bytes):
    """A key of `random_bytes` random bytes (url-safe base64) made once into `path` (mode 0600)
    and reused by every later start. Written beside and linked into place, so a process that
    starts at the same moment reads the whole key or makes none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        draft = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(base64.urlsafe_b64encode(os.urandom(random_bytes)).decode() + "\n")
        try:
            os.link(draft, path)
        except FileExistsError:
            pass  # another process made it first: use theirs
        finally:
            draft.unlink()
    return path.read_text().strip()


DEBUG = env_bool("DEBUG", default=False)
# `scripts/run --team`: the embedded default (SQLite, in-process layer and kernel) served to a
# team on one machine, with DEBUG off (README.md, docs/operations.md "One machine for a team").
TEAM_MODE = env_bool("TEAM_MODE", default=False)
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if TEAM_MODE:
        # Made once and kept, so sessions survive restarts and nobody else knows it.
        SECRET_KEY = key_file(Path(os.environ.get("SECRET_KEY_FILE") or BASE_DIR / "var" / "secret.key"), 48)
    elif not DEBUG and os.environ.get("DATABASE_URL"):
        raise ImproperlyConfigured("SECRET_KEY must be set when DATABASE_URL is set and DEBUG is off")
    else:
        # The embedded default on one's own machine (and tests) run with a fixed development key.
        SECRET_KEY = "dev-insecure-notebook-key-set-SECRET_KEY-in-production"


def dev_secrets_key(path):
    """The embedded default's SECRETS_KEY: made once into `path` (mode 0600) and reused, so
    secrets saved in a development database stay readable across restarts. Never used when
    DATABASE_URL is set with DEBUG off: production names its own key."""
    return key_file(path, 32)


# Encrypts notebooks' secrets and database connections at rest (notebooks_app/vault.py): Fernet
# keys, never SECRET_KEY (a leaked SECRET_KEY must not open them, and the two rotate apart).
# Comma-separated while rotating: the first encrypts, every one decrypts (docs/operations.md).
SECRETS_KEY = os.environ.get("SECRETS_KEY", "")
if not SECRETS_KEY:
    if not DEBUG and os.environ.get("DATABASE_URL"):
        raise ImproperlyConfigured("SECRETS_KEY must be set when DATABASE_URL is set and DEBUG is off (docs/operations.md, SECRETS_KEY)")
    SECRETS_KEY = dev_secrets_key(BASE_DIR / "var" / "secrets.key")
for _key in SECRETS_KEY.split(","):
    try:
        _valid = len(base64.urlsafe_b64decode(_key.strip().encode())) == 32
    except ValueError:
        _valid = False
    if not _valid:
        raise ImproperlyConfigured("SECRETS_KEY must be Fernet keys (32 url-safe base64 bytes each, comma-separated): make one with python -c \"import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())\"")


def team_hosts(listen_host):
    """The names a team on the local network reaches this machine by: its host name, its
    fully qualified name, their addresses and the address of its default route, besides the
    address it listens on (unless that is every address). No wildcard: a request naming some
    other host (DNS rebinding) is refused. ALLOWED_HOSTS, when set, is the whole list instead."""
    import socket

    names = {socket.gethostname(), socket.getfqdn()}
    for name in list(names):
        try:
            names.update(socket.gethostbyname_ex(name)[2])
        except OSError:
            pass  # a host name without an address: the names alone
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # a UDP "connect" sends nothing; it picks the route
            names.add(probe.getsockname()[0])
    except OSError:
        pass  # no default route: this machine is reached by name or loopback only
    if listen_host and listen_host not in {"0.0.0.0", "::"}:
        names.add(f"[{listen_host}]" if ":" in listen_host else listen_host)
    names -= set(LOOPBACK_HOSTS)
    return LOOPBACK_HOSTS + sorted(name for name in names if name)


LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "[::1]"]
if TEAM_MODE:
    ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", team_hosts(os.environ.get("TEAM_HOST", "")))
else:
    ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", [*LOOPBACK_HOSTS, "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
# Behind a reverse proxy that terminates TLS (docs/operations.md, "Behind a reverse proxy"): the
# proxy's X-Forwarded-Proto says the request was HTTPS, cookies are sent over HTTPS only, and
# browsers are told to keep to HTTPS (HSTS, one year unless HSTS_SECONDS says otherwise).
BEHIND_TLS_PROXY = env_bool("BEHIND_TLS_PROXY", default=False)
if BEHIND_TLS_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("HSTS_SECONDS", 31_536_000)

INSTALLED_APPS = [
    "daphne",  # makes `runserver` serve ASGI (WebSockets) in the embedded default
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # Before `channels`: its runworker is replaced by the kernel worker's (notebooks_app/
    # management/commands/runworker.py), which reads the channels of the shards it holds.
    "notebooks_app",
    "channels",
    "csp",
    # The REST API under /api/v1/ (notebooks_app/api/, docs/api.md): Django REST Framework, its
    # OpenAPI schema (drf-spectacular) and Swagger UI served from our own static files (sidecar).
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # /static/ served by the app itself, in every shape (docs/operations.md#static-files).
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # A view that cannot reach the database answers 503 (docs/operations.md#faults).
    "notebooks_app.middleware.ServiceUnavailableMiddleware",
]

ROOT_URLCONF = "notebookproject.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "notebooks_app.context_processors.sandbox",
            ],
        },
    },
]
WSGI_APPLICATION = None
ASGI_APPLICATION = "notebookproject.asgi.application"

# --- Database -----------------------------------------------------------------
DATABASE_URL = os.environ.get("DATABASE_URL", "")
if DATABASE_URL:
    # conn_health_checks: the pool checks a connection before lending it (db_pool.check, below),
    # so the first request after PostgreSQL restarts gets a fresh one, not a dead one.
    default_db = dj_database_url.parse(DATABASE_URL, conn_max_age=0, conn_health_checks=True)
    if default_db["ENGINE"] == "django.db.backends.postgresql":
        # Django's backend with one change: the pool's check is notebookproject/db_pool.py's,
        # a round trip only for a connection whose socket says the server closed it or that
        # rested long in the pool (psycopg_pool's own check was one of an edit's two round trips).
        default_db["ENGINE"] = "notebookproject.postgresql"
        # Prepared statements: the edit path's statements (operations.py) ask for them; planning
        # its CTEs took longer than running them (0.6 of 1 ms). Django turns them off for the
        # sake of external poolers (PgBouncer in transaction mode); its ORM cursors bind
        # parameters client-side and never prepare anyway.
        # DATABASE_PREPARE=off behind a pooler that cannot keep them (docs/operations.md).
        default_db.setdefault("OPTIONS", {})["prepare_threshold"] = 5 if env_bool("DATABASE_PREPARE", default=True) else None
        # psycopg 3 pool on purpose: Daphne's ORM thread and the worker reuse
        # connections instead of paying a TCP + auth handshake per operation.
        # The pool requires CONN_MAX_AGE = 0.
        default_db["OPTIONS"]["pool"] = {
            "min_size": 1,
            "max_size": env_int("DATABASE_POOL_SIZE", 8),
            # Seconds a request waits for a connection: during an outage, the time to its 503.
            "timeout": env_float("DATABASE_POOL_TIMEOUT", 5.0),
            # After a failed connect the pool retries with a doubling delay (1, 2, 4, 8 s, ...)
            # for `reconnect_timeout` seconds (default 300). Past a few failures, the next try
            # would come later than a request is willing to wait, so the first requests after
            # PostgreSQL is back would still get 503. Giving up after 3 s keeps every gap under
            # the wait above; the next request that finds no connection starts a fresh try at once.
            "reconnect_timeout": 3.0,
        }
else:
    default_db = {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("SQLITE_PATH", str(BASE_DIR / "db.sqlite3")),
        "OPTIONS": {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
    }
DATABASES = {"default": default_db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Channels -----------------------------------------------------------------
# Two layers, two jobs (docs/architecture.md, "Two channel layers"):
# * "default", the core layer: the kernel workers' input channels (kernel, kernel.<k>), where a
#   message must wait in Redis for its one reader (competing consumers, FIFO).
# * "events" (EVENTS_CHANNEL_LAYER): what the kernel worker sends to sockets, the notebook
#   groups and its replies to one socket. Redis pub/sub: one PUBLISH per event whatever the
#   number of sockets, fanned out inside each Daphne process, no capacity to overflow. A
#   socket that misses an event (its process lost Redis) sees a `seq` gap and resyncs.
EVENTS_CHANNEL_LAYER = "events"
REDIS_URL = os.environ.get("REDIS_URL", "")
# Redis behind Sentinel (docs/operations.md, "Several hosts"): the sentinels ("host:port,...") and
# the name they monitor; the layers ask them for the current master (channels-redis's sentinel
# hosts) and follow a failover. REDIS_URL is then only a database number and password, if any
# ("redis://:password@/0"): its host is not used.
REDIS_SENTINELS = env_list("REDIS_SENTINELS", [])
REDIS_SENTINEL_MASTER = os.environ.get("REDIS_SENTINEL_MASTER", "mymaster")


def _sentinel_hosts():
    from urllib.parse import urlsplit

    sentinels = []
    for entry in REDIS_SENTINELS:
        host, _, port = entry.rpartition(":")
        if not host or not port.isdigit():
            raise ImproperlyConfigured(f"REDIS_SENTINELS takes host:port entries separated by commas, not {entry!r}")
        sentinels.append((host, int(port)))
    url = urlsplit(REDIS_URL or "redis:///0")
    master = {"master_name": REDIS_SENTINEL_MASTER, "sentinels": sentinels, "socket_timeout": None, "db": int((url.path or "/0").strip("/") or 0)}
    if url.password:
        master["password"] = url.password
    return [master]


if REDIS_URL or REDIS_SENTINELS:
    # redis-py 8 reads with a 5 s socket timeout by default, which kills channels-redis's
    # idle 5 s BZPOPMIN (django/channels_redis#422).
    _redis_hosts = _sentinel_hosts() if REDIS_SENTINELS else [{"address": REDIS_URL, "socket_timeout": None}]
    CHANNEL_LAYERS = {
        "default": {
            # channels-redis's layers, made to survive a Redis restart (notebooks_app/layers.py).
            "BACKEND": "notebooks_app.layers.RedisChannelLayer",
            "CONFIG": {
                "hosts": _redis_hosts,
                # Defaults (100 messages, 60 s) silently drop messages to a busy worker;
                # raised on purpose (docs/operations.md).
                "capacity": env_int("CHANNEL_CAPACITY", 5000),
                "expiry": 60,
            },
        },
        EVENTS_CHANNEL_LAYER: {"BACKEND": "notebooks_app.layers.RedisPubSubChannelLayer", "CONFIG": {"hosts": _redis_hosts}},
    }
else:
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 5000}},
        EVENTS_CHANNEL_LAYER: {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 5000}},
    }

# Backpressure on each socket (notebooks_app/fanout.py, docs/operations.md): bytes the server
# still holds for a client that is not reading; over SOCKET_SLOW_BYTES for SOCKET_SLOW_SECONDS,
# or over SOCKET_MAX_BYTES at once, the socket is told `too_slow` and closed with 4013.
SOCKET_SLOW_BYTES = env_int("SOCKET_SLOW_BYTES", 2 * 1024 * 1024)
SOCKET_SLOW_SECONDS = env_float("SOCKET_SLOW_SECONDS", 15.0)
SOCKET_MAX_BYTES = env_int("SOCKET_MAX_BYTES", 64 * 1024 * 1024)
# Up to this many sockets of its own on the notebook, a Daphne writes an edit's early
# announcement before it sends the edit to Redis; more, right after (notebooks_app/fanout.py).
EARLY_FIRST_SOCKETS = env_int("EARLY_FIRST_SOCKETS", 128)

# The kernel worker runs inside the server process when there is no Redis
# (embedded default); with Redis it runs as `manage.py runworker kernel`.
KERNEL_EMBEDDED = env_bool("KERNEL_EMBEDDED", default=not (REDIS_URL or REDIS_SENTINELS))
# create_cell / delete_cell on PostgreSQL run on the event loop over a connection of its own
# (notebooks_app/edit_lane.py) instead of hopping to the ORM thread; off: always the thread.
EDIT_LANE = env_bool("EDIT_LANE", default=True)
# A fleet of kernel workers (notebooks_app/kernel/fleet.py, docs/operations.md "A fleet of kernel
# workers"): notebooks are spread over KERNEL_VSHARDS virtual shards, each held by one worker under
# a lease in PostgreSQL that it renews; a worker that stops renewing loses its shards to the others
# within KERNEL_LEASE_SECONDS. Every process of a deployment must agree on the fleet and the shards.
KERNEL_FLEET = os.environ.get("KERNEL_FLEET", "kernel").strip() or "kernel"
if not re.fullmatch(r"[a-z][a-z0-9_-]{0,39}", KERNEL_FLEET):
    raise ImproperlyConfigured(f"KERNEL_FLEET must be 1 to 40 of a-z, 0-9, - and _, starting with a letter, not {KERNEL_FLEET!r}")
KERNEL_VSHARDS = env_int("KERNEL_VSHARDS", 32)
KERNEL_LEASE_SECONDS = env_float("KERNEL_LEASE_SECONDS", 5.0)
if not 1 <= KERNEL_VSHARDS <= 1024 or KERNEL_LEASE_SECONDS < 1:
    raise ImproperlyConfigured("KERNEL_VSHARDS must be 1 to 1024 and KERNEL_LEASE_SECONDS at least 1")
# The kernel worker ends a PostgreSQL transaction left idle a third of the lease time (fleet.py),
# set through libpq's startup `options`; off behind a pooler that refuses them (then set its own).
DATABASE_STARTUP_OPTIONS = env_bool("DATABASE_STARTUP_OPTIONS", default=True)
if os.environ.get("KERNEL_SHARDS", "1").strip() not in ("", "1"):  # 1 was the old default: it changes nothing
    raise ImproperlyConfigured(
        "KERNEL_SHARDS is gone: workers now share KERNEL_VSHARDS virtual shards through leases, so start any number of "
        "`manage.py runworker kernel` and remove KERNEL_SHARDS (docs/operations.md, \"A fleet of kernel workers\")"
    )
KERNEL_TIME_LIMIT = env_float("KERNEL_TIME_LIMIT", 60.0)
KERNEL_OUTPUT_CAP = env_int("KERNEL_OUTPUT_CAP", 1_000_000)
KERNEL_IMAGE_CAP_MB = env_int("KERNEL_IMAGE_CAP_MB", 16)  # one image output, stored apart and fetched by URL
KERNEL_MEMORY_LIMIT_MB = env_int("KERNEL_MEMORY_LIMIT_MB", 4096)
# Rows of a SQL cell's result shown in its output table (the DataFrame keeps them all).
KERNEL_SQL_ROW_CAP = env_int("KERNEL_SQL_ROW_CAP", 200)

# The sandbox around every notebook's execution process (docs/security.md).  "off" runs
# user code with the server's own privileges and shows a banner on every notebook page.
KERNEL_SANDBOX = env_choice("KERNEL_SANDBOX", {"on": True, "off": False}, "on")
# "none": no network at all; "outbound": the internet through slirp4netns, never host loopback.
KERNEL_NETWORK = env_choice("KERNEL_NETWORK", {"none": "none", "outbound": "outbound"}, "none")
KERNEL_DISK_LIMIT_MB = env_int("KERNEL_DISK_LIMIT_MB", 512)  # each of /notebook, /tmp, /dev/shm
KERNEL_PROCESS_LIMIT = env_int("KERNEL_PROCESS_LIMIT", 256)  # processes and threads of a notebook
KERNEL_OPEN_FILES_LIMIT = env_int("KERNEL_OPEN_FILES_LIMIT", 1024)
# As root the worker runs each notebook under a uid of its own: this base + a slot < 65536.
KERNEL_SANDBOX_UID_BASE = env_int("KERNEL_SANDBOX_UID_BASE", 2_000_000_000)
MAX_CODE_BYTES = env_int("MAX_CODE_BYTES", 256 * 1024)

# The lifecycle of execution processes (notebooks_app/kernel/lifecycle.py, docs/operations.md
# "Kernel lifecycle"). Empty caps and watermarks follow the host's memory.
KERNEL_IDLE_MINUTES = env_float("KERNEL_IDLE_MINUTES", 30.0)  # stopped after this long without a run, edit or input
KERNEL_MAX_PROCESSES = env_int("KERNEL_MAX_PROCESSES", 0)  # per worker; 0: one per 512 MB of half the host's memory
KERNEL_USER_MAX = env_int("KERNEL_USER_MAX", 5)  # live notebooks' processes per person who started them; 0: no cap
KERNEL_START_CONCURRENCY = env_int("KERNEL_START_CONCURRENCY", 2)  # processes starting at once, per worker
KERNEL_MEMORY_HIGH_MB = env_int("KERNEL_MEMORY_HIGH_MB", 0)  # idle processes stop above this sum of RSS; 0: 70 % of the host
KERNEL_MEMORY_LOW_MB = env_int("KERNEL_MEMORY_LOW_MB", 0)  # ... down to this; 0: 60 % of the host
KERNEL_NICE = env_int("KERNEL_NICE", 10)  # execution processes' CPU priority below the server's (0: none)
for _name in ("KERNEL_MAX_PROCESSES", "KERNEL_USER_MAX", "KERNEL_MEMORY_HIGH_MB", "KERNEL_MEMORY_LOW_MB", "KERNEL_NICE"):
    if globals()[_name] < 0:
        raise ImproperlyConfigured(f"{_name} must be 0 or more")
if KERNEL_IDLE_MINUTES <= 0 or KERNEL_START_CONCURRENCY < 1:
    raise ImproperlyConfigured("KERNEL_IDLE_MINUTES must be more than 0 and KERNEL_START_CONCURRENCY at least 1")

# A notebook's files (docs/notebook-files.md): bytes through Django's default storage (below:
# FileSystemStorage under MEDIA_ROOT; any django-storages backend in production).
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT") or BASE_DIR / "var" / "media")
NOTEBOOK_FILE_MAX_MB = env_int("NOTEBOOK_FILE_MAX_MB", 100)  # one file
NOTEBOOK_FILES_QUOTA_MB = env_int("NOTEBOOK_FILES_QUOTA_MB", 1000)  # a notebook's current files together
# Where a kernel worker mirrors each open notebook's current files for its sandbox (hardlinks of
# MEDIA_ROOT's files when on the same file system).
NOTEBOOK_FILES_CACHE_DIR = Path(os.environ.get("NOTEBOOK_FILES_CACHE_DIR") or BASE_DIR / "var" / "notebook-files")
# Uploads bigger than Django's 2.5 MB in-memory limit are spooled to disk as they arrive.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440

# A notebook's own packages (docs/packages.md): resolved and installed by the kernel worker with
# uv, wheels only, from this index; "off" leaves notebooks with the server's packages alone.
NOTEBOOK_PACKAGES = env_choice("NOTEBOOK_PACKAGES", {"on": True, "off": False}, "on")
PACKAGE_INDEX_URL = os.environ.get("PACKAGE_INDEX_URL") or "https://pypi.org/simple"
PACKAGE_BUILD_TIMEOUT = env_float("PACKAGE_BUILD_TIMEOUT", 600.0)  # seconds to resolve, and to install
# Built environments, shared by every notebook with the same lock (with uv's cache beside them,
# on the same file system, so installs are hardlinks).
ENVIRONMENTS_DIR = Path(os.environ.get("ENVIRONMENTS_DIR") or BASE_DIR / "var" / "environments")
# An environment no notebook's lock names is removed after this many hours unused.
ENVIRONMENTS_GC_HOURS = env_float("ENVIRONMENTS_GC_HOURS", 24.0)
# The largest notebook file one may import (docs/files.md); the request around it may be a
# little larger (the form's other fields and multipart framing), no more.
IMPORT_MAX_BYTES = env_int("IMPORT_MAX_BYTES", 10 * 1024 * 1024)

# --- Auth, i18n, static -------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "/accounts/login/"
# Off by default: accounts come from `manage.py adduser` (or createsuperuser, or /admin/).
SIGNUP_ENABLED = env_bool("SIGNUP_ENABLED", default=False)
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Where `collectstatic` puts the hashed, compressed copies WhiteNoise serves when DEBUG is off.
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT") or BASE_DIR / "staticfiles")
def _files_storage_options():
    import json

    value = os.environ.get("FILES_STORAGE_OPTIONS") or "{}"
    try:
        options = json.loads(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"FILES_STORAGE_OPTIONS must be a JSON object: {exc}") from exc
    if not isinstance(options, dict):
        raise ImproperlyConfigured("FILES_STORAGE_OPTIONS must be a JSON object")
    return options


STORAGES = {
    # Notebook files (docs/notebook-files.md): FileSystemStorage under MEDIA_ROOT, or any Django
    # storage such as django-storages' S3 (FILES_STORAGE_BACKEND=storages.backends.s3.S3Storage,
    # FILES_STORAGE_OPTIONS='{"bucket_name": "..."}'; docs/operations.md).
    "default": {
        "BACKEND": os.environ.get("FILES_STORAGE_BACKEND") or "django.core.files.storage.FileSystemStorage",
        "OPTIONS": _files_storage_options(),
    },
    "staticfiles": {"BACKEND": "notebookproject.storage.StaticFilesStorage"},
}
# Hashed names never change content, so WhiteNoise gives them far-future cache headers
# (max-age of ten years, immutable); unhashed names (only reached by hand) get 60 s.

# --- Content-Security-Policy (django-csp 4) -----------------------------------
# Cell HTML is rendered in <iframe sandbox="allow-scripts" srcdoc> (an opaque origin, under
# this same policy, so its scripts do not run); the page itself runs only our scripts.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'", "ws:", "wss:"],
        "frame-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'self'"],
    },
}
X_FRAME_OPTIONS = "SAMEORIGIN"

# --- REST API (notebooks_app/api/, docs/api.md) -------------------------------------------------
# Requests per token (or per logged-in user) and period, counted across every server process
# through the "api" cache: "120/min", "10/s", "5000/hour", "100000/day".
API_RATE_LIMIT = os.environ.get("API_RATE_LIMIT") or "120/min"
if not re.fullmatch(r"[1-9][0-9]*/(s|sec|second|m|min|minute|h|hour|d|day)", API_RATE_LIMIT):
    raise ImproperlyConfigured(f"API_RATE_LIMIT must be a number of requests per s, min, hour or day, such as 120/min, not {API_RATE_LIMIT!r}")
API_PAGE_SIZE = 50
# Runs with parameters (docs/api.md#runs): the longest a whole run may take, in seconds (then it
# is `timed_out` and its process killed; each cell still has KERNEL_TIME_LIMIT), and how many one
# kernel worker carries out at once (the others wait, `queued`).
RUN_TIME_LIMIT = env_float("RUN_TIME_LIMIT", 600.0)
RUN_CONCURRENCY = env_int("RUN_CONCURRENCY", 4)
# Seconds between two looks of each kernel worker for due schedules (notebooks_app/schedules.py);
# 0: this process runs no scheduler.
SCHEDULE_TICK_SECONDS = env_float("SCHEDULE_TICK_SECONDS", 30.0)
# How failed scheduled runs email their owner: Django's email settings, from the environment.
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND") or "django.core.mail.backends.smtp.EmailBackend"
EMAIL_HOST = os.environ.get("EMAIL_HOST") or "localhost"
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS")
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL") or "notebooks@localhost"
_LOCAL_CACHE = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
CACHES = {
    "default": _LOCAL_CACHE,
    # Django's Redis cache takes no Sentinel: there, and in the embedded default, the count is
    # per process (a deployment with Sentinel and several web processes allows that many times it).
    "api": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL, "KEY_PREFIX": "api"} if REDIS_URL and not REDIS_SENTINELS else _LOCAL_CACHE,
}
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["notebooks_app.api.authentication.BearerTokenAuthentication", "rest_framework.authentication.SessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated", "notebooks_app.api.permissions.TokenScope"],
    "DEFAULT_THROTTLE_CLASSES": ["notebooks_app.api.throttling.TokenRateThrottle"],
    # JSON only: DRF's browsable API is a page of inline scripts the CSP above refuses.
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "notebooks_app.api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Reactive Notebooks API",
    "DESCRIPTION": "Read, edit and run notebooks with a personal API token (docs/api.md).",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",  # from /static/, not a CDN: the CSP allows only this site's scripts
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # A cell's status and a run's share the name `status`: each its own enum in the document.
    "ENUM_NAME_OVERRIDES": {"CellStatusEnum": "notebooks_app.constants.CELL_STATUSES", "RunStatusEnum": "notebooks_app.constants.RUN_STATUSES"},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    # Django's own default config gives the "django" logger a console handler of its own (with
    # DEBUG on): without this, each of its lines would be printed twice, once more by the root.
    "loggers": {"django": {"handlers": [], "level": "INFO"}, "daphne": {"level": "WARNING"}, "django.channels.server": {"level": "WARNING"},
                # psycopg_pool warns at every failed reconnection; an outage is logged once anyway.
                "psycopg.pool": {"level": "ERROR"}},
}
