"""The settings' two Redis channel layers, subclassed: fewer round trips, fan-out to this
process's sockets, and surviving a Redis outage.

* `RedisChannelLayer` (the kernel workers' input channels) sends with one Lua script and
  receives with one `BZPOPMIN` (docs/architecture.md, "Two channel layers");
  `send_then_group_send` sends an edit's kernel message and publishes its early announcement in
  one script, and writes the announcement to this process's own sockets itself
  (fanout.write_here).  Its receive waits out an outage with backoff, so the worker keeps its
  notebooks' kernels across a Redis restart.
* `RedisPubSubChannelLayer` (the sockets) hands every published message to `fanout.deliver`
  first (a notebook's events go straight to this process's sockets); it records subscriptions
  made while Redis is down, reconnects with backoff, subscribes everything again, then delivers
  `{"type": "layer.reconnected"}` to every channel of this process, so each consumer resyncs
  its client.
* Sends still fail at once (`REDIS_ERRORS`): their callers tell the user (`unavailable`).

Each outage is one warning line and one line when Redis is back (`Outage`), not a traceback
per message.  What a message means is fanout.py's business and its callers'; nothing here
reads a notebook's events.
"""
import asyncio
import collections
import logging
import time

from channels.exceptions import ChannelFull
from channels_redis import core, pubsub
from channels_redis.utils import decode_hosts
from redis import exceptions as redis_exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from . import fanout

logger = logging.getLogger(__name__)

# What a Redis outage raises: refused or reset connections, timeouts, a server loading its data.
REDIS_ERRORS = (redis_exceptions.ConnectionError, redis_exceptions.TimeoutError, redis_exceptions.BusyLoadingError, OSError)
RECONNECTED = "layer.reconnected"
BACKOFF_FIRST = 0.2
BACKOFF_MAX = 5.0


class Outage:
    """One warning when a connection is lost, one more when it works again."""

    def __init__(self, what, resource="Redis"):
        self.what = what
        self.resource = resource
        self.since = None

    @property
    def down(self):
        return self.since is not None

    def failed(self, exc):
        if self.since is None:
            self.since = time.monotonic()
            logger.warning("%s: lost %s (%s: %s); retrying with backoff", self.what, self.resource, type(exc).__name__, str(exc)[:200])

    def recovered(self):
        if self.since is not None:
            logger.warning("%s: %s reachable again after %.1f s", self.what, self.resource, time.monotonic() - self.since)
            self.since = None


def _fail_fast(hosts):
    """Hosts without redis-py's own retries (which would reconnect a pub/sub connection
    silently, hiding the events lost meanwhile) and with a bounded connect time."""
    return [dict(host, retry=Retry(NoBackoff(), 0), socket_connect_timeout=host.get("socket_connect_timeout", 5)) for host in decode_hosts(hosts)]


def backoff_delays():
    delay = BACKOFF_FIRST
    while True:
        yield delay
        delay = min(BACKOFF_MAX, delay * 2)


async def _once_more_on_a_fresh_connection(send, *args):
    """A pooled connection that Redis closed (it restarted) fails its first command; redis-py
    has dropped it by then, so one more attempt, without retries of its own, uses a new one."""
    try:
        return await send(*args)
    except REDIS_ERRORS:
        return await send(*args)


# channels-redis's send is four round trips in a row (ZREMRANGEBYSCORE, ZCOUNT, ZADD, EXPIRE),
# the ZADD (which wakes the kernel worker) third. The same four commands as one script: one
# round trip, and atomic (docs/performance.md, "Edits").
_SEND_SCRIPT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[1])
if redis.call('ZCOUNT', KEYS[1], '-inf', '+inf') >= tonumber(ARGV[2]) then
    return 0
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""

# The same, then a PUBLISH (a group message of the pub/sub layer, on the same Redis): an early
# announcement goes out in the round trip that queues the kernel's message, and after it.
_SEND_THEN_PUBLISH_SCRIPT = _SEND_SCRIPT.replace("return 1", "redis.call('PUBLISH', ARGV[6], ARGV[7])\nreturn 1")


async def _eval_then(redis, sent, script, numkeys, *args):
    """`redis.eval(script, numkeys, *args)`, calling `sent()` once the command is written and
    before its answer is read (redis-py's eval gives no such moment: its first await comes
    before the write). A connection whose answer was not read is dropped, as redis-py does."""
    pool = redis.connection_pool
    connection = await pool.get_connection()
    try:
        await connection.send_command("EVAL", script, numkeys, *args)
        sent()
        return await connection.read_response()
    except redis_exceptions.ResponseError:
        raise  # an error answer, read whole: the connection is fine
    except BaseException:
        await connection.disconnect()
        raise
    finally:
        await pool.release(connection)


def _server(host):
    """What names the Redis server (and database) of a host entry; None when it cannot be told."""
    if host.get("address"):
        return ("address", host["address"])
    if host.get("host"):
        return ("host", host["host"], host.get("port", 6379), host.get("db", 0))
    return None


# core.RedisChannelLayer._brpop_with_clean's script: messages left in a channel's backup (popped
# by a receive that was cancelled before it handed them on) go back to the front of the channel.
_RESTORE_BACKUP_SCRIPT = """
local backed_up = redis.call('ZRANGE', ARGV[2], 0, -1, 'WITHSCORES')
for i = #backed_up, 1, -2 do
    redis.call('ZADD', ARGV[1], backed_up[i], backed_up[i - 1])
end
redis.call('DEL', ARGV[2])
"""


class RedisChannelLayer(core.RedisChannelLayer):
    """The core layer whose receive outlives Redis outages (the kernel worker's input), and
    whose send is one round trip."""

    def __init__(self, hosts=None, **kwargs):
        super().__init__(hosts=_fail_fast(hosts), **kwargs)
        self.outage = Outage("channel layer receive")
        self._restored = set()  # channel keys whose old backups were put back (_brpop_with_clean)

    async def send(self, channel, message):
        await _once_more_on_a_fresh_connection(self._send, channel, message)

    async def send_then_group_send(self, channel, message, events, group, event):
        """`send(channel, message)`, then `event` to `group` of the pub/sub layer `events`: in one
        script, so one round trip, when both are on the same Redis server (the README's shape),
        and the send first (Redis runs a script whole, in order). Returns False, having sent
        nothing, when they are not (another server, another layer): the caller does the two.

        `event` is written to this process's own sockets of the group at once (below) and
        marked in place (fanout.mark_here), so that the copy Redis publishes, by the script or
        by the caller's own group_send, is not written to them again."""
        if not isinstance(events, RedisPubSubChannelLayer):
            return False
        loop_layer = events._get_layer()
        group_channel = loop_layer._get_group_channel_name(group)
        server = _server(loop_layer._get_shard(group_channel).host)
        if server is None:
            return False
        publish = (server, group_channel, events.serialize(fanout.mark_here(event)))
        written = False

        def write_here():
            # This process's own sockets have the event from here, not from Redis's echo: one
            # Redis round trip sooner (fanout.write_here); once, however often the send is tried.
            nonlocal written
            if not written:
                written = True
                fanout.write_here(loop_layer, group_channel, event)

        # A few sockets are written before the script goes (their frames leave ~0.5 ms sooner
        # than after the send(2) to Redis, which wakes Redis); many are written once the script
        # is on its way, so that the kernel's message and the other processes' copy do not wait
        # for hundreds of writes (docs/performance.md, "Early writes to many sockets"). Correctness rests on
        # neither order: what a page sends about a cell it has just heard of (run, edit, move,
        # delete, restore) is checked under edit_lane.in_order, which this edit holds until Redis
        # has run the script; typing into a new cell waits for the kernel's confirmation (the
        # page); other processes' sockets hear of it from Redis, after the send.
        if fanout.few_here(loop_layer, group_channel):
            write_here()
        return await _once_more_on_a_fresh_connection(self._send, channel, message, publish, write_here)

    async def _send(self, channel, message, publish=None, sent=None):
        """core.RedisChannelLayer.send, its four commands in one script; with `publish`
        ((server, channel, data), send_then_group_send) a PUBLISH too when the message goes to
        that server: True if it did, having called `sent()` once the script was written."""
        assert isinstance(message, dict), "message is not a dict"
        assert self.require_valid_channel_name(channel), "Channel name not valid"
        assert "__asgi_channel__" not in message
        channel_non_local_name = channel
        if "!" in channel:
            message = dict(message.items())
            message["__asgi_channel__"] = channel
            channel_non_local_name = self.non_local_name(channel)
            index = self.consistent_hash(channel)
        else:
            index = next(self._send_index_generator)
        channel_key = self.prefix + channel_non_local_name
        now = time.time()
        if publish is not None and publish[0] != _server(self.hosts[index]):
            return False
        args = [int(now) - int(self.expiry), self.get_capacity(channel), repr(now), self.serialize(message), int(self.expiry)]
        if publish is not None:
            added = await _eval_then(self.connection(index), sent, _SEND_THEN_PUBLISH_SCRIPT, 1, channel_key, *args, publish[1], publish[2])
        else:
            added = await self.connection(index).eval(_SEND_SCRIPT, 1, channel_key, *args)
        if not added:
            raise ChannelFull()
        return publish is not None

    async def _brpop_with_clean(self, index, channel, timeout):
        """core's BZPOPMIN, without the backup around it: one round trip a message where core's
        takes four (docs/performance.md, "Hops between threads and processes").

        core's receive runs a script that puts its channel's backup back in front, pops, then
        writes the popped message to the backup (ZADD) and, once the message is handed on, pops
        it from there again (ZPOPMIN). The backup covers one window only: a receive cancelled
        between the pop and the hand-off. Here there is no such window (nothing is awaited
        between BZPOPMIN's answer and the hand-off in `receive_single`), so the backup protected
        nothing, and a process killed after handing a message on but before the ZPOPMIN left it
        to be delivered a second time. What a reply lost in flight to a cancelled or broken
        BZPOPMIN cannot be saved by either; the kernel catches up from the notebook's revision.
        Backups left by channels-redis's own receive (an older worker) are still put back, once,
        on this layer's first receive from the channel."""
        connection = self.connection(index)
        if channel not in self._restored:
            await connection.eval(_RESTORE_BACKUP_SCRIPT, 0, channel, self._backup_channel_name(channel))
            self._restored.add(channel)
        result = await connection.bzpopmin(channel, timeout=timeout)
        if result is None:
            return None
        return result[1]

    async def _clean_receive_backup(self, index, channel):
        """No backup is written (_brpop_with_clean): nothing to pop."""

    async def receive_within(self, channel, timeout):
        """One message of the shared channel `channel`, or None after `timeout` seconds (or while
        Redis is unreachable).  The kernel fleet's shard readers (kernel/fleet.py) call it in a
        loop and stop between two calls: a receive cancelled while its BZPOPMIN waits can lose
        the message Redis then hands to a connection nobody reads."""
        index = next(self._receive_index_generator)
        channel_key = self.prefix + channel
        try:
            content = await self._brpop_with_clean(index, channel_key, timeout=timeout)
        except REDIS_ERRORS as exc:
            self.outage.failed(exc)
            await asyncio.sleep(min(timeout, 1.0))
            return None
        self.outage.recovered()
        if content is None:
            return None
        message = self.deserialize(content)
        message.pop("__asgi_channel__", None)
        return message

    async def receive(self, channel):
        delays = backoff_delays()
        while True:
            try:
                message = await super().receive(channel)
            except REDIS_ERRORS as exc:
                self.outage.failed(exc)
                await asyncio.sleep(next(delays))
                continue
            self.outage.recovered()
            return message


class _ResilientShard(pubsub.RedisSingleShardConnection):
    """One Redis connection of the pub/sub layer: subscriptions are what we want to hold,
    restored after every reconnection; the receive loop reconnects with backoff."""

    def __init__(self, host, channel_layer):
        super().__init__(host, channel_layer)
        self.outage = Outage("pub/sub layer")
        self._broken = False

    def _break(self, exc):
        self.outage.failed(exc)
        self._broken = True
        self._ensure_receiver()

    async def subscribe(self, channel):
        async with self._lock:
            self._subscribed_to.add(channel)
            if self._broken:
                self._ensure_receiver()
                return
            try:
                self._ensure_redis()
                self._ensure_receiver()
                await self._pubsub.subscribe(channel)
            except REDIS_ERRORS as exc:
                self._break(exc)

    async def unsubscribe(self, channel):
        async with self._lock:
            if channel not in self._subscribed_to:
                return
            self._subscribed_to.discard(channel)
            if self._broken or self._pubsub is None:
                return
            try:
                await self._pubsub.unsubscribe(channel)
            except REDIS_ERRORS as exc:
                self._break(exc)

    async def publish(self, channel, message):
        try:
            await _once_more_on_a_fresh_connection(super().publish, channel, message)
        except REDIS_ERRORS as exc:
            self._break(exc)
            raise

    async def _reconnect(self):
        """Back off until Redis answers, then subscribe to everything again."""
        for delay in backoff_delays():
            async with self._lock:
                try:
                    await self._drop_connection()
                    self._ensure_redis()
                    await self._redis.ping()
                    if self._subscribed_to:
                        await self._pubsub.subscribe(*self._subscribed_to)
                    self._broken = False
                    break
                except REDIS_ERRORS:
                    pass
            await asyncio.sleep(delay)
        self.outage.recovered()
        self._announce_reconnected()

    async def _drop_connection(self):
        if self._redis is not None:
            redis, self._redis, self._pubsub = self._redis, None, None
            try:
                await pubsub._close_redis(redis)
            except REDIS_ERRORS:
                pass

    def _receive_message(self, message):
        """A published message: `notebook.event`s go straight to the sockets that take them
        (notebooks_app/fanout.py), everything else to the channels' queues as before."""
        if message is None:
            return
        name, data = message["channel"], message["data"]
        if isinstance(name, bytes):
            name = name.decode()
        layer = self.channel_layer
        for channel_name in fanout.deliver(layer, name, data):
            queue = layer.channels.get(channel_name)
            if queue is not None:
                queue.put_nowait(data)

    def _announce_reconnected(self):
        """Every local channel hears that events may have been lost (the consumers resync)."""
        data = self.channel_layer.channel_layer.serialize({"type": RECONNECTED})
        for queue in list(self.channel_layer.channels.values()):
            queue.put_nowait(data)

    async def _do_receiving(self):
        while True:
            try:
                if self._broken:
                    await self._reconnect()
                elif self._pubsub is not None and self._pubsub.subscribed:
                    message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
                    self._receive_message(message)
                else:
                    await asyncio.sleep(0.1)
            except (asyncio.CancelledError, asyncio.TimeoutError, GeneratorExit):
                raise
            except REDIS_ERRORS as exc:
                self._break(exc)
            except Exception:
                logger.exception("unexpected error in the pub/sub receive loop")
                await asyncio.sleep(1)


class _ResilientLoopLayer(pubsub.RedisPubSubLoopLayer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # origins of the early announcements this loop wrote to its sockets itself, whose copy
        # from Redis is not written again (fanout.write_here, oldest first)
        self.written_here = collections.OrderedDict()
        self._shards = [_ResilientShard(shard.host, self) for shard in self._shards]


class RedisPubSubChannelLayer(pubsub.RedisPubSubChannelLayer):
    """The pub/sub layer of the sockets, resubscribing and telling its consumers after an outage."""

    def __init__(self, *args, hosts=None, **kwargs):
        super().__init__(*args, hosts=_fail_fast(hosts), **kwargs)

    def _get_layer(self):
        loop = asyncio.get_running_loop()
        layer = self._layers.get(loop)
        if layer is None:
            layer = _ResilientLoopLayer(*self._args, **self._kwargs, channel_layer=self)
            self._layers[loop] = layer
            pubsub._wrap_close(self, loop)
        return layer


def redis_down(layer):
    """True while this process's pub/sub layer knows Redis is unreachable (its shards
    notice within a tenth of a second, as their receive loop fails)."""
    try:
        loop_layer = layer._get_layer()
    except AttributeError:  # another backend (the in-memory layer of the embedded default)
        return False
    return any(getattr(shard, "_broken", False) for shard in getattr(loop_layer, "_shards", ()))
