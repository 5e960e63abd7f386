// A notebook's files (#files; docs/notebook-files.md): the list everyone sees (a download link,
// size, version, who added it, when), kept live by notebook_state and files_updated; for editors,
// uploads (drop zone or "Choose files…", one POST per file over XMLHttpRequest so each has its
// progress bar and its own error), Rename and Delete over the socket, and Restore for a file this
// page deleted. It refuses only empty files and files over the limit before sending: the server
// checks names, sizes and the quota again (notebooks_app/notebook_files.py) and its sentence is
// shown as it comes.
import { el } from "./dom.js";
import { relativeTime } from "./history_panel.js";

const DONE_SHOWN_MS = 4000; // a finished upload's row stays this long (the list shows the file)
const UNITS = ["KB", "MB", "GB", "TB"];

/** "532 bytes", "14.2 KB", "1.2 MB": binary units, as the server-rendered list's filesizeformat. */
export function humanSize(bytes) {
  if (bytes < 1024) return `${bytes} ${bytes === 1 ? "byte" : "bytes"}`;
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(1)} ${UNITS[unit]}`;
}

/** The name a file is stored under: "data" and "sales.csv" -> "data/sales.csv". Only a trailing
 * "/" is trimmed; anything else in the folder is the server's to accept or refuse. */
export function uploadName(folder, fileName) {
  const prefix = folder.trim().replace(/\/+$/, "");
  return prefix ? `${prefix}/${fileName}` : fileName;
}

/** One upload's row: name, progress bar, then "Stored." or the reason it was refused. */
class Upload {
  constructor(name) {
    this.name = name;
    this.xhr = null;
    this.timer = null;
    this.progress = el("progress.file-upload-progress", { max: 1, value: 0, "aria-label": `Uploading ${name}` });
    this.status = el("span.file-upload-status", { text: "starting…" });
    this.button = el("button.link.file-upload-cancel", { type: "button", "aria-label": `Cancel the upload of ${name}`, onclick: () => this.xhr?.abort() }, "Cancel");
    this.element = el("li.file-upload", { dataset: { name, state: "sending" } },
      el("span.file-upload-name", { text: name }), this.button, this.progress, this.status);
  }

  send(url, csrf, file) {
    const body = new FormData();
    body.append("file", file, file.name);
    body.append("name", this.name);
    const xhr = (this.xhr = new XMLHttpRequest());
    xhr.open("POST", url);
    xhr.responseType = "json";
    xhr.setRequestHeader("X-CSRFToken", csrf);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.onprogress = (event) => {
      if (!event.lengthComputable) return;
      this.progress.max = event.total;
      this.progress.value = event.loaded;
      this.status.textContent = `${Math.floor((100 * event.loaded) / event.total)} %`;
    };
    xhr.onload = () => this.answered(xhr.status, xhr.response);
    xhr.onerror = () => this.fail("The upload failed: the connection to the server was lost. Nothing was stored.");
    xhr.onabort = () => this.fail("Cancelled: nothing was stored.");
    xhr.send(body);
  }

  answered(status, response) {
    const errors = response?.errors || [];
    if (status === 200 && response?.files?.length && !errors.length) return this.done();
    this.fail(response?.error || errors.join(" ") || `The server refused the upload (HTTP ${status}): nothing was stored.`);
  }

  done() {
    this.xhr = null;
    this.element.dataset.state = "done";
    this.progress.value = this.progress.max;
    this.status.textContent = "Stored.";
    this.button.remove();
    this.timer = setTimeout(() => this.remove(), DONE_SHOWN_MS);
  }

  /** Refused, on the page or by the server: the row stays, with the reason, until dismissed. */
  fail(message) {
    this.xhr = null;
    this.element.dataset.state = "failed";
    this.progress.remove();
    this.status.replaceWith(el("span.error.file-upload-error", { role: "alert", text: message }));
    this.button.replaceWith(el("button.link.file-upload-dismiss", { type: "button", "aria-label": `Dismiss the message about ${this.name}`, onclick: () => this.remove() }, "×"));
  }

  remove() {
    clearTimeout(this.timer);
    this.element.remove();
  }
}

export class FilesPanel {
  /**
   * @param {HTMLElement} section #files (data-upload-url, data-limit-mb, data-quota-mb, data-csrf)
   * @param {object} options {canEdit, request(message, about) -> requestId, or null when not sent}
   */
  constructor(section, { canEdit, request }) {
    this.section = section;
    this.canEdit = canEdit;
    this.request = request;
    this.url = section.dataset.uploadUrl;
    this.csrf = section.dataset.csrf;
    this.limitMb = Number(section.dataset.limitMb);
    this.quotaMb = Number(section.dataset.quotaMb);
    this.files = null; // the server's list; until the first state the server-rendered one stays
    this.changed = new Set(); // paths the last files_updated changed: flashed once
    this.pending = new Map(); // path -> "delete" | "restore" | "rename" sent from here, unanswered
    this.deleted = new Set(); // paths this page deleted: each offers Restore until it is back
    this.renaming = null; // {path, input}: the inline rename, its input kept across redraws
    this.body = section.querySelector(".files-body") || section.appendChild(el("div.files-body"));
    this.deletedList = el("ul.files-deleted-list", { "aria-live": "polite" });
    this.error = el("p.error.files-error", { role: "alert", hidden: true });
    section.append(this.deletedList, this.error);
    if (canEdit) section.append(this.buildUploader());
  }

  // --- uploads ---------------------------------------------------------------------------------
  buildUploader() {
    this.picker = el("input.files-input", { type: "file", multiple: true, hidden: true, "aria-label": "Files to upload" });
    this.picker.addEventListener("change", () => {
      const chosen = [...this.picker.files];
      this.picker.value = ""; // choosing the same file again is a new upload
      this.uploadAll(chosen);
    });
    const choose = el("button.files-choose", { type: "button", onclick: () => this.picker.click() }, "Choose files…");
    this.dropZone = el("div.files-drop", {}, el("span", { text: "Drop files here or " }), choose, this.picker);
    this.bindDrop(this.dropZone);
    this.folder = el("input.files-folder", { type: "text", name: "folder", placeholder: "data", autocomplete: "off", spellcheck: "false" });
    this.uploadList = el("ul.files-uploads");
    return el("div.files-upload", {},
      this.dropZone,
      el("label.files-folder-label", {}, "Folder (optional)", this.folder),
      el("p.files-limits", { text: `Up to ${this.limitMb.toLocaleString("en")} MB a file, ${this.quotaMb.toLocaleString("en")} MB for the notebook's files together.` }),
      this.uploadList);
  }

  bindDrop(zone) {
    let depth = 0; // dragenter / dragleave pairs of the zone's children
    const carriesFiles = (event) => [...(event.dataTransfer?.types || [])].includes("Files");
    zone.addEventListener("dragenter", (event) => {
      if (!carriesFiles(event)) return;
      event.preventDefault();
      depth += 1;
      zone.classList.add("dragover");
    });
    zone.addEventListener("dragover", (event) => {
      if (!carriesFiles(event)) return;
      event.preventDefault(); // without it the browser opens the dropped file instead
      event.dataTransfer.dropEffect = "copy";
    });
    zone.addEventListener("dragleave", () => {
      depth = Math.max(0, depth - 1);
      if (!depth) zone.classList.remove("dragover");
    });
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      depth = 0;
      zone.classList.remove("dragover");
      this.uploadAll([...(event.dataTransfer?.files || [])]);
    });
  }

  uploadAll(files) {
    this.clearError();
    for (const file of files) this.upload(file, uploadName(this.folder.value, file.name));
  }

  upload(file, name) {
    const upload = new Upload(name);
    this.uploadList.append(upload.element);
    const refusal = this.refusal(file, name);
    if (refusal) return upload.fail(refusal);
    upload.send(this.url, this.csrf, file);
  }

  /** Why `file` is not sent at all, or null: the server would refuse it after the whole upload. */
  refusal(file, name) {
    if (file.size === 0) return `${name} is empty (0 bytes): nothing was sent.`;
    if (file.size > this.limitMb * 1024 * 1024) return `${name} is ${humanSize(file.size)}; a notebook file may be at most ${this.limitMb.toLocaleString("en")} MB: nothing was sent.`;
    return null;
  }

  // --- from the server -------------------------------------------------------------------------
  /** `notebook.files` of notebook_state. */
  render(files) {
    this.files = files;
    this.draw();
  }

  /** A files_updated event (anyone's); `about`: what this page sent, when it answers that. */
  updated(event, about) {
    if (about) {
      this.pending.delete(about.path);
      if (about.action === "delete") this.deleted.add(about.path);
      if (about.action === "rename" && this.renaming?.path === about.path) this.renaming = null;
    }
    this.changed = new Set(event.changed || []);
    this.render(event.files || []);
  }

  /** An error answering this page's delete_file, restore_file or rename_file. */
  refused(message, about) {
    this.pending.delete(about?.path);
    this.draw();
    this.showError(message);
    if (about?.action === "rename" && this.renaming?.path === about.path) this.renaming.input.focus();
  }

  // --- drawing ---------------------------------------------------------------------------------
  draw() {
    const files = this.files || [];
    const present = new Set(files.map((file) => file.path));
    if (this.renaming && !present.has(this.renaming.path)) this.renaming = null; // gone meanwhile
    const typing = this.renaming && document.activeElement === this.renaming.input;
    const total = files.reduce((sum, file) => sum + file.size, 0);
    this.body.replaceChildren(...(files.length
      ? [el("ul.files-list", {}, ...files.map((file) => this.buildItem(file))), el("p.files-usage", { text: `${files.length} ${files.length === 1 ? "file" : "files"}, ${humanSize(total)}` })]
      : [el("p.empty.files-empty", { text: "No files yet." })]));
    if (typing) this.renaming.input.focus();
    for (const path of this.deleted) if (present.has(path)) this.deleted.delete(path); // back
    this.deletedList.replaceChildren(...[...this.deleted].map((path) => this.buildDeleted(path)));
    this.changed.clear();
  }

  buildItem(file) {
    const busy = this.pending.has(file.path);
    const name = this.renaming?.path === file.path
      ? this.buildRename(file.path)
      : el("a.file-download", { href: this.downloadUrl(file.path), download: "", title: `Download ${file.path}` }, file.path);
    const actions = this.canEdit && this.renaming?.path !== file.path
      ? el("span.file-actions", {},
        el("button.link.file-rename", { type: "button", disabled: busy, "aria-label": `Rename ${file.path}`, onclick: () => this.startRename(file.path) }, "Rename"),
        el("button.link.file-delete", { type: "button", disabled: busy, "aria-label": `Delete ${file.path}`, onclick: () => this.remove(file.path) }, "Delete"))
      : null;
    const when = el("time", { datetime: file.at, title: new Date(file.at).toLocaleString(), text: relativeTime(file.at) });
    const meta = el("span.file-meta", {}, `${humanSize(file.size)} · v${file.version} · ${file.by || "someone"} · `, when);
    const item = el("li.file", { dataset: { path: file.path } }, el("span.file-line", {}, name, actions), meta);
    if (this.changed.has(file.path)) item.classList.add("file-changed");
    if (busy) item.classList.add("busy");
    return item;
  }

  buildDeleted(path) {
    const busy = this.pending.get(path) === "restore";
    return el("li.files-deleted", { dataset: { path } },
      el("span", { text: `Deleted ${path} · ` }),
      el("button.link.file-restore", { type: "button", disabled: busy, onclick: () => this.restore(path) }, "Restore"),
      el("button.link.files-deleted-dismiss", { type: "button", "aria-label": `Dismiss (${path} stays deleted)`, onclick: () => { this.deleted.delete(path); this.draw(); } }, "×"));
  }

  downloadUrl(path) {
    return `${this.url}${path.split("/").map(encodeURIComponent).join("/")}`;
  }

  // --- rename, delete, restore -----------------------------------------------------------------
  startRename(path) {
    this.clearError();
    const input = el("input.file-rename-input", { type: "text", value: path, spellcheck: "false", autocomplete: "off", "aria-label": `New name for ${path}` });
    input.addEventListener("keydown", (event) => {
      if (event.key !== "Escape") return;
      event.preventDefault();
      event.stopPropagation();
      this.cancelRename();
    });
    this.renaming = { path, input };
    this.draw();
    input.focus();
    const start = path.lastIndexOf("/") + 1;
    const dot = path.lastIndexOf(".");
    input.setSelectionRange(start, dot > start ? dot : path.length); // the name, not its folder or extension
  }

  buildRename(path) {
    const form = el("form.file-rename-form", { novalidate: true },
      this.renaming.input,
      el("button.file-rename-save", { type: "submit", disabled: this.pending.has(path) }, "Save"),
      el("button.link.file-rename-cancel", { type: "button", onclick: () => this.cancelRename() }, "Cancel"));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.saveRename();
    });
    this.renaming.input.disabled = this.pending.has(path);
    return form;
  }

  saveRename() {
    const { path, input } = this.renaming;
    const newPath = input.value.trim();
    if (!newPath) return this.showError("Type the new name, such as data/sales-2024.csv.");
    if (newPath === path) return this.cancelRename();
    this.clearError();
    this.send({ type: "rename_file", path, newPath }, "rename", path);
  }

  cancelRename() {
    const path = this.renaming?.path;
    this.renaming = null;
    this.clearError();
    this.draw();
    // The focus goes back to where the rename started.
    [...this.body.querySelectorAll(".file")].find((item) => item.dataset.path === path)?.querySelector(".file-rename")?.focus();
  }

  remove(path) {
    this.clearError();
    this.send({ type: "delete_file", path }, "delete", path);
  }

  restore(path) {
    this.clearError();
    this.send({ type: "restore_file", path }, "restore", path);
  }

  send(message, action, path) {
    if (this.request(message, { action, path }) === null) return; // not connected: app.request said so
    this.pending.set(path, action);
    this.draw();
  }

  showError(message) {
    this.error.hidden = false;
    this.error.textContent = message;
  }

  clearError() {
    this.error.hidden = true;
  }
}
