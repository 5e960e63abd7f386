// One CodeMirror 6 editor per cell: Python or SQL highlighting, line numbers, bracket matching,
// its document bound to the cell's shared text (shared_text.js), which sends what is typed.
// It knows nothing of the protocol: the cell view gives it callbacks for the run and move keys
// and for completion. LazyEditor stands in for it with a plain <pre> until the cell is near the
// viewport or focused, so a notebook of thousands of cells does not build thousands of editors.
import {
  basicSetup, EditorView, EditorState, Prec, keymap, closeCompletion, completionStatus, indentUnit, python, sql, PostgreSQL,
} from "../vendor/codemirror.bundle.js";
import { el } from "./dom.js";
import { collab } from "./shared_text.js";
import { assistance } from "./completion.js";
import { themeSyntax } from "./theme.js";

// Colours are notebook.css's variables, so the editor follows the page's light or dark theme
// without being rebuilt (docs/frontend.md, "Themes"); syntax colours: themeSyntax().
const theme = EditorView.theme({
  "&": { fontSize: "13px", color: "var(--fg)" },
  "&.cm-focused": { outline: "none" },
  ".cm-scroller": { fontFamily: "ui-monospace, SFMono-Regular, Menlo, monospace", lineHeight: "1.45" },
  ".cm-gutters": { background: "var(--gutter-bg)", borderRight: "1px solid var(--line)", color: "var(--gutter-fg)" },
  ".cm-content": { padding: "6px 0", caretColor: "var(--cm-cursor)" },
  ".cm-cursor, .cm-dropCursor": { borderLeftColor: "var(--cm-cursor)" },
  ".cm-activeLine, .cm-activeLineGutter": { backgroundColor: "var(--cm-active-line)" },
  "&.cm-focused > .cm-scroller > .cm-selectionLayer .cm-selectionBackground, .cm-selectionBackground, .cm-content ::selection": { backgroundColor: "var(--cm-selection)" },
  ".cm-tooltip, .cm-panels": { backgroundColor: "var(--card)", color: "var(--fg)", borderColor: "var(--line)" },
  ".cm-tooltip-autocomplete ul li[aria-selected]": { backgroundColor: "var(--accent)", color: "var(--accent-fg)" },
});

function language(cellType) {
  return cellType === "sql" ? sql({ dialect: PostgreSQL }) : python();
}

export class CellEditor {
  /**
   * @param {HTMLElement} parent
   * @param {{code: string, cellType: string, readOnly: boolean,
   *          onRun: (advance: boolean) => void, onNavigate: (direction: -1|1) => boolean,
   *          shared?: {text: SharedText, awareness: object},
   *          ask?: (type: "complete"|"inspect", code: string, cursor: number) => Promise<object|null>}} options
   */
  constructor(parent, options) {
    this.options = options;
    const keys = Prec.highest(keymap.of([
      { key: "Shift-Enter", run: (view) => (closeCompletion(view), options.onRun(true), true) },
      { key: "Mod-Enter", run: (view) => (closeCompletion(view), options.onRun(false), true) },
      { key: "ArrowUp", run: (view) => this.atEdge(view, -1) && options.onNavigate(-1) },
      { key: "ArrowDown", run: (view) => this.atEdge(view, 1) && options.onNavigate(1) },
    ]));
    this.keys = keys;
    // A shared text (shared_text.js) is the editor's document: it starts from it and follows it.
    const doc = options.shared ? options.shared.text.ensure().text : options.code;
    this.view = new EditorView({ parent, state: this.createState(doc) });
    themeSyntax();
    this.unbind = options.shared?.text.on("rebind", () => this.rebind());
  }

  createState(doc, selection) {
    const { options } = this;
    this.undoManager?.destroy();
    const shared = options.shared ? collab(options.shared) : null;
    this.undoManager = shared?.undoManager;
    return EditorState.create({
      doc,
      selection,
      extensions: [
        this.keys,
        basicSetup,
        indentUnit.of("    "),
        language(options.cellType),
        theme,
        EditorState.readOnly.of(options.readOnly),
        EditorView.editable.of(!options.readOnly),
        EditorView.contentAttributes.of({ "aria-label": `${options.cellType === "sql" ? "SQL" : "Python"} cell code` }),
        shared ? shared.extension : [],
        // Completion and inspection from the kernel, for people who may edit (completion.js).
        options.ask && !options.readOnly ? assistance(options.cellType, options.ask) : [],
      ],
    });
  }

  /** The shared text has a new document (text_reset): a new state bound to it, cursor kept near. */
  rebind() {
    const { view } = this;
    const text = this.options.shared.text.text;
    const head = Math.min(view.state.selection.main.head, text.length);
    const focused = view.hasFocus;
    view.setState(this.createState(text, { anchor: head }));
    if (focused) view.focus();
  }

  atEdge(view, direction) {
    if (completionStatus(view.state) === "active") return false;
    const { main } = view.state.selection;
    if (!main.empty) return false;
    const line = view.state.doc.lineAt(main.head);
    return direction < 0 ? line.number === 1 : line.number === view.state.doc.lines;
  }

  get code() {
    return this.view.state.doc.toString();
  }

  /** Focus, with the cursor at the start ("start") or the end ("end") of the code. */
  focus(where) {
    this.view.focus();
    this.view.dispatch({ selection: { anchor: where === "end" ? this.view.state.doc.length : 0 } });
  }

  destroy() {
    this.unbind?.();
    this.undoManager?.destroy();
    this.view.destroy();
  }
}

/**
 * The cell's code as a read-only <pre> until `materialize()` (the cell came near the viewport)
 * or `focus()` (the user clicked, tabbed or navigated to it) makes a CellEditor of it;
 * `release()` (far from the viewport, not focused) goes back to the <pre>, keeping the text.
 * Same interface as CellEditor: `code`, `focus`, `destroy`.
 */
export class LazyEditor {
  constructor(parent, options) {
    this.parent = parent;
    this.options = options;
    this.text = options.shared ? options.shared.text.text : options.code;
    this.editor = null;
    // The shared text changes while the cell shows its <pre>: the <pre> follows it.
    this.unfollow = options.shared?.text.on("text", (shared) => this.editor || this.show(shared.text));
    this.preview = el("pre.cell-code-preview", {
      tabindex: 0, text: this.text, "aria-label": `${options.cellType === "sql" ? "SQL" : "Python"} cell code`,
      onfocus: () => this.focus("start"),
      onmousedown: (event) => this.clicked(event),
    });
    parent.append(this.preview);
  }

  get code() {
    return this.editor ? this.editor.code : this.text;
  }

  /** The <pre>'s text (an editor, once made, follows the shared text itself). */
  show(code) {
    if (code === this.text) return;
    this.text = code;
    this.preview.textContent = code;
  }

  materialize() {
    if (!this.editor) {
      this.editor = new CellEditor(this.parent, { ...this.options, code: this.text });
      this.preview.remove();
    }
    return this.editor;
  }

  /** Back to the <pre> (an editor holding the focus stays: the user is in it). */
  release() {
    if (!this.editor || this.editor.view.hasFocus) return;
    this.text = this.editor.code;
    this.editor.destroy();
    this.editor = null;
    this.preview.textContent = this.text;
    this.parent.append(this.preview);
  }

  focus(where) {
    this.materialize().focus(where);
  }

  /** A click on the <pre> lands in the editor that replaces it, where it was aimed. */
  clicked(event) {
    if (event.button !== 0) return;
    event.preventDefault();
    const { view } = this.materialize();
    const anchor = view.posAtCoords({ x: event.clientX, y: event.clientY }) ?? view.state.doc.length;
    view.focus();
    view.dispatch({ selection: { anchor } });
  }

  destroy() {
    this.unfollow?.();
    this.editor?.destroy();
  }
}
