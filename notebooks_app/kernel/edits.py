"""Committed structural edits applied to one notebook's memory (the kernel messages of
operations.py, docs/protocol.md): a cell created, moved, edited or deleted, a new database
connection, changed files, packages that built, and typing the persister saved (`typed`); each
is announced, statuses follow the graph, and what must rerun runs.

It applies an edit the session has checked is the next revision; it must not read the queue,
reload, or decide revisions (the session's: `advance` takes a revision this unit wrote, or
reloads), nor write cells' code (operations.py or the persister did).
"""
import base64
import dataclasses

from ..constants import STATUS_ERROR, STATUS_SUCCESS
from .cell_state import CellState
from .shared_text import code_key


class EditApplier:
    def __init__(self, notebook_id, *, store, model, texts, statuses, persister, events, execution, cascades, packages, advance, submit, revision):
        self.notebook_id = notebook_id
        # () -> the revision memory holds: a change's announcement carries it, so that a client
        # can tell an early announcement (docs/protocol.md) it has already seen in `seq` order.
        self.revision = revision
        self.packages = packages  # package_builds.PackageBuilds
        self.advance = advance  # async (revision) -> True when it was the next one (else reloaded)
        self.submit = submit  # (kernel message) -> queued in order, as if it came from the web side
        self.store = store
        self.model = model
        self.texts = texts
        self.statuses = statuses
        self.persister = persister
        self.events = events
        self.execution = execution
        self.cascades = cascades

    async def create_cell(self, message):
        if message.get("positions"):
            self.model.reposition(message["positions"])
        row = dict(message["cell"], position=message["position"])
        if message.get("ydoc"):
            # The shared text the web side made, stored and announced early with the row: this
            # very document, so that pages which started from the early announcement merge here.
            row["ydoc"], row["ydoc_key"] = base64.b64decode(message["ydoc"]), code_key(row["code"])
        cell = CellState.from_row(row)
        cell.saved = None  # the message's copy of the row, not the row: written once whatever it says
        self.model.insert(cell)
        self.persister.dirty.add(cell.id)
        created = {**cell.to_message(), **self.texts.fields(cell)}
        self.events.emit({"type": "cell_created", "cellId": cell.id, "cell": created, "index": self.model.index_of(cell.id), "revision": self.revision(), "requestId": message.get("requestId")})
        await self.refresh_blocked()
        if message.get("run"):  # a restored cell: it and what failed without it run again
            await self.events.flush()  # the answer to the request goes out now, not after the cascade starts
            await self.cascades.run_roots({cell.id})

    async def move_cell(self, message):
        positions = dict(message.get("positions") or {})
        positions[message["cellId"]] = message["position"]
        self.model.reposition(positions)
        if message["cellId"] in self.model.cells:
            self.events.emit({"type": "cell_moved", "cellId": message["cellId"], "index": self.model.index_of(message["cellId"]), "revision": self.revision(), "requestId": message.get("requestId")})
        self.statuses.refresh_blocked()  # blocked messages name cells by their place

    async def update_cell(self, message):
        cell = self.model.cells.get(message["cellId"])
        if cell is None:
            return
        self.texts.replace(cell, message["code"], by=message.get("by"))
        self.code_changed(cell, message["code"], message.get("resultVariable") or "", request_id=message.get("requestId"))
        await self.refresh_blocked()

    async def delete_cell(self, message):
        cell_id, model = message["cellId"], self.model
        if cell_id not in model.cells:
            return
        # Descendants are taken before the cell leaves the graph: they are what must rerun.
        descendants = model.graph.descendants(cell_id)
        blocked_before = set(model.graph.blocked())
        model.remove(cell_id)
        self.texts.discard(cell_id)
        self.persister.discard(cell_id)
        await self.execution.forget([cell_id])
        self.events.emit({"type": "cell_deleted", "cellId": cell_id, "revision": self.revision(), "requestId": message.get("requestId")})
        _, unblocked = self.statuses.refresh_blocked()
        freed = (blocked_before - set(model.graph.blocked())) & set(model.cells)
        roots = (set(descendants) | freed | model.unblocked) & set(model.cells)
        if roots:
            # cell_deleted answers a request: it goes out now, in a frame of its own, rather than
            # with the cascade's first events FLUSH_DELAY later (docs/performance.md, "Edits").
            await self.events.flush()
            await self.cascades.run_roots(roots)
        elif unblocked:
            await self.events.flush()

    async def db_connection(self, message):
        connection, display = await self.store.load_connection(self.notebook_id)
        # The rest of the notebook's settings (its packages, files, secrets) stay as they are.
        await self.execution.configure(dataclasses.replace(self.execution.config, db_connection=connection, db_display=display), reason="the notebook's settings changed")
        self.events.emit({"type": "db_connection_updated", "connected": bool(connection), "display": display, "requestId": message.get("requestId")})
        # Every SQL result (and what was computed from it) came from the old connection.
        self.statuses.mark_stale(self.model.sql_dependents())

    async def egress(self, message):
        """The owner changed the egress allowlist: the execution process restarts on it."""
        allowlist = tuple(message.get("allowlist") or ())
        await self.execution.configure(dataclasses.replace(self.execution.config, egress_allowlist=allowlist), reason="the notebook's egress allowlist changed")
        self.events.emit({"type": "egress_updated", "allowlist": list(allowlist), "requestId": message.get("requestId")})

    async def files(self, message):
        """The notebook's files changed (notebook_files.py): mirrored again for the sandbox, linked
        into a running process, and the cells that read a changed one run again."""
        loaded = await self.store.load_files(self.notebook_id)
        self.execution.config = dataclasses.replace(self.execution.config, files_dir=loaded["files_dir"])
        await self.execution.files_changed()
        changed = list(message.get("changed") or [])
        self.model.files = loaded["files"]
        self.events.emit({"type": "files_updated", "files": loaded["files"], "changed": changed, "requestId": message.get("requestId")})
        readers = self.model.readers_of(changed, before=message.get("savedAt"))
        if readers:
            await self.events.flush()
            await self.cascades.run_roots(readers)

    async def file_saved_by_cell(self, path, data):
        """A running cell's files.save: stored at once (a revision of its own), applied in order
        once the cascade is done (`files` above: everyone hears, readers rerun)."""
        saved = await self.store.save_file(self.notebook_id, path, data)
        if "error" in saved:
            return saved
        # Mirrored now, so the cells after this one in the cascade read it (the child links it);
        # only runs that ended before it read the old version and rerun.
        await self.store.load_files(self.notebook_id)
        self.submit({"type": "kernel.files", "notebook": self.notebook_id, "revision": saved["revision"], "changed": [saved["path"]], "savedAt": self.model.tick()})
        return {"path": saved["path"], "version": saved["version"]}

    async def packages_built(self, requirements, lock, message):
        """Packages that built (package_builds.py): saved (a revision, a history event), the
        execution process restarted on them, and the cells that had run run again (stale until
        they do)."""
        ran = {cell_id for cell_id, cell in self.model.cells.items() if cell.status in (STATUS_SUCCESS, STATUS_ERROR)}
        revision = await self.store.save_requirements(self.notebook_id, requirements, lock, message.get("byId"))
        if revision is None:
            return
        if await self.advance(revision):  # else someone's edit came in between: the reload has them too
            config = dataclasses.replace(self.execution.config, requirements=tuple(requirements), lock=lock)
            await self.execution.configure(config, reason="the notebook's packages changed")
        self.packages.finished(message, requirements, self.execution.config)
        await self.events.flush()
        ran &= set(self.model.cells)
        if ran:
            await self.cascades.run_roots(ran, by=message.get("by"))

    async def secrets(self, message):
        """The notebook's secrets changed (operations.set_secret / delete_secret): everyone hears
        their names, then the execution process restarts with the new environment (its results
        turn stale, as after a crash: `kernel_restarted` with the reason)."""
        secrets, listing = await self.store.load_secrets(self.notebook_id)
        self.events.emit({"type": "secrets_updated", "secrets": listing, "requestId": message.get("requestId")})
        config = dataclasses.replace(self.execution.config, secrets=secrets, secret_list=tuple(listing))
        await self.execution.configure(config, reason="the notebook's secrets changed")

    async def typed(self, rows):
        """Typing saved as new code (`rows`: persister.save_typing): each cell takes the path of
        an edit; texts whose history outgrew them are compacted once the typing stops."""
        codes = {cell_id: row[0] for cell_id, row in rows.items()}
        for cell_id, code in codes.items():
            cell = self.model.cells[cell_id]
            self.code_changed(cell, code, cell.result_variable)
        await self.refresh_blocked()
        self.texts.compact_when_idle(codes)

    # --- shared steps -----------------------------------------------------------------------------
    def code_changed(self, cell, code, result_variable, request_id=None):
        """New code (saved already): analysis, edges, `cell_updated`, and stale results."""
        self.model.change_code(cell, code, result_variable)
        self.persister.dirty.add(cell.id)
        cell.saved = None  # the edit's transaction wrote the row's status (stale): written again
        self.events.emit({"type": "cell_updated", "cellId": cell.id, **cell.code_fields(), "revision": self.revision(), "requestId": request_id})
        self.statuses.mark_stale([cell.id, *self.model.graph.descendants(cell.id)])

    async def refresh_blocked(self):
        """Statuses in line with the graph's blocked set; newly blocked cells' names leave the
        execution process."""
        newly_blocked, _ = self.statuses.refresh_blocked()
        await self.execution.forget(newly_blocked)
