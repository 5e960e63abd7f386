// Entry point of the vendored editor bundle (static/notebooks/vendor/codemirror.bundle.js).
// It re-exports only what static/notebooks/js/editor.js needs; rebuild with scripts/build_editor.sh.
export { basicSetup } from "codemirror";
export { EditorView, keymap } from "@codemirror/view";
export { EditorState, Compartment, Prec } from "@codemirror/state";
export { closeCompletion, completionStatus } from "@codemirror/autocomplete";
// Completion and inspection from the kernel (static/notebooks/js/completion.js).
export { autocompletion, startCompletion } from "@codemirror/autocomplete";
export { hoverTooltip, showTooltip } from "@codemirror/view";
export { StateField, StateEffect } from "@codemirror/state";
export { indentUnit } from "@codemirror/language";
export { python } from "@codemirror/lang-python";
export { sql, PostgreSQL } from "@codemirror/lang-sql";
// Shared text (docs/protocol.md#shared-text): Yjs documents bound to the editor, with remote cursors.
export * as Y from "yjs";
export { yCollab, YSyncConfig } from "y-codemirror.next";
