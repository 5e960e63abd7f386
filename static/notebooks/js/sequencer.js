// Puts the server's frames in order (docs/protocol.md, "Ordering"): unpacks batches, drops events
// the state already holds, and asks for a fresh notebook_state when an event is missing.

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
  }

  /** Drop what is held and ask for a fresh state (the kernel said it cannot be trusted). */
  resync() {
    this.syncing = true;
    this.requestSync();
  }

  receive(frame) {
    const events = frame.type === "batch" && Array.isArray(frame.events) ? frame.events : [frame];
    for (const event of events) this.receiveOne(event);
  }

  receiveOne(event) {
    if (event.type === "notebook_state") {
      this.seq = event.seq;
      this.syncing = false;
      this.onState(event);
      return;
    }
    if (typeof event.seq !== "number") {
      this.onReply(event); // `error`, and anything else meant for this socket only
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
}
