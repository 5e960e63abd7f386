"""The private parts of Twisted, Daphne, autobahn, Channels, channels-redis and redis-py that our
code leans on (docs/architecture.md, "Private upstream dependencies"), checked on real objects
built without a server: an upgrade that renames, removes or reshapes one fails here, with the
module of ours that depends on it, instead of silently falling back to a slower path (fanout,
the dispatch hop) or losing the reconnection logic (layers).

Where we carry a copy or a rewrite of an upstream function, the upstream function's source is
hashed: a change upstream fails the test until someone compares it with our copy and updates
the hash (`UPSTREAM_SOURCES`).
"""
import functools
import hashlib
import inspect
import socket
import textwrap
import types

import pytest
from autobahn import exception as autobahn_exception
from autobahn.websocket.protocol import WebSocketProtocol as AutobahnProtocol
from channels import consumer as channels_consumer
from channels_redis import core, pubsub
from daphne.server import Server
from daphne.ws_protocol import WebSocketFactory
from redis.asyncio import ConnectionPool
from redis.asyncio.connection import Connection as RedisConnection
from twisted.internet import tcp

from notebooks_app import consumers, fanout, layers

FANOUT = "notebooks_app/fanout.py"
LAYERS = "notebooks_app/layers.py"
CONSUMERS = "notebooks_app/consumers.py"
UNREACHABLE_REDIS = [{"address": "redis://127.0.0.1:9/0"}]  # never connected to: these checks build, never talk

# Upstream functions we copied or rewrote, with the hash of the source our code was written
# against (sha256 of the dedented source, first 16 hex digits), and where ours is.
UPSTREAM_SOURCES = {
    (core.RedisChannelLayer, "send"): ("e40b2cc7b0b94983", f"{LAYERS}: RedisChannelLayer._send is a copy (as one Lua script)"),
    (core.RedisChannelLayer, "_brpop_with_clean"): ("5c12c4dd28e5e89a", f"{LAYERS}: RedisChannelLayer._brpop_with_clean replaces it; _RESTORE_BACKUP_SCRIPT copies its script"),
    (core.RedisChannelLayer, "_clean_receive_backup"): ("84dd60c33856e543", f"{LAYERS}: RedisChannelLayer._clean_receive_backup replaces it with nothing"),
    (core.RedisChannelLayer, "receive_single"): ("514c7e65322f0240", f"{LAYERS}: RedisChannelLayer._brpop_with_clean drops the backup because receive_single awaits nothing between the pop and the hand-off"),
    (pubsub.RedisPubSubChannelLayer, "_get_layer"): ("40f40530d32ba6a6", f"{LAYERS}: RedisPubSubChannelLayer._get_layer is a copy building _ResilientLoopLayer"),
    (pubsub.RedisSingleShardConnection, "subscribe"): ("ef11712987b04e70", f"{LAYERS}: _ResilientShard.subscribe rewrites it"),
    (pubsub.RedisSingleShardConnection, "unsubscribe"): ("f2dd88002d6aef1e", f"{LAYERS}: _ResilientShard.unsubscribe rewrites it"),
    (pubsub.RedisSingleShardConnection, "_do_receiving"): ("645ec294718899fc", f"{LAYERS}: _ResilientShard._do_receiving rewrites it (reconnects with backoff)"),
    (pubsub.RedisSingleShardConnection, "_receive_message"): ("bbc1e4ac19a5419a", f"{LAYERS}: _ResilientShard._receive_message rewrites it (fanout.deliver first)"),
    (pubsub.RedisSingleShardConnection, "_ensure_receiver"): ("77c7c878aa68068c", f"{LAYERS}: _ResilientShard relies on it starting self._do_receiving()"),
    (channels_consumer.AsyncConsumer, "dispatch"): ("fb797181cb7cf340", f"{CONSUMERS}: NotebookConsumer.dispatch is a copy without aclose_old_connections()"),
}


def source_hash(function):
    return hashlib.sha256(textwrap.dedent(inspect.getsource(function)).encode()).hexdigest()[:16]


def needs(condition, who, what):
    assert condition, f"{who} depends on {what}, which the installed version no longer has: see docs/architecture.md, 'Private upstream dependencies'"


def has_all(obj, names, who, owner):
    for name in names:
        needs(hasattr(obj, name), who, f"{owner}.{name}")


def parameters(function):
    return list(inspect.signature(function).parameters)


@pytest.mark.parametrize("owner, name", list(UPSTREAM_SOURCES), ids=[f"{o.__module__}.{o.__name__}.{n}" for o, n in UPSTREAM_SOURCES])
def test_the_upstream_functions_we_copied_are_unchanged(owner, name):
    expected, ours = UPSTREAM_SOURCES[(owner, name)]
    function = owner.__dict__.get(name)
    needs(function is not None, ours.split(":")[0], f"{owner.__module__}.{owner.__qualname__}.{name}")
    assert source_hash(function) == expected, (
        f"{owner.__module__}.{owner.__qualname__}.{name} changed upstream (hash {source_hash(function)}, ours was written against {expected}). "
        f"{ours}: compare the two, carry the change over (or drop ours if upstream now does what we need), then update the hash in UPSTREAM_SOURCES."
    )


def test_the_backup_restore_script_is_still_upstreams():
    def words(text):
        return " ".join(text.split())

    needs(
        words(layers._RESTORE_BACKUP_SCRIPT) in words(inspect.getsource(core.RedisChannelLayer._brpop_with_clean)),
        LAYERS,
        "the backup-restoring script of channels_redis.core.RedisChannelLayer._brpop_with_clean (copied as _RESTORE_BACKUP_SCRIPT)",
    )
    needs(core.RedisChannelLayer._backup_channel_name(None, "k") == "k$inflight", LAYERS, "channels_redis.core.RedisChannelLayer._backup_channel_name")


def test_the_core_layer_has_what_our_send_and_receive_use():
    layer = layers.RedisChannelLayer(hosts=UNREACHABLE_REDIS)
    has_all(layer, ["_send_index_generator", "hosts", "prefix", "expiry", "non_local_name", "consistent_hash", "get_capacity", "serialize", "require_valid_channel_name", "connection", "_backup_channel_name"], LAYERS, "channels_redis.core.RedisChannelLayer")
    needs(next(layer._send_index_generator) == 0, LAYERS, "channels_redis.core.RedisChannelLayer._send_index_generator (an iterator of host indexes)")
    needs(parameters(core.RedisChannelLayer._brpop_with_clean) == ["self", "index", "channel", "timeout"], LAYERS, "channels_redis.core.RedisChannelLayer._brpop_with_clean(index, channel, timeout)")
    needs(parameters(core.RedisChannelLayer._clean_receive_backup) == ["self", "index", "channel"], LAYERS, "channels_redis.core.RedisChannelLayer._clean_receive_backup(index, channel)")
    receive_single = inspect.getsource(core.RedisChannelLayer.receive_single)
    needs("self._brpop_with_clean(" in receive_single and "self._clean_receive_backup(" in receive_single, LAYERS, "channels_redis.core.RedisChannelLayer.receive_single calling _brpop_with_clean and _clean_receive_backup")


async def test_the_pubsub_layer_has_what_our_shards_and_fanout_use():
    events = layers.RedisPubSubChannelLayer(hosts=UNREACHABLE_REDIS)
    has_all(events, ["_args", "_kwargs", "_layers", "serialize", "deserialize"], LAYERS, "channels_redis.pubsub.RedisPubSubChannelLayer")
    for name in ("_wrap_close", "_close_redis"):
        needs(callable(getattr(pubsub, name, None)), LAYERS, f"channels_redis.pubsub.{name}")
    loop_layer = events._get_layer()  # ours, through the copied _get_layer
    needs(isinstance(loop_layer, pubsub.RedisPubSubLoopLayer), LAYERS, "channels_redis.pubsub.RedisPubSubLoopLayer")
    has_all(loop_layer, ["channels", "groups", "channel_layer", "_shards", "_get_shard", "_get_group_channel_name"], f"{LAYERS} and {FANOUT}", "channels_redis.pubsub.RedisPubSubLoopLayer")
    needs(isinstance(loop_layer.channels, dict) and isinstance(loop_layer.groups, dict), FANOUT, "RedisPubSubLoopLayer.channels and .groups (dicts of queues and of channel-name sets)")
    group_channel = loop_layer._get_group_channel_name("notebook-1")
    shard = loop_layer._get_shard(group_channel)
    needs(isinstance(shard, layers._ResilientShard), LAYERS, "RedisPubSubLoopLayer._shards (replaced by _ResilientShard instances)")
    has_all(shard, ["host", "channel_layer", "_lock", "_subscribed_to", "_redis", "_pubsub", "_receive_task", "_ensure_redis", "_ensure_receiver"], LAYERS, "channels_redis.pubsub.RedisSingleShardConnection")
    needs(isinstance(shard.host, dict) and "address" in shard.host, LAYERS, "RedisSingleShardConnection.host (a decoded host dict; _server reads it)")
    needs(not layers.redis_down(events), LAYERS, "the pub/sub shards' _broken flag (redis_down)")
    await loop_layer.flush()


def test_redis_py_connections_have_the_calls_eval_then_makes():
    needs(not [p for p in inspect.signature(ConnectionPool.get_connection).parameters.values() if p.name != "self" and p.default is p.empty and p.kind is p.POSITIONAL_OR_KEYWORD], LAYERS, "redis.asyncio.ConnectionPool.get_connection() with no arguments")
    for name in ("send_command", "read_response", "disconnect"):
        needs(callable(getattr(RedisConnection, name, None)), LAYERS, f"redis.asyncio.connection.Connection.{name}")
    needs(callable(getattr(ConnectionPool, "release", None)), LAYERS, "redis.asyncio.ConnectionPool.release")


def test_the_consumer_dispatch_copy_uses_channels_handler_names():
    needs(channels_consumer.get_handler_name({"type": "notebook.event"}) == "notebook_event", CONSUMERS, "channels.consumer.get_handler_name")
    needs(consumers.NotebookConsumer.dispatch is not channels_consumer.AsyncConsumer.dispatch, CONSUMERS, "overriding AsyncConsumer.dispatch")


def test_autobahns_disconnected_is_what_a_send_to_a_closed_socket_raises():
    needs(autobahn_exception.Disconnected.__name__ == "Disconnected", CONSUMERS, "autobahn.exception.Disconnected (NotebookConsumer.send matches it by name)")
    needs("raise Disconnected(" in inspect.getsource(AutobahnProtocol.sendMessage), CONSUMERS, "autobahn's sendMessage raising Disconnected on a closed protocol")


class NoReactor:
    """Enough of a reactor for a Twisted transport that is never run."""

    def addReader(self, reader):
        pass

    addWriter = removeReader = removeWriter = addReader


@pytest.fixture
def socket_pair():
    ours, peer = socket.socketpair()
    peer.settimeout(5)
    yield ours, peer
    ours.close()
    peer.close()


def test_twisted_tcp_transports_have_what_send_now_and_pending_bytes_read(socket_pair):
    ours, peer = socket_pair
    transport = tcp.Server(ours, None, ("127.0.0.1", 1), None, 1, NoReactor())  # what Daphne's port accepts
    has_all(transport, ["socket", "TLS", "connected", "disconnecting", "_writeDisconnected", "dataBuffer", "offset", "_tempDataLen", "abortConnection"], FANOUT, "twisted.internet.tcp.Server")
    needs(transport.TLS is False and transport.socket is ours, FANOUT, "tcp.Server.TLS (False on plain TCP) and .socket (send_now's fast path)")
    needs(fanout.pending_bytes(transport) == 0, FANOUT, "tcp.Server.dataBuffer / offset / _tempDataLen (pending_bytes)")
    fanout.send_now(transport, b"now", held=0)
    assert peer.recv(16) == b"now"
    transport.write(b"queued")  # held by Twisted until the reactor's next write turn
    needs(fanout.pending_bytes(transport) == len(b"queued"), FANOUT, "tcp.Server._tempDataLen counting bytes written but not sent (pending_bytes)")


async def test_daphne_hands_the_app_a_send_fanout_recognises(socket_pair):
    ours, peer = socket_pair
    sends = []

    async def application(scope, receive, send):
        sends.append(send)

    server = Server(application=application, endpoints=["tcp:port=0"])
    server.connections = {}  # what Server.run() sets up
    protocol = WebSocketFactory(server, server="daphne").buildProtocol(("127.0.0.1", 1))
    protocol.makeConnection(tcp.Server(ours, protocol, ("127.0.0.1", 1), None, 1, NoReactor()))
    server.protocol_connected(protocol)
    server.create_application(protocol, {"type": "websocket"})
    await server.connections[protocol]["application_instance"]
    needs(isinstance(sends[0], functools.partial) and sends[0].func.__name__ == "handle_reply", FANOUT, "daphne's send being functools.partial(Server.handle_reply, protocol)")
    needs(fanout.daphne_connection(sends[0]) == (server, protocol), FANOUT, "daphne.server.Server.connections and the protocol's transport / sendClose / STATE_OPEN / state")

    protocol.state = protocol.STATE_OPEN  # as the opening handshake leaves it
    sink = fanout.SocketSink(types.SimpleNamespace(presence_id="p"), server, protocol, batch=False)
    needs(sink.open(), FANOUT, "Server.connections[protocol] without 'disconnected' for an open socket")
    sink.write(fanout.Frames(['{"type": "x"}']))
    assert peer.recv(64) == fanout.frame(b'{"type": "x"}')
    server.protocol_disconnected(protocol)
    needs(not sink.open(), FANOUT, "Server.protocol_disconnected marking Server.connections[protocol]['disconnected']")


def test_autobahn_reads_the_close_handshake_timeout_when_it_sends_the_close():
    needs("closeHandshakeTimeout" in AutobahnProtocol.CONFIG_ATTRS_COMMON, FANOUT, "autobahn's per-protocol closeHandshakeTimeout")
    needs("self.closeHandshakeTimeout" in inspect.getsource(AutobahnProtocol.sendCloseFrame), FANOUT, "autobahn's sendCloseFrame reading self.closeHandshakeTimeout (close_slow sets it just before sendClose)")
    needs(parameters(AutobahnProtocol.sendClose)[1:3] == ["code", "reason"], FANOUT, "autobahn's sendClose(code, reason)")

