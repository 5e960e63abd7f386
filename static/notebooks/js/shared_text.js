// Each cell's code as a shared text (docs/protocol.md, "Shared text"): a Yjs document per cell,
// built from the cell's `ydoc` / `ygen` the first time something needs it (an editor, an update
// from the server, a local edit), so that a notebook of thousands of cells decodes only those.
// It applies the server's text_update / text_reset and hands local changes to `onLocal`; it knows
// nothing of the socket or the DOM (editors bind to it with `collab()`).
import { EditorView, Prec, keymap, Y, yCollab } from "../vendor/codemirror.bundle.js";

export const REMOTE = Symbol("remote"); // origin of every change that came from the server
const LOCAL = Symbol("local"); // origin of a change made by the page itself, not in an editor

export function fromBase64(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

export function toBase64(bytes) {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

export class SharedText {
  /**
   * @param {{id: string, code: string, ydoc: string, ygen: number}} cell  as the protocol sends it
   * @param {(text: SharedText, update: Uint8Array) => void} onLocal  a change made on this page
   */
  constructor(cell, onLocal) {
    this.cellId = cell.id;
    this.onLocal = onLocal;
    this.doc = null;
    this.ytext = null;
    this.source = { ydoc: cell.ydoc, code: cell.code }; // what the doc is built from, until it is
    this.generation = cell.ygen;
    this.touched = false; // changed here since the last notebook_state: merge() sends the difference
    this.listeners = { text: new Set(), rebind: new Set() };
  }

  /** The current text (the cell's `code` until the document is built). */
  get text() {
    return this.doc ? this.ytext.toString() : this.source.code;
  }

  /** `event` is "text" (the text changed) or "rebind" (a new document: editors bind to it again). */
  on(event, listener) {
    this.listeners[event].add(listener);
    return () => this.listeners[event].delete(listener);
  }

  emit(event) {
    for (const listener of this.listeners[event]) listener(this);
  }

  /** The document, built now if it was not yet. */
  ensure() {
    if (!this.doc) this.build(this.source.ydoc, this.generation);
    return this;
  }

  build(ydoc, generation) {
    this.doc?.destroy();
    const doc = new Y.Doc();
    if (ydoc) Y.applyUpdate(doc, fromBase64(ydoc), REMOTE);
    this.doc = doc;
    this.ytext = doc.getText("code");
    this.generation = generation;
    this.source = null;
    doc.on("update", (update, origin) => {
      if (origin === REMOTE) return;
      this.touched = true;
      this.onLocal(this, update);
    });
    this.ytext.observe(() => this.emit("text"));
  }

  /** A text_update event (everyone's, ours included: applying twice changes nothing). */
  applyRemote(update, generation) {
    if (generation !== this.generation) return; // of another generation: its text_reset follows or came
    this.ensure();
    Y.applyUpdate(this.doc, fromBase64(update), REMOTE);
  }

  /** A text_reset: the server's document replaces ours. */
  reset(ydoc, generation) {
    if (!this.doc) {
      this.generation = generation;
      this.source.ydoc = ydoc;
      this.build(ydoc, generation); // its text is not known until it is decoded
    } else {
      this.build(ydoc, generation);
      this.emit("rebind");
    }
    this.emit("text");
  }

  /**
   * A fresh notebook_state's copy of the cell (after a reconnect or a resync). Of the same
   * generation it is merged into ours, and what the server lacks (typed while away) is returned
   * as one update to send; of another generation it replaces ours.
   */
  merge(cell) {
    if (!this.doc) {
      this.source = { ydoc: cell.ydoc, code: cell.code };
      this.generation = cell.ygen;
      this.emit("text");
      return null;
    }
    if (cell.ygen !== this.generation) {
      this.reset(cell.ydoc, cell.ygen);
      return null;
    }
    const server = fromBase64(cell.ydoc);
    Y.applyUpdate(this.doc, server, REMOTE);
    if (!this.touched) return null;
    this.touched = false;
    return Y.encodeStateAsUpdate(this.doc, Y.encodeStateVectorFromUpdate(server));
  }

  /** The update merge() returned did not reach the server (the socket closed): the next merge
   * sends the difference again. */
  notSent() {
    this.touched = true;
  }

  /** Replace the whole text from the page itself (not typed in an editor), as the smallest edit. */
  replace(code) {
    this.ensure();
    const old = this.text;
    let start = 0;
    while (start < old.length && start < code.length && old[start] === code[start]) start++;
    let end = 0;
    while (end < old.length - start && end < code.length - start && old[old.length - 1 - end] === code[code.length - 1 - end]) end++;
    this.doc.transact(() => {
      if (old.length - start - end) this.ytext.delete(start, old.length - start - end);
      if (code.length - start - end) this.ytext.insert(start, code.slice(start, code.length - end));
    }, LOCAL);
  }

  destroy() {
    this.doc?.destroy();
    for (const set of Object.values(this.listeners)) set.clear();
  }
}

/**
 * The editor extension binding a CodeMirror view to `text` (y-codemirror.next), with remote
 * cursors drawn from `awareness` (presence.js) and an undo of this person's own typing only
 * (CodeMirror's history would undo other people's typing too). Returns {extension, undoManager};
 * the editor destroys the undo manager when it goes.
 */
export function collab({ text, awareness }) {
  text.ensure();
  const undoManager = new Y.UndoManager(text.ytext);
  const run = (action) => () => (undoManager[action](), true);
  const keys = Prec.high(keymap.of([
    { key: "Mod-z", run: run("undo"), preventDefault: true },
    { key: "Mod-y", mac: "Mod-Shift-z", run: run("redo"), preventDefault: true },
    { key: "Mod-Shift-z", run: run("redo"), preventDefault: true },
  ]));
  const theme = EditorView.theme({ ".cm-ySelectionInfo": { fontFamily: "inherit", opacity: 1, top: "-1.3em" } });
  return { extension: [keys, theme, yCollab(text.ytext, awareness, { undoManager })], undoManager };
}
