// The notebook's secrets (#secrets; docs/protocol.md#secrets): their names, who set each and when,
// for everyone; for editors a form to add or replace one (set_secret) and a button to delete each
// (delete_secret). Values are write-only: the field is cleared once the server has it, and
// nothing the server sends carries a value back. The server checks names and values.
import { el } from "./dom.js";

const NAME = /^[A-Z_][A-Z0-9_]*$/;

function when(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? "" : date.toLocaleString();
}

export class SecretsPanel {
  /**
   * @param {HTMLElement} section #secrets
   * @param {object} options {canEdit, onSet(name, value), onDelete(name)}: each returns a requestId, or null when not sent
   */
  constructor(section, { canEdit, onSet, onDelete }) {
    this.section = section;
    this.canEdit = canEdit;
    this.onDelete = onDelete;
    this.body = section.querySelector(".secrets-body") || section.appendChild(el("div.secrets-body"));
    if (!canEdit) return;
    this.nameInput = el("input.secret-name-input", {
      type: "text", name: "secret-name", autocomplete: "off", spellcheck: "false", maxlength: "64",
      placeholder: "OPENAI_API_KEY", "aria-label": "Secret name",
    });
    // A password field: the browser neither shows nor offers to remember it.
    this.valueInput = el("input.secret-value-input", {
      type: "password", name: "secret-value", autocomplete: "new-password", spellcheck: "false",
      placeholder: "value", "aria-label": "Secret value",
    });
    this.error = el("p.error.field-error.secrets-error", { role: "alert", hidden: true });
    this.note = el("p.secrets-note", { hidden: true });
    const form = el("form.secrets-form", { novalidate: true },
      el("label", {}, "Name", this.nameInput),
      el("label", {}, "Value (write-only: nobody sees it again)", this.valueInput),
      this.error,
      el("button.secrets-save", { type: "submit" }, "Save secret"),
      this.note,
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.clearMessages();
      const name = this.nameInput.value.trim();
      if (!NAME.test(name)) return this.showError("A name is an environment variable name: capital letters, digits and _, not starting with a digit (OPENAI_API_KEY).");
      if (!this.valueInput.value) return this.showError("Give the secret a value.");
      if (!onSet(name, this.valueInput.value)) this.showError("Not connected to the server; try again when the page is live.");
    });
    section.append(form);
  }

  /** `[{name, by, at}]` from notebook_state or secrets_updated: names only, never values. */
  render(secrets) {
    if (!secrets.length) {
      this.body.replaceChildren(el("p.empty.secrets-empty", { text: "None. Cells read a secret with os.environ[\"NAME\"]." }));
      return;
    }
    const items = secrets.map((secret) => {
      const item = el("li.secret", {},
        el("code.secret-name", { text: secret.name }),
        el("span.secret-meta", { text: ` set by ${secret.by || "someone"}, ${when(secret.at)}` }),
      );
      if (this.canEdit) {
        const replace = el("button.secret-replace", { type: "button", title: `Give ${secret.name} a new value` }, "Replace");
        replace.addEventListener("click", () => {
          this.nameInput.value = secret.name;
          this.valueInput.value = "";
          this.valueInput.focus();
        });
        const remove = el("button.secret-delete", { type: "button", title: `Delete ${secret.name}` }, "Delete");
        remove.addEventListener("click", () => {
          if (!window.confirm(`Delete the secret ${secret.name}? Its value cannot be recovered, and the kernel restarts.`)) return;
          this.clearMessages();
          if (!this.onDelete(secret.name)) this.showError("Not connected to the server; try again when the page is live.");
        });
        item.append(replace, remove);
      }
      return item;
    });
    this.body.replaceChildren(el("ul.secrets-list", {}, ...items));
  }

  /** The server has this page's secret: the value leaves the page. */
  saved() {
    if (!this.valueInput) return;
    this.nameInput.value = "";
    this.valueInput.value = "";
    this.note.hidden = false;
    this.note.textContent = "Saved. The kernel restarts with it; run the cells that use it.";
  }

  showError(message) {
    if (!this.error) return;
    this.error.hidden = false;
    this.error.textContent = message;
  }

  clearMessages() {
    if (!this.error) return;
    this.error.hidden = true;
    this.note.hidden = true;
  }
}
