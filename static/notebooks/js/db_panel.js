// The database connection card (#db-settings): the masked connection everyone sees, and for
// editors a field to change it with update_db_connection. The password never comes back from the server.
import { el } from "./dom.js";

const NONE = "none — SQL cells run on the embedded engine";

export class DbPanel {
  constructor(section, { canEdit, onSave }) {
    this.section = section;
    this.display = section.querySelector(".db-display") || section.appendChild(el("p.db-display"));
    if (!canEdit) return;
    this.input = el("input.db-input", {
      type: "text", name: "connectionString", autocomplete: "off", spellcheck: "false",
      placeholder: "postgresql://user:password@host:5432/db", "aria-label": "New connection string",
    });
    this.error = el("p.error.field-error.db-error", { role: "alert", hidden: true });
    this.note = el("p.db-note", { hidden: true });
    const form = el("form.db-form", { novalidate: true },
      el("label", {}, "Change it (empty = none)", this.input),
      this.error,
      el("button.db-save", { type: "submit" }, "Save"),
      this.note,
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.clearMessages();
      if (!onSave(this.input.value.trim())) this.showError("Not connected to the server; try again when the page is live.");
    });
    section.append(form);
  }

  /** `{connected, display}` from notebook_state or db_connection_updated. */
  render({ connected, display }) {
    if (connected) this.display.replaceChildren(el("code", { text: display }));
    else this.display.textContent = NONE;
  }

  saved() {
    if (!this.input) return;
    this.input.value = "";
    this.note.hidden = false;
    this.note.textContent = "Saved.";
  }

  showError(message) {
    if (!this.error) return;
    this.error.hidden = false;
    this.error.textContent = message;
  }

  clearMessages() {
    this.error.hidden = true;
    this.note.hidden = true;
  }
}
