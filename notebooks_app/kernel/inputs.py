"""Widget values set from pages (kernel/ui.py, docs/protocol.md#inputs): the latest value of each
widget not applied yet (a dragged slider's values coalesce), and applying them: the cell's
persisted values and shown outputs, `input_changed`, the value in the execution process.

It says which cells read the widgets; it must not run them (the session runs the cascade) nor
touch the store (the values are persisted by operations.set_input; the outputs by the persister).
"""
from .runner import RunnerDied
from .ui import UI_MIME


class PendingInputs:
    def __init__(self, *, model, events, persister, execution):
        self.model = model
        self.events = events
        self.persister = persister
        self.execution = execution
        self._pending = {}  # widget id -> the latest set_input not applied yet
        self._queued = False

    def add(self, message):
        """A widget moved (the value is checked and persisted already); True when a job to apply
        the pending values must be queued (none is queued yet)."""
        self._pending[message["widgetId"]] = message
        if self._queued:
            return False
        self._queued = True
        return True

    async def apply(self):
        """Apply every pending value; (the cells that read them, who moved the last of them)."""
        self._queued = False
        pending, self._pending = self._pending, {}
        readers, by = set(), None
        model = self.model
        for widget_id, change in pending.items():
            cell = model.cells.get(change["cellId"])
            if cell is None:
                continue
            cell.inputs[widget_id] = change["value"]
            cell.saved = None  # its outputs change in place: written again whatever they were
            for output in cell.outputs:
                data = output.get("data")
                if output.get("mimeType") == UI_MIME and isinstance(data, dict) and data.get("id") == widget_id:
                    data["value"] = change["value"]
            self.persister.dirty.add(cell.id)
            event = {"type": "input_changed", "cellId": cell.id, "widgetId": widget_id, "value": change["value"], "requestId": change.get("requestId")}
            if change.get("by"):
                event["by"] = by = change["by"]
            self.events.emit(event)
            if self.execution.alive:
                try:
                    await self.execution.runner.set_input(widget_id, change["value"])
                except (RunnerDied, RuntimeError):
                    model.ran_ok.discard(cell.id)  # not in this process: the cascade reruns the cell
            else:
                model.ran_ok.discard(cell.id)
            readers |= model.graph.descendants(cell.id)
        return readers, by
