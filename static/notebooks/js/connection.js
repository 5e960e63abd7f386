// The notebook's WebSocket: connects, reconnects with exponential backoff and jitter, gives up
// (saying why, with a Reload button) when reconnecting will not help, and shows its state in
// #connection-indicator. Its first connection is the socket early_socket.js opened before the
// page's modules loaded, when there is one. Frames go to `onFrame`; putting them in order is
// sequencer.js's job. `newRequestId()` is the page's one source of request ids.
import { el } from "./dom.js";

const BACKOFF_START_MS = 500;
const BACKOFF_MAX_MS = 30_000;
const JITTER = 0.5; // ±50 %: clients cut off together do not come back in lockstep
const MAX_FAILURES = 6; // closes in a row, then the page stops trying
const STABLE_MS = 10_000; // a connection that served a full state this long ends a series of failures
const CLOSE_FORBIDDEN = 4403;
const CLOSE_NOT_FOUND = 4404;
const CLOSE_TRY_LATER = 4013; // the server's database or Redis is down (docs/protocol.md)
const FINAL_CLOSES = {
  [CLOSE_FORBIDDEN]: ["no access", "You are not logged in, or no longer have access to this notebook."],
  [CLOSE_NOT_FOUND]: ["not found", "This notebook does not exist, or is no longer shared with you."],
};

const LABELS = { connected: "live", reconnecting: "reconnecting…", offline: "offline" };

// Every client sees every requestId (docs/protocol.md): this page's start with a prefix of its own.
const PAGE_PREFIX = Math.random().toString(36).slice(2, 10);
let requestCount = 0;

/** A fresh requestId: unique on this page, and by its random prefix among the pages that see it. */
export function newRequestId() {
  requestCount += 1;
  return `${PAGE_PREFIX}-${requestCount}`;
}

/**
 * The socket early_socket.js opened for `url`, with the frames it kept, if it is still open or
 * opening; taken once (later connections open their own). One for another URL, or closed, is let go.
 */
function adoptEarlySocket(url) {
  const early = window.notebookEarlySocket;
  window.notebookEarlySocket = null; // claimed: an early script running late opens nothing
  if (!early) return null;
  early.release();
  if (early.url === url && early.socket.readyState <= WebSocket.OPEN) return early;
  early.socket.close();
  return null;
}

export class Connection {
  constructor(url, { indicator, onOpen, onFrame, onClose }) {
    this.url = url;
    this.indicator = indicator;
    this.onOpen = onOpen;
    this.onFrame = onFrame;
    this.onClose = onClose;
    this.socket = null;
    this.failures = 0; // closes in a row, none after a stable connection
    this.healthySince = null;
    this.lastCode = null;
    this.timer = null;
    this.stopped = false;
    window.addEventListener("offline", () => this.socket?.close());
    window.addEventListener("online", () => this.reconnectNow());
  }

  get isOpen() {
    return this.socket?.readyState === WebSocket.OPEN;
  }

  start() {
    this.setState("reconnecting", "connecting…");
    this.open();
  }

  open() {
    clearTimeout(this.timer);
    this.timer = null;
    const early = adoptEarlySocket(this.url);
    const socket = early?.socket ?? new WebSocket(this.url);
    this.socket = socket;
    socket.addEventListener("open", () => this.opened());
    socket.addEventListener("message", (event) => this.received(event.data));
    socket.addEventListener("close", (event) => this.closed(socket, event.code));
    if (!early) return;
    // What it received before now, in order, before anything it receives after this task.
    if (socket.readyState === WebSocket.OPEN) this.opened();
    for (const data of early.frames) this.received(data);
  }

  opened() {
    this.setState("connected");
    this.onOpen();
  }

  received(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      console.warn("notebook: ignoring a frame that is not JSON");
      return;
    }
    this.onFrame(frame);
  }

  closed(socket, code) {
    if (socket !== this.socket) return;
    this.socket = null;
    this.lastCode = code;
    // A socket closed right after its state (a server failing at each start) still counts.
    if (this.healthySince !== null && performance.now() - this.healthySince > STABLE_MS) this.failures = 0;
    this.healthySince = null;
    this.failures += 1;
    this.onClose();
    if (FINAL_CLOSES[code]) {
      const [label, reason] = FINAL_CLOSES[code];
      this.giveUp(label, reason);
      return;
    }
    if (!navigator.onLine) {
      this.setState("offline");
      return;
    }
    this.schedule();
  }

  schedule() {
    if (this.stopped || this.timer) return;
    if (this.failures >= MAX_FAILURES) {
      const reason = this.lastCode === CLOSE_TRY_LATER
        ? "The server is temporarily unavailable (its database or message broker is down)."
        : "The server could not be reached.";
      this.giveUp("offline", `${reason} The page stopped trying after ${MAX_FAILURES} failed connections in a row; reload it to try again.`);
      return;
    }
    this.setState("reconnecting");
    this.timer = setTimeout(() => this.open(), Connection.delay(this.failures));
  }

  /** How long to wait after `failures` closes in a row (1, 2, …): 0.5 s doubling to 30 s, ±50 %. */
  static delay(failures) {
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_START_MS * 2 ** (failures - 1));
    return base * (1 - JITTER + Math.random() * 2 * JITTER);
  }

  /** No more reconnecting (access removed, or the notebook is gone). */
  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = null;
  }

  /** Stop for good and say why on the page, with a way to start again. */
  giveUp(label, reason) {
    this.stop();
    this.setState("offline", label);
    let banner = document.getElementById("connection-lost");
    if (!banner) {
      banner = el("div.banner.warning.connection-lost", { id: "connection-lost", role: "alert" });
      document.querySelector("main")?.prepend(banner);
    }
    banner.replaceChildren(
      el("span.connection-lost-reason", { text: reason }),
      el("button.reload", { id: "reload", type: "button", onclick: () => location.reload() }, "Reload"),
    );
  }

  /** The server sent a full state: once it has lasted STABLE_MS, backoff starts over. */
  healthy() {
    this.healthySince ??= performance.now();
  }

  reconnectNow() {
    if (this.stopped || this.socket) return;
    this.failures = 0;
    this.setState("reconnecting");
    this.open();
  }

  /** Send one message; false when the socket is not open (the caller keeps what must survive). */
  send(message) {
    if (!this.isOpen) return false;
    this.socket.send(JSON.stringify(message));
    return true;
  }

  setState(state, label) {
    this.indicator.dataset.state = state;
    this.indicator.textContent = label || LABELS[state];
    this.indicator.title = state === "connected" ? "Connected: changes are live" : `Connection: ${label || LABELS[state]}`;
  }
}
