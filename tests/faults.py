"""A private production shape for fault tests: its own PostgreSQL, Redis, Daphne and kernel
worker, each restartable or killable, so stopping them never disturbs the rest of the suite.

Clients build their notebook from events alone (`Cluster.client`, resyncing and reconnecting
as the page does) and are compared with the database (`db_cells`), read directly with psycopg.
"""
import asyncio
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import psycopg

from .client import NotebookClient
from .live import ROOT, free_port, login, start_daphne, start_worker, stop
from .waiting import eventually

PG_USER = "postgres"
FINAL = {"success", "error", "stale", "idle", "blocked"}


def listening(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_port(port, seconds=30):
    eventually(lambda: listening(port), seconds, f"something listening on port {port}", interval=0.1).wait()


class Postgres:
    """A throwaway cluster (initdb --auth=trust) that can be stopped and started again."""

    def __init__(self, tmp):
        from scripts.run_tests import pg_bindir

        self.bindir = pg_bindir()
        self.port = free_port()
        self.data = Path(tmp) / "pg"
        self.run_as = []
        if os.geteuid() == 0:
            pwd.getpwnam(PG_USER)  # scripts/run_tests.py created it for the suite's own cluster
            os.chmod(tmp, 0o755)
            self.data.mkdir()
            shutil.chown(self.data, PG_USER)
            self.run_as = ["runuser", "-u", PG_USER, "--"]
        subprocess.run([*self.run_as, f"{self.bindir}/initdb", "-D", str(self.data), "--auth=trust", "-U", "postgres", "--no-sync"], check=True, stdout=subprocess.DEVNULL)
        self.start()
        subprocess.run([*self.run_as, f"{self.bindir}/createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "notebooks"], check=True)

    @property
    def url(self):
        return f"postgres://postgres@127.0.0.1:{self.port}/notebooks"

    def start(self):
        opts = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100"
        subprocess.run([*self.run_as, f"{self.bindir}/pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.data / "log"), "-w", "start"], check=True, stdout=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self, mode="fast"):
        subprocess.run([*self.run_as, f"{self.bindir}/pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop"], check=True, stdout=subprocess.DEVNULL)


class Redis:
    def __init__(self, tmp):
        self.port = free_port()
        self.tmp = tmp
        self.proc = None
        self.start()

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.tmp)],
            stdout=subprocess.DEVNULL,
        )
        wait_port(self.port)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


class Cluster:
    """PostgreSQL + Redis + one Daphne + one `runworker kernel`, all private to one test module."""

    PASSWORD = "faults-pass-1"

    def __init__(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="notebook-faults-"))
        self.pg = Postgres(self.tmp)
        self.redis = Redis(self.tmp)
        self.env = dict(os.environ, DATABASE_URL=self.pg.url, REDIS_URL=self.redis.url, KERNEL_TIME_LIMIT="30", SECRET_KEY="faults-secret")
        self.logs = ROOT / "var"
        self.logs.mkdir(exist_ok=True)
        self.daphne_log = self.logs / f"faults-daphne-{os.getpid()}.log"
        self.worker_log = self.logs / f"faults-worker-{os.getpid()}.log"
        for log in (self.daphne_log, self.worker_log):
            log.write_bytes(b"")
        self.manage("migrate", "--verbosity", "0")
        self.manage("shell", "-c", f"from django.contrib.auth.models import User; User.objects.create_user('faulty', password='{self.PASSWORD}')")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.daphne = self.worker = None
        self.start_worker()
        self.start_daphne()
        self.cookie = login(self.url, "faulty", self.PASSWORD)

    def manage(self, *args):
        return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, check=True, capture_output=True, text=True).stdout

    def start_daphne(self):
        self.daphne = start_daphne(self.port, self.env, self.daphne_log)

    def start_worker(self):
        self.worker = start_worker(["kernel"], self.env, self.worker_log)

    def kill(self, proc, sig=signal.SIGKILL):
        os.killpg(proc.pid, sig)
        proc.wait(20)

    def new_notebook(self, name="faults"):
        out = self.manage("shell", "-c", f"from django.contrib.auth.models import User; from notebooks_app.models import Notebook; print(Notebook.objects.create(name='{name}', owner=User.objects.get(username='faulty')).pk)")
        return out.strip().splitlines()[-1]

    def http(self, path):
        """(status, body) of a GET as the logged-in user."""
        request = urllib.request.Request(self.url + path, headers={"Cookie": self.cookie})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def client(self, notebook_id):
        """A client of `notebook_id` as the logged-in user's page: batches, resync on a gap,
        reconnect when the server closes the socket; it waits up to 60 s (faults take time)."""
        return NotebookClient(notebook_id, self.cookie, server=self.url, batch=True, resync_on_gap=True, reconnect=True, timeout=60)

    def db_cells(self, notebook_id):
        """{id: (code, status)} and the order, read from PostgreSQL itself."""
        with psycopg.connect(self.pg.url.replace("postgres://", "postgresql://"), autocommit=True) as conn:
            rows = conn.execute("SELECT id, code, status FROM notebooks_app_cell WHERE notebook_id = %s ORDER BY position", (notebook_id,)).fetchall()
        return [str(r[0]) for r in rows], {str(r[0]): (r[1], r[2]) for r in rows}

    def tracebacks(self):
        return {log.name: log.read_text(errors="replace").count("Traceback") for log in (self.daphne_log, self.worker_log)}

    def close(self):
        for proc in (self.daphne, self.worker):
            stop(proc)
        try:
            self.redis.stop()
        except Exception:
            pass
        try:
            self.pg.stop(mode="immediate")
        except Exception:
            pass
        shutil.rmtree(self.tmp, ignore_errors=True)


def view(client):
    """(order, {id: (code, status)}) of a client's notebook, as db_cells gives the database's."""
    return client.order, {cell_id: (cell["code"], cell["status"]) for cell_id, cell in client.state.items()}


async def converged(client, cluster, notebook_id, timeout=60, settled=lambda statuses: True):
    """Wait until the client's view equals the database's (and `settled` holds for the
    statuses), asking for a resync when it does not; returns the final view."""

    async def same_as_the_database():
        db = await asyncio.to_thread(cluster.db_cells, notebook_id)
        if view(client) == db and settled([s for _, s in db[1].values()]):
            return db
        await client.send(type="sync")
        try:
            await client.wait_for(lambda e: e["type"] == "notebook_state", timeout=5)
        except AssertionError:  # no state yet: the next try asks again
            pass
        return None

    try:
        return await eventually(same_as_the_database, timeout, "the client's notebook to equal the database's", interval=0.3)
    except AssertionError:
        raise AssertionError(f"client {view(client)} != database {await asyncio.to_thread(cluster.db_cells, notebook_id)}") from None


def no_transient(statuses):
    return not any(s in ("running", "queued") for s in statuses)


def readiness(cluster):
    status, body = cluster.http("/readyz")
    return status, json.loads(body) if body.startswith("{") else body


def runner_pids(worker_pid):
    """Descendants of the worker running a notebook's execution child (kernel/_child.py)."""
    out = subprocess.run(["ps", "-o", "pid=,ppid=,args=", "-e"], capture_output=True, text=True).stdout
    children = {}
    for line in out.splitlines():
        pid, ppid, args = line.split(None, 2)
        children.setdefault(int(ppid), []).append((int(pid), args))
    found, todo = [], [worker_pid]
    while todo:
        for pid, args in children.get(todo.pop(), []):
            todo.append(pid)
            if "_child" in args and "bwrap" not in args:
                found.append(pid)
    return found


__all__ = ["Cluster", "converged", "no_transient", "readiness", "runner_pids", "view", "re"]
