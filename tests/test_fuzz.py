"""Property-based fuzzing of the real consumer (and the real kernel worker behind it): frames
built from the protocol's message schemas with wrong, missing, extra and odd values, random
JSON, random text and binary frames.  Every frame gets a clear answer (an `error`, or the
`notebook_state` a valid `sync` asks for), no traceback or error is logged, a viewer's frames
change nothing, and an editor's never cause an `internal_error`.

Hypothesis runs in a thread and hands each example to the test's event loop, where the
consumer lives (WebsocketCommunicator); a `sync` probe after each example marks its end.
"""
import asyncio
import json
import logging
import uuid

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from notebooks_app import protocol

from .client import Closed
from .conftest import create, db_cells, revision

ODD_STRINGS = ["\ud800", "a\x00b", "\udfff\ud800", "", " ", "x" * 300, "🙂", "df_1", "class", "postgresql://", "sqlite:///", "sqlite:////etc/passwd"]
json_scalars = st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30) | st.floats(allow_nan=False) | st.text(max_size=50) | st.sampled_from(ODD_STRINGS)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)
TYPES = sorted(protocol.MESSAGE_SCHEMAS) + ["", "cell.update", "notebook_state", "error"]


@st.composite
def schema_messages(draw, cell_ids):
    """A message shaped like the schema's, each field valid, odd or absent, maybe extras."""
    kind = draw(st.sampled_from(TYPES))
    message = {"type": kind}
    plausible = st.sampled_from(cell_ids + [str(uuid.uuid4())]) | st.just(None) | json_scalars
    for name in protocol.MESSAGE_SCHEMAS.get(kind, {}):
        if draw(st.booleans()):
            message[name] = draw(plausible if "Id" in name else json_values | st.sampled_from(["python", "sql", "a = 1", "df_2"]))
    if draw(st.integers(0, 4)) == 0:
        message[draw(st.text(min_size=1, max_size=8) | st.sampled_from(ODD_STRINGS))] = draw(json_values)
    if draw(st.booleans()):
        message["requestId"] = draw(json_scalars)
    return message


def frames(cell_ids):
    as_text = schema_messages(cell_ids).map(lambda m: json.dumps(m)) | json_values.map(json.dumps) | st.text(max_size=200)
    return st.lists(as_text | st.binary(max_size=200), min_size=1, max_size=6)


# Valid messages a viewer may send: answered in their own way (a state, a history page) or
# relayed (presence); every other frame from a viewer gets an `error`.
VIEWER_READS = {"sync", "history", "presence"}


def refused_for_a_viewer(frame):
    if isinstance(frame, bytes):
        return True
    try:
        return protocol.parse(frame).type not in VIEWER_READS
    except protocol.ProtocolError:
        return True


async def exchange(client, batch, probe):
    """Send `batch`, then a sync probe; every frame that arrived before the probe's answer."""
    for frame in batch:
        await client.send_raw(frame)
    await client.send(type="sync", requestId=probe)
    replies = []
    while True:
        try:
            frame = await client.receive_frame(20)
        except Closed as closed:
            raise AssertionError(f"socket closed: {closed}") from None
        if frame.get("type") == "notebook_state" and frame.get("requestId") == probe:
            client.seq = frame["seq"]  # the client's own event tracking goes on from here
            return replies
        replies.append(frame)


def run_examples(loop, strategy, check, examples):
    """Hypothesis in this (worker) thread; each example checked on the test's event loop."""

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(strategy)
    def property_holds(batch):
        asyncio.run_coroutine_threadsafe(check(batch), loop).result(60)

    property_holds()


@pytest.fixture(autouse=True)
def no_rate_limit(monkeypatch):
    """The fuzzers send as fast as the in-process socket takes frames, past the per-socket token
    bucket (consumers.RATE_BURST, tested on its own in test_protocol): what they check is the
    answer to each frame, so the bucket is out of their way."""
    from notebooks_app import consumers

    monkeypatch.setattr(consumers, "RATE_BURST", 10**9)
    monkeypatch.setattr(consumers, "RATE_PER_SECOND", 10.0**9)


@pytest.fixture
def quiet_logs(caplog, live_kernel):
    caplog.set_level(logging.WARNING)
    before = live_kernel.log_path.read_text(errors="replace").count("Traceback")
    yield
    loud = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not loud, [r.getMessage() for r in loud]
    assert live_kernel.log_path.read_text(errors="replace").count("Traceback") == before


async def test_a_viewers_fuzzed_frames_each_get_an_answer_and_change_nothing(ws, notebook, users, quiet_logs):
    owner = await ws(users["alice"], notebook)
    cell = (await create(owner, "a = 1"))
    before = (await revision(notebook), await db_cells(notebook))
    viewer = await ws(users["carol"], notebook)
    counter = iter(range(10**9))

    async def check(batch):
        replies = await exchange(viewer, batch, f"probe-{next(counter)}")
        errors = [r for r in replies if r["type"] == "error"]
        assert len(errors) == sum(map(refused_for_a_viewer, batch)), (batch, replies)
        assert all(r.get("code") != protocol.INTERNAL_ERROR for r in replies)

    await asyncio.to_thread(run_examples, asyncio.get_running_loop(), frames([cell]), check, 150)
    assert (await revision(notebook), await db_cells(notebook)) == before


async def test_an_editors_fuzzed_frames_never_break_the_server(ws, notebook, users, quiet_logs):
    editor = await ws(users["bob"], notebook)
    cells = [await create(editor, "a = 1"), await create(editor, "b = a + 1")]
    counter = iter(range(10**9))

    async def check(batch):
        replies = await exchange(editor, batch, f"probe-{next(counter)}")
        assert all(r.get("code") != protocol.INTERNAL_ERROR for r in replies), replies
        assert not any(r["type"] == "kernel_error" for r in replies), replies

    await asyncio.to_thread(run_examples, asyncio.get_running_loop(), frames(cells), check, 100)
    # The socket still works: a plain edit goes through.
    assert (await editor.request(type="create_cell", code="z = 0"))["type"] == "cell_created"


async def test_a_request_id_too_large_for_the_channel_layer_is_refused(ws, notebook, users, quiet_logs):
    viewer = await ws(users["carol"], notebook)
    await viewer.send(type="sync", requestId=10**20)
    reply = await viewer.wait_for(lambda e: e["type"] == "error")
    assert reply[-1]["code"] == protocol.INVALID_FIELD
    assert (await viewer.request(type="sync"))["type"] == "notebook_state"


@pytest.mark.parametrize("cursor", [{"anchor": "\ud800"}, {"\udfff": 1}, ["ok", ["\ud800x"]]])
async def test_a_cursor_that_is_not_valid_unicode_is_refused(ws, notebook, users, quiet_logs, cursor):
    # Found by bench/fuzz.py: relayed as it was, it failed in the channel layer's msgpack
    # (UnicodeEncodeError, an internal_error and a traceback).
    viewer = await ws(users["carol"], notebook)
    await viewer.send(type="presence", cursor=cursor, requestId="p1")
    reply = await viewer.wait_for(lambda e: e["type"] == "error")
    assert reply[-1]["code"] == protocol.INVALID_FIELD and reply[-1]["requestId"] == "p1", reply[-1]
    await viewer.send(type="presence", cursor={"anchor": "fine"}, requestId="p2")
    assert (await viewer.request(type="sync"))["type"] == "notebook_state"
    assert not [r for r in viewer.replies if r.get("requestId") == "p2"]
