// Markdown cells (docs/protocol.md, "Markdown cells"): the rendered prose with its math typeset
// by KaTeX, shown instead of the editor until the user edits the cell (double-click, or Enter on
// the focused cell); Shift+Enter or Ctrl+Enter in the editor runs the cell, which renders it.
import { katex } from "../vendor/katex.bundle.js";
import { el } from "./dom.js";

export const MARKDOWN_MIME = "text/vnd.notebook.markdown+html";

/** One output item, like outputs.js renderOutput: `{node}`. */
export function renderMarkdown(html) {
  const node = el("div.output.output-markdown");
  // The one place the page inserts HTML that el() did not build: the kernel worker rendered it
  // from markdown with raw HTML off and sanitized it with nh3's allow-list (no script, no event
  // handler, no javascript: URL, no style but text-align), and every {field} value comes out as
  // escaped text (docs/protocol.md, "Markdown cells"; docs/frontend.md).
  node.innerHTML = String(html ?? "");
  typesetMath(node);
  return { node };
}

/** `<span class="math inline">` / `<div class="math block">` hold TeX as text: typeset them. */
function typesetMath(root) {
  for (const math of root.querySelectorAll(".math.inline, .math.block")) {
    const tex = math.textContent;
    try {
      katex.render(tex, math, { throwOnError: false, displayMode: math.classList.contains("block") });
    } catch (error) {
      math.textContent = tex; // throwOnError:false shows TeX errors in red; anything else: the source
      console.warn("notebook: could not typeset", error);
    }
  }
}

/**
 * Edit / rendered mode of one markdown cell's view (its `.cell-editor` and `.cell-outputs`):
 * `.editing` on the cell shows the editor and hides the rendered prose (notebook.css).
 */
export class MarkdownMode {
  constructor(view, { canEdit }) {
    this.view = view;
    this.element = view.element;
    this.canEdit = canEdit;
    this.element.classList.add("markdown-cell");
    if (!canEdit) return;
    this.element.tabIndex = -1;
    view.outputs.title = "Double-click to edit";
    view.outputs.addEventListener("dblclick", () => this.edit());
    this.element.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.ctrlKey && !event.metaKey && !this.editing && event.target === this.element) {
        event.preventDefault();
        this.edit();
      }
    });
    // Capture: before the editor's own keymap runs the cell (which renders it).
    view.editorHost.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.shiftKey || event.ctrlKey || event.metaKey)) this.rendered();
    }, true);
  }

  get editing() {
    return this.element.classList.contains("editing");
  }

  /** A markdown cell with nothing rendered yet (new, or never run) shows its editor. */
  update(outputs) {
    if (!this.canEdit) return;
    if (!outputs.length && !this.view.editor.code.trim()) this.element.classList.add("editing");
  }

  edit() {
    this.element.classList.add("editing");
    this.view.editor.focus("end");
  }

  rendered() {
    this.element.classList.remove("editing");
    this.element.focus({ preventScroll: true });
  }
}
