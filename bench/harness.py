"""What every benchmark shares: the production shape, real clients, the floor, the report.

`Cluster` runs the server as it is deployed: Daphne processes and `manage.py runworker`
kernel workers on PostgreSQL + Redis.  It uses DATABASE_URL / REDIS_URL when given and
otherwise starts throwaway instances with the test suite's `Services`.  Clients are real
WebSocket connections (tests/live.py) logged in through the login page.

The benchmarks of edits, keystrokes and runs (bench/crud.py, keystroke.py, cascade.py) compare
with a floor server (bench/floor_server.py, `Cluster.start_floor_server`): a minimal server doing
the same essential work on the same services, for the same clients at the same pace, measured in
blocks alternating with the real server's; they print its rows and the ratios of the medians and
p99s (`to_floor_server`).  Every report also carries the round-trip floor measured in the same
run on the same services: one Redis PUBLISH -> SUBSCRIBE round trip and one committed
PostgreSQL UPDATE, the least an edit that is stored and broadcast has to pay, without the
sockets.  The ratio column is to their sum.

A benchmark that paces its operations (bench/crud.py: one edit every 40 ms) also measures the
floor paced alike, and reports the ratio to that one as well.  On this kind of VM a process
that has slept takes a few hundred microseconds to run again, so the same PUBLISH or UPDATE
costs 3 - 8x more one at a time, 40 ms apart, than back to back: an operation and its floor
compare fairly only when both are taken the same way (docs/performance.md, "Floors").
"""
import argparse
import asyncio
import contextlib
import datetime
import gc
import json
import os
import platform
import socket
import statistics
import struct
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts.run_tests import Services  # noqa: E402
from . import floor_server  # noqa: E402
from notebooks_app.fanout import frame  # noqa: E402
from tests.client import NotebookClient  # noqa: E402
from tests.live import free_port, login, server_frames, start_daphne, start_worker, stop, upgrade_request  # noqa: E402

USERNAME = "bench"
PASSWORD = "bench-password-1"
LOG_DIR = ROOT / "var"
FLOOR_SAMPLES = 200


def percentile(samples, fraction):
    """Nearest-rank percentile: a value that was really observed."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))]


@contextlib.contextmanager
def clients_without_gc():
    """The bench process's garbage collector off while it measures (collected before and after):
    a hundred clients in one process make enough objects that a full collection, ~0.1 s, landed
    in one sample in 60 of bench.crud's 100-socket rows and read as the server's p99."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


def summary(samples):
    return {"median": statistics.median(samples), "p99": percentile(samples, 0.99), "max": max(samples), "n": len(samples)}


def to_floor_server(real, floor):
    """The note that compares a row (summary) with the floor server's (summary) in the same run."""
    return f"floor server: {real['median'] / floor['median']:.1f}x median, {real['p99'] / floor['p99']:.1f}x p99"


def machine():
    cpu = platform.processor() or ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu or platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def parse_args(description, argv, flags=(), **sizes):
    """Common options: --quick (tiny sizes, for the smoke test) and --repeat; `flags` are
    (name, help) pairs of a benchmark's own on/off options."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few repetitions (smoke test)")
    parser.add_argument("--repeat", type=int, default=None, help="measured repetitions per size")
    for name, text in flags:
        parser.add_argument(f"--{name}", action="store_true", help=text)
    for name, default in sizes.items():
        parser.add_argument(f"--{name}", default=default, help=f"comma-separated (default {default})")
    args = parser.parse_args(argv)
    for name in sizes:
        setattr(args, name, [int(x) for x in str(getattr(args, name)).split(",") if x])
    return args


class Cluster:
    """Daphne x `daphnes` + `workers` kernel workers of one fleet (they share its virtual shards:
    notebooks_app/kernel/fleet.py), on PostgreSQL + Redis.

    `worker_env`: extra environment per worker, in order (e.g. one worker with KERNEL_SANDBOX=on
    and one with off, bench/sandbox.py; `notebook_on_worker` makes a notebook one of them serves).
    """

    def __init__(self, name, *, daphnes=1, workers=1, worker_env=None):
        self.name = name
        self.daphne_count = daphnes
        self.worker_count = max(workers, len(worker_env or ()))
        self.worker_env = list(worker_env or [])
        self.services = Services()
        self.daphnes, self.workers, self.urls, self.cookies = [], [], [], []
        self.floor_proc = self.floor_url = None

    def __enter__(self):
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()

    def _start(self):
        env = dict(os.environ)
        if not env.get("DATABASE_URL"):
            env["DATABASE_URL"] = self.services.postgres()
            _create_database(env["DATABASE_URL"])
        if not env.get("REDIS_URL"):
            env["REDIS_URL"] = self.services.redis()
        env.setdefault("SECRET_KEY", "bench-secret-key")
        env.setdefault("SECRETS_KEY", "YmVuY2gtc2VjcmV0cy1rZXktbm90LWZvci1wcm9kdWM=")  # a Fernet key, benchmarks only
        env.pop("KERNEL_SHARDS", None)
        # A fleet of its own (kernel channels and shard leases are per fleet): a kernel worker of
        # the test suite on the same database and Redis keeps its shards, and this cluster's
        # workers take all of theirs.
        env.setdefault("KERNEL_FLEET", f"bench-{self.name}-{os.getpid()}"[:40].lower().replace("_", "-"))
        env.update(PYTHONUNBUFFERED="1", LOG_LEVEL=env.get("LOG_LEVEL", "WARNING"), DJANGO_SETTINGS_MODULE="notebookproject.settings")
        self.env = env
        os.environ.update({k: env[k] for k in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "SECRETS_KEY", "DJANGO_SETTINGS_MODULE", "KERNEL_FLEET")})
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        self.user = _bench_user()
        from django.conf import settings

        LOG_DIR.mkdir(exist_ok=True)
        for index in range(self.worker_count):
            extra = self.worker_env[index] if index < len(self.worker_env) else {}
            self.workers.append(start_worker([settings.KERNEL_FLEET], {**env, **extra}, LOG_DIR / f"bench-{self.name}-worker-{index}.log"))
        self.wait_balanced()
        for index in range(self.daphne_count):
            port = free_port()
            self.daphnes.append(start_daphne(port, env, LOG_DIR / f"bench-{self.name}-daphne-{index}.log"))
            self.urls.append(f"http://127.0.0.1:{port}")
            self.cookies.append(login(self.urls[-1], USERNAME, PASSWORD))

    def stop(self):
        for proc in self.daphnes + self.workers + [self.floor_proc]:
            stop(proc)
        self.services.stop()

    def shards_of_worker(self, index):
        """The virtual shards worker `index` holds now."""
        from django.conf import settings

        from notebooks_app.models import KernelLease, KernelWorkerRecord

        record = KernelWorkerRecord.objects.filter(fleet=settings.KERNEL_FLEET, pid=self.workers[index].pid).first()
        return set(KernelLease.objects.filter(fleet=settings.KERNEL_FLEET, owner=record.name).values_list("shard", flat=True)) if record else set()

    def wait_balanced(self, timeout=60):
        """Until every worker holds its share of the fleet's shards (they take it within a few
        lease renewals of their start)."""
        import math

        from django.conf import settings

        share = math.ceil(settings.KERNEL_VSHARDS / len(self.workers))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            held = [self.shards_of_worker(index) for index in range(len(self.workers))]
            if sum(map(len, held)) == settings.KERNEL_VSHARDS and all(share - 1 <= len(h) <= share for h in held):
                return held
            time.sleep(0.1)
        raise RuntimeError(f"the kernel workers did not share the shards within {timeout} s")

    def notebook_on_worker(self, cells, index):
        """A notebook (see `notebook`) whose shard worker `index` holds."""
        from django.conf import settings

        from notebooks_app.kernel.addresses import shard_of

        held = self.shards_of_worker(index)
        while True:
            notebook_id = self.notebook(cells)
            if shard_of(notebook_id, settings.KERNEL_VSHARDS) in held:
                return notebook_id

    def notebook(self, cells=(), name=None):
        """A notebook of the bench user holding `cells` (code strings), committed; returns its id."""
        from notebooks_app.models import Cell, Notebook
        from notebooks_app.constants import POSITION_STEP

        notebook = Notebook.objects.create(name=name or f"{self.name} {uuid.uuid4().hex[:6]}", owner=self.user, revision=1)
        Cell.objects.bulk_create([Cell(notebook=notebook, position=(i + 1) * POSITION_STEP, code=code) for i, code in enumerate(cells)], batch_size=1000)
        return str(notebook.pk)

    async def anotebook(self, cells=(), name=None):
        return await asyncio.to_thread(self.notebook, cells, name)

    async def client(self, notebook_id, daphne=0):
        return await NotebookClient(notebook_id, self.cookies[daphne], server=self.urls[daphne], batch=True, timeout=30, watch_presence=True, watch_early=True).connect()

    async def clients(self, notebook_id, count, *, chunk=50):
        """`count` connected clients spread over the Daphnes, connected `chunk` at a time."""
        return await _in_chunks(count, chunk, lambda i: self.client(notebook_id, i % len(self.urls)))

    async def watchers(self, notebook_id, count, *, chunk=50):
        """`count` Watchers spread over the Daphnes, connected `chunk` at a time."""
        n = len(self.urls)
        return await _in_chunks(count, chunk, lambda i: Watcher.connect(self.urls[i % n], notebook_id, self.cookies[i % n]))

    def start_floor_server(self):
        """bench/floor_server.py on this cluster's PostgreSQL and Redis (started once); its URL."""
        if self.floor_proc is None:
            port = free_port()
            self.floor_proc = floor_server.start(port, self.env, LOG_DIR / f"bench-{self.name}-floor-server.log")
            self.floor_url = f"http://127.0.0.1:{port}"
        return self.floor_url

    async def floor_clients(self, count, notebook_id=None, *, chunk=50):
        """`count` clients of the floor server, connected as `clients` connects them, to a notebook
        of its own (any id: it holds what its sockets make of it)."""
        url, notebook_id = self.start_floor_server(), notebook_id or str(uuid.uuid4())
        return await _in_chunks(count, chunk, lambda i: NotebookClient(notebook_id, server=url, batch=True, timeout=30, watch_presence=True, watch_early=True).connect())

    async def floor(self, samples=FLOOR_SAMPLES, *, pace=0.0):
        """(Redis PUBLISH->SUBSCRIBE round trip, committed PostgreSQL UPDATE) medians in ms;
        `pace`: seconds between two samples, as the benchmark paces what it compares."""
        notebook_id = await self.anotebook(name=f"{self.name} floor")
        return {
            "redis": statistics.median(await _redis_round_trips(self.env["REDIS_URL"], samples, pace)),
            "postgres": statistics.median(await asyncio.to_thread(_pg_updates, self.env["DATABASE_URL"], notebook_id, samples, pace)),
            "pace": pace,
        }


# Linux's SO_TIMESTAMPNS (asm-generic/socket.h), which Python's socket module does not name.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)


class Watcher:
    """A socket that only watches a notebook (or, with `send`, edits it): it reads frames and
    notes when each event with a `requestId` arrived, nothing else.

    In production a hundred watchers are a hundred browsers, each parsing its own frames on its
    own machine; here they share one Python process and two cores with the server. A full
    client (tests/live.py: the websockets library, a task and a wait per frame) costs ~70 µs a
    frame, so the hundredth watcher of bench.crud heard of an edit some 10 ms after the first
    only because the bench read the others first. This one costs a parse of the frame header and
    json.loads (docs/performance.md, "Watchers at a hundred sockets").

    Each event gets two times: `read`, when this process read it, and `at`, when the kernel had
    it on the socket (SO_TIMESTAMPNS, the receive timestamp of its bytes; for bytes read
    together, the last one's). `at` is what a browser on its own machine would see, minus the
    network: it does not wait for this process to get round to the socket, which on two shared
    cores is most of the difference between 10 and 100 watchers (docs/performance.md, "Watchers
    at a hundred sockets"). Frames from a server are unmasked and, from this one, unfragmented; pings get their
    pong and `send` writes a text frame, masked with a zero key as a client's must be."""

    def __init__(self, notebook_id, *, batch=True):
        self.path = f"/ws/notebooks/{notebook_id}/" + ("?batch=1" if batch else "")
        self.buffer = b""
        self.upgraded = False
        self.arrived = {}  # requestId -> (read, at: perf_counter times, event)
        self.waiters = {}  # requestId -> future
        self.state = asyncio.get_running_loop().create_future()
        self.sock = None

    @classmethod
    async def connect(cls, base_url, notebook_id, cookie):
        loop = asyncio.get_running_loop()
        host, port = base_url.split("//", 1)[1].split(":")
        watcher = cls(notebook_id)
        sock = watcher.sock = socket.socket()
        sock.setblocking(False)
        await loop.sock_connect(sock, (host, int(port)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        loop.add_reader(sock.fileno(), watcher._readable)
        await loop.sock_sendall(sock, upgrade_request(host + ":" + port, watcher.path, base_url, cookie))
        await asyncio.wait_for(watcher.state, 30)
        return watcher

    def _readable(self):
        try:
            data, ancillary, _, _ = self.sock.recvmsg(1 << 18, 64)
        except (BlockingIOError, InterruptedError):
            return
        read = at = time.perf_counter()
        if not data:  # the server closed the connection
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            if not self.state.done():
                self.state.set_exception(ConnectionError("closed before the notebook's state"))
            return
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
                seconds, nanoseconds = struct.unpack("qq", value[:16])
                at = min(read, seconds + nanoseconds / 1e9 - (time.time() - time.perf_counter()))
        self.data_received(data, read, at)

    def data_received(self, data, read, at):
        self.buffer += data
        if not self.upgraded:
            head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if not sep:
                return
            if not head.startswith(b"HTTP/1.1 101"):
                self.state.set_exception(RuntimeError(head.decode(errors="replace")))
                return
            self.upgraded, self.buffer = True, rest
        frames, self.buffer = server_frames(self.buffer)
        for opcode, payload in frames:
            if opcode == 0x1:
                self._text(read, at, payload)
            elif opcode == 0x9:  # ping -> pong
                self._write(0xA, payload)

    def _text(self, read, at, payload):
        frame = json.loads(payload)
        for event in frame["events"] if frame.get("type") == "batch" else (frame,):
            if event.get("type") == "notebook_state" and not self.state.done():
                self.state.set_result(event)
            rid = event.get("requestId")
            if rid is not None and rid not in self.arrived:
                self.arrived[rid] = (read, at, event)
                waiter = self.waiters.pop(rid, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)

    def _write(self, opcode, payload):
        """One client frame: the server's header (fanout.frame) with this opcode and the mask
        bit, then a zero key (the payload as it is); a few bytes, which a socket with room takes
        whole."""
        header = bytearray(frame(payload)[: -len(payload) or None])
        header[0], header[1] = 0x80 | opcode, header[1] | 0x80
        self.sock.sendall(bytes(header) + bytes(4) + payload)

    async def send(self, **message):
        self._write(0x1, json.dumps(message).encode())

    async def arrival(self, request_id, timeout=30):
        """(read, at, event) for the first event with `request_id` (perf_counter times, above)."""
        if request_id not in self.arrived:
            self.waiters[request_id] = asyncio.get_running_loop().create_future()
            await asyncio.wait_for(self.waiters[request_id], timeout)
        return self.arrived.pop(request_id)

    async def close(self):
        if self.sock is not None:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            try:
                self._write(0x8, (1000).to_bytes(2, "big"))
            except OSError:
                pass
            self.sock.close()


async def _in_chunks(count, chunk, connect):
    """[await connect(i) for i in range(count)], `chunk` at a time (Daphne gives a handshake 5 s)."""
    out = []
    for start in range(0, count, chunk):
        out += await asyncio.gather(*(connect(i) for i in range(start, min(count, start + chunk))))
    return out


def _create_database(url):
    import psycopg

    base, name = url.rsplit("/", 1)
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')


def _bench_user():
    from django.contrib.auth import get_user_model

    user, _ = get_user_model().objects.get_or_create(username=USERNAME)
    user.set_password(PASSWORD)
    user.save()
    return user


async def _redis_round_trips(url, samples, pace=0.0):
    import redis.asyncio as redis

    channel = f"bench-floor-{uuid.uuid4().hex}"
    publisher, subscriber = redis.from_url(url), redis.from_url(url)
    pubsub = subscriber.pubsub()
    await pubsub.subscribe(channel)
    await pubsub.get_message(timeout=5)  # the subscribe confirmation
    out = []
    try:
        for i in range(samples):
            start = time.perf_counter()
            await publisher.publish(channel, str(i))
            while (await pubsub.get_message(timeout=5)) is None:
                pass
            out.append((time.perf_counter() - start) * 1000)
            if pace:
                await asyncio.sleep(pace)
    finally:
        await pubsub.aclose()
        await publisher.aclose()
        await subscriber.aclose()
    return out


def _pg_updates(url, notebook_id, samples, pace=0.0):
    import psycopg

    out = []
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(samples):
            start = time.perf_counter()
            conn.execute("UPDATE notebooks_app_notebook SET revision = revision WHERE id = %s", (notebook_id,))
            out.append((time.perf_counter() - start) * 1000)
            if pace:
                time.sleep(pace)
    return out


class Report:
    """Prints the figures of one benchmark run as a Markdown table (pasteable into docs/performance.md)."""

    def __init__(self, title, floor, *, floor_note=None, paced_floor=None, floor_server=None):
        """`floor` is None for in-process benchmarks, which do no I/O to compare with;
        `floor_note` then says what their rows compare with instead.  `paced_floor`: the same
        floor taken at the benchmark's pace (Cluster.floor(pace=...)), a second ratio column.
        `floor_server`: a line on how the benchmark measures bench/floor_server.py alongside."""
        self.floor_total = floor and floor["redis"] + floor["postgres"]
        self.paced_total = paced_floor and paced_floor["redis"] + paced_floor["postgres"]
        print(f"\n## {title}")
        print(f"{datetime.datetime.now().isoformat(timespec='minutes')} · {machine()}")
        if floor:
            print(f"floor: Redis PUBLISH->SUBSCRIBE {floor['redis']:.3f} ms + committed PostgreSQL UPDATE {floor['postgres']:.3f} ms = {self.floor_total:.3f} ms")
            if paced_floor:
                print(
                    f"floor paced alike (one sample every {paced_floor['pace'] * 1000:.0f} ms): "
                    f"{paced_floor['redis']:.3f} ms + {paced_floor['postgres']:.3f} ms = {self.paced_total:.3f} ms"
                )
            if floor_server:
                print(floor_server)
            print()
        else:
            print(f"{floor_note or 'floor: none (in-process, no I/O)'}\n")
        paced = " median / paced floor | p99 / paced floor |" if self.paced_total else ""
        print(f"| case | n | median | p99 | max | unit | median / floor |{paced} note |")
        print("|---|---|---|---|---|---|---|" + ("---|---|" if self.paced_total else "") + "---|", flush=True)

    def row(self, case, samples, *, unit="ms", note=""):
        s = summary(samples)
        ratio = f"{s['median'] / self.floor_total:.1f}x" if self.floor_total and unit == "ms" else "-"
        paced = ""
        if self.paced_total:
            paced = f" {s['median'] / self.paced_total:.1f}x | {s['p99'] / self.paced_total:.1f}x |" if unit == "ms" else " - | - |"
        print(f"| {case} | {s['n']} | {s['median']:.3f} | {s['p99']:.3f} | {s['max']:.3f} | {unit} | {ratio} |{paced} {note} |", flush=True)
        return s
