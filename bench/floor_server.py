"""The benchmarks' floor: a minimal server doing the essential work of an edit, a keystroke and a
run on the same PostgreSQL and Redis as the cluster, with nothing else.  It is a yardstick, not a
notebook server: it must not grow features.

    DATABASE_URL=... REDIS_URL=... .venv/bin/python -m bench.floor_server --port P

One process: an asyncio WebSocket server (the `websockets` library, no compression, as Daphne
sends), one autocommit psycopg connection, one Redis connection that publishes and one that
subscribes.  A socket opens `/ws/.../<notebook id>/` (any notebook id: the notebook is whatever
its sockets made of it) and gets a `notebook_state` of the cells this process holds for it.
What each message costs, exactly:

- `create_cell` {code, ydoc?}: one committed INSERT into a table of this process's own (created
  at start, dropped at exit), one PUBLISH; the subscriber writes `cell_created` (a new cell's
  fields as the real server sends them: id, type, code, reads, writes, outputs, ..., and `ydoc`,
  the one given or a filler of a real one's length) to every socket of the notebook, the
  sender's too.  `cell_update`, `move_cell` (after `afterCellId`, or to the top) and
  `delete_cell` alike: one committed UPDATE or DELETE, one PUBLISH, the event to every socket.
- `text_update`: the text as received, PUBLISHed; the subscriber writes it to every other socket
  of the notebook.  Nothing is merged or stored.
- `run_cell` {cellId}: the cell and every cell after it in the notebook's order (no graph: in
  the benchmark's chain each depends on the one before) go to the notebook's child Python
  process in one line of JSON; the child execs them in one namespace and answers a line per cell
  (`<id> success|error`).  Their statuses go out as `batch` frames (every socket is taken to
  have asked for them, `?batch=1`), one PUBLISH each time 10 ms have passed since the first
  status not yet sent (checked as lines arrive: the floor's cells never pause); once every line
  is in, one UPDATE ... FROM jsonb_to_recordset of every status, then the rest of them (as the
  real worker persists a run before its last flush).  Only final statuses are sent (no
  `queued` / `running`), no outputs, no stdout.

Every event has the notebook's next `seq`, counted in memory.  Left out, all of it on purpose:
authentication and permissions, validation of messages, the history log, the notebook row and
its revision, locks, the dependency graph and analysis of code, shared-text merging, the
sandbox, the kernel worker and its channel-layer hops, reconnection, errors to the client.
"""
import argparse
import asyncio
import base64
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import redis.asyncio as redis
from websockets.asyncio.server import broadcast, serve

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.waiting import eventually  # noqa: E402

logger = logging.getLogger(__name__)

EVERYONE = "-"  # the origin of an event that goes to the sender's socket too
FLUSH_DELAY = 0.01  # as notebooks_app/kernel/event_stream.py batches a cascade's events
POSITION_STEP = 1024
LISTENING = "floor server listening on"  # logged once it accepts connections (start() waits for it)
encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

# The execution process: one namespace, a line of [[id, code], ...] in, a line per cell out.
CHILD = """
import json, sys
namespace = {}
for line in sys.stdin:
    for cell_id, code in json.loads(line):
        try:
            exec(code, namespace)
            status = "success"
        except Exception:
            status = "error"
        sys.stdout.write(cell_id + " " + status + "\\n")
    sys.stdout.flush()
"""


class Notebook:
    """What this process holds of a notebook: its sockets, its cells in order, its seq, its child."""

    def __init__(self, notebook_id):
        self.id = notebook_id
        self.sockets = set()
        self.order = []
        self.cells = {}  # id -> the cell as the protocol sends it
        self.positions = {}  # id -> the position its row has
        self.seq = 0
        self.child = None

    def state(self):
        return encode({"type": "notebook_state", "seq": self.seq, "notebook": {"cells": [self.cells[c] for c in self.order]}})

    def event(self, event):
        self.seq += 1
        event["seq"] = self.seq
        return event

    async def execution(self):
        if self.child is None:
            self.child = await asyncio.create_subprocess_exec(sys.executable, "-c", CHILD, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        return self.child


def new_cell(cell_id, code, ydoc):
    """A new cell's fields as the real server sends them; `ydoc` a filler of a real one's length
    (a pycrdt document of `code` is ~20 bytes more than the code) when the sender gave none."""
    ydoc = ydoc or base64.b64encode(bytes(20 + len(code.encode()))).decode("ascii")
    return {"id": cell_id, "type": "code", "code": code, "resultVariable": "", "status": "idle", "outputs": [], "stdout": "", "reads": [], "writes": [], "error": None, "ydoc": ydoc, "ygen": 0}


class FloorServer:
    """The sockets' handler, the subscriber and one method per message (the module docstring says
    what each does); its connections are handed in."""

    def __init__(self, database, publisher, subscriber):
        self.database = database
        self.publisher = publisher
        self.subscriber = subscriber
        self.table = f"floor_cell_{uuid.uuid4().hex[:8]}"  # its own, so that two floor servers share a database
        self.channel = f"bench-floor-{self.table}"  # and a Redis (whose channels no database number separates)
        self.notebooks = {}
        self.handlers = {"create_cell": self.create, "cell_update": self.update, "move_cell": self.move, "delete_cell": self.delete, "text_update": self.text_update, "run_cell": self.run}

    async def setup(self):
        await self.subscriber.subscribe(self.channel)
        await self.database.execute(f"CREATE TABLE {self.table} (id uuid PRIMARY KEY, notebook uuid NOT NULL, position bigint NOT NULL, code text NOT NULL, status text NOT NULL DEFAULT 'idle')")
        await self.database.execute(f"CREATE INDEX ON {self.table} (notebook)")

    async def teardown(self):
        await self.database.execute(f"DROP TABLE IF EXISTS {self.table}")
        for notebook in self.notebooks.values():
            if notebook.child is not None and notebook.child.returncode is None:
                notebook.child.kill()
                await notebook.child.wait()

    # --- sockets -------------------------------------------------------------------------------

    async def connection(self, ws):
        notebook_id = ws.request.path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        if notebook_id not in self.notebooks:
            self.notebooks[notebook_id] = Notebook(notebook_id)
        notebook = self.notebooks[notebook_id]
        notebook.sockets.add(ws)
        try:
            await ws.send(notebook.state())
            async for text in ws:
                message = json.loads(text)
                await self.handlers[message["type"]](notebook, message, text=text, ws=ws)
        finally:
            notebook.sockets.discard(ws)

    async def publish(self, notebook, text, origin=EVERYONE):
        await self.publisher.publish(self.channel, f"{notebook.id}\n{origin}\n{text}")

    async def relay(self):
        """The subscriber: each published text, written to every socket of its notebook but its origin's."""
        async for message in self.subscriber.listen():
            if message["type"] != "message":
                continue
            notebook_id, origin, text = message["data"].split("\n", 2)
            notebook = self.notebooks.get(notebook_id)
            if notebook is not None:
                broadcast([s for s in notebook.sockets if origin == EVERYONE or str(id(s)) != origin], text)

    # --- messages ------------------------------------------------------------------------------

    async def create(self, notebook, message, **_):
        cell_id = str(uuid.uuid4())
        position = notebook.positions[notebook.order[-1]] + POSITION_STEP if notebook.order else POSITION_STEP
        await self.database.execute(f"INSERT INTO {self.table} (id, notebook, position, code) VALUES (%s, %s, %s, %s)", (cell_id, notebook.id, position, message["code"]))
        notebook.cells[cell_id], notebook.positions[cell_id] = new_cell(cell_id, message["code"], message.get("ydoc")), position
        notebook.order.append(cell_id)
        event = {"type": "cell_created", "cellId": cell_id, "cell": notebook.cells[cell_id], "index": len(notebook.order) - 1, "requestId": message.get("requestId")}
        await self.publish(notebook, encode(notebook.event(event)))

    async def update(self, notebook, message, **_):
        cell_id, code = message["cellId"], message["code"]
        await self.database.execute(f"UPDATE {self.table} SET code = %s WHERE id = %s", (code, cell_id))
        notebook.cells[cell_id]["code"] = code
        event = {"type": "cell_updated", "cellId": cell_id, "code": code, "reads": [], "writes": [], "resultVariable": "", "requestId": message.get("requestId")}
        await self.publish(notebook, encode(notebook.event(event)))

    async def move(self, notebook, message, **_):
        """After `afterCellId` (one past its position: no room is ever made) or to the top."""
        cell_id, after = message["cellId"], message.get("afterCellId")
        notebook.order.remove(cell_id)
        index = notebook.order.index(after) + 1 if after else 0
        if after:
            position = notebook.positions[after] + 1
        else:
            position = notebook.positions[notebook.order[0]] - POSITION_STEP if notebook.order else 0
        await self.database.execute(f"UPDATE {self.table} SET position = %s WHERE id = %s", (position, cell_id))
        notebook.order.insert(index, cell_id)
        notebook.positions[cell_id] = position
        await self.publish(notebook, encode(notebook.event({"type": "cell_moved", "cellId": cell_id, "index": index, "requestId": message.get("requestId")})))

    async def delete(self, notebook, message, **_):
        cell_id = message["cellId"]
        await self.database.execute(f"DELETE FROM {self.table} WHERE id = %s", (cell_id,))
        notebook.order.remove(cell_id)
        del notebook.cells[cell_id], notebook.positions[cell_id]
        await self.publish(notebook, encode(notebook.event({"type": "cell_deleted", "cellId": cell_id, "requestId": message.get("requestId")})))

    async def text_update(self, notebook, message, *, text, ws):
        await self.publish(notebook, text, origin=str(id(ws)))

    async def run(self, notebook, message, **_):
        cells = notebook.order[notebook.order.index(message["cellId"]) :]
        child = await notebook.execution()
        child.stdin.write((json.dumps([[c, notebook.cells[c]["code"]] for c in cells]) + "\n").encode())
        await child.stdin.drain()
        statuses, pending, first = [], [], None
        for _ in cells:
            cell_id, status = (await child.stdout.readline()).decode().split()
            notebook.cells[cell_id]["status"] = status
            statuses.append({"id": cell_id, "status": status})
            pending.append(notebook.event({"type": "cell_status", "cellId": cell_id, "status": status}))
            first = first or time.monotonic()
            if time.monotonic() - first >= FLUSH_DELAY:
                await self.publish(notebook, batch_frame(pending))
                pending, first = [], None
        await self.database.execute(f"UPDATE {self.table} AS c SET status = r.status FROM jsonb_to_recordset(%s::jsonb) AS r(id uuid, status text) WHERE c.id = r.id", (json.dumps(statuses),))
        if pending:
            await self.publish(notebook, batch_frame(pending))


def batch_frame(events):
    return encode(events[0]) if len(events) == 1 else encode({"type": "batch", "events": events})


async def serve_until_stopped(port):
    database = await psycopg.AsyncConnection.connect(os.environ["DATABASE_URL"], autocommit=True)
    publisher = redis.from_url(os.environ["REDIS_URL"])
    subscriber = redis.from_url(os.environ["REDIS_URL"], decode_responses=True).pubsub()
    server = FloorServer(database, publisher, subscriber)
    await server.setup()
    relay = asyncio.get_running_loop().create_task(server.relay())
    stopped = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stopped.set)
    try:
        async with serve(server.connection, "127.0.0.1", port, compression=None, max_size=None):
            logger.warning("%s 127.0.0.1:%s (table %s)", LISTENING, port, server.table)
            await stopped.wait()
    finally:
        relay.cancel()
        await asyncio.gather(relay, return_exceptions=True)
        await server.teardown()
        await subscriber.aclose()
        await publisher.aclose()
        await database.close()


def start(port, env, log_path):
    """This server as its own process (in its own process group, so that tests.live.stop ends its
    children too) on `env`'s DATABASE_URL and REDIS_URL; returns once it has logged that it listens."""
    log_path = Path(log_path)
    offset = log_path.stat().st_size if log_path.exists() else 0
    log = open(log_path, "ab")
    proc = subprocess.Popen([sys.executable, "-m", "bench.floor_server", "--port", str(port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def listening():
        if proc.poll() is not None:
            raise RuntimeError(f"the floor server exited with {proc.returncode}; see {log_path}")
        return LISTENING.encode() in log_path.read_bytes()[offset:]

    eventually(listening, 40, f"the floor server to listen (see {log_path})", interval=0.05).wait()
    return proc


def main(argv=None):
    parser = argparse.ArgumentParser(description="The benchmarks' floor server (bench/floor_server.py).")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(serve_until_stopped(args.port))


if __name__ == "__main__":
    sys.exit(main())
