"""The runs a notebook's kernel session received and has not finished, kept in the database
(Notebook.run_journal) so that a worker taking the notebook over (kernel/fleet.py: the last one
was killed, paused or handed it over) runs each of them once: nothing queued is lost, and nothing
runs twice when a message comes again (the channel layer may deliver a message its dead receiver
had taken), since a request id already pending or done is skipped.

Pure: the session saves `state()` through its store and reads it back with the snapshot.
"""
import asyncio
from collections import deque

RUN_TYPES = frozenset({"kernel.run_cell", "kernel.run_all"})
DONE_KEPT = 200  # request ids remembered after their run finished
ANONYMOUS = "anonymous-"  # the id of a run sent without a requestId (an int one is fine too)
MAX_ATTEMPTS = 2  # a run taken over this many times without finishing is dropped (logged)


class RunJournal:
    def __init__(self):
        # Held by whoever writes the journal, from taking its state to the write's commit (the
        # session's quick save and the persister's write with results): two writes in flight
        # could otherwise commit an older state over a newer one.
        self.lock = asyncio.Lock()
        self.pending = []  # [{"id", "message", "attempts"}], in arrival order
        self.done = deque(maxlen=DONE_KEPT)
        self._ids = set()
        self.changed = False  # differs from what the store holds

    def load(self, state):
        """The stored journal (a takeover), merged with what this session received before it
        loaded: the stored runs it has not received itself, each with one more attempt, go first
        and are returned (to run); the ones it received are its own, run once from its queue."""
        state = state or {}
        done = [request for request in state.get("done") or [] if request not in self._ids]
        recovered = [
            dict(entry, attempts=entry.get("attempts", 0) + 1)
            for entry in state.get("pending") or []
            if isinstance(entry, dict) and entry.get("message") and entry.get("id") not in self._ids and entry.get("id") not in done
        ]
        self.pending = recovered + self.pending
        self.done = deque([*done, *self.done], maxlen=DONE_KEPT)
        self._ids = {entry["id"] for entry in self.pending} | set(self.done)
        self.changed = self.changed or bool(recovered) or len(self.pending) != len(state.get("pending") or [])
        return recovered

    def add(self, message):
        """Record a run message; False if its request was seen already (pending or done)."""
        request = message.get("requestId")
        if request is not None and request in self._ids:
            return False
        entry_id = request if request is not None else f"{ANONYMOUS}{id(message):x}-{len(self.pending)}"
        self._ids.add(entry_id)
        message["journalId"] = entry_id
        self.pending.append({"id": entry_id, "message": dict(message), "attempts": 0})
        self.changed = True
        return True

    def finish(self, message):
        entry_id = message.get("journalId")
        if entry_id is None:
            return
        before = len(self.pending)
        self.pending = [entry for entry in self.pending if entry["id"] != entry_id]
        if len(self.pending) != before:
            if not (isinstance(entry_id, str) and entry_id.startswith(ANONYMOUS)):
                if len(self.done) == self.done.maxlen:
                    self._ids.discard(self.done[0])
                self.done.append(entry_id)
            else:
                self._ids.discard(entry_id)
            self.changed = True

    def state(self):
        return {"pending": [dict(entry) for entry in self.pending], "done": list(self.done)}
