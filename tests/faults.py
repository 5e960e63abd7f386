"""A private production shape for fault tests: its own PostgreSQL, Redis, Daphne and kernel
worker, each restartable or killable, so stopping them never disturbs the rest of the suite.

Clients build their state from events alone (`FoldingClient`) and are compared with the
database (`db_cells`), read directly with psycopg.
"""
import asyncio
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import psycopg
import websockets

from .live import ROOT, free_port, login, start_daphne, start_worker, stop

PG_USER = "postgres"
FINAL = {"success", "error", "stale", "idle", "blocked"}


def wait_port(port, seconds=30):
    import socket

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on port {port} after {seconds} s")


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


class FoldingClient:
    """A WebSocket client whose notebook is built from `notebook_state` and events alone,
    resyncing on a `seq` gap as the page does; reconnects when the server closes it."""

    def __init__(self, cluster, notebook_id):
        self.cluster = cluster
        self.url = cluster.url.replace("http://", "ws://") + f"/ws/notebooks/{notebook_id}/?batch=1"
        self.cells = {}
        self.order = []
        self.seq = None
        self.replies = []
        self.syncing = False
        self.ws = None
        self.buffer = []

    async def connect(self, timeout=60):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.ws = await websockets.connect(self.url, additional_headers={"Cookie": self.cluster.cookie, "Origin": self.cluster.url}, max_size=None)
                self.buffer = []
                await self.wait_for(lambda e: e["type"] == "notebook_state", timeout=10, reconnect=False)
                return self
            except (OSError, websockets.exceptions.WebSocketException, asyncio.TimeoutError, ConnectionError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)

    async def send(self, **message):
        await self.ws.send(json.dumps(message))

    def _apply(self, event):
        kind, cell_id = event["type"], event.get("cellId")
        if kind == "notebook_state":
            self.cells = {c["id"]: dict(c) for c in event["notebook"]["cells"]}
            self.order = [c["id"] for c in event["notebook"]["cells"]]
            self.seq = event["seq"]
            self.syncing = False
            return True
        if "seq" not in event:
            self.replies.append(event)
            return True
        if self.syncing or (self.seq is not None and event["seq"] <= self.seq):
            return False
        if self.seq is not None and event["seq"] != self.seq + 1:
            self.syncing = True
            return False
        self.seq = event["seq"]
        if kind == "cell_created":
            self.cells[cell_id] = dict(event["cell"])
            self.order.insert(event["index"], cell_id)
        elif kind == "cell_deleted":
            self.cells.pop(cell_id, None)
            self.order.remove(cell_id)
        elif kind == "cell_moved":
            self.order.remove(cell_id)
            self.order.insert(event["index"], cell_id)
        elif kind == "cell_updated":
            self.cells[cell_id]["code"] = event["code"]
        elif kind == "cell_status":
            self.cells[cell_id]["status"] = event["status"]
        return True

    async def next(self, timeout=30, reconnect=True):
        """The next applied event or reply (a closed socket reconnects: {"type": "reconnected"})."""
        while not self.buffer:
            try:
                frame = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
            except websockets.exceptions.ConnectionClosed:
                if not reconnect:
                    raise
                await self.connect()
                return {"type": "reconnected"}
            events = frame["events"] if frame.get("type") == "batch" else [frame]
            was_syncing = self.syncing
            # An event skipped while resyncing still answers its request (the state holds it).
            self.buffer.extend(e for e in events if self._apply(e) or e.get("requestId") is not None)
            if self.syncing and not was_syncing:
                await self.send(type="sync")
        return self.buffer.pop(0)

    async def wait_for(self, predicate, timeout=60, reconnect=True):
        deadline = time.monotonic() + timeout
        while True:
            event = await self.next(max(0.05, deadline - time.monotonic()), reconnect=reconnect)
            if predicate(event):
                return event

    async def request(self, timeout=60, **message):
        """Send with a requestId; the first event or error carrying it."""
        rid = f"r{time.monotonic_ns()}"
        await self.send(requestId=rid, **message)
        return await self.wait_for(lambda e: e.get("requestId") == rid, timeout=timeout)

    def view(self):
        return self.order, {cid: (c["code"], c["status"]) for cid, c in self.cells.items()}

    async def close(self):
        await self.ws.close()


async def converged(client, cluster, notebook_id, timeout=60, settled=lambda statuses: True):
    """Wait until the client's view equals the database's (and `settled` holds for the
    statuses), asking for a resync when it does not; returns the final view."""
    deadline = time.monotonic() + timeout
    while True:
        db = await asyncio.to_thread(cluster.db_cells, notebook_id)
        if client.view() == db and settled([s for _, s in db[1].values()]):
            return db
        if time.monotonic() > deadline:
            raise AssertionError(f"client {client.view()} != database {db}")
        await client.send(type="sync")
        try:
            await client.wait_for(lambda e: e["type"] == "notebook_state", timeout=5)
        except asyncio.TimeoutError:
            pass
        await asyncio.sleep(0.3)


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


__all__ = ["Cluster", "FoldingClient", "converged", "no_transient", "readiness", "runner_pids", "re"]
