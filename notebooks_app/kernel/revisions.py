"""Where one notebook's kernel session stands in the database's sequence of revisions.

Every committed change bumps the notebook's revision (operations.py) and the kernel message it
sends carries the revision it made.  A change is applied to memory only when it is the next
revision (`admit`); one the loaded state already reflects is skipped (its sender still hears of
it); one that skips a revision means a message was missed, so the session reloads.  A revision
the session's own write made (typing saved, packages built) is taken the same way (`advance`).
"""
import logging

logger = logging.getLogger(__name__)


class Revisions:
    def __init__(self, notebook_id, *, events, reload, emit_state):
        self.notebook_id = notebook_id
        self.current = -1  # the revision memory holds
        self.state_announced = False  # a state went to every client since the last load
        self._events = events
        self._reload = reload  # async (request_id=None): load again and send every client a state
        self._emit_state = emit_state  # (request_id): a state to every client

    def loaded(self, revision):
        self.current = revision
        self.state_announced = False

    async def admit(self, message):
        """True when `message` is the next revision and should be applied to memory."""
        revision = message.get("revision")
        if revision is None:
            return False
        if revision <= self.current:
            if not self.state_announced:
                # Loaded fresh (a restarted worker) with this change already in it: the
                # clients of the old session never saw it and have no gap to notice.
                self._emit_state(message.get("requestId"))
            elif message.get("requestId") is not None:
                # Already in a state every client got (a reload): its sender still hears of it.
                self._events.emit({"type": "applied", "requestId": message["requestId"]})
            return False
        if revision == self.current + 1:
            self.current = revision
            return True
        logger.info("notebook %s: revision %s after %s, reloading", self.notebook_id, revision, self.current)
        await self._reload(message.get("requestId"))
        return False

    def gate(self, apply):
        """A handler that applies a kernel message (`await apply(message)`) only when `admit`s it."""

        async def handler(message):
            if await self.admit(message):
                await apply(message)

        return handler

    async def advance(self, revision):
        """Take `revision`, which the session's own write made, when it is the next one (True);
        someone's edit committed in between means a reload instead (False)."""
        if revision == self.current + 1:
            self.current = revision
            return True
        await self._reload()
        return False
