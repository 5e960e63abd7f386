// The notebook's own packages (#packages; docs/packages.md): its requirements with the versions
// they locked to, the progress of a change (everyone on the notebook sees it), and for editors a
// field to add one and a button to remove each, every change sending the whole new list
// (set_packages). Also the offer, in a cell that failed to import a module, to add the package
// that provides it: shown here, sent only after the user confirms the exact name.
// It validates nothing but emptiness: the server checks requirements (notebooks_app/packages.py).
import { el } from "./dom.js";

const PHASES = { resolving: "resolving…", downloading: "downloading…", installing: "installing…", restarting: "restarting the kernel…" };
const OFF = "Notebook packages are turned off on this server.";
const MISSING_MODULE = /No module named '([A-Za-z_][\w.]*)'/;

/** The PEP 503 normalised name a requirement is about ("Scikit_Learn>=1" -> "scikit-learn"). */
export function requirementName(text) {
  const match = /^\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)/.exec(text || "");
  return match ? match[1].toLowerCase().replace(/[-_.]+/g, "-") : "";
}

/** notebooks_app.packages.distribution_for_module: the table's entry for the longest dotted
 * prefix of `module`, else its top-level name with `_` as `-`. */
export function distributionForModule(module, table) {
  const parts = module.split(".");
  for (let end = parts.length; end > 0; end--) {
    const found = table[parts.slice(0, end).join(".")];
    if (found) return found;
  }
  return parts[0].replaceAll("_", "-");
}

/** "adding seaborn", "removing scipy", "adding a and removing b", "changing pandas>=2". */
function describeChange(before, after) {
  const names = (list) => new Set(list.map(requirementName));
  const [had, wants] = [names(before), names(after)];
  const added = after.filter((item) => !had.has(requirementName(item)));
  const removed = before.filter((item) => !wants.has(requirementName(item)));
  const changed = after.filter((item) => had.has(requirementName(item)) && !before.includes(item));
  const parts = [];
  if (added.length) parts.push(`adding ${added.join(", ")}`);
  if (removed.length) parts.push(`removing ${removed.join(", ")}`);
  if (changed.length) parts.push(`changing ${changed.join(", ")}`);
  return parts.length ? parts.join(" and ") : "rebuilding the packages";
}

function readTable(id) {
  const node = document.getElementById(id);
  try {
    return node ? JSON.parse(node.textContent) : {};
  } catch {
    return {}; // no table: every module is offered under its own name
  }
}

export class PackagesPanel {
  /**
   * @param {HTMLElement} section #packages
   * @param {object} options {canEdit, onChange(requirements) -> requestId or null when not sent}
   */
  constructor(section, { canEdit, onChange }) {
    this.section = section;
    this.canEdit = canEdit;
    this.onChange = onChange;
    this.user = section.dataset.user || "";
    this.enabled = section.dataset.enabled !== "false";
    this.requirements = [...section.querySelectorAll(".package-requirement")].map((node) => node.textContent);
    this.locked = [];
    this.progress = null; // {state, message, requirements, by} of the change under way
    this.pending = null; // requestId of this page's change, until the server answers it
    this.statusKind = null; // what the status line shows: "progress", "done" (showStatus)
    this.distributions = readTable("import-distributions");
    this.body = section.querySelector(".packages-body") || section.appendChild(el("div.packages-body"));
    this.status = el("p.packages-status", { role: "status", "aria-live": "polite", hidden: true });
    this.detail = el("p.packages-detail", { hidden: true });
    this.error = el("p.error.packages-error", { role: "alert", hidden: true });
    section.append(this.status, this.detail, this.error);
    if (canEdit) section.append(this.buildForm());
  }

  buildForm() {
    this.input = el("input.packages-input", {
      type: "text", name: "requirement", autocomplete: "off", spellcheck: "false",
      placeholder: "seaborn or scipy>=1.11", "aria-label": "Package to add",
    });
    this.addButton = el("button.packages-add", { type: "submit" }, "Add");
    this.form = el("form.packages-form", { novalidate: true },
      el("label", {}, "Add a package (a name and versions, as pip takes them)", el("span.packages-row", {}, this.input, this.addButton)));
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      const requirement = this.input.value.trim();
      if (!requirement) return this.showError("Type a package name first, e.g. seaborn or scipy>=1.11.");
      this.send([...this.requirements, requirement]);
    });
    return this.form;
  }

  get busy() {
    return Boolean(this.pending || this.progress);
  }

  /** Send the whole new list; false when it could not be sent (app.request told the user why). */
  send(requirements) {
    this.clearMessages();
    const requestId = this.onChange(requirements);
    if (requestId === null) return false;
    this.pending = requestId;
    this.draw();
    return true;
  }

  // --- from the server -------------------------------------------------------------------------
  /** `notebook.packages` of notebook_state. */
  render({ enabled = true, requirements = [], locked = [], progress = null } = {}) {
    Object.assign(this, { enabled, requirements, locked, progress, pending: null });
    this.draw();
  }

  /** A packages_progress event; `ours`: it answers this page's set_packages. */
  progressed(event, ours) {
    if (event.state === "error" && event.requestId) {
      // A refusal (another change is under way, packages are off): the sender's business only,
      // and whatever change is under way goes on.
      if (!ours) return;
      this.pending = null;
      this.showError(event.message);
    } else if (event.state === "error") {
      this.progress = null;
      if (ours || event.by === this.user) this.pending = null;
      const who = event.by && event.by !== this.user ? `${event.by}'s change of the packages was not made: ` : "";
      const reason = /[.!?]$/.test(event.message) ? event.message : `${event.message}.`;
      this.showError(`${who}${reason} Nothing was changed.`);
    } else {
      if (ours) this.pending = null;
      this.progress = { state: event.state, message: event.message, requirements: event.requirements || [], by: event.by ?? null };
      this.error.hidden = true;
    }
    this.draw();
  }

  /** A packages_updated event: saved, and the kernel runs on it. */
  updated(event, ours) {
    Object.assign(this, { requirements: event.requirements || [], locked: event.locked || [], progress: null });
    if (ours) {
      this.pending = null;
      if (this.input) this.input.value = "";
    }
    this.draw();
    this.error.hidden = true;
    this.showStatus(ours || event.by === this.user || !event.by ? "Installed." : `Installed (changed by ${event.by}).`, "done");
  }

  /** An error answering this page's set_packages (invalid_field, forbidden, unavailable). */
  refused(message) {
    this.pending = null;
    this.showError(message);
    this.draw();
  }

  // --- drawing ---------------------------------------------------------------------------------
  draw() {
    const versions = new Map(this.locked.map((item) => [requirementName(item.name), item.version]));
    const listed = new Set(this.requirements.map(requirementName));
    const items = this.requirements.map((requirement) => this.buildItem(requirement, versions.get(requirementName(requirement))));
    const others = this.locked.filter((item) => !listed.has(requirementName(item.name)));
    this.body.replaceChildren(...[
      this.enabled ? null : el("p.packages-off", { text: OFF }),
      items.length ? el("ul.packages-list", {}, ...items) : el("p.empty.packages-empty", { text: "None: the notebook runs on the server's packages." }),
      others.length ? el("p.packages-also", { text: `Also installed: ${others.map((item) => `${item.name} ${item.version}`).join(", ")}` }) : null,
    ].filter(Boolean));
    if (this.form) this.form.hidden = !this.enabled;
    if (this.input) this.input.disabled = this.addButton.disabled = this.busy;
    this.drawProgress();
    this.refreshPrompts();
  }

  buildItem(requirement, version) {
    const label = el("span.package-label", {}, el("code.package-requirement", { text: requirement }), version ? ` — ${version}` : null);
    const remove = this.canEdit && this.enabled
      ? el("button.link.package-remove", {
        type: "button", title: `Remove ${requirement} from this notebook's packages`, "aria-label": `Remove ${requirement}`, disabled: this.busy,
        onclick: () => this.send(this.requirements.filter((item) => item !== requirement)),
      }, "Remove")
      : null;
    return el("li.package", { dataset: { name: requirementName(requirement) } }, label, remove);
  }

  drawProgress() {
    this.section.classList.toggle("busy", this.busy);
    this.detail.hidden = !this.progress;
    if (this.progress) {
      const { state, message, requirements, by } = this.progress;
      const phase = PHASES[state] || `${state}…`;
      const what = by ? `${by === this.user ? "You are" : `${by} is`} ${describeChange(this.requirements, requirements)}` : "Preparing this notebook's packages";
      this.showStatus(`${what}: ${phase}`, "progress");
      this.detail.textContent = message || "";
    } else if (this.pending) {
      this.showStatus("Sending the change…", "progress");
    } else if (this.statusKind === "progress") {
      this.status.hidden = true; // the change ended: updated() or an error says how
    }
  }

  /** `kind`: "progress" while a change is under way (cleared when none is), "done" after one. */
  showStatus(text, kind) {
    this.statusKind = kind;
    this.status.hidden = false;
    this.status.textContent = text;
  }

  showError(message) {
    this.error.hidden = false;
    this.error.textContent = message;
    this.status.hidden = true;
  }

  clearMessages() {
    this.error.hidden = true;
    this.status.hidden = true;
  }

  // --- the offer in a cell that failed to import a module --------------------------------------
  /** For a cell's error: the offer to add the missing module's package, or null. */
  prompt(error) {
    if (!this.canEdit || error?.ename !== "ModuleNotFoundError") return null;
    const module = MISSING_MODULE.exec(error.evalue || "")?.[1];
    if (!module) return null;
    const node = el("div.package-prompt", { dataset: { distribution: distributionForModule(module, this.distributions) } });
    this.offer(node);
    return node;
  }

  /** `failed`: a change sent from here ended without adding the package (the panel says why). */
  offer(node, { failed = false } = {}) {
    const { distribution } = node.dataset;
    node.dataset.mode = "offer";
    node.replaceChildren(
      el("button.package-prompt-offer", { type: "button", onclick: () => this.confirm(node) }, `Add ${distribution} to this notebook's packages?`),
      ...(failed ? [el("span.error.package-prompt-error", { text: " Not added: the Packages panel says why." })] : []));
    this.refreshPrompt(node);
  }

  /** Nothing is sent until the user clicks Add here, with the name they see (and may correct). */
  confirm(node) {
    node.dataset.mode = "confirm";
    const name = el("input.package-prompt-name", { type: "text", value: node.dataset.distribution, spellcheck: "false", autocomplete: "off", "aria-label": "Package to install" });
    const note = el("span.error.package-prompt-error", { role: "alert", hidden: true });
    const form = el("form.package-prompt-confirm-form", { novalidate: true },
      el("span", { text: "Install for everyone on this notebook (the kernel restarts):" }),
      name,
      el("button.package-prompt-confirm", { type: "submit" }, "Add"),
      el("button.package-prompt-cancel", { type: "button", onclick: () => this.offer(node) }, "Cancel"),
      note);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const requirement = name.value.trim();
      if (!requirement) {
        note.hidden = false;
        note.textContent = "Type the package's name.";
        return;
      }
      if (!this.send([...this.requirements, requirement])) return;
      node.dataset.mode = "sent";
      node.replaceChildren(el("span.package-prompt-sent", { text: `Adding ${requirement}: the Packages panel shows how it goes.` }));
    });
    node.replaceChildren(form);
    this.refreshPrompt(node);
    name.focus();
  }

  /** Hidden once the package is listed; disabled while a change is under way; back to the offer
   * when a change it sent ended without adding it. */
  refreshPrompt(node) {
    const listed = new Set(this.requirements.map(requirementName));
    node.hidden = !this.enabled || listed.has(requirementName(node.dataset.distribution));
    if (node.dataset.mode === "sent" && !this.busy && !node.hidden) return this.offer(node, { failed: true });
    for (const control of node.querySelectorAll("button, input")) {
      if (!control.classList.contains("package-prompt-cancel")) control.disabled = this.busy;
    }
  }

  refreshPrompts() {
    for (const node of document.querySelectorAll(".package-prompt")) this.refreshPrompt(node);
  }
}
