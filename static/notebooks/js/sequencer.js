// Puts the server's frames in order (docs/protocol.md, "Ordering" and "Sizes"): unpacks batches,
// assembles a notebook_state sent in chunks (holding events until it is whole), drops events the
// state already holds, and asks for a fresh notebook_state (`sync`) when an event or a chunk is
// missing or out of order, or when the app says the kernel cannot be trusted (resync()).

export class Sequencer {
  constructor({ onState, onEvent, onReply, requestSync }) {
    this.onState = onState;
    this.onEvent = onEvent;
    this.onReply = onReply;
    this.requestSync = requestSync;
    this.reset();
  }

  /** A new socket: nothing is known until its notebook_state arrives. */
  reset() {
    this.seq = null;
    this.syncing = false;
    this.assembly = null; // a chunked notebook_state being put together: {state, cells, next, held}
  }

  /** Drop what is held and ask for a fresh state (the kernel said it cannot be trusted). */
  resync() {
    this.syncing = true;
    this.assembly = null;
    this.requestSync();
  }

  receive(frame) {
    const events = frame.type === "batch" && Array.isArray(frame.events) ? frame.events : [frame];
    for (const event of events) this.receiveOne(event);
  }

  receiveOne(event) {
    if (event.type === "notebook_state") return this.startState(event);
    if (event.type === "notebook_state_chunk") return this.addChunk(event);
    if (typeof event.seq !== "number") {
      this.onReply(event); // `error`, and anything else meant for this socket only
      return;
    }
    if (this.assembly) {
      this.assembly.held.push(event); // it comes after the state: applied once the state is whole
      return;
    }
    // Before the first state, or while a resync is under way, the coming state will hold these.
    if (this.seq === null || this.syncing) return;
    if (event.seq <= this.seq) return;
    if (event.seq !== this.seq + 1) {
      this.resync();
      return;
    }
    this.seq = event.seq;
    this.onEvent(event);
  }

  startState(state) {
    const held = this.assembly?.held ?? []; // a newer state replaces one still arriving
    this.assembly = null;
    if (state.chunks > 1) {
      this.assembly = { state, cells: state.notebook.cells, next: 1, held };
      return;
    }
    this.complete(state, held);
  }

  addChunk(chunk) {
    const assembly = this.assembly;
    if (!assembly) return; // the rest of a state this socket no longer waits for
    if (chunk.stateSeq !== assembly.state.seq || chunk.chunk !== assembly.next || !Array.isArray(chunk.cells)) {
      this.resync(); // a chunk missing or out of order: the state cannot be put together
      return;
    }
    for (const cell of chunk.cells) assembly.cells.push(cell); // not push(...cells): chunks can be long
    assembly.next += 1;
    if (assembly.next < assembly.state.chunks) return;
    this.assembly = null;
    this.complete(assembly.state, assembly.held);
  }

  complete(state, held) {
    this.seq = state.seq;
    this.syncing = false;
    this.onState(state);
    for (const event of held) this.receiveOne(event);
  }
}
