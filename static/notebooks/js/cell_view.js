// The DOM of one cell: header (type, status, names, actions), editor, stdout, outputs, error.
// Same classes as templates/notebooks/_cell.html, which is what the page shows without JavaScript.
// The editor and the costly outputs wait until the cell is near the viewport (proximity.js); a
// cell built `deferred` is an empty <article> until then, until something needs it, or until the
// page is idle (buildWhenIdle): a big notebook is editable before its far cells are built.
import { LazyEditor } from "./editor.js";
import { el, formatElapsed, renderError } from "./dom.js";
import { renderOutput, shownOutputs } from "./outputs.js";
import { MarkdownMode } from "./markdown_view.js";
import { showRunBy } from "./presence.js";
import { inFrames, whenIdle, unwatchProximity, watchProximity } from "./proximity.js";

const TYPE_LABELS = { python: "Python", sql: "SQL", markdown: "Markdown" };

let skeleton = null;
let bareCell = null;

/** The elements inside every cell, made once and cloned: a big notebook builds thousands. */
function cellSkeleton() {
  skeleton ??= el("article.cell", {},
    el("header.cell-header", {}, el("span.cell-type"), el("span.cell-status"), el("span.cell-elapsed", { hidden: true }), el("span.cell-names")),
    el("div.cell-editor"),
    el("div.cell-message", { role: "alert", hidden: true }),
    el("div.cell-stdout", { hidden: true }, el("a.stdout-more", { hidden: true, target: "_blank", rel: "noopener" }), el("pre")),
    el("div.cell-outputs"),
    el("div.cell-error", { hidden: true }));
  return skeleton.cloneNode(true).children;
}

/** An empty <article class="cell">: a deferred cell until it is built. */
function emptyCell() {
  bareCell ??= el("article.cell");
  return bareCell.cloneNode(false);
}

/** Build the deferred `views` when the page is idle, in their order, a few at a time. */
export function buildWhenIdle(views) {
  for (const view of views) whenIdle(() => view.element.isConnected && view.build()); // not once removed
}

// --- the cells' "⋯" menus (details.cell-menu): one open at a time ---------------------------

let menusBound = false;

/** Listeners on the document, once for every cell's menu: a click outside the open menu or
 * Escape closes it (Escape before keyboard.js and the editors see it, and gives the focus back
 * to the menu's summary). */
function bindMenus() {
  if (menusBound) return;
  menusBound = true;
  document.addEventListener("click", (event) => {
    for (const menu of document.querySelectorAll("details.cell-menu[open]")) {
      if (!menu.contains(event.target)) closeMenu(menu);
    }
  }, true);
  document.addEventListener("keydown", (event) => {
    const menu = event.key === "Escape" && document.querySelector("details.cell-menu[open]");
    if (!menu) return;
    event.preventDefault();
    event.stopPropagation();
    closeMenu(menu, { focus: true });
  }, true);
}

function closeMenu(menu, { focus = false } = {}) {
  menu.open = false;
  if (focus) menu.querySelector("summary").focus({ preventScroll: true });
}

function menuItems(menu) {
  return [...menu.querySelectorAll(".cell-menu-items button:not(:disabled)")];
}

/** Opened: the others close, the list opens upwards when there is no room below it, and an
 * opening from the keyboard (Enter or Space on the summary) puts the focus on the first item. */
function menuToggled(menu) {
  if (!menu.open) {
    menu.classList.remove("cell-menu-up");
    return;
  }
  for (const other of document.querySelectorAll("details.cell-menu[open]")) if (other !== menu) closeMenu(other);
  const list = menu.querySelector(".cell-menu-items");
  const below = list.getBoundingClientRect();
  const summary = menu.querySelector("summary").getBoundingClientRect();
  menu.classList.toggle("cell-menu-up", below.bottom > window.innerHeight && summary.top - below.height - 8 > 0);
  if (menu.dataset.byKey) menuItems(menu)[0]?.focus();
  delete menu.dataset.byKey;
}

/** ↑ / ↓ / Home / End move between the open menu's items. */
function menuKeydown(menu, event) {
  const onSummary = event.target.matches("summary");
  if (onSummary && !menu.open && (event.key === "Enter" || event.key === " ")) menu.dataset.byKey = "1";
  if (!menu.open) return;
  const items = menuItems(menu);
  const at = items.indexOf(document.activeElement);
  const next = { ArrowDown: at + 1, ArrowUp: at < 0 ? items.length - 1 : at - 1, Home: 0, End: items.length - 1 }[event.key];
  if (next === undefined || !items.length) return;
  event.preventDefault(); // keyboard.js leaves a handled key alone (j / k, ↑ / ↓ select cells)
  items[(next + items.length) % items.length].focus();
}

export class CellView {
  /**
   * @param {object} cell  the cell as the protocol sends it
   * @param {object} hooks {canEdit, appMode, onRun, onNavigate, onDelete, onAdd, onMove, onName, onResultVariable, shared, ask, packagePrompt}
   * @param {{deferred?: boolean}} options  deferred: the inside is built later (`build()`)
   */
  constructor(cell, hooks, { deferred = false } = {}) {
    this.id = cell.id;
    this.hooks = hooks;
    this.cell = cell; // what build() starts from; render() keeps it current until then
    this.built = false;
    this.editor = null;
    this.outputsKey = null;
    this.near = false; // near the viewport at least once: actions, editor and outputs are built
    this.place = [false, false]; // first, last: for the move buttons, once they exist
    this.shownNumber = null;
    this.highlighted = null;
    this.loads = []; // outputs waiting to be built or fetched until the cell is near
    this.element = emptyCell();
    this.element.id = `cell-${cell.id}`;
    Object.assign(this.element.dataset, { cellId: cell.id, cellType: cell.type });
    if (!deferred) this.build();
    watchProximity(this.element, { near: () => this.cameNear(), far: () => this.editor?.release() });
  }

  /** The inside of the cell, from the latest `render()`ed cell; once. Every method that shows
   * something builds first, except those the whole notebook calls at once (render, setNumber,
   * setPlace, setHighlight), which keep their value for it. */
  build() {
    if (this.built) return;
    this.built = true;
    const { cell, hooks } = this;
    this.element.append(...cellSkeleton());
    [this.header, this.editorHost, this.message, this.stdout, this.outputs, this.error] = this.element.children;
    const [type, status, elapsed, names] = this.header.children;
    [this.status, this.elapsed, this.names] = [status, elapsed, names];
    type.textContent = TYPE_LABELS[cell.type] || cell.type;
    if (cell.type === "sql") this.header.insertBefore(this.buildResultVariable(cell), status);
    [this.stdoutMore, this.stdoutText] = this.stdout.children;
    this.editor = new LazyEditor(this.editorHost, {
      code: cell.code,
      cellType: cell.type,
      readOnly: !hooks.canEdit,
      onRun: (advance) => hooks.onRun(this, advance),
      onNavigate: (direction) => hooks.onNavigate(this, direction),
      shared: hooks.shared, // {text, awareness}: the cell's shared text (shared_text.js); none in the app view
      ask: hooks.ask && ((type, code, cursor) => hooks.ask(type, this.id, code, cursor)), // completion.js
    });
    if (cell.type === "markdown") this.markdown = new MarkdownMode(this, { canEdit: hooks.canEdit && !hooks.appMode });
    this.render(cell);
    if (this.shownNumber !== null) this.setNumber(this.shownNumber);
    if (this.highlighted) this.setHighlight(this.highlighted);
  }

  /** Put the user in the editor, at the end of the code (a markdown cell shows its source for that). */
  edit() {
    this.build();
    if (this.markdown?.canEdit) this.markdown.edit();
    else this.editor.focus("end");
  }

  /** Put the cursor in the editor, at the "start" or the "end" of the code. */
  focus(where) {
    this.build();
    this.editor.focus(where);
  }

  /** The code as this page has it (the editor's, or the text it was built from). */
  get code() {
    return this.built ? this.editor.code : (this.hooks.shared?.text.text ?? this.cell.code);
  }

  cameNear() {
    this.build();
    if (!this.near && this.hooks.canEdit && !this.hooks.appMode) {
      // Built here rather than for every cell up front: most of a long notebook's cells
      // are never near the viewport.
      this.header.append(this.buildActions());
      this.element.append(this.buildInsertBar());
      this.setPlace(...this.place);
    }
    this.near = true;
    inFrames(() => {
      if (this.element.isConnected && !this.hooks.appMode) this.editor.materialize(); // the app view shows no code
    });
    for (const load of this.loads.splice(0)) load();
  }

  /** "▶ Run", then one "⋯" menu with the rest (adding, moving, deleting): the header stays one
   * line at 1,280 px. The menu closes on a choice, Escape, a click elsewhere, or another cell's menu. */
  buildActions() {
    bindMenus();
    const item = (spec, attrs, text, action) => el(spec, {
      type: "button", role: "menuitem", ...attrs, onclick: () => {
        closeMenu(menu, { focus: menu.contains(document.activeElement) });
        action();
      },
    }, text);
    const add = (where, type, label) => item(`button.add-cell.add-cell-${where}`, { dataset: { cellType: type } },
      `Add ${label} cell ${where}`, () => this.hooks.onAdd(this, where, type));
    const group = (label, ...items) => el("div.cell-menu-group", { role: "group", "aria-label": label }, ...items);
    const addIn = (where) => ["python", "sql", "markdown"].map((type) => add(where, type, TYPE_LABELS[type]));
    const menu = el("details.cell-menu", { ontoggle: () => menuToggled(menu) },
      el("summary", { title: "More actions for this cell", "aria-label": "More actions for this cell", "aria-haspopup": "menu" }, "⋯"),
      el("div.cell-menu-items", { role: "menu", "aria-label": "Cell actions" },
        group("Add above", ...addIn("above")),
        group("Add below", ...addIn("below")),
        group("Move",
          this.moveUp = item("button.move-cell.move-up", { title: "Move this cell up" }, "Move up", () => this.hooks.onMove(this, -1)),
          this.moveDown = item("button.move-cell.move-down", { title: "Move this cell down" }, "Move down", () => this.hooks.onMove(this, 1))),
        group("Delete", item("button.delete-cell", { title: "Delete this cell" }, "Delete", () => this.hooks.onDelete(this)))));
    menu.addEventListener("keydown", (event) => menuKeydown(menu, event));
    menu.addEventListener("focusout", (event) => {
      if (menu.open && event.relatedTarget && !menu.contains(event.relatedTarget)) closeMenu(menu); // Tab out of it
    });
    return el("span.cell-actions", {},
      el("button.run-cell", { type: "button", title: "Run this cell (Ctrl+Enter; Shift+Enter runs and moves on)", onclick: () => this.hooks.onRun(this, false) }, "▶ Run"),
      menu);
  }

  /** Quick insertion in the gap under the cell (the same as "below" in the menu). */
  buildInsertBar() {
    const button = (type, label) => el("button.insert-below", {
      type: "button", dataset: { cellType: type }, title: `Add a ${label} cell below`,
      onclick: () => this.hooks.onAdd(this, "below", type),
    }, `+ ${label}`);
    return el("div.cell-insert", {}, button("python", "Python"), button("sql", "SQL"), button("markdown", "Markdown"));
  }

  /** The cell's place, 1-based, as the server's messages name it ("cell 5 (first line…)"). */
  setNumber(number) {
    this.shownNumber = number;
    if (!this.built) return;
    if (!this.number) {
      this.number = el("span.cell-number", { title: "The cell's place in the notebook" });
      this.header.prepend(this.number);
    }
    this.number.textContent = `[${number}]`;
  }

  /** Where the cell stands, for the move buttons (nothing above the first, below the last). */
  setPlace(first, last) {
    this.place = [first, last];
    if (this.moveUp) this.moveUp.disabled = first;
    if (this.moveDown) this.moveDown.disabled = last;
  }

  buildResultVariable(cell) {
    const wrap = el("span.result-variable", { title: "The Python name the query's result is bound to" }, "→ ");
    if (this.hooks.canEdit) {
      this.resultInput = el("input.result-variable-input", { type: "text", value: cell.resultVariable || "", spellcheck: "false", "aria-label": "Result variable", size: 8 });
      const commit = () => {
        const value = this.resultInput.value.trim();
        if (value && value !== this.resultVariable) this.hooks.onResultVariable(this, value);
      };
      this.resultInput.addEventListener("change", commit);
      this.resultInput.addEventListener("keydown", (event) => {
        if (event.key === "Enter") this.resultInput.blur();
      });
      wrap.append(this.resultInput);
    } else {
      this.resultCode = el("code");
      wrap.append(this.resultCode);
    }
    return wrap;
  }

  /** Bring everything but the code in line with `cell` (the code is the shared text's: shared_text.js). */
  render(cell) {
    this.cell = cell;
    if (!this.built) return;
    this.setStatus(cell.status);
    this.setResultVariable(cell.resultVariable || "");
    this.setNames(cell.reads || [], cell.writes || [], cell.tables || []);
    this.setStdout(cell.stdout || "", cell.stdoutRef);
    if (cell.outputsRef) this.deferOutputs(cell.outputsRef);
    else this.setOutputs(cell.outputs || []);
    this.setError(cell.error, cell.status);
    showRunBy(this.element, cell.runBy);
  }

  /** "run by bob": who started the cell's run. */
  setRunBy(name) {
    this.build();
    showRunBy(this.element, name);
  }

  /** Outputs a big notebook's state left out (`outputsRef`, docs/protocol.md): fetched once the
   * cell comes near the viewport, and shown unless newer ones (a run, an event) came meanwhile. */
  deferOutputs(ref) {
    const key = `ref ${ref.url}`;
    if (key === this.outputsKey) return;
    this.outputsKey = key;
    const note = (text) => this.outputs.replaceChildren(el("div.outputs-pending", { text }));
    note(ref.count === 1 ? "1 output, loading…" : `${ref.count} outputs, loading…`);
    this.loads = [() => fetch(ref.url, { credentials: "same-origin" })
      .then((response) => (response.ok ? response.json() : Promise.reject(new Error(`HTTP ${response.status}`))))
      .then((body) => {
        if (this.outputsKey !== key) return;
        this.setOutputs(body.outputs);
        this.hooks.onOutputsLoaded?.(this, body.outputs);
      })
      .catch((error) => {
        if (this.outputsKey === key) note(`These outputs could not be loaded (${error.message}); reload the page to try again.`);
      })];
    if (this.near) for (const load of this.loads.splice(0)) load();
  }

  setStatus(status) {
    this.build();
    if (status !== "queued" && status !== "running") this.element.style.minHeight = ""; // clearRun's hold
    if (status === this.status.dataset.status) return;
    this.element.classList.remove(`status-${this.status.dataset.status}`);
    this.element.classList.add(`status-${status}`);
    this.status.dataset.status = status;
    this.status.textContent = status;
    // The last run's duration stays after it ends (app.js sets it); a cell with no results hides it.
    if (status === "idle" || status === "blocked") this.elapsed.hidden = true;
  }

  setElapsed(ms) {
    this.build();
    this.elapsed.hidden = false;
    this.elapsed.textContent = formatElapsed(ms);
  }

  setResultVariable(name) {
    this.build();
    this.resultVariable = name;
    if (this.resultInput && document.activeElement !== this.resultInput) this.resultInput.value = name;
    if (this.resultCode) this.resultCode.textContent = name;
  }

  /** Python cells read and write names; a SQL cell reads its {placeholders} and its `tables`. */
  setNames(reads, writes, tables = []) {
    this.build();
    this.reads = [...reads, ...tables];
    this.writes = writes;
    const group = (kind, names) => names.length
      ? el(`span.names.${kind}`, {}, kind,
        ...names.map((name) => el("button.name", { type: "button", dataset: { name }, title: `Highlight the cells that define or use ${name}`, onclick: () => this.hooks.onName(name) }, name)))
      : null;
    this.names.replaceChildren(...[group("reads", reads), group("tables", tables), group("writes", writes)].filter(Boolean));
    // The header is one line (notebook.css): names that do not fit are cut, all of them are here.
    this.names.title = [["reads", reads], ["tables", tables], ["writes", writes]]
      .filter(([, names]) => names.length).map(([kind, names]) => `${kind} ${names.join(", ")}`).join(" · ");
  }

  /** A run starts: what the previous run showed goes away, but its room is held until the run
   * ends (setStatus; the new results come just before), so what stands below does not jump
   * twice under the pointer: a click right after a run lands where it was aimed. */
  clearRun() {
    this.build();
    if (this.element.isConnected && !this.element.style.minHeight) this.element.style.minHeight = `${this.element.offsetHeight}px`;
    this.setStdout("");
    this.setOutputs([]);
    this.setError(null);
  }

  /** `text`, or with `ref` ({url, size}) the tail of a longer stdout and a link to all of it. */
  setStdout(text, ref = null) {
    this.build();
    this.stdoutText.textContent = text;
    this.stdoutMore.hidden = !ref;
    if (ref) {
      this.stdoutMore.href = ref.url;
      this.stdoutMore.textContent = `whole output (${ref.size.toLocaleString("en")} characters)`;
    }
    this.stdout.hidden = !text && !ref;
  }

  appendStdout(text) {
    this.build();
    this.stdoutText.append(text); // a text node: never parsed as HTML
    this.stdout.hidden = false;
  }

  setOutputs(outputs) {
    this.build();
    const key = JSON.stringify(outputs);
    if (key === this.outputsKey) return; // unchanged: keep iframes as they are
    this.outputsKey = key;
    this.loads = [];
    const items = shownOutputs(outputs).map(renderOutput);
    this.outputs.replaceChildren(...items.map((item) => item.node));
    for (const item of items) if (item.load) this.loads.push(item.load);
    this.markdown?.update(outputs);
    if (this.near) for (const load of this.loads.splice(0)) load();
  }

  setError(error, status) {
    this.build();
    this.error.hidden = !error;
    this.error.classList.toggle("blocked-reason", Boolean(error) && status === "blocked");
    // A failed import: editors are offered to add the package (packages_panel.js).
    const prompt = error && status !== "blocked" ? this.hooks.packagePrompt?.(error) : null;
    this.error.replaceChildren(...(error ? renderError(error) : []), ...(prompt ? [prompt] : []));
  }

  showMessage(text) {
    this.build();
    this.message.hidden = false;
    this.message.replaceChildren(el("span", { text }), el("button.link", { type: "button", "aria-label": "Dismiss", onclick: () => this.hideMessage() }, "×"));
  }

  hideMessage() {
    this.message.hidden = true;
    this.message.replaceChildren();
  }

  setHighlight(name) {
    this.highlighted = name;
    if (!this.built) return;
    this.element.classList.toggle("name-defines", Boolean(name) && this.writes.includes(name));
    this.element.classList.toggle("name-uses", Boolean(name) && this.reads.includes(name));
    for (const button of this.names.querySelectorAll("button.name")) button.classList.toggle("active", button.dataset.name === name);
  }

  destroy() {
    unwatchProximity(this.element);
    this.editor?.destroy();
    this.element.remove();
  }
}
