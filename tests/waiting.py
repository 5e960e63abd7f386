"""The tests' one polling helper: wait for a condition with a deadline, never a bare sleep.

It waits for what no event announces (a row in the database, a line in a log, a port that
answers); what a socket announces is awaited on the socket itself (NotebookClient.wait_for).
"""
import asyncio
import inspect
import time

EVENT_TIMEOUT = 20  # seconds a test waits for anything the server should do


class eventually:
    """Poll `check()` every `interval` seconds until it returns something truthy, and return
    that; fail after `timeout` seconds, naming `what`.

    In async code `await eventually(check, ...)`, and `check` may be a coroutine function; in
    sync code (server start-up, Playwright's sync API) `eventually(check, ...).wait()`, which
    blocks."""

    def __init__(self, check, timeout=EVENT_TIMEOUT, what="condition", interval=0.02):
        self.check, self.timeout, self.what, self.interval = check, timeout, what, interval

    def _tries(self):
        """Yields before each try, and fails once a try comes after the deadline."""
        deadline = time.monotonic() + self.timeout
        while True:
            yield
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {self.timeout} s waiting for {self.what}")

    def __await__(self):
        return self._poll().__await__()

    async def _poll(self):
        for _ in self._tries():
            result = self.check()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return result
            await asyncio.sleep(self.interval)

    def wait(self):
        for _ in self._tries():
            result = self.check()
            if result:
                return result
            time.sleep(self.interval)
