// Completion and inspection from the kernel (docs/protocol.md#completion): a CodeMirror completion
// source that sends `complete` with the cell's text and cursor, a hover tooltip and Shift+Tab that
// send `inspect`. The answers come to this socket alone; Assistant pairs them with their request
// (request ids from connection.js, like every request of the page).
import {
  autocompletion, hoverTooltip, showTooltip, StateField, StateEffect, EditorView, keymap, Prec,
} from "../vendor/codemirror.bundle.js";
import { el } from "./dom.js";
import { newRequestId } from "./connection.js";

const ANSWER_TIMEOUT_MS = 6000; // the kernel answers statically after 5 s
const ANSWERS = new Set(["completions", "inspection"]);
// The kernel's item types, as CodeMirror's icon names.
const ICONS = { variable: "variable", function: "function", class: "class", module: "namespace", keyword: "keyword", builtin: "function", property: "property", type: "type", text: "text" };

/** Sends `complete` / `inspect` for the page and resolves each with its answer (null on an error or none). */
export class Assistant {
  constructor(send) {
    this.send = send;
    this.waiting = new Map(); // requestId -> resolve
  }

  ask(type, cellId, code, cursor) {
    const requestId = newRequestId();
    if (!this.send({ type, cellId, code, cursor, requestId })) return Promise.resolve(null);
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.settle(requestId, null), ANSWER_TIMEOUT_MS);
      this.waiting.set(requestId, (answer) => (clearTimeout(timer), resolve(answer)));
    });
  }

  /** A reply of this socket: true when it answered one of our requests (an error included: no toast). */
  answer(reply) {
    if (!this.waiting.has(reply.requestId) || !(ANSWERS.has(reply.type) || reply.type === "error")) return false;
    this.settle(reply.requestId, reply.type === "error" ? null : reply);
    return true;
  }

  settle(requestId, answer) {
    const resolve = this.waiting.get(requestId);
    this.waiting.delete(requestId);
    resolve?.(answer);
  }
}

/** The signature and docstring as a tooltip's DOM (text only). */
function inspectionDom(answer) {
  return el("div.cm-inspection", {},
    answer.signature ? el("code.cm-inspection-signature", { text: answer.signature }) : null,
    answer.doc ? el("pre.cm-inspection-doc", { text: answer.doc }) : null);
}

const style = EditorView.baseTheme({
  ".cm-inspection": { maxWidth: "640px", maxHeight: "320px", overflow: "auto", padding: "6px 8px", fontSize: "12px" },
  ".cm-inspection-signature": { display: "block", fontWeight: "600", whiteSpace: "pre-wrap" },
  ".cm-inspection-doc": { margin: "6px 0 0", whiteSpace: "pre-wrap", fontFamily: "inherit" },
});

const setInspection = StateEffect.define();
// The tooltip Shift+Tab opened: gone with the next edit, cursor move or Escape.
const inspectionField = StateField.define({
  create: () => null,
  update(value, tr) {
    for (const effect of tr.effects) if (effect.is(setInspection)) return effect.value;
    return tr.docChanged || tr.selection ? null : value;
  },
  provide: (field) => showTooltip.from(field),
});

/**
 * The editor extensions for one cell. `ask(type, code, cursor)` resolves with the kernel's answer.
 * Completion opens after a name or a dot while typing, and on Ctrl+Space (basicSetup's keymap);
 * inspection on hover over a name and on Shift+Tab (Python cells).
 */
export function assistance(cellType, ask) {
  if (cellType === "markdown") return [];
  const source = async (context) => {
    const before = context.matchBefore(/[\w\u00c0-\uffff]*$/);
    const afterDot = cellType === "python" && context.matchBefore(/\.[\w\u00c0-\uffff]*$/);
    if (!context.explicit && !afterDot && (!before || before.from === before.to)) return null;
    const answer = await ask("complete", context.state.doc.toString(), context.pos);
    if (!answer || context.aborted) return null;
    return {
      from: answer.from,
      to: answer.to,
      options: answer.items.map((item) => ({ label: item.label, type: ICONS[item.type] || "variable", detail: item.detail })),
      // Typing on narrows these items without asking again; an empty or static answer is asked again.
      validFor: answer.items.length && !answer.busy ? /^[\w\u00c0-\uffff]*$/ : undefined,
    };
  };
  const extensions = [autocompletion({ override: [source] })];
  if (cellType !== "python") return extensions;
  const inspectAt = async (state, cursor) => {
    const answer = await ask("inspect", state.doc.toString(), cursor);
    return answer && (answer.signature || answer.doc) ? answer : null;
  };
  const hover = hoverTooltip(async (view, pos) => {
    const word = view.state.wordAt(pos);
    if (!word) return null;
    const answer = await inspectAt(view.state, word.to);
    return answer && { pos: word.from, end: word.to, above: true, create: () => ({ dom: inspectionDom(answer) }) };
  }, { hoverTime: 400 });
  const shiftTab = async (view) => {
    const { head } = view.state.selection.main;
    const answer = await inspectAt(view.state, head);
    if (!answer || view.state.selection.main.head !== head) return;
    view.dispatch({ effects: setInspection.of({ pos: head, above: true, create: () => ({ dom: inspectionDom(answer) }) }) });
  };
  const keys = Prec.high(keymap.of([
    { key: "Shift-Tab", run: (view) => (shiftTab(view), true) },
    { key: "Escape", run: (view) => (view.state.field(inspectionField) ? (view.dispatch({ effects: setInspection.of(null) }), true) : false) },
  ]));
  return [...extensions, style, inspectionField, hover, keys];
}
