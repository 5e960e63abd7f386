"""Completion and inspection asked from a page (`kernel.complete`, `kernel.inspect`,
docs/protocol.md): the cell looked up, the execution host asked (ExecutionHost.assist: from the
namespace if there is one, never starting the process), the answer sent to the sender alone.

It answers one socket; it must not change a cell, publish to the notebook's group, nor wait in
the session's queue (a completion never waits behind a running cell).
"""


class Assists:
    def __init__(self, *, model, events, execution):
        self.model = model
        self.events = events
        self.execution = execution

    async def answer(self, message, *, closed=False):
        """Answer `message` on its reply channel; `closed`: the session is closing, so no cell is
        known any more."""
        channel, request_id = message["replyChannel"], message.get("requestId")
        cell = None if self.model.gone or closed else self.model.cells.get(message.get("cellId"))
        if cell is None:
            await self.events.send(channel, [{"type": "error", "code": "unknown_cell", "message": "No such cell in this notebook.", "requestId": request_id}])
            return
        op = message["type"].removeprefix("kernel.")
        answer = await self.execution.assist(op, cell_type=cell.type, code=message["code"], cursor=message["cursor"])
        reply = {"type": "completions" if op == "complete" else "inspection", "requestId": request_id, "cellId": cell.id, **answer}
        await self.events.send(channel, [reply])
