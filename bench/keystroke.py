"""Shared text: the latency from a keystroke on one page to its appearance on another.

    .venv/bin/python -m bench.keystroke [--editors 2,20] [--keystrokes 150] [--gap 100,200] [--daphnes 1] [--quick]

E editors (real WebSocket clients, each holding a pycrdt document of the cell, as a page does
with Yjs) have one notebook open; its one cell has a line per editor.  A keystroke inserts one
character at the end of the typist's own line (its cursor) and is sent as `text_update`; the
figure per keystroke and other editor is the time from the typist's send to that editor's
receipt of the relayed `text_update` (matched by the update itself: the server relays it
byte for byte, and each Yjs update is unique by its client id and clock).  Two cases per E:
one editor types while the others watch, and all E type at once, each a keystroke every
100 - 200 ms (`--gap`, uniform; the 20-editor case: ~130 keystrokes a second, each to 20
sockets).  Per case, the CPU each process used (Daphne, worker, Redis, these clients).

The path: the typist's socket -> Daphne consumer -> core channel layer (Redis) -> kernel
worker -> pycrdt merge -> pub/sub layer (Redis PUBLISH) -> every Daphne -> every socket.
Floor: bench/floor_server.py relaying the same `text_update`s (WebSocket in -> Redis PUBLISH ->
WebSocket out to every other socket) between as many editors as the case has, typing with the
same gaps, in blocks of BLOCK keystrokes per typist alternating with the real server's; its rows
follow the real ones, and the notes and verdicts give the ratios of the medians and of the
p99s.  The round-trip floor, one bare Redis PUBLISH -> SUBSCRIBE round trip (a keystroke
commits nothing, so PostgreSQL is not on its path), is still the ratio column.  Also in
the same run, what the path is made of: `presence` relayed from one socket to another
(the same path without the worker: Daphne -> pub/sub layer -> Daphne), one hop of each
channel layer alone (this process, the settings' layers), and pycrdt's merge in process.

`--daphnes 2` spreads the editors over two Daphnes (one worker still): what a second one adds.

At the end every editor's text must be the same and hold every typed character, each line
exactly what its typist typed, in order: `OK` or `FAIL`.
"""
import asyncio
import base64
import os
import random
import statistics
import sys
import time
import uuid

from pycrdt import Doc, Text

from .harness import Cluster, Report, parse_args, summary, to_floor_server

WARMUP = 3  # first keystrokes of each typist, not measured
BLOCK = 30  # keystrokes of each typist on one server before the other's turn
LETTERS = "abcdefghijklmnopqrstuvwxyz0123456789"
PRESENCE_SAMPLES = 100
LAYER_SAMPLES = 200


def cpu_seconds(pid):
    """User + system CPU time of a process so far (Linux /proc), or 0 when it is not readable."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


class CpuMeter:
    """Where the CPU went during a case: each process of the cluster (the floor server's too, once
    started, and these clients), as % of one core over the wall time of every `with` of it."""

    def __init__(self, cluster):
        floor = [cluster.floor_proc.pid] if cluster.floor_proc else []
        self.pids = {"Daphne": [p.pid for p in cluster.daphnes], "worker": [p.pid for p in cluster.workers], "floor server": floor, "Redis": [p.pid for p in cluster.services.procs], "bench clients": [os.getpid()]}
        self.pids = {name: pids for name, pids in self.pids.items() if pids}
        self.wall, self.seconds = 0.0, dict.fromkeys(self.pids, 0.0)

    def __enter__(self):
        self.start = time.perf_counter(), {name: sum(map(cpu_seconds, pids)) for name, pids in self.pids.items()}
        return self

    def __exit__(self, *exc):
        self.wall += time.perf_counter() - self.start[0]
        for name, pids in self.pids.items():
            self.seconds[name] += sum(map(cpu_seconds, pids)) - self.start[1][name]
        self.used = {name: seconds / self.wall * 100 for name, seconds in self.seconds.items()}

    def line(self):
        return ", ".join(f"{name} {percent:.0f}%" for name, percent in self.used.items())


def line_tag(index):
    return f"#e{index:02d}:"


class Editor:
    """One page: a socket, the pycrdt document of the cell, and a reader timestamping every
    `text_update` and `presence` as its frame arrives."""

    def __init__(self, index, client, sent, arrivals):
        self.index = index
        self.client = client
        cell = client.state[client.order[0]]
        self.cell_id, self.generation = cell["id"], cell["ygen"]
        self.doc = Doc()
        self.doc.apply_update(base64.b64decode(cell["ydoc"]))
        self.text = self.doc.get("code", type=Text)
        self.sent, self.arrivals = sent, arrivals  # shared by all editors of a case
        self.received = set()  # updates (base64) this editor has applied, its own included
        self.presence = {}  # marker -> arrival time
        self.typed = []
        self.problems = []
        self.reader = asyncio.get_running_loop().create_task(self._read())

    def _handle(self, event, now):
        kind = event.get("type")
        if kind == "text_update" and event.get("cellId") == self.cell_id:
            key = event["update"]
            if key in self.received:
                return
            self.received.add(key)
            self.doc.apply_update(base64.b64decode(key))
            origin = self.sent.get(key)
            if origin is not None and origin[0] != self.index:
                self.arrivals.append((key, self.index, now))
        elif kind == "presence" and isinstance(event.get("cursor"), dict):
            self.presence[event["cursor"].get("marker")] = now
        elif kind in ("text_reset", "error", "kernel_error", "kernel_restarted"):
            self.problems.append(event)

    async def _read(self):
        while True:  # what connect() read past notebook_state comes first
            event = await self.client.next(3600)
            self._handle(event, time.perf_counter())

    async def keystroke(self, measured):
        """One character at the end of this editor's line, sent as a page sends it."""
        code = str(self.text)
        start = code.index(line_tag(self.index))
        cursor = code.index("\n", start)  # ASCII only: code points are pycrdt's UTF-8 bytes
        char = LETTERS[len(self.typed) % len(LETTERS)]
        before = self.doc.get_state()
        self.text.insert(cursor, char)
        update = base64.b64encode(self.doc.get_update(before)).decode("ascii")
        self.typed.append(char)
        self.received.add(update)  # its own, whether or not the server echoes it (the floor server does not)
        self.sent[update] = (self.index, time.perf_counter(), measured)
        await self.client.send(type="text_update", cellId=self.cell_id, update=update, generation=self.generation)

    async def type(self, count, gap, rng):
        for _ in range(count):
            await asyncio.sleep(rng.uniform(*gap))
            await self.keystroke(measured=len(self.typed) >= WARMUP)

    async def close(self):
        self.reader.cancel()
        await asyncio.gather(self.reader, return_exceptions=True)
        await self.client.close()


async def until(predicate, timeout):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def open_editors(cluster, count, sent, arrivals):
    code = "".join(f"{line_tag(i)}\n" for i in range(count))
    notebook_id = await cluster.anotebook([code], name=f"keystroke {count} editors {uuid.uuid4().hex[:6]}")
    clients = await cluster.clients(notebook_id, count)
    return [Editor(i, client, sent, arrivals) for i, client in enumerate(clients)]


async def open_floor_editors(cluster, count, sent, arrivals):
    """open_editors on the floor server: the cell made there (with a shared text of its code, as
    the real server makes it) by the first editor, the others waiting for it."""
    code = "".join(f"{line_tag(i)}\n" for i in range(count))
    doc = Doc()
    doc.get("code", type=Text).insert(0, code)
    clients = await cluster.floor_clients(count)
    await clients[0].request(type="create_cell", code=code, ydoc=base64.b64encode(doc.get_update()).decode("ascii"))
    await asyncio.gather(*(c.wait_for(lambda e: e["type"] == "cell_created") for c in clients[1:]))
    return [Editor(i, client, sent, arrivals) for i, client in enumerate(clients)]


class Side:
    """One server's editors in a case, with what they sent and received and the CPU it took."""

    def __init__(self, editors, sent, arrivals, cpu):
        self.editors, self.sent, self.arrivals, self.cpu = editors, sent, arrivals, cpu
        self.typing = 0.0  # seconds spent typing, its blocks only

    @classmethod
    async def open(cls, cluster, count, opener):
        sent, arrivals = {}, []
        editors = await opener(cluster, count, sent, arrivals)
        return cls(editors, sent, arrivals, CpuMeter(cluster))

    async def type(self, typists, count, gap, rngs):
        """`count` keystrokes of each of the first `typists` editors; whether every editor had
        every keystroke so far within 120 s."""
        with self.cpu:
            start = time.perf_counter()
            await asyncio.gather(*(t.type(count, gap, rng) for t, rng in zip(self.editors[:typists], rngs)))
            self.typing += time.perf_counter() - start
            total = sum(len(e.typed) for e in self.editors)
            return await until(lambda: all(len(e.received) == total for e in self.editors), timeout=120)

    def latencies(self):
        """(ms per keystroke and other editor, ms per keystroke until its last other editor), measured keystrokes only."""
        per_receipt, last_receipt = [], {}
        for key, _, now in self.arrivals:
            _, start, measured = self.sent[key]
            if measured:
                ms = (now - start) * 1000
                per_receipt.append(ms)
                last_receipt[key] = max(last_receipt.get(key, 0), ms)
        return per_receipt, list(last_receipt.values())

    def rate(self):
        """Keystrokes a second while its editors typed."""
        return len(self.sent) / max(1e-9, self.typing)

    async def close(self):
        await asyncio.gather(*(e.close() for e in self.editors))


def check(editors, case):
    """Every editor has every update, the same text, and each line is exactly what its typist typed."""
    texts = {str(e.text) for e in editors}
    expected = "".join(f"{line_tag(e.index)}{''.join(e.typed)}\n" for e in editors)
    problems = [p for e in editors for p in e.problems]
    typed = sum(len(e.typed) for e in editors)
    ok = len(texts) == 1 and texts == {expected} and not problems
    detail = f"{len(editors)} texts identical: {len(texts) == 1}; every one of {typed} typed characters in place: {expected in texts}; errors/resets: {len(problems)}"
    print(f"check {case}: {'OK' if ok else 'FAIL'} ({detail})", flush=True)
    if not ok and problems:
        print(f"  first problem: {problems[0]}", flush=True)
    return ok


async def typing_case(cluster, report, editors_count, typists_count, keystrokes, gap, seed):
    """One case on the real server and on the floor server, BLOCK keystrokes per typist at a time
    in turn, each typist with the same gaps on both; (ok, real per-receipt ms, floor's)."""
    cluster.start_floor_server()  # before the CPU meters, which count it
    real = await Side.open(cluster, editors_count, open_editors)
    floor = await Side.open(cluster, editors_count, open_floor_editors)
    rng = random.Random(seed)
    seeds = [rng.random() for _ in range(typists_count)]
    rngs = {side: [random.Random(s) for s in seeds] for side in (real, floor)}
    arrived = True
    for start in range(0, keystrokes, BLOCK):
        for side in (real, floor):
            arrived = await side.type(typists_count, min(BLOCK, keystrokes - start), gap, rngs[side]) and arrived
    case = f"{editors_count} editors, {typists_count} typing"
    total = keystrokes * typists_count
    if not arrived:
        print(f"{case}: only {min(len(e.received) for e in real.editors + floor.editors)} of {total} updates reached every editor within 120 s", flush=True)
    (per_receipt, last_receipt), (floor_per_receipt, floor_last_receipt) = real.latencies(), floor.latencies()
    versus = {"per": to_floor_server(summary(per_receipt), summary(floor_per_receipt)), "last": to_floor_server(summary(last_receipt), summary(floor_last_receipt))}
    pages = f"{editors_count - 1} other page{'s' if editors_count > 2 else ''}"
    report.row(f"keystroke -> another page: {case}", per_receipt, note=f"{real.rate():.0f} keystrokes/s, each to {pages}; {versus['per']}")
    report.row(f"keystroke -> every other page: {case}", last_receipt, note=versus["last"])
    report.row(f"floor server relay -> another page: {case}", floor_per_receipt, note=f"{floor.rate():.0f} keystrokes/s, each to {pages}")
    report.row(f"floor server relay -> every other page: {case}", floor_last_receipt)
    ok = check(real.editors, case) and check(floor.editors, f"{case}, floor server") and arrived
    print(f"cpu {case} (% of one core, until every page had every keystroke): {real.cpu.line()}", flush=True)
    print(f"cpu {case}, floor server (same): {floor.cpu.line()}", flush=True)
    await real.close()
    await floor.close()
    return ok, per_receipt, floor_per_receipt


async def presence_relay(cluster, samples):
    """Daphne -> pub/sub layer -> Daphne, socket to socket: the keystroke's path without the worker."""
    sent, arrivals = {}, []
    editors = await open_editors(cluster, 2, sent, arrivals)
    sender, watcher = editors
    out = []
    for i in range(samples + 5):
        marker = f"m{i}"
        start = time.perf_counter()
        await sender.client.send(type="presence", cellId=sender.cell_id, cursor={"marker": marker})
        await until(lambda: marker in watcher.presence, timeout=20)
        if i >= 5:
            out.append((watcher.presence[marker] - start) * 1000)
        await asyncio.sleep(0.02)
    await asyncio.gather(*(e.close() for e in editors))
    return out


async def layer_hops(samples):
    """One hop of each of the settings' channel layers, from this process to itself: a core-layer
    send -> receive on a named channel (what a keystroke pays from the consumer to the kernel
    worker) and a pub/sub group_send -> receive (from the worker to the consumers)."""
    from channels.layers import get_channel_layer
    from django.conf import settings

    core, events = get_channel_layer(), get_channel_layer(settings.EVENTS_CHANNEL_LAYER)
    channel = f"bench-keystroke-{uuid.uuid4().hex[:8]}"
    reply = await events.new_channel()
    group = f"bench-keystroke-{uuid.uuid4().hex[:8]}"
    await events.group_add(group, reply)
    message = {"type": "kernel.text_update", "notebook": "x", "cellId": "y", "update": "A" * 40, "generation": 0}
    receiver = asyncio.get_running_loop().create_task(core.receive(channel))
    await asyncio.sleep(0.05)  # the receiver waits in BZPOPMIN, as the worker does
    core_ms, pubsub_ms = [], []
    for i in range(samples + 5):
        start = time.perf_counter()
        await core.send(channel, message)
        await receiver
        arrived = time.perf_counter()
        receiver = asyncio.get_running_loop().create_task(core.receive(channel))
        if i >= 5:
            core_ms.append((arrived - start) * 1000)
        await asyncio.sleep(0.005)
        start = time.perf_counter()
        await events.group_send(group, {"type": "notebook.event", "texts": ['{"type": "text_update"}']})
        await events.receive(reply)
        if i >= 5:
            pubsub_ms.append((time.perf_counter() - start) * 1000)
        await asyncio.sleep(0.005)
    receiver.cancel()
    await asyncio.gather(receiver, return_exceptions=True)
    await events.group_discard(group, reply)
    return core_ms, pubsub_ms


def pycrdt_merge(samples, size=2000):
    """In process: what the worker does per keystroke with a cell of `size` characters
    (CellText.apply, which reads the text before and after to tell whether it changed)."""
    from notebooks_app.kernel.shared_text import CellText

    server = CellText("x" * size)
    page = Doc()
    page.apply_update(server.state())
    text = page.get("code", type=Text)
    out = []
    for i in range(samples):
        before = page.get_state()
        text.insert(i % size, "y")
        update = page.get_update(before)
        start = time.perf_counter()
        server.apply(update, max_bytes=256 * 1024)
        out.append((time.perf_counter() - start) * 1e6)
    return out


async def measure(cluster, args):
    floor = await cluster.floor()
    redis_floor = floor["redis"]
    report = Report(
        "keystroke: a keystroke on one page to its appearance on another",
        None,
        floor_note=f"floor server (bench/floor_server.py): the relay alone, WebSocket in -> Redis PUBLISH -> WebSocket out, to as many editors "
        f"typing with the same gaps, {BLOCK} keystrokes per typist at a time alternating with the real server; its rows follow the real ones, "
        f"the notes give the ratios to them.\nround-trip floor: Redis PUBLISH->SUBSCRIBE {redis_floor:.3f} ms (no PostgreSQL on a keystroke's path; "
        f"a committed UPDATE would add {floor['postgres']:.3f} ms); the ratio column is to it",
    )
    report.floor_total = redis_floor  # Report's ratio column, against this floor
    ok, medians = True, {}
    gap = (args.gap[0] / 1000, args.gap[-1] / 1000)
    for editors_count in args.editors:
        for typists_count in sorted({1, editors_count}):
            case_ok, samples, floor_samples = await typing_case(cluster, report, editors_count, typists_count, args.repeat or args.keystrokes[0], gap, seed=editors_count * 100 + typists_count)
            ok = ok and case_ok
            if samples and floor_samples:
                medians[(editors_count, typists_count)] = summary(samples), summary(floor_samples)
    print("\nwhere the time goes (same run):", flush=True)
    parts = Report("keystroke: the parts of its path", None, floor_note=f"round-trip floor: Redis PUBLISH->SUBSCRIBE {redis_floor:.3f} ms, as above")
    parts.floor_total = redis_floor
    presence = await presence_relay(cluster, args.presence[0])
    parts.row("presence relayed socket -> socket (Daphne -> pub/sub layer -> Daphne, no worker)", presence)
    core_ms, pubsub_ms = await layer_hops(args.presence[0])
    parts.row("core channel layer send -> receive (consumer -> kernel worker hop)", core_ms)
    parts.row("pub/sub channel layer group_send -> receive (worker -> consumers hop)", pubsub_ms)
    parts.row("pycrdt merge in the worker (CellText.apply, 2,000-character cell)", pycrdt_merge(samples=1000, size=2000), unit="µs")
    print(flush=True)
    for (editors_count, typists_count), (s, f) in medians.items():
        print(
            f"verdict: {editors_count} editors, {typists_count} typing: p50 {s['median']:.2f} ms, p99 {s['p99']:.2f} ms "
            f"= {s['median'] / f['median']:.1f}x / {s['p99'] / f['p99']:.1f}x the floor server (p50 {f['median']:.2f} ms, p99 {f['p99']:.2f} ms); "
            f"{s['median'] / redis_floor:.1f}x / {s['p99'] / redis_floor:.1f}x the round-trip floor ({redis_floor:.3f} ms); "
            f"p50 minus presence relay: {s['median'] - statistics.median(presence):.2f} ms",
            flush=True,
        )
    print(f"shared text: {'OK' if ok else 'FAIL'}", flush=True)
    return ok


def main(argv=None):
    args = parse_args("Keystroke latency between pages of one notebook (shared text), against the floor.", argv, editors="2,20", keystrokes="150", gap="100,200", presence=str(PRESENCE_SAMPLES), daphnes="1")
    if args.quick:
        args.editors, args.keystrokes, args.presence = [2, 3], [WARMUP + 5], [10]
    with Cluster("keystroke", daphnes=args.daphnes[0]) as cluster:
        ok = asyncio.run(measure(cluster, args))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
