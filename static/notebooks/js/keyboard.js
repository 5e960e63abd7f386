// Jupyter's keyboard habits on the notebook page (docs/frontend.md, "Keyboard"): Esc leaves an
// editor for *command mode*, where single keys act on the selected cell (outlined), and `?`
// lists every shortcut of the page. SHORTCUTS is the one table the overlay is drawn from (and
// docs/frontend.md repeats, checked by tests/test_browser_keys.py). It knows the cells only by id,
// through the app's methods (app.js: cellIds, cellElement, editCell), and acts through the methods
// the buttons use (addCell, deleteCell, run, retypeCell), so it sends the same messages; `z` and
// the second half of `m` / `y` (deleting the old cell) are sent with the app's `request`.
import { el } from "./dom.js";

export const SHORTCUTS = [
  { mode: "command", keys: "Esc", what: "leave the editor for command mode (the selected cell is outlined)" },
  { mode: "command", keys: "Enter", what: "edit the selected cell" },
  { mode: "command", keys: "j / ↓", what: "select the next cell" },
  { mode: "command", keys: "k / ↑", what: "select the previous cell" },
  { mode: "command", keys: "a", what: "insert a Python cell above" },
  { mode: "command", keys: "b", what: "insert a Python cell below" },
  { mode: "command", keys: "d d", what: "delete the selected cell (the toast's Undo, or z, brings it back)" },
  { mode: "command", keys: "z", what: "undo your last change to the notebook" },
  { mode: "command", keys: "m", what: "make the cell markdown (a new cell with the same text replaces it)" },
  { mode: "command", keys: "y", what: "make the cell Python (a new cell with the same text replaces it)" },
  { mode: "command", keys: "Shift+Enter", what: "run the selected cell and select the next one" },
  { mode: "command", keys: "?", what: "show this list" },
  { mode: "edit", keys: "Shift+Enter", what: "run the cell and go to the next one (a new cell after the last)" },
  { mode: "edit", keys: "Ctrl/Cmd+Enter", what: "run the cell and stay" },
  { mode: "edit", keys: "↑ / ↓", what: "on the first / last line: go to the previous / next cell" },
  { mode: "edit", keys: "Ctrl/Cmd+Z", what: "undo your own typing in this cell (never someone else's)" },
  { mode: "edit", keys: "Ctrl/Cmd+Shift+Z / Ctrl/Cmd+Y", what: "redo your typing" },
  { mode: "edit", keys: "Ctrl+Space", what: "complete the name at the cursor" },
  { mode: "edit", keys: "Ctrl/Cmd+F", what: "search in the cell (CodeMirror)" },
  { mode: "edit", keys: "Ctrl/Cmd+/", what: "comment or uncomment the line" },
  { mode: "edit", keys: "Alt+↑ / Alt+↓", what: "move the line up / down" },
  { mode: "edit", keys: "Ctrl/Cmd+] / Ctrl/Cmd+[", what: "indent / dedent" },
  { mode: "edit", keys: "Ctrl/Cmd+D", what: "select the next occurrence" },
  { mode: "page", keys: "Ctrl/Cmd+Z", what: "outside an editor or field: undo your last change to the notebook" },
  { mode: "page", keys: "Ctrl/Cmd+Shift+Z / Ctrl+Y", what: "outside an editor or field: redo it" },
  { mode: "page", keys: "Enter", what: "on a rendered markdown cell: edit it (or double-click it)" },
  { mode: "page", keys: "Esc", what: "clear the highlighting of a name's cells" },
];

const MODE_TITLES = { command: "Command mode (after Esc)", edit: "In an editor", page: "Anywhere on the page" };
// Where keys belong to what has the focus: fields, editors, dialogs, menus.
const TYPING = "input, textarea, select, [contenteditable], .cm-editor, dialog, [role=dialog], [role=menu]";
// Enter on these activates them.
const ACTIVATES = "button, a[href], summary";
// What viewers may not do (they only move around and read).
const EDITOR_ACTIONS = new Set(["above", "below", "delete", "undo", "markdown", "python", "run"]);
const KEY_MAP = {
  Enter: "enter", j: "down", ArrowDown: "down", k: "up", ArrowUp: "up",
  a: "above", b: "below", d: "delete", z: "undo", m: "markdown", y: "python",
};

/** Command mode and the shortcuts overlay for `app` (a NotebookApp). */
export function bindKeyboard(app) {
  return new Keyboard(app);
}

class Keyboard {
  constructor(app) {
    this.app = app;
    this.selected = null; // cell id
    this.awaiting = null; // {requestId, replaces?}: the cell this page asked for, selected when it comes
    // When `d` was pressed: a second one soon after deletes. -Infinity, not 0: performance.now()
    // counts from the page's load, so a first `d` within 800 ms of it would have deleted at once.
    this.lastD = -Infinity;
    this.dialog = null;
    const button = document.getElementById("keyboard-shortcuts");
    if (button) {
      button.hidden = false;
      button.addEventListener("click", () => this.showShortcuts());
    }
    document.addEventListener("keydown", (event) => this.keydown(event));
    // Whatever gets the focus inside a cell selects it; an editor or a field leaves command mode.
    app.root.addEventListener("focusin", (event) => {
      const cell = event.target.closest?.(".cell.live");
      if (!cell) return;
      this.select(cell.dataset.cellId, { focus: false });
      if (event.target.closest(TYPING)) this.setCommandMode(false);
    });
    // A click on a cell, away from its editor and controls, selects it in command mode.
    app.root.addEventListener("click", (event) => {
      const cell = event.target.closest?.(".cell.live");
      if (!cell || event.target.closest(`${TYPING}, ${ACTIVATES}, .cell-outputs, .cell-code-preview`)) return;
      this.select(cell.dataset.cellId);
      this.setCommandMode(true);
    });
    // The cell this page asked for (a, b, m, y, Shift+Enter after the last cell) is selected when it comes.
    app.root.addEventListener("notebook:event", ({ detail }) => {
      if (detail.type === "cell_created" && detail.requestId && detail.requestId === this.awaiting?.requestId) this.created(detail.cellId);
    });
  }

  get commandMode() {
    return document.body.classList.contains("command-mode");
  }

  setCommandMode(on) {
    document.body.classList.toggle("command-mode", on);
  }

  /** The selected cell's id; the first cell's when none is (or it was deleted meanwhile). */
  current() {
    if (this.selected !== null && this.app.cellElement(this.selected)) return this.selected;
    const [first] = this.app.cellIds();
    if (first === undefined) return null;
    this.select(first);
    return first;
  }

  /** The cell `offset` places from `cellId` in the page's order (undefined past either end). */
  neighbour(cellId, offset) {
    const ids = this.app.cellIds();
    return ids[ids.indexOf(cellId) + offset];
  }

  select(cellId, { focus = true } = {}) {
    if (this.selected !== cellId) this.app.cellElement(this.selected)?.classList.remove("selected");
    this.selected = cellId;
    const element = this.app.cellElement(cellId);
    if (!element) return;
    element.classList.add("selected");
    if (!focus) return;
    // The cell itself holds the focus in command mode: keys reach the document, screen readers follow.
    if (!element.hasAttribute("tabindex")) element.tabIndex = -1;
    element.focus({ preventScroll: true });
    element.scrollIntoView({ block: "nearest" });
  }

  keydown(event) {
    if (this.dialog?.open) return; // the dialog's own Esc closes it
    const target = event.target instanceof Element ? event.target : document.body;
    if (event.key === "Escape" && target.closest(".cm-editor") && !event.defaultPrevented) return this.leaveEditor(target, event);
    if (event.ctrlKey || event.metaKey || event.altKey || event.defaultPrevented || target.closest(TYPING)) return;
    if (event.key === "?") {
      event.preventDefault();
      return this.showShortcuts();
    }
    if (event.key === "Escape") return this.enterCommandMode();
    if (!this.commandMode || (event.key === "Enter" && target.closest(ACTIVATES))) return;
    const action = event.key === "Enter" && event.shiftKey ? "run" : !event.shiftKey && KEY_MAP[event.key];
    if (action !== "delete") this.lastD = -Infinity;
    if (!action || (EDITOR_ACTIONS.has(action) && !this.app.canEdit)) return; // viewers only move around
    const cellId = this.current();
    if (cellId === null && action !== "undo" && action !== "above" && action !== "below") return;
    event.preventDefault();
    this[action](cellId);
  }

  enterCommandMode() {
    this.setCommandMode(true);
    const cellId = this.current();
    if (cellId !== null) this.select(cellId);
  }

  leaveEditor(target, event) {
    event.preventDefault();
    const cell = target.closest(".cell.live");
    this.setCommandMode(true);
    if (cell) this.select(cell.dataset.cellId);
    else target.closest(".cm-editor").querySelector(".cm-content")?.blur();
  }

  down(cellId) {
    const next = this.neighbour(cellId, 1);
    if (next) this.select(next);
  }

  up(cellId) {
    const previous = this.neighbour(cellId, -1);
    if (previous) this.select(previous);
  }

  enter(cellId) {
    this.setCommandMode(false);
    this.app.editCell(cellId);
  }

  above(cellId) {
    this.insert(cellId, "above");
  }

  below(cellId) {
    this.insert(cellId, "below");
  }

  insert(cellId, where, cellType = "python") {
    const requestId = cellId !== null ? this.app.addCell(cellId, where, cellType, { focus: false }) : this.app.createCell(cellType, null);
    this.awaiting = requestId && { requestId };
  }

  delete(cellId) {
    const now = performance.now();
    if (now - this.lastD > 800) {
      this.lastD = now;
      return;
    }
    this.lastD = -Infinity;
    const ids = this.app.cellIds();
    const index = ids.indexOf(cellId);
    const neighbour = ids[index + 1] ?? ids[index - 1];
    this.app.deleteCell(cellId); // its "Cell deleted · Undo" toast, as the Delete button
    if (neighbour && this.app.cellIds().length > 1) this.select(neighbour);
  }

  undo() {
    this.app.request({ type: "undo" }, { kind: "undo" });
  }

  markdown(cellId) {
    this.retype(cellId, "markdown");
  }

  python(cellId) {
    this.retype(cellId, "python");
  }

  /** The protocol has no change of a cell's type: a new cell of `cellType` with the same text
   * goes just above, and once it exists the old one is deleted (two changes in the history). */
  retype(cellId, cellType) {
    if (this.app.cellElement(cellId)?.dataset.cellType === cellType) return;
    const requestId = this.app.retypeCell(cellId, cellType);
    this.awaiting = requestId && { requestId, replaces: cellId };
  }

  created(cellId) {
    const { replaces } = this.awaiting;
    this.awaiting = null;
    if (replaces && this.app.cellElement(replaces)) this.app.request({ type: "delete_cell", cellId: replaces }, { kind: "retype", cellId: replaces });
    this.select(cellId);
    this.setCommandMode(true);
  }

  run(cellId) {
    this.app.run(cellId, false);
    const next = this.neighbour(cellId, 1);
    if (next) this.select(next);
    else this.insert(cellId, "below");
  }

  /** The overlay: a modal <dialog> listing SHORTCUTS; Esc or Close shuts it and the focus goes back. */
  showShortcuts() {
    if (!this.dialog) this.dialog = buildDialog(() => this.dialog.close());
    if (this.dialog.open) return;
    const returnTo = document.activeElement;
    this.dialog.addEventListener("close", () => returnTo?.focus?.({ preventScroll: true }), { once: true });
    this.dialog.showModal();
    this.dialog.querySelector(".shortcuts-close").focus();
  }
}

function buildDialog(close) {
  const sections = Object.entries(MODE_TITLES).map(([mode, title]) => [
    el("h3", { text: title }),
    el("table", {}, el("tbody", {}, ...SHORTCUTS.filter((shortcut) => shortcut.mode === mode).map((shortcut) => el("tr.shortcut", { dataset: { mode } },
      el("th", { scope: "row" }, ...keyCaps(shortcut.keys)),
      el("td", { text: shortcut.what }))))),
  ]).flat();
  const dialog = el("dialog.shortcuts-dialog", { id: "shortcuts", role: "dialog", "aria-modal": "true", "aria-labelledby": "shortcuts-title" },
    el("button.shortcuts-close", { type: "button", onclick: close }, "Close"),
    el("h2", { id: "shortcuts-title", text: "Keyboard shortcuts" }),
    ...sections);
  dialog.addEventListener("click", (event) => {
    if (event.target === dialog) close(); // the backdrop
  });
  document.body.append(dialog);
  return dialog;
}

/** "Ctrl/Cmd+Shift+Z / Ctrl+Y" as <kbd> caps, keeping the separators as text. */
function keyCaps(keys) {
  return keys.split(/( \/ | )/).map((part) => (part.trim() && part.trim() !== "/" ? el("kbd", { text: part }) : part));
}
