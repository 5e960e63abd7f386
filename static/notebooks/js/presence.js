// Who else has the notebook open, and where (docs/protocol.md, "presence"): the list in the side
// panel, a name tag on the cell each person is in, and their cursors in its editor (each cell's
// editor reads them through a small awareness object, the interface y-codemirror.next draws
// remote selections from). It sends this page's own presence: on focus and selection changes
// (throttled), in answer to a `joined`, and every HEARTBEAT_MS. Nothing here is stored.
import { Y } from "../vendor/codemirror.bundle.js";
import { el } from "./dom.js";

const THROTTLE_MS = 200;
const HEARTBEAT_MS = 10_000;
const FORGET_MS = 30_000; // a socket silent this long is gone (its `left` may have been lost)
const CHECK_MS = 5_000;

export class Presence {
  /**
   * @param {{send: (message: object) => boolean, cellElement: (cellId: string) => HTMLElement|null}} options
   */
  constructor({ send, cellElement }) {
    this.sendMessage = send;
    this.cellElement = cellElement;
    this.peers = new Map(); // socket -> {id, user, cellId, cursor, seen}
    this.nextId = 1; // small numbers for the awareness ids of peers (never a Yjs clientID in practice)
    this.here = { cellId: null, cursor: null }; // this page's own presence
    this.awarenesses = new Map(); // cell id -> CellAwareness
    this.tagged = new Set(); // cell ids showing name tags
    this.lastSent = 0;
    this.timer = null;
    this.panel = this.buildPanel();
    setInterval(() => this.check(), CHECK_MS);
  }

  buildPanel() {
    const list = el("ul.presence-list", { "aria-live": "polite" });
    const panel = el("section.card", { id: "presence" }, el("h2", {}, "Here now"), list);
    const side = document.querySelector("aside.side");
    if (side) side.prepend(panel);
    this.list = list;
    this.render();
    return panel;
  }

  // --- this page's presence ------------------------------------------------------------
  /** The person moved into a cell (focus): where their cursor was in it, if it was anywhere. */
  focusCell(cellId) {
    if (cellId === this.here.cellId) return;
    const awareness = this.awarenesses.get(cellId);
    this.here = { cellId, cursor: awareness ? cursorJSON(awareness.text, awareness.local.cursor) : null };
    this.schedule();
  }

  /** The selection of the cell's editor moved: Yjs relative positions, or null. */
  moved(text, cursor) {
    this.here = { cellId: text.cellId, cursor: cursorJSON(text, cursor) };
    this.schedule();
  }

  schedule() {
    if (this.timer) return;
    const wait = this.lastSent + THROTTLE_MS - performance.now();
    if (wait <= 0) this.announce();
    else this.timer = setTimeout(() => this.announce(), wait);
  }

  announce() {
    clearTimeout(this.timer);
    this.timer = null;
    if (this.sendMessage({ type: "presence", cellId: this.here.cellId, cursor: this.here.cursor })) this.lastSent = performance.now();
  }

  /** The page shows a fresh state: say where we are (the others learn of us by our `joined`). */
  connected() {
    this.announce();
  }

  /** Without a socket nobody's presence is known; they tell us again when we are back. */
  disconnected() {
    const cells = new Set([...this.peers.values()].map((peer) => peer.cellId));
    this.peers.clear();
    this.changed(cells);
  }

  check() {
    const now = performance.now();
    if (now - this.lastSent >= HEARTBEAT_MS) this.announce();
    const gone = [...this.peers].filter(([, peer]) => now - peer.seen > FORGET_MS);
    for (const [socket] of gone) this.peers.delete(socket);
    if (gone.length) this.changed(new Set(gone.map(([, peer]) => peer.cellId)));
  }

  // --- other people --------------------------------------------------------------------
  receive(event) {
    const before = this.peers.get(event.socket);
    const cells = new Set([before?.cellId]);
    if (event.left) {
      this.peers.delete(event.socket);
    } else {
      this.peers.set(event.socket, {
        id: before?.id ?? this.nextId++,
        user: event.user || { name: "someone", role: "", color: "#888888" },
        cellId: event.cellId ?? null,
        cursor: parseCursor(event.cursor),
        seen: performance.now(),
      });
      cells.add(event.cellId ?? null);
      if (event.joined) this.announce();
    }
    this.changed(cells);
  }

  changed(cellIds) {
    this.render();
    for (const cellId of cellIds) {
      if (!cellId) continue;
      this.renderTags(cellId);
      this.awarenesses.get(cellId)?.changed();
    }
  }

  /** The side panel: one line per person (several tabs of one person are one line). */
  render() {
    const people = new Map();
    for (const peer of this.peers.values()) if (!people.has(peer.user.name)) people.set(peer.user.name, peer.user);
    const items = [...people.values()].sort((a, b) => a.name.localeCompare(b.name)).map((user) => el("li.presence-person", { dataset: { user: user.name } },
      dot(user.color), el("span.presence-name", { text: user.name }), el("span.presence-role", { text: user.role })));
    if (!items.length) items.push(el("li.presence-alone", { text: "Only you" }));
    this.list.replaceChildren(...items);
  }

  /** The name tags of the people in a cell, in its header. */
  renderTags(cellId) {
    const element = this.cellElement(cellId);
    const header = element?.querySelector(".cell-header");
    if (!header) return;
    const names = new Map();
    for (const peer of this.peers.values()) if (peer.cellId === cellId) names.set(peer.user.name, peer.user);
    let tags = header.querySelector(".cell-presence");
    if (!tags) {
      tags = el("span.cell-presence");
      header.append(tags);
    }
    tags.replaceChildren(...[...names.values()].map((user) => {
      const tag = el("span.presence-tag", { dataset: { user: user.name }, title: `${user.name} is in this cell`, text: user.name });
      tag.style.backgroundColor = user.color;
      return tag;
    }));
    if (names.size) this.tagged.add(cellId);
    else this.tagged.delete(cellId);
  }

  /** A cell's view was rebuilt or its cell came back: draw its tags again. */
  cellShown(cellId) {
    if ([...this.peers.values()].some((peer) => peer.cellId === cellId)) this.renderTags(cellId);
  }

  // --- cursors in editors ------------------------------------------------------------------
  /** The awareness object a cell's editor draws remote cursors from (y-codemirror.next). */
  awareness(text) {
    let awareness = this.awarenesses.get(text.cellId);
    if (!awareness) {
      awareness = new CellAwareness(this, text);
      this.awarenesses.set(text.cellId, awareness);
    }
    return awareness;
  }

  forgetCell(cellId) {
    this.awarenesses.delete(cellId);
  }

  /** The peers in this cell with a cursor in its current document, as awareness states. */
  statesOf(text) {
    const states = new Map();
    for (const peer of this.peers.values()) {
      const { cursor } = peer;
      if (peer.cellId !== text.cellId || !cursor || cursor.generation !== text.generation) continue;
      states.set(peer.id, { user: { name: peer.user.name, color: peer.user.color, colorLight: `${peer.user.color}33` }, cursor });
    }
    return states;
  }
}

/** The subset of y-protocols' Awareness that y-codemirror.next's remote selections use. */
class CellAwareness {
  constructor(presence, text) {
    this.presence = presence;
    this.text = text;
    this.local = { cursor: null };
    this.listeners = new Set();
  }

  get doc() {
    return this.text.doc;
  }

  getLocalState() {
    return this.local;
  }

  setLocalStateField(field, value) {
    this.local = { ...this.local, [field]: value };
    if (field === "cursor") this.presence.moved(this.text, value);
  }

  getStates() {
    return this.presence.statesOf(this.text);
  }

  on(_event, listener) {
    this.listeners.add(listener);
  }

  off(_event, listener) {
    this.listeners.delete(listener);
  }

  /** Someone's cursor here moved, came or went: the editor redraws them all. */
  changed() {
    // -1 is never this document's clientID, which is all the listener checks.
    for (const listener of this.listeners) listener({ added: [], updated: [-1], removed: [] }, "presence");
  }
}

function cursorJSON(text, cursor) {
  if (!cursor) return null;
  return { generation: text.generation, anchor: Y.relativePositionToJSON(cursor.anchor), head: Y.relativePositionToJSON(cursor.head) };
}

function parseCursor(cursor) {
  if (!cursor || typeof cursor !== "object" || !cursor.anchor || !cursor.head) return null;
  try {
    return { generation: cursor.generation, anchor: Y.createRelativePositionFromJSON(cursor.anchor), head: Y.createRelativePositionFromJSON(cursor.head) };
  } catch {
    return null; // a cursor this page cannot read is only not drawn
  }
}

function dot(color) {
  const node = el("span.presence-dot", { "aria-hidden": "true" });
  node.style.backgroundColor = color;
  return node;
}

/** "run by bob" in a cell's header: who started its last run (`runBy`, `cell_status` `by`). */
export function showRunBy(cellElement, name) {
  const header = cellElement.querySelector(".cell-header");
  let label = header.querySelector(".cell-run-by");
  if (!name) {
    if (label) label.hidden = true;
    return;
  }
  if (!label) {
    label = el("span.cell-run-by");
    const status = header.querySelector(".cell-status");
    if (status) status.after(label);
    else header.append(label);
  }
  label.hidden = false;
  label.textContent = `run by ${name}`;
}
