"""Direct fan-out of the kernel worker's events to this process's sockets, with backpressure.

The kernel worker encodes each event once and publishes it once per batch (`notebook.event`
on the notebook's group, or on one socket's channel for a reply); a socket's presence is
encoded once by its consumer (`notebook.presence`, to every other socket of the notebook).  The pub/sub layer's shard
hands every message it receives to `deliver` first: for the sockets of this process that
registered a `SocketSink`, such a message is decoded once, its WebSocket frames are built once
(a server's frames are unmasked, so the same bytes serve every socket: one list for
`?batch=1` sockets, one for the others) and written straight to each socket's transport.
No per-socket queue, task, JSON or framing work is left on the hot path: one send per
socket and message, made at once when the socket's transport holds nothing (`send_now`).
(The consumer path costs far more than its `send`: channels dispatches each message after a
thread hop to close old database connections, so presence alone, every join announced to
every socket, was O(n²) thread hops.)

Backpressure: before writing, a sink looks at the bytes its transport still holds (Twisted's
write buffer: what the client has not read yet, beyond the kernel's socket buffers).  Over
`SOCKET_SLOW_BYTES` continuously for `SOCKET_SLOW_SECONDS`, or over `SOCKET_MAX_BYTES` at
once, the socket is too slow: it gets no more events, is sent an `error` (`too_slow`) and a
close frame with 4013 (try again later), and its connection is dropped if the close handshake
does not complete within SOCKET_SLOW_SECONDS more (at least CLOSE_GRACE), which frees its buffer.  The
page reconnects and gets a fresh `notebook_state`, which is how it resyncs.  The other sockets
never wait for it: a write only appends to a buffer.

An early announcement (docs/protocol.md) is written to the committing process's own sockets
by that process as it sends the edit to Redis (`write_here`), one Redis round trip sooner; the
copy Redis publishes carries an `origin` by which `deliver` leaves those sockets out.

Anything else, or a socket without a sink (another ASGI server, the
channels test communicator, the in-memory layer of the embedded default), goes the ordinary
way: the consumer's queue and `NotebookConsumer.notebook_event`.
"""
import asyncio
import functools
import itertools
import logging
import os
import time
import uuid

from django.conf import settings

from . import protocol

logger = logging.getLogger(__name__)

EVENT_TYPE = "notebook.event"
PRESENCE_TYPE = "notebook.presence"
CLOSE_TOO_SLOW = 4013  # try again later (docs/protocol.md)
CLOSE_GRACE = 5.0  # seconds a closed slow socket has to read up to its close frame, at least
TOO_SLOW_MESSAGE = "This connection fell too far behind the notebook's events; reconnecting for a fresh state."

# The scope key under which WebSocketUnavailableGuard (the outermost wrapper) keeps the
# server's own `send`, before any middleware wraps it.
RAW_SEND = "notebooks.raw_send"

# FANOUT_TIMING=1 (bench/fanout.py sets it): one log line per delivered message with how long
# the writes took and when the event loop had handed the frames to the kernel.
TIMING = os.environ.get("FANOUT_TIMING") == "1"

# channel name -> SocketSink, for the sockets of this process (one event loop: Daphne's).
SINKS = {}


def frame(payload):
    """One unmasked, unfragmented WebSocket text frame (RFC 6455 §5.2) around UTF-8 `payload`."""
    length = len(payload)
    if length < 126:
        header = bytes((0x81, length))
    elif length < 65536:
        header = bytes((0x81, 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + length.to_bytes(8, "big")
    return header + payload


class Frames:
    """A `notebook.event`'s bytes as they go on the wire, built once, on first use, per mode."""

    __slots__ = ("texts", "_plain", "_batched")

    def __init__(self, texts):
        self.texts = texts
        self._plain = self._batched = None

    def plain(self):
        if self._plain is None:
            self._plain = b"".join(frame(text.encode("utf-8")) for text in self.texts)
        return self._plain

    def batched(self):
        if self._batched is None:
            if len(self.texts) == 1:
                self._batched = self.plain()
            else:
                parts = []
                for group in protocol.frame_groups(self.texts):
                    text = group[0] if len(group) == 1 else '{"type": "batch", "events": [' + ", ".join(group) + "]}"
                    parts.append(frame(text.encode("utf-8")))
                self._batched = b"".join(parts)
        return self._batched


def daphne_connection(raw_send):
    """(server, protocol) behind Daphne's own `send` for one connection, or None for another server."""
    if not isinstance(raw_send, functools.partial) or not raw_send.args:
        return None
    server = getattr(raw_send.func, "__self__", None)
    protocol_ = raw_send.args[0]
    if getattr(raw_send.func, "__name__", "") != "handle_reply" or not hasattr(server, "connections"):
        return None
    if not all(hasattr(protocol_, name) for name in ("transport", "sendClose", "STATE_OPEN", "state")):
        return None
    return server, protocol_


def send_now(transport, data, held):
    """`transport.write(data)`, sent at once when Twisted holds nothing for this socket.

    Twisted's write appends to the transport's buffer and asks the loop to say when the socket
    is writable; the bytes go out a loop turn later, after two epoll_ctl calls and a layer of
    callbacks per socket: about a fifth of Daphne's time in an edit with 11 sockets (py-spy).
    With an empty buffer the socket is nearly always writable, so this tries the send(2) now
    and leaves only what the kernel did not take (and any plain-TCP doubt: TLS, a closing
    connection, bytes already held: `held`, pending_bytes) to Twisted, behind which nothing can
    overtake it."""
    sock = getattr(transport, "socket", None)
    if held or sock is None or getattr(transport, "TLS", True) or not transport.connected or transport.disconnecting or transport._writeDisconnected:
        transport.write(data)
        return
    try:
        sent = sock.send(data)
    except (BlockingIOError, InterruptedError):
        sent = 0
    except OSError:  # the connection is failing: Twisted's own write path notices and reports it
        transport.write(data)
        return
    if sent < len(data):
        transport.write(data[sent:])


def pending_bytes(transport):
    """Bytes written to a Twisted transport that the kernel has not taken yet."""
    try:
        return len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    except AttributeError:
        return 0


class SocketSink:
    """Where the direct path writes one socket's frames, and its slowness accounting."""

    def __init__(self, consumer, server, protocol_, *, batch):
        self.consumer = consumer
        self.server = server
        self.protocol = protocol_
        self.batch = batch
        self.presence_id = consumer.presence_id
        self.slow_bytes = settings.SOCKET_SLOW_BYTES
        self.max_bytes = settings.SOCKET_MAX_BYTES
        self.slow_seconds = settings.SOCKET_SLOW_SECONDS
        self.slow_since = None
        self.closed = False

    @classmethod
    def attach(cls, consumer, channel_name, raw_send, *, batch):
        """Register a sink for an accepted socket; None when the socket is not Daphne's."""
        found = daphne_connection(raw_send)
        if found is None:
            return None
        sink = cls(consumer, *found, batch=batch)
        SINKS[channel_name] = sink
        return sink

    def detach(self, channel_name):
        if SINKS.get(channel_name) is self:
            del SINKS[channel_name]

    def open(self):
        p = self.protocol
        if self.closed or p.state != p.STATE_OPEN or p.transport is None:
            return False
        connection = self.server.connections.get(p)
        return connection is not None and not connection.get("disconnected")

    def write(self, frames):
        """Write one message's frames (nothing to a socket that is closing or gone)."""
        if not self.open():
            return True
        held = pending_bytes(self.protocol.transport)
        if self.too_slow(held):
            self.close_slow()
            return True
        send_now(self.protocol.transport, frames.batched() if self.batch else frames.plain(), held)
        return True

    def too_slow(self, held):
        """`held`: the bytes the transport still holds for the client (pending_bytes)."""
        if held > self.max_bytes:
            return True
        if held <= self.slow_bytes:
            self.slow_since = None
            return False
        now = time.monotonic()
        if self.slow_since is None:
            self.slow_since = now
            return False
        return now - self.slow_since >= self.slow_seconds

    def close_slow(self):
        """No more events: say why (after what it has not read yet) and close with 4013;
        autobahn drops the connection, buffer and all, if the close handshake does not
        complete within its close timeout (the client is not reading)."""
        self.closed = True  # still registered (until the consumer's disconnect): its messages are dropped here
        held = pending_bytes(self.protocol.transport)
        logger.warning("closing a socket on %s that fell behind: %d bytes unread", getattr(self.consumer, "notebook_id", "?"), held)
        try:
            self.protocol.transport.write(frame(protocol.encode_error(protocol.TOO_SLOW, TOO_SLOW_MESSAGE).encode("utf-8")))
            # A client that is reading, just slowly, gets SOCKET_SLOW_SECONDS more to reach the
            # close frame; one that reads nothing is dropped then, its buffer with it.
            self.protocol.closeHandshakeTimeout = max(CLOSE_GRACE, self.slow_seconds)
            self.protocol.sendClose(code=CLOSE_TOO_SLOW, reason="too slow")
        except Exception:  # the connection went away meanwhile
            logger.info("could not close a slow socket cleanly", exc_info=True)
            self.protocol.transport.abortConnection()


def deliver(layer, name, data):
    """Called by the pub/sub shard for every message it receives on `name` (a group or a
    channel).  Writes a `notebook.event` directly to the sockets with a sink; returns the
    channel names still to be given the message the ordinary way (their queues)."""
    if name in layer.channels:
        targets = (name,)
    else:
        targets = layer.groups.get(name, ())
    if not SINKS or not any(t in SINKS for t in targets):
        return targets
    message = layer.channel_layer.deserialize(data)
    kind = message.get("type")
    if kind == EVENT_TYPE:
        if _written_here(layer, message.get("origin")):
            return [t for t in targets if t not in SINKS]  # they have it (write_here)
        frames, sender = Frames(message["texts"]), None
    elif kind == PRESENCE_TYPE:
        # Someone's presence: to every other socket of the notebook, not back to its own.
        frames, sender = Frames([message["text"]]), message.get("socket")
    else:
        return targets
    start = time.perf_counter() if TIMING else 0
    rest, written = _write(targets, frames, sender)
    if TIMING and kind == EVENT_TYPE:
        _log_timing(start, written)
    return rest


def _write(targets, frames, sender=None):
    """`frames` to each target with a sink (but the sender's own); (the targets without one,
    how many were written)."""
    rest, written = [], 0
    for channel_name in targets:
        sink = SINKS.get(channel_name)
        if sink is None:
            rest.append(channel_name)
        elif sender is None or sink.presence_id != sender:
            sink.write(frames)
            written += 1
    return rest, written


# Early announcements this process writes to its own sockets without waiting for Redis to
# publish them back (docs/protocol.md, "Early announcements"; docs/performance.md, "Early announcements").
# The published copy carries an `origin` that the same loop's shard recognises, so the sockets
# that had it are not written twice; a copy that never comes back (Redis lost) is forgotten
# after HERE_REMEMBERED newer ones.
HERE_REMEMBERED = 1000
_origins = itertools.count()
_PROCESS = f"{os.getpid()}.{uuid.uuid4().hex[:8]}"


def mark_here(event):
    """Give `event` (a notebook.event about to be published) the origin write_here recognises."""
    event["origin"] = f"{_PROCESS}.{next(_origins)}"
    return event


def few_here(layer, group_channel):
    """True when this loop layer has at most settings.EARLY_FIRST_SOCKETS sockets with a sink in
    the group: then an early announcement is written to them before the edit goes to Redis
    (layers.RedisChannelLayer.send_then_group_send). At ~10 µs a socket, the default 128 delay
    the kernel's message by ~1.3 ms at most; with a hundred sockets, writing them first gets
    the announcement onto every one ~2 ms sooner (docs/performance.md, "Early writes to many sockets")."""
    limit, count = settings.EARLY_FIRST_SOCKETS, 0
    for target in layer.groups.get(group_channel, ()):
        if target in SINKS:
            count += 1
            if count > limit:
                return False
    return True


def write_here(layer, group_channel, event):
    """Write the marked `event` to the sockets of this event loop's pub/sub `layer` (its loop
    layer) in `group_channel`, now, and remember it there so that its echo from Redis is left
    out for them (deliver)."""
    targets = layer.groups.get(group_channel, ())
    if not any(t in SINKS for t in targets):
        return
    written_here = layer.written_here
    written_here[event["origin"]] = None
    while len(written_here) > HERE_REMEMBERED:
        written_here.popitem(last=False)
    _write(targets, Frames(event["texts"]))


def _written_here(layer, origin):
    """True (once) for the echo of an event write_here wrote to this loop layer's sockets."""
    if origin is None or origin not in layer.written_here:
        return False
    del layer.written_here[origin]
    return True


def _log_timing(start, sockets):
    """The writes' time now; the sends' after two loop turns (what a transport still held goes
    out in the first; send_now sent the rest during the writes)."""
    written = (time.perf_counter() - start) * 1000
    loop = asyncio.get_running_loop()

    def flushed():
        logger.warning("fanout timing: sockets=%d written_ms=%.3f flushed_ms=%.3f", sockets, written, (time.perf_counter() - start) * 1000)

    loop.call_soon(loop.call_soon, flushed)

