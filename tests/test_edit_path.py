"""The short path of an edit (docs/performance.md, "Edits"): create_cell and delete_cell in one pipeline on
PostgreSQL, the core layer's one-round-trip send, and the order every socket sees when several
sockets edit at once."""
import asyncio
import base64
import os
import uuid

import pytest
from channels.db import database_sync_to_async
from channels.exceptions import ChannelFull
from django.db import connection

from notebooks_app import operations
from notebooks_app.constants import POSITION_STEP
from notebooks_app.kernel.shared_text import CellText, code_key
from notebooks_app.models import Cell, Notebook, NotebookEvent
from notebooks_app.operations import OperationError
from tests.conftest import db_cells

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def kernel_messages(monkeypatch):
    """The kernel messages operations send on commit, captured instead of sent; the early
    announcements that go before them in `.announced`."""

    class Sent(list):
        pass

    sent = Sent()
    sent.announced = []

    def capture(notebook_id, message, announce=None):
        sent.append(message)
        sent.announced.append(announce)

    monkeypatch.setattr(operations.kernel_client, "send_on_commit", capture)
    return sent


def _created_event(cell_id):
    return NotebookEvent.objects.get(cell_id=cell_id, kind="created")


def test_create_cell_places_records_and_announces_like_the_orm_path(notebook, users, kernel_messages):
    assert connection.vendor == "postgresql"
    alice = users["alice"]
    first = operations.create_cell(notebook.pk, alice, code="a = 1", request_id="r1")
    last = operations.create_cell(notebook.pk, alice, code="b = 2", request_id="r2")
    middle = operations.create_cell(notebook.pk, users["bob"], code="c = 3", after_cell_id=str(first.pk), request_id="r3")
    unknown = operations.create_cell(notebook.pk, alice, code="d = 4", after_cell_id=str(uuid.uuid4()), request_id="r4")
    garbage = operations.create_cell(notebook.pk, alice, code="e = 5", after_cell_id="not-a-uuid", request_id="r5")
    markdown = operations.create_cell(notebook.pk, alice, cell_type="markdown", code="# hi", after_cell_id=str(garbage.pk))

    rows = list(Cell.objects.filter(notebook=notebook).order_by("position").values_list("id", "position", "type", "code", "status", "outputs", "reads", "inputs"))
    assert [r[0] for r in rows] == [first.pk, middle.pk, last.pk, unknown.pk, garbage.pk, markdown.pk]
    assert [r[1] for r in rows] == [POSITION_STEP, POSITION_STEP * 3 // 2, 2 * POSITION_STEP, 3 * POSITION_STEP, 4 * POSITION_STEP, 5 * POSITION_STEP]
    assert rows[0][2:] == ("python", "a = 1", "idle", [], [], {})
    assert rows[-1][2] == "markdown"
    assert Notebook.objects.get(pk=notebook.pk).revision == 6

    # The history event is the one cell_snapshot would have written: neighbours at the time.
    assert _created_event(first.pk).after == {"id": str(first.pk), "type": "python", "code": "a = 1", "resultVariable": "", "previous": None, "next": None}
    assert _created_event(last.pk).after["previous"] == str(first.pk) and _created_event(last.pk).after["next"] is None
    assert _created_event(middle.pk).after["previous"] == str(first.pk) and _created_event(middle.pk).after["next"] == str(last.pk)
    assert _created_event(middle.pk).user_id == users["bob"].pk
    assert _created_event(unknown.pk).after["previous"] == str(last.pk)

    assert [m["revision"] for m in kernel_messages] == [1, 2, 3, 4, 5, 6]
    ydoc = kernel_messages[2].pop("ydoc")
    assert kernel_messages[2] == {
        "type": "kernel.create_cell",
        "notebook": str(notebook.pk),
        "revision": 3,
        "requestId": "r3",
        "cell": middle.to_message(),
        "position": POSITION_STEP * 3 // 2,
        "positions": None,
    }
    assert Cell.objects.get(pk=middle.pk).to_message() == middle.to_message()
    # Announced early with its index and its shared text, which the row stores with its key.
    early = kernel_messages.announced[2]
    assert early == {"type": "cell_created", "cellId": str(middle.pk), "cell": {**middle.to_message(), "ydoc": ydoc, "ygen": 0}, "index": 1, "revision": 3, "requestId": "r3", "early": True}
    assert [a["index"] for a in kernel_messages.announced] == [0, 1, 1, 3, 4, 5]
    stored = Cell.objects.get(pk=middle.pk)
    assert bytes(stored.ydoc) == base64.b64decode(ydoc) and stored.ydoc_key == code_key("c = 3")
    assert str(CellText("c = 3", state=bytes(stored.ydoc))) == "c = 3" and CellText("c = 3", state=bytes(stored.ydoc)).generation == 0


def test_create_cell_between_adjacent_positions_renumbers(notebook, users, kernel_messages):
    a = Cell.objects.create(notebook=notebook, position=1, code="a = 1")
    b = Cell.objects.create(notebook=notebook, position=2, code="b = 2")
    cell = operations.create_cell(notebook.pk, users["alice"], code="c = 3", after_cell_id=str(a.pk))
    assert list(Cell.objects.filter(notebook=notebook).order_by("position").values_list("id", flat=True)) == [a.pk, cell.pk, b.pk]
    assert len(kernel_messages) == 1 and kernel_messages[0]["positions"] == {str(a.pk): POSITION_STEP, str(b.pk): 2 * POSITION_STEP}
    assert NotebookEvent.objects.filter(notebook=notebook, kind="created").count() == 1
    assert Notebook.objects.get(pk=notebook.pk).revision == 1


@pytest.mark.parametrize("who, code", [("carol", "forbidden"), ("dave", "not_found"), ("anonymous", "not_found"), ("unknown notebook", "not_found")])
def test_create_cell_refused_changes_nothing(notebook, users, kernel_messages, who, code):
    from django.contrib.auth.models import AnonymousUser

    user = {"carol": users["carol"], "dave": users["dave"], "anonymous": AnonymousUser()}.get(who, users["alice"])
    target = uuid.uuid4() if who == "unknown notebook" else notebook.pk
    with pytest.raises(OperationError) as raised:
        operations.create_cell(target, user, code="x = 1")
    assert raised.value.code == code
    assert not Cell.objects.exists() and not NotebookEvent.objects.exists() and kernel_messages == []
    assert Notebook.objects.get(pk=notebook.pk).revision == 0


def test_core_layer_send_is_one_script_with_capacity_and_order():
    """The one-round-trip send and the receive whose backup is written after the hand-off keep
    channels-redis's contract: FIFO, capacity, nothing left behind to come back twice."""
    from notebooks_app.layers import RedisChannelLayer

    async def scenario():
        layer = RedisChannelLayer(hosts=[os.environ["REDIS_URL"]], capacity=3, prefix=f"test-{uuid.uuid4().hex[:8]}")
        channel = "kernel-test"
        for i in range(3):
            await layer.send(channel, {"type": "t", "i": i})
        with pytest.raises(ChannelFull):
            await layer.send(channel, {"type": "t", "i": 3})
        got = [(await layer.receive(channel))["i"] for _ in range(3)]
        await asyncio.gather(*list(layer.receive_cleaners))
        # The backups written after each message was handed on have been popped again: nothing
        # would come back (twice) on the next receive.
        redis = layer.connection(0)
        assert await redis.zcard(layer.prefix + channel + "$inflight") == 0
        assert await redis.zcard(layer.prefix + channel) == 0
        local = await layer.new_channel()
        await layer.send(local, {"type": "t", "i": 9})
        assert (await layer.receive(local))["i"] == 9
        await layer.flush()
        return got

    assert asyncio.run(scenario()) == [0, 1, 2]


def test_core_layer_receive_is_one_bzpopmin_and_puts_old_backups_back_once():
    """A received message costs one BZPOPMIN: no backup written and popped again around it (the
    commands Redis counted, not our code's word). A backup that channels-redis's own receive left
    behind (an older worker killed mid-message) comes back first, on the first receive only."""
    from channels_redis.core import RedisChannelLayer as CoreLayer

    from notebooks_app.layers import RedisChannelLayer

    async def calls(redis):
        stats = await redis.info("commandstats")
        return {name.removeprefix("cmdstat_"): value["calls"] for name, value in stats.items()}

    async def scenario():
        prefix = f"test-{uuid.uuid4().hex[:8]}"
        channel = "kernel-test"
        old = CoreLayer(hosts=[os.environ["REDIS_URL"]], prefix=prefix)
        redis = old.connection(0)
        # What channels-redis's receive leaves when its process dies between the pop and the
        # clean-up: the message in the channel's backup.
        await redis.zadd(prefix + channel + "$inflight", {old.serialize({"type": "t", "i": "left behind"}): 1.0})
        layer = RedisChannelLayer(hosts=[os.environ["REDIS_URL"]], prefix=prefix)
        for i in range(3):
            await layer.send(channel, {"type": "t", "i": i})
        got = [(await layer.receive(channel))["i"]]
        before = await calls(redis)
        got += [(await layer.receive(channel))["i"] for _ in range(3)]
        await asyncio.gather(*list(layer.receive_cleaners))
        after = await calls(redis)
        spent = {name: after[name] - before.get(name, 0) for name in after if after[name] != before.get(name, 0)}
        spent.pop("info", None)
        assert await redis.zcard(prefix + channel + "$inflight") == 0
        await layer.flush()
        await old.flush()
        return got, spent

    got, spent = asyncio.run(scenario())
    assert got == ["left behind", 0, 1, 2]
    # Other clients of this Redis (the test session's own) may count too: only ours are asserted.
    assert spent.get("bzpopmin") == 3
    assert not {"zadd", "zpopmin", "eval", "evalsha"} & set(spent), spent


def test_send_then_group_send_is_one_script_on_one_server_kernel_message_first(monkeypatch):
    """An early announcement and the kernel's message in one round trip when both layers are
    on one Redis: the pub/sub layer's own publish is not used, the subscriber hears the event
    with the kernel's message already queued, a full channel sends neither, and layers on two
    servers get False with nothing sent (the caller then sends the two itself)."""
    from notebooks_app.layers import RedisChannelLayer, RedisPubSubChannelLayer, _ResilientShard

    async def scenario():
        prefix = f"test-{uuid.uuid4().hex[:8]}"
        core = RedisChannelLayer(hosts=[os.environ["REDIS_URL"]], capacity=1, prefix=prefix)
        events = RedisPubSubChannelLayer(hosts=[os.environ["REDIS_URL"]], prefix=prefix)
        socket = await events.new_channel()
        await events.group_add("notebook-x", socket)
        redis = core.connection(0)

        async def no_publish(self, channel, message):
            raise AssertionError("published apart from the send")

        monkeypatch.setattr(_ResilientShard, "publish", no_publish)
        event = {"type": "notebook.event", "texts": ['{"type": "cell_created"}']}
        assert await core.send_then_group_send("kernel", {"type": "kernel.create_cell"}, events, "notebook-x", event) is True
        heard = await asyncio.wait_for(events.receive(socket), 5)
        queued = await redis.zcard(prefix + "kernel")
        with pytest.raises(ChannelFull):  # capacity 1: neither the message nor the event
            await core.send_then_group_send("kernel", {"type": "kernel.create_cell"}, events, "notebook-x", event)
        elsewhere = RedisPubSubChannelLayer(hosts=["redis://127.0.0.1:1/0"], prefix=prefix)
        other_server = await core.send_then_group_send("kernel-2", {"type": "kernel.create_cell"}, elsewhere, "notebook-x", event)
        nothing = await redis.zcard(prefix + "kernel-2")
        got = (await core.receive("kernel"))["type"]
        try:
            await asyncio.wait_for(events.receive(socket), 0.3)
            extra = True
        except asyncio.TimeoutError:
            extra = False
        await events.flush()
        await core.flush()
        return heard, queued, other_server, nothing, got, extra

    heard, queued, other_server, nothing, got, extra = asyncio.run(scenario())
    # Marked with this process's origin (fanout.mark_here): a socket without a sink, as here,
    # still hears the published copy.
    assert heard.pop("origin", "").count(".") == 2
    assert heard == {"type": "notebook.event", "texts": ['{"type": "cell_created"}']}
    assert queued == 1  # the kernel's message was in Redis before any socket heard of it
    assert other_server is False and nothing == 0
    assert got == "kernel.create_cell" and extra is False


@pytest.mark.parametrize("first", [32, 0], ids=["before the send", "after the send"])
def test_send_then_group_send_writes_this_processs_sockets_itself_once(first, settings):
    """The process that sends an early announcement writes it to its own sockets of the group
    itself (fanout.write_here), before the script goes (a few sockets) or once it is written
    (EARLY_FIRST_SOCKETS fewer than them), once. Here the group is known to this process only,
    not subscribed in Redis, so no copy can come back: what the socket gets is that write."""
    from notebooks_app import fanout
    from notebooks_app.layers import RedisChannelLayer, RedisPubSubChannelLayer

    settings.EARLY_FIRST_SOCKETS = first

    class Socket:
        presence_id = "test"

        def __init__(self):
            self.frames = []

        def write(self, frames):
            self.frames.append(frames.plain())

    async def scenario():
        prefix = f"test-{uuid.uuid4().hex[:8]}"
        core = RedisChannelLayer(hosts=[os.environ["REDIS_URL"]], prefix=prefix)
        events = RedisPubSubChannelLayer(hosts=[os.environ["REDIS_URL"]], prefix=prefix)
        loop_layer = events._get_layer()
        loop_layer.groups[loop_layer._get_group_channel_name("notebook-y")] = {"socket-here"}
        socket = fanout.SINKS["socket-here"] = Socket()
        try:
            text = '{"type": "cell_created", "early": true}'
            sent = await core.send_then_group_send("kernel", {"type": "kernel.create_cell"}, events, "notebook-y", {"type": "notebook.event", "texts": [text]})
            queued = await core.connection(0).zcard(prefix + "kernel")
        finally:
            del fanout.SINKS["socket-here"]
            await core.flush()
        return sent, queued, socket.frames, text

    sent, queued, frames, text = asyncio.run(scenario())
    assert sent is True and queued == 1
    assert frames == [fanout.frame(text.encode())]


async def test_concurrent_creates_from_several_sockets_reach_everyone_in_one_order(ws, notebook, users):
    """Three sockets create cells at once, without waiting: every socket sees every cell_created
    with no seq gap (NotebookClient asserts it), all in one order, each sender's own replies in
    the order it sent them, and the order of the cells is the database's."""
    senders = [await ws(users["alice"], notebook), await ws(users["bob"], notebook), await ws(users["alice"], notebook)]
    watcher = await ws(users["carol"], notebook)
    clients = [*senders, watcher]
    per_sender = 8
    for round_ in range(per_sender):
        for index, client in enumerate(senders):
            await client.send(type="create_cell", code=f"v{index}_{round_} = {round_}", requestId=f"s{index}-{round_}")
    total = per_sender * len(senders)
    for client in clients:
        created = []
        await client.wait_for(lambda e: e["type"] == "cell_created" and not created.append(e) and len(created) == total, what="every cell_created")
    orders = [[e["requestId"] for e in c.events if e["type"] == "cell_created"] for c in clients]
    assert all(order == orders[0] for order in orders)
    for index in range(len(senders)):
        mine = [rid for rid in orders[0] if rid.startswith(f"s{index}-")]
        assert mine == [f"s{index}-{r}" for r in range(per_sender)]
    seqs = [e["seq"] for e in watcher.events if e["type"] == "cell_created"]
    assert seqs == sorted(seqs) and len(set(seqs)) == total
    assert [uuid.UUID(c) for c in watcher.order] == await db_cells(notebook)
    events = await database_sync_to_async(lambda: NotebookEvent.objects.filter(notebook=notebook, kind="created").count())()
    assert events == total


def test_delete_cell_records_its_snapshot_and_drops_its_blobs(notebook, users, kernel_messages):
    from notebooks_app.models import OutputBlob

    a = operations.create_cell(notebook.pk, users["alice"], code="a = 1")
    b = operations.create_cell(notebook.pk, users["alice"], cell_type="sql", code="SELECT 1")
    c = operations.create_cell(notebook.pk, users["alice"], code="c = 3")
    OutputBlob.objects.create(cell_id=b.pk, digest="d" * 64, mime_type="text/plain", data="x")
    operations.delete_cell(notebook.pk, users["bob"], cell_id=str(b.pk), request_id="d1")
    assert list(Cell.objects.filter(notebook=notebook).order_by("position").values_list("id", flat=True)) == [a.pk, c.pk]
    assert not OutputBlob.objects.exists()
    event = NotebookEvent.objects.get(kind="deleted")
    assert event.user_id == users["bob"].pk and event.cell_id == b.pk
    assert event.before == {"id": str(b.pk), "type": "sql", "code": "SELECT 1", "resultVariable": "df_1", "previous": str(a.pk), "next": str(c.pk)}
    assert kernel_messages[-1] == {"type": "kernel.delete_cell", "notebook": str(notebook.pk), "revision": 4, "requestId": "d1", "cellId": str(b.pk)}


@pytest.mark.parametrize("who, cell, code", [("alice", "unknown", "unknown_cell"), ("alice", "garbage", "unknown_cell"), ("carol", "real", "forbidden"), ("dave", "real", "not_found")])
def test_delete_cell_refused_changes_nothing(notebook, users, kernel_messages, who, cell, code):
    a = operations.create_cell(notebook.pk, users["alice"], code="a = 1")
    other = Notebook.objects.create(name="other", owner=users["alice"])
    stranger = operations.create_cell(other.pk, users["alice"], code="s = 1")
    cell_id = {"unknown": str(stranger.pk), "garbage": "nope", "real": str(a.pk)}[cell]  # another notebook's cell is unknown here
    with pytest.raises(OperationError) as raised:
        operations.delete_cell(notebook.pk, users[who], cell_id=cell_id)
    assert raised.value.code == code
    assert Cell.objects.count() == 2 and NotebookEvent.objects.filter(kind="deleted").count() == 0
    assert Notebook.objects.get(pk=notebook.pk).revision == 1 and len(kernel_messages) == 2


async def test_cell_deleted_goes_out_before_its_cascade(ws, notebook, users):
    """A delete whose dependents rerun: cell_deleted (the answer to the request) is sent on its
    own, not held for the flush timer and batched with the cascade's first statuses."""
    from tests.conftest import create, run_and_wait

    client = await ws(users["alice"], notebook, batch=True)
    frames = []
    receive = client.receive_frame

    async def recording(timeout):
        frame = await receive(timeout)
        frames.append(frame)
        return frame

    client.receive_frame = recording
    a = await create(client, "a = 1")
    b = await create(client, "b = a + 1")
    await run_and_wait(client, b)
    frames.clear()
    await client.send(type="delete_cell", cellId=a, requestId="del")
    await client.wait_for(lambda e: e["type"] == "cell_status" and e["cellId"] == b and e["status"] == "error", what="b fails without a")
    holding = [f for f in frames if any(e.get("type") == "cell_deleted" and not e.get("early") for e in (f["events"] if f.get("type") == "batch" else [f]))]
    assert len(holding) == 1
    assert [e["type"] for e in (holding[0]["events"] if holding[0].get("type") == "batch" else [holding[0]])] == ["cell_deleted"]


@pytest.mark.parametrize("operation", ["create_cell", "delete_cell"])
async def test_a_pipelined_edit_that_waits_too_long_is_busy_changes_nothing_and_leaves_the_connection_usable(ws, notebook, users, monkeypatch, operation):
    import threading

    from django.db import connections, transaction

    from tests.conftest import create, db_cells, revision
    from tests.waiting import EVENT_TIMEOUT

    monkeypatch.setattr(operations, "LOCK_TIMEOUT_MS", 200)
    alice, bob = await ws(users["alice"], notebook), await ws(users["bob"], notebook)
    cell = await create(alice, "x = 1")
    await bob.wait_for(lambda e: e["type"] == "cell_created")
    locked, release = threading.Event(), threading.Event()

    def hold_the_notebook_row():
        try:
            with transaction.atomic():
                Notebook.objects.select_for_update().get(pk=notebook.pk)
                locked.set()
                release.wait(EVENT_TIMEOUT)
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold_the_notebook_row)
    holder.start()
    message = {"type": "create_cell", "code": "y = 1"} if operation == "create_cell" else {"type": "delete_cell", "cellId": cell}
    try:
        assert await asyncio.to_thread(locked.wait, EVENT_TIMEOUT)
        before, cells = await revision(notebook), await db_cells(notebook)
        reply = await alice.request(**message)
    finally:
        release.set()
        await asyncio.to_thread(holder.join, EVENT_TIMEOUT)
    assert reply["type"] == "error" and reply["code"] == "busy", reply
    await bob.expect_silence(0.3)
    assert await revision(notebook) == before and await db_cells(notebook) == cells
    # The pipeline's transaction was rolled back: the same ORM connection serves the retry.
    assert (await alice.request(**message))["type"] in ("cell_created", "cell_deleted")


async def test_create_and_delete_take_the_edit_lane_and_what_it_cannot_do_takes_the_orm_thread(ws, notebook, users, monkeypatch):
    """notebooks_app/edit_lane.py: a Python cell's create and a delete run on the event loop
    (the ORM thread's operations are not called); a SQL cell, which needs its df_N name, still
    goes to the thread. Every socket sees each, in order, and the rows are there."""
    from notebooks_app import edit_lane
    from tests.conftest import create

    thread = []
    for name in ("create_cell", "delete_cell"):
        original = getattr(operations, name)
        monkeypatch.setattr(operations, name, lambda *a, _name=name, _original=original, **k: (thread.append(_name), _original(*a, **k))[1])
    alice, bob = await ws(users["alice"], notebook), await ws(users["bob"], notebook)
    cell = await create(alice, "lane = 1")
    await bob.wait_for(lambda e: e["type"] == "cell_created" and e["cellId"] == cell and "seq" in e)
    assert (await alice.request(type="delete_cell", cellId=cell))["type"] == "cell_deleted"
    await bob.wait_for(lambda e: e["type"] == "cell_deleted" and e["cellId"] == cell and "seq" in e)
    assert thread == [] and await db_cells(notebook) == []
    assert (await alice.request(type="create_cell", cellType="sql", code="SELECT 1"))["type"] == "cell_created"
    assert thread == ["create_cell"]
    assert edit_lane._lanes  # this loop's connection, closed by the ws fixture


async def test_the_edit_lane_replaces_a_connection_the_server_closed(ws, notebook, users):
    """A lane connection whose backend is gone (PostgreSQL restarted, the backend killed) is
    seen on its socket and replaced before the next edit, which works."""
    import asyncio as _asyncio

    from notebookproject import db_pool
    from notebooks_app import edit_lane
    from tests.conftest import create
    from tests.waiting import eventually

    alice = await ws(users["alice"], notebook)
    await create(alice, "first = 1")
    lane = edit_lane._lanes[_asyncio.get_running_loop()]
    pid = lane.conn.info.backend_pid

    def terminate():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])

    await database_sync_to_async(terminate)()
    await eventually(lambda: db_pool.unusable(lane.conn), what="the lane's socket showing its backend gone")
    second = await create(alice, "second = 2")
    assert lane.conn.info.backend_pid != pid
    assert str(second) in {str(c) for c in await db_cells(notebook)}


async def test_with_the_lane_off_edits_take_the_orm_thread(ws, notebook, users, settings, monkeypatch):
    from notebooks_app import edit_lane
    from tests.conftest import create

    settings.EDIT_LANE = False
    thread = []
    original = operations.create_cell
    monkeypatch.setattr(operations, "create_cell", lambda *a, **k: (thread.append(1), original(*a, **k))[1])
    alice = await ws(users["alice"], notebook)
    await create(alice, "off = 1")
    assert thread == [1] and not edit_lane._lanes
