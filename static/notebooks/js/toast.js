// Transient messages in a corner of the page (never alert()): errors with no better place to show
// them and notices (a kernel restart, a saved version), with an optional action button ("Cell
// deleted · Undo").
import { el } from "./dom.js";

let region = null;

function container() {
  if (!region) {
    region = el("div.toasts", { id: "toasts", role: "status", "aria-live": "polite" });
    document.body.append(region);
  }
  return region;
}

/** `action`: {label, className, onclick} adds a button ("Cell deleted · Undo"). */
export function toast(message, { kind = "error", timeout = 6000, action = null } = {}) {
  const item = el(`div.toast.toast-${kind}`, {}, el("span", { text: message }));
  if (action) item.append(el(`button.link.toast-action${action.className ? `.${action.className}` : ""}`, { type: "button", onclick: action.onclick }, action.label));
  const close = el("button.link.toast-close", { type: "button", "aria-label": "Dismiss", onclick: () => item.remove() }, "×");
  item.append(close);
  container().append(item);
  if (timeout) setTimeout(() => item.remove(), timeout);
  return item;
}
