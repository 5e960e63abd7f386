"""The direct event path (notebooks_app/fanout.py) on a real Daphne: events and presence reach
every socket (presence not its own), and backpressure, with a real slow client: a raw WebSocket with a tiny receive buffer that stops reading after the
handshake.  It must be told `too_slow` / closed (4013) and dropped, with the bytes held for
it bounded, while another socket on the same notebook keeps receiving every event."""
import asyncio
import json
import os
import re
import socket
import time

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from notebooks_app.fanout import CLOSE_GRACE
from notebooks_app.models import Notebook

from .client import NotebookClient
from .conftest import ROOT, database_url_for_tests
from .live import free_port, login, server_frames, start_daphne, stop, upgrade_request
from .waiting import eventually

pytestmark = pytest.mark.slow

PASSWORD = "slow-socket-pass-1"
SLOW_BYTES = 64 * 1024
BIG_CODE = "x = 1  # " + "y" * 150_000  # each cell_created event carries ~150 KB
TCP_ESTABLISHED = 1  # tcpi_state, the first byte of Linux's struct tcp_info


@pytest.fixture
def daphne(live_kernel, django_user_model):
    yield from a_daphne(django_user_model, SOCKET_SLOW_BYTES=str(SLOW_BYTES), SOCKET_SLOW_SECONDS="0.5", SOCKET_MAX_BYTES=str(8 * 1024 * 1024))


@pytest.fixture
def patient_daphne(live_kernel, django_user_model):
    """A Daphne that lets a socket fall megabytes behind before it calls it too slow."""
    yield from a_daphne(django_user_model, SOCKET_SLOW_BYTES=str(64 * 1024 * 1024), SOCKET_MAX_BYTES=str(256 * 1024 * 1024))


def a_daphne(django_user_model, **settings):
    hasher = PBKDF2PasswordHasher()
    user = django_user_model.objects.create(username="sloane", password=hasher.encode(PASSWORD, hasher.salt()))
    notebook = Notebook.objects.create(name="backpressure", owner=user)
    log = ROOT / "var" / f"backpressure-daphne-{os.getpid()}.log"
    log.parent.mkdir(exist_ok=True)
    start = log.stat().st_size if log.exists() else 0
    env = dict(os.environ, DATABASE_URL=database_url_for_tests(), LOG_LEVEL="INFO", **settings)
    port = free_port()
    proc = start_daphne(port, env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        yield {"url": url, "port": port, "cookie": login(url, "sloane", PASSWORD), "notebook": str(notebook.pk), "log": log, "start": start, "pid": proc.pid}
    finally:
        stop(proc)


async def connect(daphne, *, batch=True, **options):
    """A client of the daphne's notebook (`options`: NotebookClient's)."""
    return await NotebookClient(daphne["notebook"], daphne["cookie"], server=daphne["url"], batch=batch, timeout=30, **options).connect()


def raw_slow_socket(port, path, cookie):
    """A WebSocket handshake by hand on a socket with a tiny receive buffer; then it never reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(upgrade_request(f"127.0.0.1:{port}", path, f"http://127.0.0.1:{port}", cookie))
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def drain(sock, seconds=5):
    """Everything the slow socket can still read, and how it ended ("eof", "reset" or "open")."""
    sock.settimeout(seconds)
    data, end = b"", "open"
    try:
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                end = "eof"
                break
            data += chunk
    except ConnectionResetError:
        end = "reset"
    except socket.timeout:
        pass
    return data, end


def dropped(sock):
    """True once the server has ended the connection of `sock` (its TCP state is no longer
    ESTABLISHED: a reset, or a close), whether or not what it sent before was read."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] != TCP_ESTABLISHED


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as status:
        return int(next(line.split()[1] for line in status if line.startswith("VmRSS:")))


async def test_a_socket_that_stops_reading_is_closed_and_the_others_keep_receiving(daphne):
    fast = await connect(daphne, watch_early=True)
    slow = await asyncio.to_thread(raw_slow_socket, daphne["port"], f"/ws/notebooks/{daphne['notebook']}/?batch=1", daphne["cookie"])
    rss_before = rss_kb(daphne["pid"])
    sent = 0
    try:
        for i in range(60):  # ~9 MB of events, more than the slow socket's buffers and the cap
            rid = f"big-{i}"
            await fast.send(type="create_cell", code=BIG_CODE, requestId=rid)
            seen = await fast.wait_for(lambda e, rid=rid: e.get("requestId") == rid, timeout=30)
            assert seen[-1]["type"] == "cell_created", seen[-1]  # the fast socket gets every event
            sent += len(BIG_CODE)
            await asyncio.sleep(0.02)  # a pace, not a wait: slow for SOCKET_SLOW_SECONDS long before SOCKET_MAX_BYTES
        # The slow socket's fate is in the log: closed for falling behind, with what it held.
        log = daphne["log"].read_bytes()[daphne["start"] :].decode(errors="replace")
        closed = re.findall(r"closing a socket on (\S+) that fell behind: (\d+) bytes unread", log)
        assert closed, log[-3000:]
        assert closed[0][0] == daphne["notebook"]
        held = int(closed[0][1])
        assert held < 4 * 1024 * 1024 < sent, (held, sent)  # bounded well below what was produced
        # Dropped: the connection is aborted when the close handshake does not complete
        # (SOCKET_SLOW_SECONDS, at least fanout.CLOSE_GRACE).
        await eventually(lambda: dropped(slow), timeout=CLOSE_GRACE + 20, what="the slow socket dropped by the server")
        data, end = await asyncio.to_thread(drain, slow)
        assert end in ("eof", "reset"), (end, len(data))
        assert len(data) < sent
        # The server's memory did not keep what the slow socket never read.
        assert rss_kb(daphne["pid"]) - rss_before < 64 * 1024
        # And the fast socket still gets events promptly after the slow one is gone.
        await fast.send(type="create_cell", code="after = 1", requestId="after")
        seen = await fast.wait_for(lambda e: e.get("requestId") == "after", timeout=10)
        assert seen[-1]["type"] == "cell_created"
    finally:
        slow.close()
        await fast.close()


async def test_a_slow_reader_is_told_too_slow_and_closed_with_4013(daphne):
    """A client that reads, but too late: it finds `too_slow` and a 4013 close after its events."""
    fast = await connect(daphne, watch_early=True)
    slow = await asyncio.to_thread(raw_slow_socket, daphne["port"], f"/ws/notebooks/{daphne['notebook']}/?batch=1", daphne["cookie"])
    try:
        for i in range(40):  # until it has been over SLOW_BYTES for longer than SOCKET_SLOW_SECONDS
            rid = f"big-{i}"
            await fast.send(type="create_cell", code=BIG_CODE, requestId=rid)
            await fast.wait_for(lambda e, rid=rid: e.get("requestId") == rid, timeout=30)
            if b"that fell behind" in daphne["log"].read_bytes()[daphne["start"] :]:
                break
            await asyncio.sleep(0.1)  # a pace, not a wait: few enough bytes held that the client can read up to the close in time
        else:
            pytest.fail("the slow socket was never closed")
        # It starts reading again at once (within the close handshake's time).
        deadline = time.monotonic() + 10
        data = b""
        slow.settimeout(0.5)
        while time.monotonic() < deadline and b"too_slow" not in data:
            try:
                chunk = slow.recv(1 << 20)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                break
            data += chunk
        assert b'"code": "too_slow"' in data or b'"code":"too_slow"' in data
    finally:
        slow.close()
        await fast.close()


async def test_events_and_presence_reach_every_socket_directly_presence_not_its_own(daphne):
    first = await connect(daphne, watch_presence=True)
    second = await connect(daphne, batch=False, watch_presence=True)
    try:
        joined = await first.wait_for(lambda e: e["type"] == "presence" and e.get("joined"), timeout=10)
        socket_id = joined[-1]["socket"]
        await second.send(type="presence", cellId=None, cursor=None)
        moved = await first.wait_for(lambda e: e["type"] == "presence" and not e.get("joined"), timeout=10)
        assert moved[-1]["socket"] == socket_id
        await first.send(type="create_cell", code="a = 1", requestId="c1")
        for client in (first, second):
            seen = await client.wait_for(lambda e: e.get("requestId") == "c1", timeout=10)
            assert seen[-1]["type"] == "cell_created"
            assert not [e for e in seen if e["type"] == "presence" and e["socket"] == socket_id and client is second]
        assert first.events == second.events  # the same events, in the same order
    finally:
        await first.close()
        await second.close()


@pytest.fixture(params=["before the send", "after the send"])
def early_daphne(request, live_kernel, django_user_model):
    """A Daphne that writes early announcements to its sockets before it sends the edit to
    Redis (a few sockets, the default), or after (EARLY_FIRST_SOCKETS=0, as for many)."""
    first = "128" if request.param == "before the send" else "0"
    yield from a_daphne(django_user_model, EARLY_FIRST_SOCKETS=first)


async def test_an_early_announcement_reaches_each_socket_of_its_daphne_once_before_its_seq(early_daphne):
    """The Daphne that commits an edit writes its early announcement to its own sockets itself
    (fanout.write_here) and leaves Redis's copy out for them: each socket, the sender's and the
    other's, gets one early `cell_created` / `cell_deleted` per edit, before the kernel's."""
    daphne = early_daphne
    sender = await connect(daphne, watch_early=True)
    other = await connect(daphne, batch=False, watch_early=True)
    heard = {"sender": [], "other": []}  # every event each has read, early ones included
    try:
        for i in range(3):
            await sender.send(type="create_cell", code=f"v{i} = {i}", requestId=f"c{i}")
            heard["sender"] += await sender.wait_for(lambda e: e.get("requestId") == f"c{i}" and "seq" in e, timeout=10)
            await sender.send(type="delete_cell", cellId=heard["sender"][-1]["cellId"], requestId=f"d{i}")
        # Redis publishes the copy of an early announcement before the kernel hears of the edit,
        # so once the last kernel event is in, any second copy would have been read.
        for name, client in (("sender", sender), ("other", other)):
            heard[name] += await client.wait_for(lambda e: e.get("requestId") == "d2" and "seq" in e, timeout=10)
        for name, events in heard.items():
            for rid in [f"{kind}{i}" for i in range(3) for kind in "cd"]:
                mine = [e for e in events if e.get("requestId") == rid]
                assert [bool(e.get("early")) for e in mine] == [True, False], (name, rid, mine)
                assert mine[0]["type"] == mine[1]["type"] and mine[0]["cellId"] == mine[1]["cellId"]
    finally:
        await sender.close()
        await other.close()


async def test_moves_edits_undos_and_redos_are_announced_early_at_their_revision(early_daphne):
    """`move_cell`, `cell_update`, `undo` and `redo` are announced early too (docs/protocol.md,
    "Early announcements"), each once per socket and before the kernel's event, which carries
    the same revision: a move by the cell it now follows, an edit with its code."""
    daphne = early_daphne
    sender = await connect(daphne, watch_early=True)
    other = await connect(daphne, batch=False, watch_early=True)
    try:
        ids = []
        for i in range(2):
            await sender.send(type="create_cell", code=f"v{i} = {i}", requestId=f"c{i}")
            ids.append((await sender.wait_for(lambda e: e.get("requestId") == f"c{i}" and "seq" in e, timeout=10))[-1]["cellId"])
        steps = [
            ("m", {"type": "move_cell", "cellId": ids[1], "afterCellId": None}, "cell_moved"),
            ("e", {"type": "cell_update", "cellId": ids[0], "code": "v0 = 10"}, "cell_updated"),
            ("u", {"type": "undo"}, "cell_updated"),  # the edit: its text before
            ("r", {"type": "redo"}, "cell_updated"),  # the edit again
        ]
        for rid, message, _ in steps:
            await sender.send(**message, requestId=rid)
            await sender.wait_for(lambda e: e.get("requestId") == rid and "seq" in e, timeout=10)
        heard = await other.wait_for(lambda e: e.get("requestId") == "r" and "seq" in e, timeout=10)
        for rid, _, kind in steps:
            mine = [e for e in heard if e.get("requestId") == rid and e["type"] == kind]
            assert [bool(e.get("early")) for e in mine] == [True, False], (rid, mine)
            early, in_order = mine
            assert early["revision"] == in_order["revision"] and early["cellId"] == in_order["cellId"]
        moved, edited, undone, redone = ([e for e in heard if e.get("requestId") == rid and e.get("early")][0] for rid in "meur")
        assert moved["after"] is None and moved["cellId"] == ids[1]
        assert (edited["code"], "reads" not in edited, "status" not in edited) == ("v0 = 10", True, True)
        assert (undone["code"], redone["code"]) == ("v0 = 0", "v0 = 10")
        assert [e["revision"] for e in (moved, edited, undone, redone)] == [3, 4, 5, 6]
        in_order = [e for e in heard if e.get("requestId") == "e" and e["type"] == "cell_updated" and not e.get("early")][0]
        assert in_order["writes"] == ["v0"]  # the kernel's analysis comes in seq order
    finally:
        await sender.close()
        await other.close()


async def test_a_socket_that_fell_behind_gets_every_big_event_whole_and_in_order(patient_daphne):
    """fanout.send_now sends what the socket takes at once and leaves the rest to Twisted. A
    socket that does not read while 6 MB of events are written fills the kernel's buffers (up
    to 4 MB here): an event is cut there, and every event after it must queue behind its
    rest, not overtake it.
    Read afterwards, the stream holds each event whole, in order (torn or interleaved frames
    would not parse)."""
    daphne, count = patient_daphne, 40
    path = f"/ws/notebooks/{daphne['notebook']}/?batch=1"
    behind = await asyncio.to_thread(raw_slow_socket, daphne["port"], path, daphne["cookie"])
    sender = await connect(daphne, watch_early=True)
    try:
        for i in range(count):
            await sender.send(type="create_cell", code=f"big_{i} = {i}  # " + "z" * 150_000, requestId=f"big-{i}")
            await sender.wait_for(lambda e, i=i: e.get("requestId") == f"big-{i}", timeout=30)
        assert "fell behind" not in daphne["log"].read_text(errors="replace")[daphne["start"] :]
        behind.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)  # now it reads, quickly
        behind.settimeout(10)
        rest, created, read = b"", [], 0
        while len(created) < count:
            chunk = await asyncio.to_thread(behind.recv, 1 << 20)
            assert chunk, f"closed after {read} bytes"
            read += len(chunk)
            frames, rest = server_frames(rest + chunk)
            for text in (payload.decode("utf-8") for opcode, payload in frames if opcode == 0x1):
                frame = json.loads(text)
                assert frame.get("type") != "error", frame  # e.g. too_slow
                for event in frame["events"] if frame.get("type") == "batch" else [frame]:
                    if event["type"] == "cell_created" and "seq" in event:
                        created.append(event)
        assert [e["cell"]["code"].split(" ", 1)[0] for e in created] == [f"big_{i}" for i in range(count)]
        assert all(len(e["cell"]["code"]) > 150_000 for e in created)
    finally:
        behind.close()
        await sender.close()
