"""NotebookConsumer: one WebSocket on one notebook.

It authenticates, validates every frame (protocol.py), hands each message to its handler
(HANDLERS, one per message of protocol.MESSAGE_SCHEMAS), performs edits through
operations.py and history.py (one short transaction each, on the ORM thread; create_cell,
delete_cell, update_cell, move_cell, restore_cell, undo and redo on the event loop's edit lane
when it can take them, edit_lane.py), and relays the kernel worker's events to its socket when
fanout.py does not write them itself.  It sends no notebook events of its own but one: the early
announcement of a structural change it committed (a create, delete, move, code edit, restore, undo
or redo; without `seq`, docs/protocol.md); the kernel worker is the only sender of events in `seq`
order, so every client sees one order.  Presence (who is where) is relayed between sockets,
without `seq`, and never stored.
"""
import base64
import hashlib
import logging
import time
import zlib
from urllib.parse import parse_qs

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError

from . import edit_lane, fanout, history, kernel_client, notebook_files, operations, permissions, protocol
from .constants import CELL_PYTHON
from .kernel_client import KernelUnreachable
from .layers import REDIS_ERRORS, redis_down
from .middleware import CLOSE_TRY_AGAIN_LATER
from .models import Notebook
from .operations import OperationError

logger = logging.getLogger(__name__)

CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404

# Token bucket per socket: a burst of RATE_BURST messages, refilled at RATE_PER_SECOND.
# Generous enough for a script that builds a 1,000-cell notebook request by request
# (a few ms each), tight enough that a flood is refused rather than queued.
RATE_BURST = 500
RATE_PER_SECOND = 200.0


def database_down(exc):
    """A lost or refused database connection, as opposed to a busy one (a lock timeout)."""
    if isinstance(exc, InterfaceError):
        return True
    if not isinstance(exc, OperationalError):
        return False
    cause = exc.__cause__
    if type(cause).__module__.startswith("sqlite3"):
        return False  # "database is locked": busy
    sqlstate = getattr(cause, "sqlstate", None)
    return sqlstate is None or sqlstate.startswith("08") or sqlstate in ("57P01", "57P02", "57P03")


class RedisUnavailable(Exception):
    """This process has lost Redis: nothing is attempted, the sender is told `unavailable`."""


PRESENCE_COLORS = ["#d1495b", "#2f5bd3", "#00a36c", "#e8871e", "#8e44ad", "#0097a7", "#c2185b", "#5d6d7e"]


def presence_color(user_id):
    """A person's colour, the same on every page and every visit."""
    return PRESENCE_COLORS[zlib.crc32(str(user_id).encode()) % len(PRESENCE_COLORS)]


@database_sync_to_async
def _load_notebook_for(user, notebook_id):
    """(notebook, role) if `user` may view it, else (None, None)."""
    notebook = Notebook.objects.filter(pk=notebook_id).first()
    role = notebook.role_of(user) if notebook is not None else None
    if not permissions.may(role, permissions.VIEW):
        return None, None
    return notebook, role


class NotebookConsumer(AsyncWebsocketConsumer):
    # Sockets live on the events layer (Redis pub/sub in production): their group and the
    # kernel's replies arrive there; messages to the kernel go through the core layer.
    channel_layer_alias = settings.EVENTS_CHANNEL_LAYER

    async def connect(self):
        self.notebook_id = str(self.scope["url_route"]["kwargs"]["notebook_id"])
        self.group = kernel_client.group_name(self.notebook_id)
        self.user = self.scope.get("user")
        self.joined = False
        self.role = None
        # `?batch=1`: the client takes a cascade's events as one `batch` frame.
        self.batch_frames = parse_qs(self.scope.get("query_string", b"").decode("latin-1")).get("batch") == ["1"]
        self._tokens = float(RATE_BURST)
        self._last_refill = time.monotonic()
        self.accepted = False
        self.sink = None
        try:
            await self._connect()
        except (DatabaseError, *REDIS_ERRORS) as exc:
            what = "database" if isinstance(exc, DatabaseError) else "Redis"
            logger.warning("socket on notebook %s refused: %s unavailable (%s: %s)", self.notebook_id, what, type(exc).__name__, str(exc)[:200])
            await self._close_unavailable(f"The server cannot reach its {what} right now; reconnecting shortly.")

    async def dispatch(self, message):
        """Channels' dispatch without the `aclose_old_connections()` it awaits before every
        message since 4.2: a hop to the sync thread and back, about 1.5 ms of the 2 ms a frame
        took from a client to its answer here (docs/performance.md, "Edits"). This consumer
        reaches the database only through database_sync_to_async, which closes old connections
        around each call in the thread that holds them, so that hop guarded nothing."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def send(self, text_data=None, bytes_data=None, close=False):
        try:
            await super().send(text_data, bytes_data, close)
        except Exception as exc:
            # Daphne (autobahn) raises `Disconnected` for a frame to a socket the client has just
            # closed (an event relayed in between); its websocket.disconnect follows.
            if type(exc).__name__ != "Disconnected":
                raise

    async def accept(self, subprotocol=None, headers=None):
        self.accepted = True
        await super().accept(subprotocol, headers)

    async def _close_unavailable(self, message):
        """Say why, then close with 4013 (try again later) so the page reconnects later and resyncs."""
        if not self.accepted:
            await self.accept()
        await self._send_error(protocol.UNAVAILABLE, message)
        await self.close(code=CLOSE_TRY_AGAIN_LATER)

    async def _connect(self):
        if self.user is None or not self.user.is_authenticated:
            await self.accept()
            await self.close(code=CLOSE_FORBIDDEN)
            return
        notebook, role = await _load_notebook_for(self.user, self.notebook_id)
        if notebook is None:
            # Unknown and not-yours look the same: never reveal that a notebook exists.
            await self.accept()
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.role = role
        if settings.KERNEL_EMBEDDED:
            kernel_client.ensure_embedded_worker()
        await self.accept()
        # From here the kernel's events (group and replies) are written to this socket by the
        # process's dispatcher (fanout.py), not relayed by notebook_event; registered before
        # joining, so no event of the group can take the other path and overtake one.
        self.sink = fanout.SocketSink.attach(self, self.channel_name, self.scope.get(fanout.RAW_SEND), batch=self.batch_frames)
        await self.channel_layer.group_add(self.group, self.channel_name)
        self.joined = True
        await self._request_state(revision=notebook.revision)
        await self._announce_presence(joined=True)

    async def disconnect(self, code):
        if getattr(self, "sink", None) is not None:
            self.sink.detach(self.channel_name)
        if getattr(self, "joined", False):
            await self.channel_layer.group_discard(self.group, self.channel_name)
            try:
                await self._announce_presence(left=True)
            except Exception:  # the socket is gone either way; pages drop silent peers after a while
                logger.info("could not announce that a socket left notebook %s", self.notebook_id)

    async def _request_state(self, request_id=None, revision=None):
        """Ask the kernel for this socket's `notebook_state`; `revision` is what the database
        had when we looked, so a kernel that is behind catches up before answering."""
        await kernel_client.send(
            self.notebook_id,
            {"type": "kernel.sync", "notebook": self.notebook_id, "replyChannel": self.channel_name, "requestId": request_id, "revision": revision},
        )

    # --- client -> server -------------------------------------------------------
    async def receive(self, text_data=None, bytes_data=None):
        request_id = None
        try:
            if not self._take_token():
                # Its requestId, when it has a readable one, so a waiting client hears the refusal.
                raise protocol.ProtocolError(protocol.RATE_LIMITED, "Too many messages; slow down and retry in a moment.", protocol.peek_request_id(text_data))
            message = protocol.parse(text_data)
            request_id = message.request_id
            await self._handle(message)
        except protocol.ProtocolError as exc:
            await self._send_error(exc.code, exc.message, exc.request_id if exc.request_id is not None else request_id)
        except OperationError as exc:
            await self._send_error(exc.code, exc.message, request_id)
        except KernelUnreachable:
            message = "Your change was saved, but the kernel cannot be reached right now; it will show when the connection is back."
            await self._send_error(protocol.UNAVAILABLE, message, request_id)
        except (RedisUnavailable, *REDIS_ERRORS) as exc:
            logger.warning("message on notebook %s refused: Redis unavailable (%s)", self.notebook_id, type(exc).__name__)
            await self._send_error(protocol.UNAVAILABLE, "The server cannot reach the kernel right now; nothing was changed. Retry in a moment.", request_id)
        except (OperationalError, InterfaceError) as exc:
            if database_down(exc):
                logger.warning("message on notebook %s refused: database unavailable (%s: %s)", self.notebook_id, type(exc).__name__, str(exc)[:200])
                await self._send_error(protocol.UNAVAILABLE, "The database cannot be reached right now; nothing was changed. Retry in a moment.", request_id)
            else:
                logger.warning("database busy while handling a message on %s", self.notebook_id, exc_info=True)
                await self._send_error(protocol.BUSY, "The notebook is busy; please retry.", request_id)
        except DatabaseError:
            logger.exception("database error on notebook %s", self.notebook_id)
            await self._send_error(protocol.INTERNAL_ERROR, "The change could not be saved; nothing was changed.", request_id)
        except Exception:
            logger.exception("unexpected error on notebook %s", self.notebook_id)
            await self._send_error(protocol.INTERNAL_ERROR, "Something went wrong on the server; nothing was changed.", request_id)

    def _take_token(self):
        now = time.monotonic()
        self._tokens = min(RATE_BURST, self._tokens + (now - self._last_refill) * RATE_PER_SECOND)
        self._last_refill = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    async def _handle(self, message):
        await HANDLERS[message.type](self, message)

    # --- one handler per client message (protocol.MESSAGE_SCHEMAS; HANDLERS below) -----------
    async def _on_sync(self, message):
        await self._request_state(message.request_id)

    async def _on_create_cell(self, message):
        f = message.fields
        fields = {"cell_type": f.get("cellType", CELL_PYTHON), "after_cell_id": f.get("afterCellId"), "before_cell_id": f.get("beforeCellId"), "code": f.get("code", ""), "request_id": message.request_id}
        if not await self._on_the_lane(edit_lane.create_cell, **fields):
            await self._operation(operations.create_cell, **fields)

    async def _on_move_cell(self, message):
        f = message.fields
        fields = {"cell_id": f["cellId"], "after_cell_id": f["afterCellId"], "request_id": message.request_id}
        if not await self._on_the_lane(edit_lane.move_cell, **fields):
            await self._operation(operations.move_cell, **fields)

    async def _on_delete_cell(self, message):
        fields = {"cell_id": message.fields["cellId"], "request_id": message.request_id}
        if not await self._on_the_lane(edit_lane.delete_cell, **fields):
            await self._operation(operations.delete_cell, **fields)

    async def _on_cell_update(self, message):
        f = message.fields
        fields = {"cell_id": f["cellId"], "code": f.get("code"), "result_variable": f.get("resultVariable"), "request_id": message.request_id}
        if not await self._on_the_lane(edit_lane.update_cell, **fields):
            await self._operation(operations.update_cell, **fields)

    async def _on_update_db_connection(self, message):
        await self._operation(operations.update_db_connection, connection_string=message.fields["connectionString"], request_id=message.request_id)

    async def _on_set_secret(self, message):
        f = message.fields
        await self._operation(operations.set_secret, name=f["name"], value=f["value"], request_id=message.request_id)

    async def _on_delete_secret(self, message):
        await self._operation(operations.delete_secret, name=message.fields["name"], request_id=message.request_id)

    async def _on_delete_file(self, message):
        await self._operation(notebook_files.delete_file, path=message.fields["path"], request_id=message.request_id)

    async def _on_restore_file(self, message):
        await self._operation(notebook_files.restore_file, path=message.fields["path"], request_id=message.request_id)

    async def _on_rename_file(self, message):
        await self._operation(notebook_files.rename_file, path=message.fields["path"], new_path=message.fields["newPath"], request_id=message.request_id)

    async def _on_set_packages(self, message):
        """A new list of packages: checked here (protocol.py), built by the kernel worker, saved
        only once it is built; everyone hears the progress (docs/packages.md)."""
        if not settings.NOTEBOOK_PACKAGES:
            raise protocol.ProtocolError(protocol.UNAVAILABLE, "Notebook packages are turned off on this server (NOTEBOOK_PACKAGES=off): ask its operator to add them to the server's own.", message.request_id)
        revision = await self._operation(operations.check_kernel_command)
        payload = {
            "type": "kernel.set_packages",
            "notebook": self.notebook_id,
            "revision": revision,
            "requirements": message.fields["requirements"],
            "by": self.user.get_username(),
            "byId": self.user.pk,
            "requestId": message.request_id,
        }
        await kernel_client.send(self.notebook_id, payload)

    async def _on_restart_kernel(self, message):
        """Restart the execution process (operations.restart_kernel); a running cell is
        interrupted first, so the restart does not wait behind it in the session's queue."""
        await self._operation(operations.restart_kernel, request_id=message.request_id)
        await kernel_client.send(self.notebook_id, {"type": "kernel.interrupt", "notebook": self.notebook_id, "requestId": message.request_id})

    async def _on_set_input(self, message):
        f = message.fields
        await self._operation(operations.set_input, cell_id=f["cellId"], index=f.get("index", 0), value=f["value"], request_id=message.request_id)

    async def _on_restore_cell(self, message):
        fields = {"cell_id": message.fields["cellId"], "request_id": message.request_id}
        if not await self._on_the_lane(edit_lane.restore_cell, **fields):
            await self._operation(history.restore_cell, **fields)

    async def _on_undo(self, message):
        if not await self._on_the_lane(edit_lane.undo, request_id=message.request_id):
            await self._operation(history.undo, request_id=message.request_id)

    async def _on_redo(self, message):
        if not await self._on_the_lane(edit_lane.redo, request_id=message.request_id):
            await self._operation(history.redo, request_id=message.request_id)

    async def _on_save_version(self, message):
        rid = message.request_id
        version = await self._operation(history.save_version, name=message.fields["name"], request_id=rid)
        await self.send(text_data=protocol.dumps({"type": "version_saved", "versionId": version.pk, "name": version.name, "requestId": rid}))

    async def _on_restore_version(self, message):
        await self._operation(history.restore_version, version_id=message.fields["versionId"], request_id=message.request_id)

    async def _on_history(self, message):
        f = message.fields
        page = await database_sync_to_async(history.page)(self.notebook_id, self.user, before=f.get("before"), limit=f.get("limit"))
        await self.send(text_data=protocol.dumps({"type": "history", **page, "requestId": message.request_id}))

    async def _on_presence(self, message):
        await self._announce_presence(cell_id=message.fields.get("cellId"), cursor=message.fields.get("cursor"))

    async def _operation(self, func, **fields):
        """One operations.py function on this notebook as this user, on the ORM thread, with
        _on_the_lane's guards."""
        return await self._on_the_lane(database_sync_to_async(func), **fields)

    async def _on_the_lane(self, func, **fields):
        """An edit_lane.py function on this notebook as this user, on the event loop; False when
        the lane could not take it (the ORM thread then does, _operation).

        Not attempted while this process has lost Redis: the change could be committed but
        never reach the kernel, so the sender is told `unavailable` before anything changes.
        A process runs its operations one at a time, the lane's and the thread's
        (edit_lane.in_order)."""
        if redis_down(self.channel_layer):
            raise RedisUnavailable()
        async with edit_lane.in_order():
            return await func(self.notebook_id, self.user, **fields)

    async def _kernel_command(self, message):  # run_cell, run_all, interrupt
        """Messages that change no rows: check permission (and the cell), then ask the kernel."""
        cell_id = message.fields.get("cellId")
        revision = await self._operation(operations.check_kernel_command, cell_id=cell_id)
        by = self.user.get_username() if message.type != "interrupt" else None
        payload = kernel_client.command_message(self.notebook_id, message.type, revision=revision, request_id=message.request_id, cell_id=cell_id, by=by)
        await kernel_client.send(self.notebook_id, payload)

    async def _assist(self, message):
        """Completion and inspection: for people who may edit (a viewer's editor is read-only),
        checked against this socket's role (no query per keystroke); the kernel answers this
        socket alone (docs/protocol.md#completion)."""
        if not permissions.may(self.role, permissions.EDIT):
            raise protocol.ProtocolError(protocol.FORBIDDEN, "Viewers cannot edit this notebook, so there is nothing to complete.", message.request_id)
        if redis_down(self.channel_layer):
            raise RedisUnavailable()
        f = message.fields
        payload = {
            "type": f"kernel.{message.type}",
            "notebook": self.notebook_id,
            "cellId": f["cellId"],
            "code": f["code"],
            "cursor": f["cursor"],
            "replyChannel": self.channel_name,
            "requestId": message.request_id,
        }
        await kernel_client.send(self.notebook_id, payload)

    @property
    def presence_id(self):
        """This socket's id in presence messages (not its channel name, which stays private)."""
        return hashlib.sha256(self.channel_name.encode()).hexdigest()[:16]

    async def _text_update(self, message):
        """A keystroke's worth of shared text: checked against the role this socket has now
        (kept current by access_changed, so no query per keystroke), then to the kernel, which
        merges it and relays it to everyone (docs/protocol.md#shared-text)."""
        if not permissions.may(self.role, permissions.EDIT):
            raise protocol.ProtocolError(protocol.FORBIDDEN, permissions.REFUSALS[permissions.EDIT], message.request_id)
        f = message.fields
        payload = {
            "type": "kernel.text_update",
            "notebook": self.notebook_id,
            "cellId": f["cellId"],
            "update": base64.b64encode(f["update"]).decode("ascii"),
            "generation": f["generation"],
            "replyChannel": self.channel_name,
            "requestId": message.request_id,
            "by": self.user.get_username(),
            "byId": self.user.pk,  # the history's "edited by"
        }
        await kernel_client.send(self.notebook_id, payload)

    async def _announce_presence(self, *, cell_id=None, cursor=None, joined=False, left=False):
        """Who has the notebook open and where: relayed to every socket on it, never stored."""
        presence = {
            "type": "presence",
            "socket": self.presence_id,
            "user": {"name": self.user.get_username(), "role": self.role, "color": presence_color(self.user.pk)},
            "cellId": cell_id,
            "cursor": cursor,
        }
        if joined:
            presence["joined"] = True
        if left:
            presence["left"] = True
        await self.channel_layer.group_send(self.group, {"type": "notebook.presence", "socket": presence["socket"], "text": protocol.dumps(presence)})

    async def notebook_presence(self, event):
        """Someone's presence, relayed to every other socket on the notebook (not back to its own)."""
        if event["socket"] != self.presence_id:
            await self.send(text_data=event["text"])

    async def _send_error(self, code, message, request_id=None):
        await self.send(text_data=protocol.encode_error(code, message, request_id))

    # --- kernel worker -> this socket --------------------------------------------
    async def notebook_event(self, event):
        """Events the kernel worker has already encoded: relayed untouched, as `batch` frames
        of at most FRAME_BYTES_BUDGET for a client that asked for batches."""
        texts = event["texts"]
        if self.batch_frames and len(texts) > 1:
            for group in protocol.frame_groups(texts):
                if len(group) == 1:
                    await self.send(text_data=group[0])
                else:
                    await self.send(text_data='{"type": "batch", "events": [' + ", ".join(group) + "]}")
        else:
            for text in texts:
                await self.send(text_data=text)

    async def notebook_deleted(self, event):
        """The owner deleted the notebook: say so, then close as for an unknown notebook."""
        await self._send_error(protocol.NOT_FOUND, "This notebook was deleted by its owner.")
        await self.close(code=CLOSE_NOT_FOUND)

    async def notebook_access_changed(self, event):
        """Sharing changed for one user: if it is this socket's, close it when the access is
        gone, or tell the page its new role (the consumer checks every edit anyway)."""
        if event.get("userId") == self.user.pk:
            await self._check_access()

    async def _check_access(self):
        """Close the socket if the user's access is gone, or tell the page its new role;
        True when the socket stays open."""
        try:
            notebook, role = await _load_notebook_for(self.user, self.notebook_id)
        except DatabaseError as exc:
            logger.warning("could not re-check access on notebook %s: database unavailable (%s)", self.notebook_id, type(exc).__name__)
            await self._close_unavailable("The server cannot reach its database right now; reconnecting shortly.")
            return False
        if notebook is None:
            await self._send_error(protocol.FORBIDDEN, "Your access to this notebook was removed.")
            await self.close(code=CLOSE_FORBIDDEN)
            return False
        if role != self.role:
            self.role = role
            await self.send(text_data=protocol.dumps({"type": "access_changed", "role": role}))
        return True

    async def layer_reconnected(self, event):
        """This process had lost Redis: events (and sharing changes) may have been missed.
        Re-check access, then ask the kernel for a fresh state; the database's revision
        makes a kernel that missed a committed change reload it first."""
        if not self.joined or not await self._check_access():
            return
        try:
            revision = await database_sync_to_async(lambda: Notebook.objects.filter(pk=self.notebook_id).values_list("revision", flat=True).first())()
            await self._request_state(revision=revision)
        except (DatabaseError, *REDIS_ERRORS) as exc:
            logger.warning("socket on notebook %s could not resync after a Redis outage (%s); closing it", self.notebook_id, type(exc).__name__)
            await self._close_unavailable("The server could not resync this notebook; reconnecting shortly.")


# The consumer's dispatch: every message protocol.py accepts, to its handler (`_on_<type>`; a
# message without one fails here, at import).
_SHARED = {"run_cell": "_kernel_command", "run_all": "_kernel_command", "interrupt": "_kernel_command", "text_update": "_text_update", "complete": "_assist", "inspect": "_assist"}
HANDLERS = {kind: getattr(NotebookConsumer, _SHARED.get(kind, f"_on_{kind}")) for kind in protocol.MESSAGE_SCHEMAS}
