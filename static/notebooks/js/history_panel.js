// History (docs/history.md) on the page: the #history card with the timeline from `history`
// (newest first, "Load more"), Restore on deleted cells, saved versions and the Save version
// form; Ctrl/Cmd+Z and Ctrl/Cmd+Shift+Z (Ctrl+Y) outside an editor send `undo` / `redo`; the
// "Cell deleted · Undo" toast. It only sends messages through the app; the server decides.
import { el } from "./dom.js";
import { toast } from "./toast.js";

const PAGE = 50;
const REFRESH_DEBOUNCE_MS = 600;
const UNDO_TOAST_MS = 10_000;
// Events after which the timeline has something new to show.
const CHANGES = new Set(["cell_created", "cell_deleted", "cell_moved", "cell_updated", "notebook_renamed", "db_connection_updated"]);

/** "3 min ago", "yesterday"… from an ISO time. */
export function relativeTime(iso, now = Date.now()) {
  const seconds = Math.round((now - Date.parse(iso)) / 1000);
  const format = new Intl.RelativeTimeFormat("en", { numeric: "auto" });
  if (seconds < 45) return "just now";
  if (seconds < 3600) return format.format(-Math.round(seconds / 60), "minute");
  if (seconds < 86400) return format.format(-Math.round(seconds / 3600), "hour");
  return format.format(-Math.round(seconds / 86400), "day");
}

function firstLine(code) {
  const line = String(code || "").split("\n").find((text) => text.trim()) || "";
  return line.length > 60 ? `${line.slice(0, 59)}…` : line;
}

export class HistoryPanel {
  /**
   * @param {HTMLElement} section #history
   * @param {{canEdit: boolean, request: (message: object, about: object) => string|null}} options
   */
  constructor(section, { canEdit, request }) {
    this.section = section;
    this.canEdit = canEdit;
    this.request = request;
    this.timer = null;
    this.events = [];
    this.toggle = el("button.history-toggle", { type: "button", "aria-expanded": "false", onclick: () => this.setOpen(!this.open) }, "Show");
    this.list = el("ol.history-events");
    this.more = el("button.link.history-more", { type: "button", hidden: true, onclick: () => this.load(this.events.at(-1)?.id) }, "Load more");
    this.versions = el("ul.history-versions");
    this.body = el("div.history-body", { hidden: true },
      canEdit ? this.buildSaveForm() : null,
      el("h3", {}, "Versions"), this.versions,
      el("h3", {}, "Changes"), this.list, this.more);
    section.querySelector("h2")?.append(" ", this.toggle);
    section.append(this.body);
  }

  get open() {
    return !this.body.hidden;
  }

  setOpen(open) {
    this.body.hidden = !open;
    this.toggle.textContent = open ? "Hide" : "Show";
    this.toggle.setAttribute("aria-expanded", String(open));
    if (open) this.load();
  }

  buildSaveForm() {
    this.nameInput = el("input.version-name", { type: "text", maxlength: 200, placeholder: "Version name", "aria-label": "Version name", required: true });
    const form = el("form.save-version", { novalidate: true }, this.nameInput, el("button.save-version-button", { type: "submit" }, "Save version"));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const name = this.nameInput.value.trim();
      if (!name) return this.nameInput.focus();
      this.request({ type: "save_version", name }, { kind: "save_version" });
    });
    return form;
  }

  /** The first page (`before` absent) replaces the timeline; a later one is appended. */
  load(before = null) {
    const message = before ? { type: "history", before, limit: PAGE } : { type: "history", limit: PAGE };
    this.request(message, { kind: "history", before });
  }

  /** The server's `history` reply. */
  show(reply, about) {
    if (!about?.before) {
      this.events = [];
      this.list.replaceChildren();
    }
    if (reply.versions) this.versions.replaceChildren(...(reply.versions.length ? reply.versions.map((version) => this.versionItem(version)) : [el("li.empty", {}, "No saved versions.")]));
    for (const event of reply.events) {
      this.events.push(event);
      this.list.append(this.eventItem(event));
    }
    this.more.hidden = !reply.more;
  }

  eventItem(event) {
    const code = firstLine(event.after?.code ?? event.before?.code);
    const stopped = event.kind === "kernel_stopped"; // by the server's lifecycle: its reason says it all
    const what = stopped ? (event.after?.reason || event.summary) : [event.summary, event.undo ? "(undo)" : "", code ? `“${code}”` : "", event.after?.name && !code ? `“${event.after.name}”` : ""].filter(Boolean).join(" ");
    const item = el("li.history-event", { dataset: { kind: event.kind, eventId: event.id, cellId: event.cellId || "" } },
      el("span.history-who", { text: event.by || (stopped ? "server" : "someone") }), " ",
      el("span.history-what", { text: what }), " ",
      el("time.history-when", { datetime: event.at, title: new Date(event.at).toLocaleString(), text: relativeTime(event.at) }));
    if (event.undone) item.classList.add("undone");
    if (this.canEdit && event.restorable) {
      item.append(" ", el("button.link.restore-cell", { type: "button", onclick: () => this.request({ type: "restore_cell", cellId: event.cellId }, { kind: "restore_cell" }) }, "Restore"));
    }
    return item;
  }

  versionItem(version) {
    const item = el("li.history-version", { dataset: { versionId: version.id } },
      el("strong", { text: version.name }), " ",
      el("span.history-who", { text: `${version.by || "someone"}, ${version.cells} cells, ` }),
      el("time.history-when", { datetime: version.at, title: new Date(version.at).toLocaleString(), text: relativeTime(version.at) }));
    if (this.canEdit) {
      item.append(" ", el("button.link.restore-version", {
        type: "button",
        onclick: () => {
          if (confirm(`Make the notebook version “${version.name}” again? Cells added since are removed (this is recorded: it can be undone from the history).`)) {
            this.request({ type: "restore_version", versionId: version.id }, { kind: "restore_version" });
          }
        },
      }, "Restore"));
    }
    return item;
  }

  saved(reply) {
    if (this.nameInput) this.nameInput.value = "";
    toast(`Saved version “${reply.name}”.`, { kind: "info", timeout: 4000 });
    this.changed();
  }

  /** Something changed the notebook: refresh the open timeline, once the burst is over. */
  changed() {
    if (!this.open) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.load(), REFRESH_DEBOUNCE_MS);
  }

  /** An applied event (the app's `notebook:event`). */
  noticed(event) {
    if (CHANGES.has(event.type)) this.changed();
  }
}

/** Ctrl/Cmd+Z and Ctrl/Cmd+Shift+Z or Ctrl+Y, outside anything that has its own undo. */
export function bindUndoKeys(send) {
  document.addEventListener("keydown", (event) => {
    if (!(event.ctrlKey || event.metaKey) || event.altKey) return;
    const key = event.key.toLowerCase();
    const redo = (key === "z" && event.shiftKey) || (key === "y" && !event.shiftKey);
    if (key !== "z" && !redo) return;
    const target = event.target;
    if (target instanceof Element && target.closest("input, textarea, select, [contenteditable], .cm-editor")) return;
    event.preventDefault();
    send(redo ? "redo" : "undo");
  });
}

/** After this page deleted a cell: a toast whose Undo restores that very cell. */
export function deletedToast(onUndo) {
  const item = toast("Cell deleted", {
    kind: "info", timeout: UNDO_TOAST_MS,
    action: { label: "Undo", className: "undo-delete", onclick: () => { item.remove(); onUndo(); } },
  });
  item.classList.add("toast-deleted");
  return item;
}
