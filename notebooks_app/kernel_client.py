"""How the web side sends to the kernel worker: shard routing, sends on commit (with an edit's
early announcement to the sockets), access and deletion notices, and the embedded worker's
start.  Other web modules import only the kernel's pure helpers (kernel/analysis.py,
shared_text.py, ui.py, display.py, markdown.py), never its worker or sessions; operations.py
also borrows kernel/session.py's CellState to store an import's analysis.

A notebook always maps to the same kernel channel (its virtual shard, a stable hash of its id),
read by the one worker that holds the shard's lease (kernel/fleet.py), so exactly one worker
process in the cluster holds its graph; a message sent while the shard moves waits in Redis.
"""
import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction

from . import protocol
from .kernel import addresses
from .kernel.addresses import group_name
from .layers import REDIS_ERRORS

logger = logging.getLogger(__name__)


class KernelUnreachable(Exception):
    """A change was committed but its kernel message could not be sent (Redis is down).

    The worker catches up from the notebook's revision when a client next syncs (every
    socket resyncs once its process has Redis back); the sender is told `unavailable`.
    """


def shard_channels():
    """Every shard channel of this server's fleet (KERNEL_FLEET, KERNEL_VSHARDS)."""
    return addresses.shard_channels(settings.KERNEL_VSHARDS, settings.KERNEL_FLEET)


def kernel_channel(notebook_id):
    """The channel of the notebook's virtual shard: whichever worker holds its lease reads it."""
    return addresses.kernel_channel(notebook_id, settings.KERNEL_VSHARDS, settings.KERNEL_FLEET)


def events_layer():
    """The layer of the sockets: notebook groups and replies to one socket (settings)."""
    return get_channel_layer(settings.EVENTS_CHANNEL_LAYER)


async def send(notebook_id, message):
    await get_channel_layer().send(kernel_channel(notebook_id), message)


def command_message(notebook_id, kind, *, revision, request_id=None, cell_id=None, by=None):
    """`kernel.<kind>` for a command that changes no rows (run_cell, run_all, interrupt), sent
    after operations.check_kernel_command by the consumer and the API alike."""
    message = {"type": f"kernel.{kind}", "notebook": str(notebook_id), "revision": revision, "requestId": request_id}
    if cell_id:
        message["cellId"] = cell_id
    if by is not None:
        message["by"] = by  # shown on the cells it runs: "run by bob"
    return message


async def send_then_announce(notebook_id, message, announcement=None):
    """`message` to the notebook's kernel, then `announcement` to its sockets (docs/protocol.md,
    "Early announcements"): a structural change reaches every page without waiting for the
    worker, whose own announcement, in `seq` order, follows.  The kernel's message goes first, so
    whatever a client does on hearing of the change (run the new cell, ...) is queued behind it.
    A failed announcement is only logged: the worker's is the one that counts.

    With both layers on one Redis server the two go in one script, one round trip
    (layers.RedisChannelLayer.send_then_group_send), and this process's own sockets get the
    announcement as the script leaves rather than when Redis publishes it back
    (fanout.write_here)."""
    if announcement is None:
        await send(notebook_id, message)
        return
    event = {"type": "notebook.event", "texts": [protocol.dumps(announcement)]}
    together = getattr(get_channel_layer(), "send_then_group_send", None)
    if together is not None and await together(kernel_channel(notebook_id), message, events_layer(), group_name(notebook_id), event):
        return
    await send(notebook_id, message)
    try:
        await events_layer().group_send(group_name(notebook_id), event)
    except Exception as exc:
        logger.warning("early announcement on notebook %s not sent (%s: %s)", notebook_id, type(exc).__name__, exc)


async def send_committed(notebook_id, message, announce=None):
    """send_then_announce for an edit that has committed: Redis out of reach is
    KernelUnreachable (the sender is told; the worker catches up from the revision), anything
    else is logged (the edit stands)."""
    try:
        await send_then_announce(notebook_id, message, announce)
    except REDIS_ERRORS as exc:
        logger.warning("could not reach the kernel worker for notebook %s (%s: %s)", notebook_id, type(exc).__name__, exc)
        raise KernelUnreachable(str(exc)) from exc
    except Exception:
        logger.exception("could not reach the kernel worker for notebook %s", notebook_id)


def send_on_commit(notebook_id, message, announce=None):
    """Queue `message` for the notebook's kernel once the current transaction commits, then
    `announce` (an event) to its sockets when given."""
    transaction.on_commit(lambda: async_to_sync(send_committed)(notebook_id, message, announce))


async def notify_access_changed(notebook_id, user_id):
    """Tell the sockets of `user_id` on this notebook to re-check their access (they close if it is gone)."""
    await events_layer().group_send(group_name(notebook_id), {"type": "notebook.access_changed", "userId": user_id})


def notify_access_changed_on_commit(notebook_id, user_id):
    """After commit: the member's open sockets re-check their access (sharing operations)."""

    def _notify():
        try:
            async_to_sync(notify_access_changed)(notebook_id, user_id)
        except REDIS_ERRORS as exc:  # sockets re-check their access when Redis is back (resync)
            logger.warning("could not tell the sockets of user %s on notebook %s about their access (%s)", user_id, notebook_id, exc)

    transaction.on_commit(_notify)


def ensure_embedded_worker():
    """Embedded default: start the kernel worker inside this server process (once)."""
    from .kernel.worker import ensure_embedded_worker as start

    start()


def starting_embedded_worker(app, path_prefix):
    """ASGI wrapper: in the embedded default, an HTTP request under `path_prefix` (the REST API,
    whose edits and runs the kernel must hear without any page open) starts the worker on the
    server's own event loop, as a page's first socket does (consumers.py). A view, run on a
    thread, could only start it on a loop of its own that ends with the call."""

    async def http(scope, receive, send):
        if settings.KERNEL_EMBEDDED and scope["path"].startswith(path_prefix):
            ensure_embedded_worker()
        return await app(scope, receive, send)

    return http


def notebook_deleted_on_commit(notebook_id):
    """After commit: the notebook's sockets close (4404) and its kernel session is dropped."""

    def _notify():
        try:
            async_to_sync(events_layer().group_send)(group_name(notebook_id), {"type": "notebook.deleted"})
            async_to_sync(send)(notebook_id, {"type": "kernel.forget_notebook", "notebook": str(notebook_id)})
        except Exception:  # the notebook is gone either way; its sockets fail on their next message
            logger.exception("could not tell the sockets and kernel of deleted notebook %s", notebook_id)

    transaction.on_commit(_notify)
