"""One notebook's event stream: numbers every event with the notebook's `seq`, batches the events
produced within FLUSH_DELAY into one publish, encodes a cascade's statuses from a template, and
builds the notebook's state messages (docs/protocol.md).

It owns the publish coroutine and every timer and task that publishes; once closed it publishes
nothing.  It must not decide what happens to a cell (statuses.py) nor touch the store.
"""
import asyncio
import contextlib
import gc
import json
import time

from ..constants import STATE_CHUNK_BYTES

# Events produced within FLUSH_DELAY of each other go out as one group message.
FLUSH_DELAY = 0.01
# Keystrokes (flush_eagerly) go out at once, and at most one send per TYPING_WINDOW when they
# come faster: with 20 typists (~125 keystrokes a second) a keystroke waited up to FLUSH_DELAY
# behind the one before, half the relay's time (docs/performance.md, "Twenty typists at once").
TYPING_WINDOW = 0.002

encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

_gc_pauses = 0
_gc_was_enabled = True


@contextlib.contextmanager
def gc_paused():
    """The cyclic garbage collector off for a burst of allocations: loading a notebook and
    encoding its state. 10,000 cells make about a million objects, and every full collection
    meanwhile walks all of them and the rest of the heap again (a cold open of 10,000 cells
    spent 0.3 - 0.5 s there; docs/performance.md). Nothing made here is cyclic garbage, so
    one collection afterwards, when the collector next runs, is all it costs. Overlapping
    pauses (two notebooks loading at once) share the switch."""
    global _gc_pauses, _gc_was_enabled
    if _gc_pauses == 0:
        _gc_was_enabled = gc.isenabled()
        gc.disable()
    _gc_pauses += 1
    try:
        yield
    finally:
        _gc_pauses -= 1
        if _gc_pauses == 0 and _gc_was_enabled:
            gc.enable()


class Encoded(dict):
    """An event whose JSON text the session made already (`text`): a cascade's statuses are
    most of its events, and a template costs a fraction of encoding the dict.  Never
    changed after `emit`; the publisher sends `text` as it is."""

    __slots__ = ("text",)


def spliced(event, key, item_texts):
    """`event` as an `Encoded` whose text has `item_texts` (the items of its list under `key`,
    each encoded already) spliced in: the list is emptied, the event encoded, and its one
    `"key":[]` (a user string such as the name cannot hold it unescaped) filled."""
    holder = event["notebook"] if event["type"] == "notebook_state" else event
    items, holder[key] = holder[key], []
    skeleton = encode(event)
    holder[key] = items
    out = Encoded(event)
    out.text = skeleton.replace(f'"{key}":[]', f'"{key}":[' + ",".join(item_texts) + "]", 1)
    return out


class EventStream:
    def __init__(self, publish):
        self._publish = publish  # coroutine (target, events): target None is the notebook's group
        self.seq = 0
        self.closed = False
        self._pending = []
        self.lock = asyncio.Lock()  # held while events go out (and while final states are written)
        self._flush_handle = None
        self._last_eager_flush = 0.0
        self._tasks = set()  # flushes and replies on their way: kept, so close() can cancel them

    def start_above_earlier_sessions(self):
        """A new session (e.g. a restarted worker) numbers above anything an earlier one can have
        sent, so connected clients see a gap and resync instead of ignoring the new events."""
        if self.seq == 0:
            self.seq = int(time.time() * 1000) * 1000

    def emit(self, event):
        """`event` (a dict, or an `Encoded` whose text carries seq + 1) as the next in the stream."""
        self.seq += 1
        event["seq"] = self.seq
        self._pending.append(event)
        if self._flush_handle is None:
            self.schedule_flush()

    def emit_status(self, cell, status, by=""):
        """A cascade's `cell_status` (queued, running, success, error; the hot path), encoded from a
        template rather than by the JSON encoder."""
        event = Encoded(type="cell_status", cellId=cell.id, status=status)
        if by:
            event["by"] = by
        if cell.id_json is None:
            cell.id_json = encode(cell.id)
        by_json = f',"by":{encode(by)}' if by else ""
        event.text = f'{{"type":"cell_status","cellId":{cell.id_json},"status":"{status}"{by_json},"seq":{self.seq + 1}}}'
        self.emit(event)

    def emit_state(self, messages):
        """State messages (state_messages(): they carry the seq of the last event before them)."""
        self._pending.extend(messages)
        self.schedule_flush()

    def schedule_flush(self):
        """Pending events go out FLUSH_DELAY from the first of them, in one send."""
        if self._flush_handle is None and not self.closed:
            self._flush_handle = asyncio.get_running_loop().call_later(FLUSH_DELAY, self._spawn_flush)

    def flush_eagerly(self):
        """A lone event (a keystroke) goes out at once; events arriving together (many typists)
        share one send, TYPING_WINDOW after the last one that went out at once."""
        now = time.monotonic()
        wait = self._last_eager_flush + TYPING_WINDOW - now
        if wait <= 0:
            self._last_eager_flush = now
            self._spawn_flush()
        elif not self.closed:
            # Not behind a flush already due later (FLUSH_DELAY after a cascade's status): it is
            # brought forward to the end of the window, for everything pending.
            loop = asyncio.get_running_loop()
            if self._flush_handle is None or self._flush_handle.when() > loop.time() + wait:
                if self._flush_handle is not None:
                    self._flush_handle.cancel()
                self._last_eager_flush = now + wait
                self._flush_handle = loop.call_later(wait, self._spawn_flush)

    def _spawn_flush(self):
        self._spawn(self.flush())

    def _spawn(self, coroutine):
        if self.closed:
            coroutine.close()
            return
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def flush(self):
        """Publish pending events to the notebook's group, all of them in one send."""
        async with self.lock:
            if self._flush_handle is not None:
                self._flush_handle.cancel()
                self._flush_handle = None
            events, self._pending = self._pending, []
            if not events or self.closed:
                return
            await self._publish(None, events)

    async def send(self, channel, events):
        """`events` to one socket (`channel`) at once, outside the stream (no seq of their own)."""
        if not self.closed:
            await self._publish(channel, events)

    def reply(self, channel, event):
        """`event` to one socket, soon (from code that cannot await)."""
        if channel:
            self._spawn(self.send(channel, [event]))

    def close(self):
        """Publish nothing more: the flush timer and every task on its way are cancelled (what was
        pending is dropped; the caller flushes first what must go out)."""
        self.closed = True
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        for task in list(self._tasks):
            task.cancel()
        self._pending = []

    def state_messages(self, notebook, cells, request_id=None):
        """The notebook's state: one `notebook_state` (`notebook`: its fields but `cells`),
        followed, for a notebook too large for one frame, by `notebook_state_chunk`s with the
        rest of its `cells` (their messages, in order; docs/protocol.md).

        Each cell is encoded once, here: its text sizes the chunks (UTF-8 bytes) and is spliced
        into the messages' texts, which travel with them (`Encoded.text`), so the worker does
        not encode the cells again."""
        with gc_paused():
            return self._state_messages(notebook, cells, request_id)

    def _state_messages(self, notebook, cells, request_id):
        chunks, texts, size = [[]], [[]], 0
        for cell in cells:
            text = encode(cell)
            cell_size = len(text.encode("utf-8"))
            if chunks[-1] and size + cell_size > STATE_CHUNK_BYTES:
                chunks.append([])
                texts.append([])
                size = 0
            chunks[-1].append(cell)
            texts[-1].append(text)
            size += cell_size
        message = {"type": "notebook_state", "notebook": {**notebook, "cells": chunks[0]}, "seq": self.seq}
        if len(chunks) > 1:
            message["chunks"] = len(chunks)
        if request_id is not None:
            message["requestId"] = request_id
        rest = [
            {"type": "notebook_state_chunk", "stateSeq": self.seq, "chunk": index, "chunks": len(chunks), "cells": chunk}
            for index, chunk in enumerate(chunks[1:], start=1)
        ]
        return [spliced(m, "cells", t) for m, t in zip([message, *rest], texts)]
