// The live notebook: keeps the cells in the order and state the server's events describe, and turns
// what the user does into protocol messages (docs/protocol.md). The server's order is the truth;
// the local state that outlives a message is each cell's shared text (typing not yet sent, merged
// after a reconnect: shared_text.js) and cells announced early, shown before they are in `seq` order.
// Other modules read the cells through its methods (cellIds, cellElement, editCell) and act through
// the same methods the buttons use.
import { Connection, newRequestId } from "./connection.js";
import { Sequencer } from "./sequencer.js";
import { CellView, buildWhenIdle } from "./cell_view.js";
import { DbPanel } from "./db_panel.js";
import { FilesPanel } from "./files_panel.js";
import { PackagesPanel } from "./packages_panel.js";
import { SecretsPanel } from "./secrets_panel.js";
import { toast } from "./toast.js";
import { el } from "./dom.js";
import { HistoryPanel, bindUndoKeys, deletedToast } from "./history_panel.js";
import { configureWidgets, widgetById } from "./widgets.js";
import { SharedText, toBase64 } from "./shared_text.js";
import { Presence } from "./presence.js";
import { Assistant } from "./completion.js";
import { bindKeyboard } from "./keyboard.js";
import { KernelState } from "./kernel_state.js";

const MAX_REMEMBERED = 500;
// A state's first cells are built as it is applied; the others when they come near the viewport,
// are needed, or the page is idle (cell_view.js, buildWhenIdle): 10,000 cells at once held a big
// notebook's page for seconds (docs/frontend.md, "Big notebooks").
const BUILT_AT_ONCE = 100;

export class NotebookApp {
  constructor(root) {
    this.root = root;
    this.notebookId = root.dataset.notebookId;
    this.canEdit = root.dataset.canEdit === "true";
    this.appMode = root.dataset.mode === "app"; // /notebooks/<id>/app/: outputs, prose and inputs only
    this.cellsEl = root.querySelector("#cells");
    this.records = new Map(); // cell id -> {cell, view, text (its SharedText; none in the app view)}
    this.provisional = new Set(); // cells announced early, not yet in `seq` order (applyEarly)
    this.revision = -1; // the newest revision seen in `seq` order (a state's, a change's): an early announcement at or below it is late
    this.order = [];
    this.requests = new Map(); // requestId -> what it was for, to place replies and errors
    this.highlighted = null;
    this.running = new Map(); // cell id -> when this page saw it start
    this.busy = new Set(); // cells queued or running: Stop has something to stop
    this.ticker = null;
    this.synced = false;
    this.stateSeen = false; // the first state focuses a new notebook's empty cell
    // Completion and inspection (completion.js): asked and answered on this socket only.
    this.assistant = new Assistant((message) => this.synced && this.send(message));
    const dbSection = document.getElementById("db-settings");
    this.dbPanel = dbSection ? new DbPanel(dbSection, { canEdit: this.canEdit, onSave: (value) => this.saveDbConnection(value) }) : null;
    const packagesSection = document.getElementById("packages");
    this.packagesPanel = packagesSection ? new PackagesPanel(packagesSection, { canEdit: this.canEdit, onChange: (requirements) => this.request({ type: "set_packages", requirements }, { kind: "packages" }) }) : null;
    const secretsSection = document.getElementById("secrets");
    this.secretsPanel = secretsSection ? new SecretsPanel(secretsSection, {
      canEdit: this.canEdit,
      onSet: (name, value) => this.request({ type: "set_secret", name, value }, { kind: "secret" }),
      onDelete: (name) => this.request({ type: "delete_secret", name }, { kind: "secret" }),
    }) : null;
    const filesSection = document.getElementById("files");
    this.filesPanel = filesSection ? new FilesPanel(filesSection, { canEdit: this.canEdit, request: (message, about) => this.request(message, { kind: "files", ...about }) }) : null;
    const historySection = document.getElementById("history");
    this.historyPanel = historySection ? new HistoryPanel(historySection, { canEdit: this.canEdit, request: (message, about) => this.request(message, about) }) : null;
    if (this.historyPanel) root.addEventListener("notebook:event", ({ detail }) => this.historyPanel.noticed(detail));
    configureWidgets({ canEdit: this.canEdit, onSet: ({ widgetId, ...input }) => this.request({ type: "set_input", ...input }, { kind: "set_input", widgetId }) });
    if (this.canEdit && !this.appMode) bindUndoKeys((type) => this.request({ type }, { kind: type }));
    this.sequencer = new Sequencer({
      onState: (state) => this.applyState(state),
      onEvent: (event) => this.applyEvent(event),
      onReply: (reply) => this.applyReply(reply),
      requestSync: () => this.send({ type: "sync" }),
    });
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    this.connection = new Connection(`${scheme}://${location.host}/ws/notebooks/${this.notebookId}/?batch=1`, {
      indicator: document.getElementById("connection-indicator"),
      onOpen: () => this.sequencer.reset(),
      onFrame: (frame) => this.sequencer.receive(frame),
      onClose: () => this.connectionLost(),
    });
    this.kernelState = new KernelState({ badge: document.getElementById("kernel-state"), notice: document.getElementById("kernel-notice") });
    this.presence = new Presence({
      send: (message) => this.synced && this.send(message),
      cellElement: (cellId) => this.cellElement(cellId),
    });
    this.cellsEl.addEventListener("focusin", (event) => {
      const cellId = event.target.closest?.(".cell.live")?.dataset.cellId;
      if (cellId) this.presence.focusCell(cellId);
    });
    this.bindToolbar();
    if (!this.appMode) bindKeyboard(this); // command mode and the shortcuts overlay (keyboard.js)
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && this.highlighted) this.highlight(this.highlighted);
    });
  }

  start() {
    document.body.classList.add("js");
    this.connection.start();
  }

  bindToolbar() {
    const on = (id, handler) => document.getElementById(id)?.addEventListener("click", handler);
    if (!this.canEdit) return;
    for (const toolbar of document.querySelectorAll(".notebook-toolbar")) toolbar.hidden = false;
    on("run-all", () => this.request({ type: "run_all" }, { kind: "run_all" }));
    on("interrupt", () => this.request({ type: "interrupt" }, { kind: "interrupt" }));
    on("restart-kernel", () => {
      if (confirm("Restart the kernel? Every result turns stale until its cell runs again (everyone on this notebook is told).")) {
        this.request({ type: "restart_kernel" }, { kind: "restart_kernel" });
      }
    });
    on("add-python-cell", () => this.createCell("python", this.order.at(-1) ?? null, { focus: true }));
    on("add-sql-cell", () => this.createCell("sql", this.order.at(-1) ?? null, { focus: true }));
    on("add-markdown-cell", () => this.createCell("markdown", this.order.at(-1) ?? null, { focus: true }));
    this.setStopEnabled();
  }

  // --- sending -------------------------------------------------------------------------
  send(message) {
    return this.connection.send(message);
  }

  /** Send with a fresh requestId remembered as `about`; the id, or null when not connected. */
  request(message, about) {
    const requestId = newRequestId();
    if (!this.synced || !this.send({ ...message, requestId })) {
      toast("Not connected to the server: the change was not sent. It will be possible again once the page is live.");
      return null;
    }
    this.remember(requestId, about);
    return requestId;
  }

  /** Runs and interrupts get no reply unless they fail, so the oldest entries are let go. */
  remember(requestId, about) {
    this.requests.set(requestId, about);
    if (this.requests.size > MAX_REMEMBERED) this.requests.delete(this.requests.keys().next().value);
  }

  createCell(cellType, afterCellId, { focus = false, beforeCellId = null } = {}) {
    const message = beforeCellId ? { type: "create_cell", cellType, beforeCellId } : { type: "create_cell", cellType, afterCellId };
    return this.request(message, { kind: "create_cell", cellId: afterCellId, focus });
  }

  /** A copy of the cell with `cellType` and the same text, just above it: the protocol has no
   * change of a cell's type (keyboard.js deletes the old cell once the copy exists). */
  retypeCell(cellId, cellType) {
    const code = this.records.get(cellId)?.view.code ?? "";
    return this.request({ type: "create_cell", cellType, beforeCellId: cellId, code }, { kind: "create_cell", focus: false });
  }

  /** Move a cell one place up (-1) or down (+1): move_cell puts it after another cell, or first. */
  moveCell(cellId, direction) {
    const index = this.order.indexOf(cellId);
    const target = index + direction;
    if (index < 0 || target < 0 || target >= this.order.length) return;
    const afterCellId = direction > 0 ? this.order[target] : (this.order[target - 1] ?? null);
    this.request({ type: "move_cell", cellId, afterCellId }, { kind: "move_cell", cellId });
  }

  saveDbConnection(connectionString) {
    return this.request({ type: "update_db_connection", connectionString }, { kind: "db" }) !== null;
  }

  run(cellId, advance) {
    if (!this.records.has(cellId) || !this.canEdit) return;
    // The server has what is on screen: the shared text sends each change as it is typed, and
    // the server saves it before the run.
    this.request({ type: "run_cell", cellId }, { kind: "run_cell", cellId });
    if (!advance) return;
    const next = this.order[this.order.indexOf(cellId) + 1];
    if (next) this.records.get(next).view.focus("start");
    else this.createCell("python", cellId, { focus: true });
  }

  deleteCell(cellId) {
    const record = this.records.get(cellId);
    if (!record) return;
    // The last cell stays, so the notebook always has somewhere to type: clear it instead.
    if (this.order.length === 1) return record.text.replace("");
    this.request({ type: "delete_cell", cellId }, { kind: "delete_cell", cellId });
  }

  addCell(cellId, where, cellType, { focus = true } = {}) {
    const index = this.order.indexOf(cellId);
    // create_cell inserts after a cell: "above" is after the previous one, or before the first.
    const after = where === "below" ? cellId : this.order[index - 1];
    if (after === undefined) return this.createCell(cellType, null, { focus, beforeCellId: cellId });
    return this.createCell(cellType, after, { focus });
  }

  navigate(cellId, direction) {
    const target = this.order[this.order.indexOf(cellId) + direction];
    if (!target) return false;
    this.records.get(target).view.focus(direction > 0 ? "start" : "end");
    return true;
  }

  // --- the cells as other modules see them (keyboard.js, presence.js) -------------------------
  /** The cells' ids in the page's order (a copy). */
  cellIds() {
    return [...this.order];
  }

  /** The cell's element on the page (built, if it was deferred), or null when it is not (or no
   * longer) there. */
  cellElement(cellId) {
    const view = this.records.get(cellId)?.view;
    view?.build();
    return view?.element ?? null;
  }

  /** Put the user in the cell's editor (a markdown cell shows its source for that). */
  editCell(cellId) {
    this.records.get(cellId)?.view.edit();
  }

  connectionLost() {
    this.synced = false;
    this.root.dataset.synced = "false";
    this.stopTicker();
    this.presence.disconnected();
  }

  // --- state and events ----------------------------------------------------------------
  /** What every cell view calls back (one object for all: a big notebook has thousands). */
  hooks() {
    return this.cellHooks ??= {
      canEdit: this.canEdit,
      appMode: this.appMode,
      onRun: (view, advance) => this.run(view.id, advance),
      onNavigate: (view, direction) => this.navigate(view.id, direction),
      onDelete: (view) => this.deleteCell(view.id),
      onAdd: (view, where, cellType) => this.addCell(view.id, where, cellType),
      onMove: (view, direction) => this.moveCell(view.id, direction),
      onName: (name) => this.highlight(name),
      onOutputsLoaded: (view, outputs) => {
        const record = this.records.get(view.id);
        if (record) record.cell.outputs = outputs; // fetched as the cell came near (outputsRef)
      },
      onResultVariable: (view, name) => this.request({ type: "cell_update", cellId: view.id, resultVariable: name }, { kind: "result_variable", cellId: view.id }),
      ask: this.canEdit && !this.appMode ? (type, cellId, code, cursor) => this.assistant.ask(type, cellId, code, cursor) : null,
      // The offer to add the package a cell failed to import (packages_panel.js); editors only.
      packagePrompt: this.canEdit && !this.appMode && this.packagesPanel ? (error) => this.packagesPanel.prompt(error) : null,
    };
  }

  addRecord(cell, index, { deferred = false } = {}) {
    // Every cell's code is a shared text: every cell the server sends (in notebook_state and
    // cell_created, early or not) carries its `ydoc` (docs/protocol.md, "Server → client").
    // The app view shows no code: its cells hold none and have no shared text.
    const text = this.appMode ? null : new SharedText(cell, (changed, update) => this.sendText(changed, update));
    const shared = text && { text, awareness: this.presence.awareness(text) };
    const view = new CellView(this.appMode ? { ...cell, code: "" } : cell, shared ? { ...this.hooks(), shared } : this.hooks(), { deferred });
    view.element.classList.add("live"); // server-rendered cells lack it and are replaced
    const record = { cell, view, text };
    this.records.set(cell.id, record);
    const before = this.order[index] ? this.records.get(this.order[index]).view.element : null;
    this.cellsEl.insertBefore(view.element, before);
    this.order.splice(index, 0, cell.id);
    return record;
  }

  removeRecord(cellId) {
    const record = this.records.get(cellId);
    if (!record) return;
    record.view.destroy();
    record.text?.destroy();
    this.presence.forgetCell(cellId);
    this.records.delete(cellId);
    this.provisional.delete(cellId);
    this.order.splice(this.order.indexOf(cellId), 1);
    this.running.delete(cellId);
    this.busy.delete(cellId);
    this.setStopEnabled();
  }

  applyState(state) {
    const { notebook } = state;
    const incoming = new Set(notebook.cells.map((cell) => cell.id));
    for (const cellId of [...this.records.keys()]) if (!incoming.has(cellId)) this.removeRecord(cellId);
    this.provisional.clear(); // what the state holds is in order now; the rest was removed above
    this.revision = typeof notebook.revision === "number" ? notebook.revision : -1;
    // Server-rendered cells (the no-JavaScript view) give way to live ones.
    for (const stale of this.cellsEl.querySelectorAll(".cell:not(.live)")) stale.remove();
    document.getElementById("more-cells")?.remove();
    const deferred = [];
    notebook.cells.forEach((cell, index) => {
      let record = this.records.get(cell.id);
      if (!record) {
        record = this.addRecord(cell, index, { deferred: index >= BUILT_AT_ONCE });
        if (!record.view.built) deferred.push(record.view);
      } else {
        record.cell = cell;
        if (this.order[index] !== cell.id) this.moveRecord(cell.id, index);
        record.view.render(cell);
        if (record.text) this.mergeText(record.text, cell); // the app view's cells hold no code
      }
      this.trackRunning(cell.id, cell.status);
    });
    this.dbPanel?.render(notebook.dbConnection || { connected: false, display: "" });
    if (notebook.packages) this.packagesPanel?.render(notebook.packages);
    this.secretsPanel?.render(notebook.secrets || []);
    if (notebook.files) this.filesPanel?.render(notebook.files);
    this.kernelState.render(notebook.kernel);
    this.historyPanel?.changed(); // a restored version, a reload: the timeline moved on
    this.afterChange();
    if (!this.stateSeen) this.focusLoneEmptyCell();
    this.stateSeen = true;
    this.synced = true;
    this.root.dataset.synced = "true"; // a hook for tests: the page shows the server's state
    this.connection.healthy();
    this.presence.connected();
    buildWhenIdle(deferred);
  }

  /** A new notebook (one empty cell) opens with the cursor in it: one starts typing. Only on the
   * page's first state, and only for editors (a reconnect never moves the focus). */
  focusLoneEmptyCell() {
    if (!this.canEdit || this.appMode || this.order.length !== 1) return;
    const record = this.records.get(this.order[0]);
    if (record.cell.code === "" && record.cell.type !== "markdown" && !this.cellsEl.contains(document.activeElement)) record.view.edit();
  }

  /** A local change of a cell's shared text, sent at once (merged and relayed by the server). */
  sendText(text, update) {
    if (!this.synced) return; // kept in the document: merge() sends it after the next state
    // Typed into a cell the kernel may not hold yet (announced early): kept until it is
    // confirmed in seq order, then sent as one update (onCellCreated).
    if (this.provisional.has(text.cellId)) return;
    this.send({ type: "text_update", cellId: text.cellId, update: toBase64(update), generation: text.generation });
  }

  /** A fresh state's copy of a shared text: merged into ours, and what the server lacks (typed
   * while away, or sent on a socket that closed) goes back as one update. */
  mergeText(text, cell) {
    const missing = text.merge(cell);
    if (!missing) return;
    if (!this.send({ type: "text_update", cellId: text.cellId, update: toBase64(missing), generation: text.generation })) text.notSent();
  }

  moveRecord(cellId, index) {
    this.order.splice(this.order.indexOf(cellId), 1);
    this.order.splice(index, 0, cellId);
    const next = this.order[index + 1];
    this.cellsEl.insertBefore(this.records.get(cellId).view.element, next ? this.records.get(next).view.element : null);
  }

  applyEvent(event) {
    this.handleEvent(event);
    // Every applied event, for extensions and tests: the DOM only shows a batch's last state.
    this.root.dispatchEvent(new CustomEvent("notebook:event", { detail: event }));
  }

  handleEvent(event) {
    const handler = EVENT_HANDLERS[event.type];
    if (!event.early && event.revision > this.revision) this.revision = event.revision;
    // An event a newer server sends and this page does not know is harmless to skip.
    if (handler) handler.call(this, event, event.cellId ? this.records.get(event.cellId) : null);
  }

  onCellDeleted(event) {
    if (this.requests.get(event.requestId)?.kind === "delete_cell") {
      // Undo in this toast restores this very cell, not whatever this user did last.
      deletedToast(() => this.request({ type: "restore_cell", cellId: event.cellId }, { kind: "restore_cell" }));
    }
    this.requests.delete(event.requestId);
    this.removeRecord(event.cellId);
    this.afterChange();
  }

  onCellMoved(event, record) {
    this.requests.delete(event.requestId);
    if (!record) return;
    this.moveRecord(event.cellId, Math.max(0, Math.min(this.orderIndex(event.index, event.cellId), this.order.length - 1)));
    this.afterChange();
  }

  onCellStdout(event, record) {
    if (!record) return;
    record.cell.stdout = (record.cell.stdout || "") + event.text;
    record.view.appendStdout(event.text);
  }

  onCellOutput(event, record) {
    if (!record) return;
    record.cell.outputs = event.outputs;
    record.view.setOutputs(event.outputs);
  }

  onCellError(event, record) {
    if (!record) return;
    record.cell.error = event.error;
    record.view.setError(event.error, record.cell.status);
  }

  onDbConnectionUpdated(event) {
    this.dbPanel?.render(event);
    if (this.requests.get(event.requestId)?.kind === "db") this.dbPanel?.saved();
    this.requests.delete(event.requestId);
  }

  /** A secret was set or deleted (names only); the kernel_restarted that follows says the rest. */
  onSecretsUpdated(event) {
    this.secretsPanel?.render(event.secrets || []);
    if (this.forget(event.requestId)?.kind === "secret") this.secretsPanel?.saved();
  }

  /** A change of the notebook's packages under way, refused or failed (packages_panel.js). */
  onPackagesProgress(event) {
    const ours = this.requests.get(event.requestId)?.kind === "packages";
    // Its packages_updated carries the same requestId: forgotten only when a refusal ends it.
    if (ours && event.state === "error") this.requests.delete(event.requestId);
    this.packagesPanel?.progressed(event, ours);
  }

  /** The notebook's packages changed and its kernel restarted on them; the cells that had run
   * run again (their events follow). */
  onPackagesUpdated(event) {
    this.packagesPanel?.updated(event, this.forget(event.requestId)?.kind === "packages");
  }

  /** The notebook's files changed (anyone's upload, delete, restore or rename); the cells that
   * read a changed one run again (their events follow). */
  onFilesUpdated(event) {
    const about = this.forget(event.requestId);
    this.filesPanel?.updated(event, about?.kind === "files" ? about : null);
  }

  /** Someone moved an input: the widget follows (unless its user here is moving it), and the
   * cell's outputs remember the value for when they are drawn again. */
  onInputChanged(event, record) {
    this.requests.delete(event.requestId);
    const output = record?.cell.outputs?.find((item) => item.data?.id === event.widgetId);
    if (output) output.data.value = event.value;
    widgetById(event.widgetId)?.remote(event.value, event.requestId);
  }

  onNotebookRenamed(event) {
    document.title = document.title.replace(/^.*?( · [^·]*)$/, `${event.name}$1`);
    for (const heading of document.querySelectorAll(".notebook-name")) heading.textContent = event.name;
  }

  onKernelRestarted(event) {
    // A stop of the server's (idle, a cap, memory: `cause`) says it all in its reason.
    toast(event.cause ? `${event.reason}. Results that lived in it are stale.` : `The kernel restarted (${event.reason}); results that lived in it are stale.`, { kind: "info" });
    this.historyPanel?.changed(); // "restarted the kernel", "the kernel stopped"
  }

  onKernelStatus(event) {
    this.kernelState.render(event);
    // A stop's history line is written just after it is announced: look again a moment later.
    if (event.state === "stopped") setTimeout(() => this.historyPanel?.changed(), 1500);
  }

  onKernelError(event) {
    toast(`The kernel hit a problem: ${event.message}. Reloading the notebook.`);
    this.sequencer.resync();
  }

  /**
   * Where the server's `index` falls in this page's order, which may also hold cells announced
   * early and not yet in `seq` order: those do not count (`except`: the cell being placed).
   */
  orderIndex(index, except = null) {
    if (!this.provisional.size) return index;
    const order = this.order.filter((id) => id !== except);
    let seen = 0;
    for (let i = 0; i < order.length; i++) {
      if (seen === index) return i;
      if (!this.provisional.has(order[i])) seen += 1;
    }
    return order.length;
  }

  /**
   * An early announcement (docs/protocol.md): a cell created, deleted, moved or edited, sent by
   * the server that committed it before the kernel orders it. Shown at once; the same change
   * follows in `seq` order, which confirms it (onCellCreated, onCellUpdated's analysis) or finds
   * it done (onCellDeleted, onCellMoved). One that comes after its change in `seq` order (its
   * revision seen) is dropped.
   */
  applyEarly(event) {
    if (!this.synced) return; // the coming state, or the event in seq order, will bring it
    if (event.revision <= this.revision) return;
    if (event.type === "cell_deleted") return this.onCellDeleted(event);
    if (event.type === "cell_moved") return this.movedEarly(event);
    if (event.type === "cell_updated") return this.updatedEarly(event);
    if (event.type !== "cell_created" || this.records.has(event.cellId)) return; // a restore of a cell this page saw deleted shows too
    this.provisional.add(event.cellId);
    this.placeCreated(event, Math.max(0, Math.min(event.index, this.order.length)));
  }

  /** An early `cell_moved`: just after the cell it now follows (`after`; null: the top). */
  movedEarly(event) {
    if (!this.records.has(event.cellId)) return;
    let index = 0;
    if (event.after) {
      index = this.order.filter((id) => id !== event.cellId).indexOf(event.after) + 1;
      if (index === 0) return; // a cell this page does not hold yet: the move in seq order places it
    }
    if (this.order[index] !== event.cellId) this.moveRecord(event.cellId, index);
    this.afterChange();
  }

  /**
   * An early `cell_updated`: the cell's results are stale now, as the kernel will say
   * (statuses.mark_stale). Its text comes with the kernel's `text_update` (only the kernel edits
   * the shared text, which may hold typing the database lacks), its analysis with the
   * `cell_updated` in seq order.
   */
  updatedEarly(event) {
    const record = this.records.get(event.cellId);
    if (!record || (record.text ? record.text.text : record.cell.code) === event.code) return;
    const { status, error } = record.cell;
    if (["blocked", "stale", "idle"].includes(status) || (status === "error" && error?.ename === "KernelDied")) return;
    this.onCellStatus({ type: "cell_status", cellId: event.cellId, status: "stale" }, record);
  }

  onCellCreated(event, record) {
    if (record && this.provisional.delete(event.cellId)) {
      // Announced early: now in seq order, at its place among the cells in order, with the
      // kernel's analysis (the names it reads and writes).
      Object.assign(record.cell, { reads: event.cell.reads, writes: event.cell.writes, tables: event.cell.tables || [] });
      record.view.setNames(event.cell.reads, event.cell.writes, event.cell.tables || []);
      const index = Math.max(0, Math.min(this.orderIndex(event.index, event.cellId), this.order.length - 1));
      if (this.order[index] !== event.cellId) this.moveRecord(event.cellId, index);
      if (record.text) this.mergeText(record.text, event.cell); // what was typed meanwhile
      this.afterChange();
      return;
    }
    if (record) return;
    this.placeCreated(event, Math.max(0, Math.min(this.orderIndex(event.index), this.order.length)));
  }

  placeCreated(event, index) {
    const record = this.addRecord(event.cell, index);
    this.trackRunning(event.cellId, event.cell.status);
    const about = this.requests.get(event.requestId);
    if (about?.kind === "create_cell") {
      this.requests.delete(event.requestId);
      if (about.focus) record.view.focus("start"); // only in the tab that asked for it
    }
    this.afterChange();
  }

  /**
   * The cell's names and analysis (and a SQL cell's result variable). Its text is not touched:
   * the shared text has it already (text_update), and setting it here would undo newer typing.
   */
  onCellUpdated(event, record) {
    if (!record) return;
    Object.assign(record.cell, { code: event.code, resultVariable: event.resultVariable, reads: event.reads, writes: event.writes, tables: event.tables || [] });
    record.view.setNames(event.reads, event.writes, event.tables || []);
    record.view.setResultVariable(event.resultVariable || "");
    if (this.requests.get(event.requestId)?.kind === "result_variable") this.requests.delete(event.requestId);
    if (this.highlighted) record.view.setHighlight(this.highlighted);
  }

  onTextUpdate(event, record) {
    record?.text?.applyRemote(event.update, event.generation);
  }

  onTextReset(event, record) {
    record?.text?.reset(event.ydoc, event.ygen);
  }

  onPresence(event) {
    this.presence.receive(event);
  }

  onCellStatus(event, record) {
    if (!record) return;
    record.cell.status = event.status;
    if (event.by) {
      record.cell.runBy = event.by; // queued and running say who started the run
      record.view.setRunBy(event.by);
    }
    if (event.status === "running" || event.status === "blocked") {
      // A run starts afresh; a blocked cell shows no results of older code.
      record.cell.stdout = "";
      record.cell.outputs = [];
      record.cell.error = null;
      record.view.clearRun();
    }
    if ("error" in event) record.cell.error = event.error;
    record.view.setStatus(event.status);
    if ("error" in event || event.status === "success") record.view.setError(record.cell.error, event.status);
    this.trackRunning(record.cell.id, event.status);
  }

  applyReply(reply) {
    if (reply.early) return this.applyEarly(reply);
    if (reply.type === "access_changed") return this.roleChanged(reply.role);
    // Presence is never in `seq` order; a text_reset answering this page's update is not either.
    if (reply.type === "presence" || reply.type === "text_reset") return this.applyEvent(reply);
    if (this.assistant.answer(reply)) return; // completions, inspection, or a refusal of one: no toast
    const about = this.requests.get(reply.requestId);
    if (reply.type === "history") return this.historyPanel?.show(reply, this.forget(reply.requestId));
    if (reply.type === "version_saved") return this.historyPanel?.saved(reply, this.forget(reply.requestId));
    if (reply.type !== "error") return;
    this.requests.delete(reply.requestId);
    if (about?.kind === "set_input") {
      widgetById(about.widgetId)?.refused(); // back to the value the server holds
      return toast(reply.message);
    }
    const record = about?.cellId ? this.records.get(about.cellId) : null;
    if (about?.kind === "db") return this.dbPanel.showError(reply.message);
    if (about?.kind === "packages") return this.packagesPanel?.refused(reply.message);
    if (about?.kind === "files") return this.filesPanel?.refused(reply.message, about);
    if (about?.kind === "secret") return this.secretsPanel?.showError(reply.message);
    if (record) return record.view.showMessage(reply.message);
    toast(reply.message);
    if (reply.code === "forbidden" && !reply.requestId) this.connection.stop(); // access removed: do not come back
  }

  /** What a request was for, forgotten now that its reply came. */
  forget(requestId) {
    const about = this.requests.get(requestId);
    this.requests.delete(requestId);
    return about;
  }

  /** The owner changed this user's role: the page is rendered for a role, so load it again. */
  roleChanged(role) {
    toast(`Your role on this notebook is now ${role}; reloading the page.`, { kind: "info" });
    location.reload();
  }

  // --- running counters, empty notice, highlighting ------------------------------------------
  trackRunning(cellId, status) {
    if (status === "running") {
      if (!this.running.has(cellId)) this.running.set(cellId, performance.now());
    } else if (this.running.has(cellId)) {
      // Finished: the cell keeps showing how long this run took.
      this.records.get(cellId)?.view.setElapsed(performance.now() - this.running.get(cellId));
      this.running.delete(cellId);
    }
    if (status === "queued" || status === "running") this.busy.add(cellId);
    else this.busy.delete(cellId);
    this.setStopEnabled();
    if (this.running.size && !this.ticker) this.ticker = setInterval(() => this.tick(), 100);
    this.tick();
  }

  tick() {
    const now = performance.now();
    for (const [cellId, started] of this.running) this.records.get(cellId)?.view.setElapsed(now - started);
    if (!this.running.size) this.stopTicker();
  }

  /** Stop is for a run under way: disabled while no cell is queued or running. */
  setStopEnabled() {
    const stop = document.getElementById("interrupt");
    if (stop) stop.disabled = this.busy.size === 0;
  }

  /** The elapsed-time ticker of running cells (one interval for all of them). */
  stopTicker() {
    clearInterval(this.ticker);
    this.ticker = null;
  }

  afterChange() {
    let empty = document.getElementById("no-cells");
    if (!empty) {
      empty = el("p.empty", { id: "no-cells", text: "This notebook has no cells yet." });
      this.cellsEl.append(empty);
    }
    empty.hidden = this.order.length > 0;
    this.order.forEach((cellId, index) => {
      const { view } = this.records.get(cellId);
      view.setPlace(index === 0, index === this.order.length - 1);
      view.setNumber(index + 1);
    });
    if (this.highlighted) this.highlight(this.highlighted, { keep: true });
  }

  highlight(name, { keep = false } = {}) {
    this.highlighted = !keep && this.highlighted === name ? null : name;
    for (const record of this.records.values()) record.view.setHighlight(this.highlighted);
  }
}

// One small handler per server event (docs/protocol.md), called as (event, record of its cell or null).
const EVENT_HANDLERS = {
  cell_created: NotebookApp.prototype.onCellCreated,
  cell_deleted: NotebookApp.prototype.onCellDeleted,
  cell_moved: NotebookApp.prototype.onCellMoved,
  cell_updated: NotebookApp.prototype.onCellUpdated,
  cell_status: NotebookApp.prototype.onCellStatus,
  cell_stdout: NotebookApp.prototype.onCellStdout,
  cell_output: NotebookApp.prototype.onCellOutput,
  cell_error: NotebookApp.prototype.onCellError,
  db_connection_updated: NotebookApp.prototype.onDbConnectionUpdated,
  packages_progress: NotebookApp.prototype.onPackagesProgress,
  packages_updated: NotebookApp.prototype.onPackagesUpdated,
  files_updated: NotebookApp.prototype.onFilesUpdated,
  secrets_updated: NotebookApp.prototype.onSecretsUpdated,
  kernel_restarted: NotebookApp.prototype.onKernelRestarted,
  kernel_status: NotebookApp.prototype.onKernelStatus,
  kernel_error: NotebookApp.prototype.onKernelError,
  input_changed: NotebookApp.prototype.onInputChanged,
  notebook_renamed: NotebookApp.prototype.onNotebookRenamed,
  text_update: NotebookApp.prototype.onTextUpdate,
  text_reset: NotebookApp.prototype.onTextReset,
  presence: NotebookApp.prototype.onPresence,
};
