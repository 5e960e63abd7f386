"""Start the services the tests need, run pytest, stop them again.

Uses DATABASE_URL / REDIS_URL when given; otherwise installs PostgreSQL, Redis
and Chromium with apt-get when missing (as root) and starts throwaway
instances in a temporary directory on free ports, and collects the static files
there (STATIC_ROOT) for the servers the tests start with DEBUG off.  A run in
which pytest collected no test fails (pytest's exit status 5 never passes silently).

`--fast` selects the fast tier by markers: no `browser` test (Chromium) and no `slow` one
(a test that starts server processes of its own), as `-m "not browser and not slow"`, and'd
with any `-m` given too.
"""
import glob
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


def collectstatic(env, static_root):
    """The hashed static files the production-shape servers serve (DEBUG off), collected per
    run: a fresh clone has none, and concurrent runs must not rewrite each other's."""
    env["STATIC_ROOT"] = str(static_root)
    log(f"collectstatic into {static_root}")
    subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"], cwd=ROOT, env=env, check=True)


FAST_TIER = "not browser and not slow"


def select_tier(argv):
    """pytest's arguments for the tier asked for: `--fast` becomes a marker expression."""
    if "--fast" not in argv:
        return argv
    argv = [arg for arg in argv if arg != "--fast"]
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
            env["REDIS_URL"] = services.redis()
        services.chromium()
        services.sandbox()
        env.setdefault("SECRET_KEY", "test-secret-key")
        env.setdefault("SECRETS_KEY", "dGVzdC1zZWNyZXRzLWtleS1ub3QtZm9yLXByb2R1Y3Q=")  # a Fernet key, tests only
        env["PYTHONUNBUFFERED"] = "1"
        collectstatic(env, services.tmp / "static")
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
