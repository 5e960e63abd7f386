"""The tests' one protocol client: a WebSocket client of one notebook that keeps the notebook the
way the page does, from a `notebook_state` and every event after it in `seq` order
(docs/protocol.md).

It talks to the consumer in this process (channels' WebsocketCommunicator on the ASGI
application, the default) or, given `server`, to a running server over a real socket. It must
not hide a fault of the server: a gap in `seq` fails the test unless the client is told to
resync as the page does.
"""
import asyncio
import json
import time

import websockets

from tests.waiting import EVENT_TIMEOUT


class Closed(ConnectionError):
    """The server closed the socket (`code`: its close code, if it sent one)."""

    def __init__(self, code):
        super().__init__(f"closed with {code}")
        self.code = code


class InProcess:
    """The consumer in this process, through channels' WebsocketCommunicator."""

    def __init__(self, application, path, cookie):
        from channels.testing import WebsocketCommunicator

        headers = [(b"origin", b"http://testserver"), (b"host", b"testserver")]
        if cookie:
            headers.append((b"cookie", cookie.encode()))
        self.comm = WebsocketCommunicator(application, path, headers=headers)

    async def open(self, timeout):
        connected, _ = await self.comm.connect(timeout=timeout)
        assert connected

    async def send(self, data):
        # send_input, not send_to: an empty frame is a frame too.
        await self.comm.send_input({"type": "websocket.receive", ("bytes" if isinstance(data, bytes) else "text"): data})

    async def receive(self, timeout):
        # receive_output() cancels the application when it times out, so not that: the output
        # queue itself, awaited (a cancelled get() loses no message), keeps the connection open
        # across a quiet spell, and wakes at the frame rather than polling for it.
        if self.comm.future.done():
            self.comm.future.result()  # the application failed: its exception, as receive_output() raises it
        queue = self.comm.output_queue
        message = queue.get_nowait() if not queue.empty() else await asyncio.wait_for(queue.get(), timeout)
        if message["type"] == "websocket.close":
            raise Closed(message.get("code"))
        return message["text"]

    async def close(self):
        await self.comm.disconnect()


class OverTheNetwork:
    """A real WebSocket to a running server (Daphne), as a browser opens it."""

    def __init__(self, server, path, cookie):
        self.url = server.replace("http://", "ws://") + path
        self.headers = {"Origin": server, **({"Cookie": cookie} if cookie else {})}
        self.ws = None

    async def open(self, timeout):
        self.ws = await websockets.connect(self.url, additional_headers=self.headers, max_size=None, open_timeout=timeout)

    async def send(self, data):
        await self.ws.send(data)

    async def receive(self, timeout):
        try:
            # asyncio.timeout, not wait_for: no task per frame (the benches' hundred clients in
            # one process spent a sixth of their time making them).
            async with asyncio.timeout(timeout):
                return await self.ws.recv()
        except websockets.exceptions.ConnectionClosed as exc:
            raise Closed(exc.rcvd.code if exc.rcvd else None) from None

    async def close(self):
        await self.ws.close()


class NotebookClient:
    """A WebSocket client of one notebook: `state` ({cell id: cell}) and `order` are the
    notebook as the page would show it, `events` every event with a `seq` in order.

    Options, for what tests of different layers need:
    - `server`: the base URL of a running server (else the ASGI application in this process);
      `cookie` is the Cookie header either way (`session_cookie`, `tests.live.login`).
    - `batch`: connect as the page does (`?batch=1`): a cascade's events come as batch frames.
    - `resync_on_gap`: as the page does, a gap in `seq` sends `sync` and skips events until
      the state (counted in `resyncs`); a skipped event that carries a requestId is still
      returned, unapplied, so that a request is answered. Off by default, so that a test fails
      on a gap the server should not make.
    - `reconnect`: as the page does, a socket the server closed connects again (`next()` then
      returns {"type": "reconnected"}), and `connect()` retries until its timeout while the
      server is down or refuses.
    - `timeout`: the default of every wait, in seconds.
    - `watch_presence` / `watch_early` (attributes too): `next()` and `wait_for()` also return
      presence frames / early announcements, which are otherwise only kept apart
      (`presences`, `early`).
    """

    def __init__(self, notebook_id, cookie=None, *, server=None, batch=False, resync_on_gap=False, reconnect=False, timeout=EVENT_TIMEOUT, watch_presence=False, watch_early=False):
        self.notebook_id = str(notebook_id)
        self.cookie = cookie
        self.server = server
        self.path = f"/ws/notebooks/{self.notebook_id}/" + ("?batch=1" if batch else "")
        self.resync_on_gap = resync_on_gap
        self.reconnect = reconnect
        self.timeout = timeout
        self.watch_presence = watch_presence
        self.watch_early = watch_early
        self.frames = 0  # WebSocket frames received
        self.largest_frame = 0  # in bytes
        self.events = []  # every notebook event with a seq, in arrival order
        self.replies = []  # errors and other frames without seq
        self.presences = []  # presence frames (no seq), in arrival order
        self.early = []  # early announcements (no seq; docs/protocol.md), in arrival order
        self.state = None
        self.order = []
        self.kernel = None  # the execution process's state: notebook_state's `kernel`, then kernel_status
        self.seq = None
        self.revision = None  # the newest revision the state and events in seq order said
        self.state_chunks = 1  # how many frames the last notebook_state came in
        self.close_code = None
        self.resyncs = 0
        self._transport = None
        self._connecting = False
        self._pending = []  # events of a frame read, not returned yet
        self._requests = 0
        self._syncing = False
        self._drop = None  # predicate: the next matching event is lost on its way here
        self._partial_state = None  # a chunked notebook_state still waiting for its chunks

    def _new_transport(self):
        if self.server:
            return OverTheNetwork(self.server, self.path, self.cookie)
        from notebookproject.asgi import application

        return InProcess(application, self.path, self.cookie)

    # --- the socket ---------------------------------------------------------------------------

    async def connect(self, wait_state=True, timeout=None):
        """Open the socket and, unless told not to, wait for the notebook's state."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        self._connecting = True
        try:
            while True:
                try:
                    self._transport, self._pending, self._syncing, self._partial_state = self._new_transport(), [], False, None
                    await self._transport.open(max(0.1, deadline - time.monotonic()))
                    if wait_state and self.reconnect:  # a server that took the socket but sends nothing is tried again too
                        await self._until(lambda e: e["type"] == "notebook_state", min(10, deadline - time.monotonic()))
                    elif wait_state:
                        await self.wait_for(lambda e: e["type"] == "notebook_state", deadline - time.monotonic(), "notebook_state")
                    return self
                except (OSError, websockets.exceptions.WebSocketException):  # refused, closed (e.g. 4013) or silent
                    if not self.reconnect or time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.5)  # the page's pace between attempts, not a wait for a condition
        finally:
            self._connecting = False

    async def send(self, **message):
        await self._transport.send(json.dumps(message))

    async def send_raw(self, data):
        """Send a frame as it is: text (a str) or binary (bytes)."""
        await self._transport.send(data)

    async def receive_frame(self, timeout=None):
        """The next frame from the server, decoded and not yet applied; raises Closed when the
        server closed the socket, asyncio.TimeoutError after `timeout` seconds of silence."""
        try:
            text = await self._transport.receive(self.timeout if timeout is None else timeout)
        except Closed as closed:
            self.close_code = closed.code
            raise
        self.frames += 1
        self.largest_frame = max(self.largest_frame, len(text.encode()))
        return json.loads(text)

    async def close(self):
        await self._transport.close()

    # --- the notebook, from frames --------------------------------------------------------------

    def apply_frame(self, frame):
        """Apply a frame to the notebook; the events a reader gets from it, in order."""
        out = []
        for event in frame["events"] if frame.get("type") == "batch" else [frame]:
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
            if event["type"] == "notebook_state":
                self._syncing = False
                self.state = {c["id"]: dict(c) for c in event["notebook"]["cells"]}
                self.order = [c["id"] for c in event["notebook"]["cells"]]
                self.kernel = event["notebook"].get("kernel")
                self.seq = event["seq"]
                self.revision = event["notebook"].get("revision")
                self.state_chunks = event.get("chunks", 1)
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
            skip = self._syncing or (self.seq is not None and event["seq"] <= self.seq)  # the coming state holds it, or the one we hold does
            if not skip and self.resync_on_gap and self.seq is not None and event["seq"] != self.seq + 1:
                self.resyncs += 1
                self._syncing = skip = True
            if skip:
                if self.resync_on_gap and event.get("requestId") is not None:
                    out.append(event)  # not applied, but it still answers its request: the state holds it
                continue
            assert self.seq is None or event["seq"] == self.seq + 1, f"gap: {self.seq} -> {event['seq']}"
            self.seq = event["seq"]
            if isinstance(event.get("revision"), int) and (self.revision is None or event["revision"] > self.revision):
                self.revision = event["revision"]
            self.events.append(event)
            self._fold(event)
            out.append(event)
        return out

    def _fold(self, event):
        if event["type"] == "kernel_status":
            self.kernel = {key: value for key, value in event.items() if key not in ("type", "seq")}
        if self.state is None:
            return
        kind, cell_id = event["type"], event.get("cellId")
        if kind == "cell_created":
            self.state[cell_id] = dict(event["cell"])
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

    def drop_next(self, predicate):
        """Lose the next event matching `predicate`, as a socket whose server lost its Redis would."""
        self._drop = predicate

    # --- waiting for events ----------------------------------------------------------------------

    async def next(self, timeout=None):
        """The next event (or reply) in order; asyncio.TimeoutError after `timeout` seconds."""
        timeout = self.timeout if timeout is None else timeout
        while not self._pending:
            try:
                frame = await self.receive_frame(timeout)
            except Closed:
                if not self.reconnect or self._connecting:
                    raise
                await self.connect()
                return {"type": "reconnected"}
            was_syncing = self._syncing
            self._pending = self.apply_frame(frame)
            if self._syncing and not was_syncing:
                await self.send(type="sync")
        return self._pending.pop(0)

    async def _until(self, predicate, timeout, seen=None):
        """Events up to and including the first one matching `predicate` (appended to `seen`);
        asyncio.TimeoutError after `timeout` seconds."""
        seen = [] if seen is None else seen
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise asyncio.TimeoutError
            event = await self.next(remaining)
            seen.append(event)
            if predicate(event):
                return seen

    async def wait_for(self, predicate, timeout=None, what="event"):
        """Events up to and including the first one matching `predicate`."""
        seen = []
        try:
            return await self._until(predicate, self.timeout if timeout is None else timeout, seen)
        except asyncio.TimeoutError:
            raise AssertionError(f"timed out waiting for {what}; saw {seen[-10:]}") from None

    async def wait_state(self):
        return await self.wait_for(lambda e: e["type"] == "notebook_state", what="notebook_state")

    async def wait_status(self, cell_id, status, timeout=None):
        return await self.wait_for(lambda e: e["type"] == "cell_status" and e.get("cellId") == cell_id and e["status"] == status, timeout, f"{cell_id} {status}")

    async def request(self, timeout=None, **message):
        """Send a message with a fresh requestId; return the reply/event that carries it."""
        self._requests += 1
        rid = f"{id(self):x}-r{self._requests}"  # unique across clients: every client sees every requestId
        await self.send(requestId=rid, **message)
        seen = await self.wait_for(lambda e: e.get("requestId") == rid, timeout, f"reply to {message['type']}")
        return seen[-1]

    async def expect_silence(self, seconds=0.5):
        """Nothing but presence (people coming and going) and early announcements (which may
        come just after the same change in seq order) arrives for `seconds`."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                frame = await self.receive_frame(remaining)
            except asyncio.TimeoutError:
                return
            events = frame["events"] if frame.get("type") == "batch" else [frame]
            assert all(e.get("type") == "presence" or e.get("early") for e in events), f"expected no message, got {frame}"
            self.apply_frame(frame)
