"""Start the services the tests need, run pytest, stop them again.

Uses DATABASE_URL / REDIS_URL when given; otherwise installs PostgreSQL, Redis
and Chromium with apt-get when missing (as root) and starts throwaway
instances in a temporary directory on free ports, and collects the static files
(STATIC_ROOT, kept in var/test-static/ while their sources stay the same) for the servers
the tests start with DEBUG off.  A run in which pytest collected no test fails (pytest's
exit status 5 never passes silently).

`--fast` selects the fast tier by markers: no `browser` test (Chromium) and no `slow` one
(a test that starts server processes of its own), as `-m "not browser and not slow"`, and'd
with any `-m` given too. Both tiers run on pytest-xdist workers (TEST_WORKERS) unless the
arguments say `-n` or `--dist` themselves.
"""
import glob
import hashlib
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG_USER = "postgres"


def log(message):
    print(f"==> {message}", flush=True)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def apt_install(*packages):
    if os.geteuid() != 0:
        sys.exit(f"error: {', '.join(packages)} missing and not root; install them or set DATABASE_URL/REDIS_URL")
    log(f"installing {' '.join(packages)} with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *packages], check=True, env=env, stdout=subprocess.DEVNULL)


def pg_bindir():
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not candidates and shutil.which("initdb"):
        return str(Path(shutil.which("initdb")).parent)
    return str(Path(candidates[-1]).parent) if candidates else None


def wait_port(port, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"error: nothing listening on 127.0.0.1:{port} after {seconds} s")


class Services:
    def __init__(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="notebook-tests-"))
        self.procs = []
        self.pg_stop = None

    def postgres(self):
        bindir = pg_bindir()
        if bindir is None:
            apt_install("postgresql")
            bindir = pg_bindir()
        port = free_port()
        data = self.tmp / "pg"
        run_as = []
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root: the cluster belongs to the postgres user.
            try:
                pwd.getpwnam(PG_USER)
            except KeyError:
                subprocess.run(["useradd", "--system", "--no-create-home", PG_USER], check=True)
            os.chmod(self.tmp, 0o755)
            data.mkdir()
            shutil.chown(data, PG_USER)
            run_as = ["runuser", "-u", PG_USER, "--"]
        log(f"starting a throwaway PostgreSQL on port {port}")
        subprocess.run([*run_as, f"{bindir}/initdb", "-D", str(data), "--auth=trust", "-U", "postgres", "-E", "UTF8", "--no-sync"], check=True, stdout=subprocess.DEVNULL)
        # Every role is trusted except the one tests/test_sql.py gives a password, so a
        # wrong password is refused like on a real server (first matching line wins).
        hba = data / "pg_hba.conf"
        hba.write_text("host all notebook_pw_role 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        opts = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        subprocess.run([*run_as, f"{bindir}/pg_ctl", "-D", str(data), "-o", opts, "-l", str(data / "log"), "-w", "start"], check=True, stdout=subprocess.DEVNULL)
        self.pg_stop = [*run_as, f"{bindir}/pg_ctl", "-D", str(data), "-m", "immediate", "stop"]
        wait_port(port)
        return f"postgres://postgres@127.0.0.1:{port}/notebooks"

    def redis(self):
        if not shutil.which("redis-server"):
            apt_install("redis-server")
        port = free_port()
        log(f"starting a throwaway Redis on port {port}")
        proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.tmp)],
            stdout=subprocess.DEVNULL,
        )
        self.procs.append(proc)
        wait_port(port)
        return f"redis://127.0.0.1:{port}/0"

    def sandbox(self):
        """bubblewrap for the notebooks' sandbox, slirp4netns for its outbound network."""
        missing = [package for command, package in (("bwrap", "bubblewrap"), ("slirp4netns", "slirp4netns")) if not shutil.which(command)]
        if missing:
            apt_install(*missing)

    def chromium(self):
        if not os.environ.get("CHROMIUM_PATH") and not Path("/usr/bin/chromium").exists():
            apt_install("chromium")

    def stop(self):
        for proc in self.procs:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self.pg_stop:
            subprocess.run(self.pg_stop, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(self.tmp, ignore_errors=True)


STATIC_CACHE = ROOT / "var" / "test-static"


def static_sources_digest():
    """A digest of what collectstatic's output is made from: static/, the storage class, the
    settings, and the pinned requirements (whose packages bring the other apps' static files)."""
    digest = hashlib.sha256()
    paths = sorted(path for path in (ROOT / "static").rglob("*") if path.is_file())
    paths += [ROOT / "notebookproject" / "storage.py", ROOT / "notebookproject" / "settings.py", *sorted(ROOT.glob("requirements*.txt"))]
    for path in paths:
        data = path.read_bytes()
        digest.update(f"{path.relative_to(ROOT)}\0{len(data)}\0".encode() + data)
    return digest.hexdigest()[:20]


def collectstatic(env):
    """The hashed static files the production-shape servers serve (DEBUG off) and pages name:
    collected once for each content of their sources, into var/test-static/<digest>, and reused
    by later runs, which never write to it (collecting takes ~10 s). A fresh clone collects;
    concurrent runs collect apart and the first to finish publishes its copy."""
    digest = static_sources_digest()
    root = STATIC_CACHE / digest
    if (root / "staticfiles.json").exists():
        log(f"static files as collected in {root}")
    else:
        staging = STATIC_CACHE / f".{digest}-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        log(f"collectstatic into {root}")
        subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"], cwd=ROOT, env=dict(env, STATIC_ROOT=str(staging)), check=True)
        try:
            staging.rename(root)
        except OSError:  # another run published it first
            shutil.rmtree(staging, ignore_errors=True)
        for other in STATIC_CACHE.iterdir():  # copies of other sources (or of crashed runs) unused for a day
            if other != root and time.time() - other.stat().st_mtime > 86400:
                shutil.rmtree(other, ignore_errors=True)
    # Used now, and newer than every source file, which tests/live.py's collected_static() checks.
    os.utime(root)
    os.utime(root / "staticfiles.json")
    env["STATIC_ROOT"] = str(root)


FAST_TIER = "not browser and not slow"
# Both tiers run on this many pytest-xdist workers (TEST_WORKERS overrides; 0 or 1: serial):
# one per core, at least 2. Run alone, the tests mostly wait (on the kernel worker, sandboxes,
# Chromium, the processes a slow test starts), so two workers on two cores nearly halve the
# time; a third adds little once they keep the CPU busy. Each worker has its own test database,
# kernel worker, Daphne and Redis server (main; tests/conftest.py); --dist loadfile keeps a
# module on one worker, so a module-scoped fixture (a Chromium, a private cluster) is made once.
# The modules go out in the order tests/conftest.py gives them, the longest first
# (--no-loadscope-reorder: not by their number of tests), so that no long one starts last.
TEST_WORKERS = max(2, min(os.cpu_count() or 2, 8))


def xdist_args(argv):
    """`-n N --dist loadfile --no-loadscope-reorder`, unless the arguments choose for themselves
    (or ask for a debugger, which needs the test in this process)."""
    workers = int(os.environ.get("TEST_WORKERS", TEST_WORKERS))
    chosen = any(arg.startswith(("-n", "--numprocesses", "--dist")) or arg in ("no:xdist", "-pno:xdist", "--pdb", "--trace") for arg in argv)
    if workers < 2 or chosen:
        return []
    return ["-n", str(workers), "--dist", "loadfile", "--no-loadscope-reorder"]


def xdist_workers(argv):
    """How many pytest-xdist workers `argv` asks for (0: none)."""
    for i, arg in enumerate(argv):
        if arg in ("-n", "--numprocesses") and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--numprocesses="):
            value = arg.split("=", 1)[1]
        elif arg.startswith("-n") and len(arg) > 2:
            value = arg[2:]
        else:
            continue
        return os.cpu_count() or 1 if value in ("auto", "logical") else int(value) if value.isdigit() else 0
    return 0


def select_tier(argv):
    """pytest's arguments for the tier asked for, on pytest-xdist workers (xdist_args): `--fast`
    becomes a marker expression."""
    if "--fast" not in argv:
        return [*xdist_args(argv), *argv]
    argv = [arg for arg in argv if arg != "--fast"]
    argv = [*xdist_args(argv), *argv]
    for i, arg in enumerate(argv):
        if arg == "-m" and i + 1 < len(argv):
            return [*argv[:i], "-m", f"({argv[i + 1]}) and {FAST_TIER}", *argv[i + 2 :]]
        if arg.startswith("-m") and len(arg) > 2:
            return [*argv[:i], "-m", f"({arg[2:]}) and {FAST_TIER}", *argv[i + 1 :]]
    return [*argv, "-m", FAST_TIER]


def main(argv):
    argv = select_tier(argv)
    services = Services()
    env = dict(os.environ)
    try:
        if not env.get("DATABASE_URL"):
            env["DATABASE_URL"] = services.postgres()
        if not env.get("REDIS_URL"):
            # A Redis server for each xdist worker: no command, count or pub/sub channel of one
            # worker's is seen by another's (tests/conftest.py picks its own from TEST_REDIS_URLS).
            urls = [services.redis() for _ in range(max(1, xdist_workers(argv)))]
            env["REDIS_URL"] = urls[0]
            if len(urls) > 1:
                env["TEST_REDIS_URLS"] = " ".join(urls)
        services.chromium()
        services.sandbox()
        env.setdefault("SECRET_KEY", "test-secret-key")
        env.setdefault("SECRETS_KEY", "dGVzdC1zZWNyZXRzLWtleS1ub3QtZm9yLXByb2R1Y3Q=")  # a Fernet key, tests only
        env["PYTHONUNBUFFERED"] = "1"
        collectstatic(env)
        log(f"pytest on {env['DATABASE_URL'].rsplit('@', 1)[-1]} and {env['REDIS_URL']}")
        code = subprocess.call([sys.executable, "-m", "pytest", *argv], cwd=ROOT, env=env)
    finally:
        services.stop()
    if code == 5:
        print("error: pytest collected no tests; that is a failure here", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
