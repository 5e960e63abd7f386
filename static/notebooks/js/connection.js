// The notebook's WebSocket: connects, reconnects with exponential backoff and jitter,
// and shows its state in #connection-indicator. Frames go to `onFrame`; ordering is the app's job.

const BACKOFF_START_MS = 500;
const BACKOFF_MAX_MS = 10_000;
const CLOSE_FORBIDDEN = 4403;
const CLOSE_NOT_FOUND = 4404;

const LABELS = { connected: "live", reconnecting: "reconnecting…", offline: "offline" };

export class Connection {
  constructor(url, { indicator, onOpen, onFrame, onClose }) {
    this.url = url;
    this.indicator = indicator;
    this.onOpen = onOpen;
    this.onFrame = onFrame;
    this.onClose = onClose;
    this.socket = null;
    this.attempt = 0;
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
    const socket = new WebSocket(this.url);
    this.socket = socket;
    socket.addEventListener("open", () => {
      this.setState("connected");
      this.onOpen();
    });
    socket.addEventListener("message", (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        console.warn("notebook: ignoring a frame that is not JSON");
        return;
      }
      this.onFrame(frame);
    });
    socket.addEventListener("close", (event) => this.closed(socket, event.code));
  }

  closed(socket, code) {
    if (socket !== this.socket) return;
    this.socket = null;
    this.onClose();
    if (code === CLOSE_FORBIDDEN || code === CLOSE_NOT_FOUND) {
      this.stop();
      this.setState("offline", code === CLOSE_FORBIDDEN ? "no access" : "not found");
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
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_START_MS * 2 ** this.attempt);
    const delay = base * (0.75 + Math.random() * 0.5); // jitter: clients do not come back in lockstep
    this.attempt += 1;
    this.setState("reconnecting");
    this.timer = setTimeout(() => this.open(), delay);
  }

  /** No more reconnecting (access removed, or the notebook is gone). */
  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = null;
  }

  /** The server sent a full state: the connection is healthy again, so backoff starts over. */
  healthy() {
    this.attempt = 0;
  }

  reconnectNow() {
    if (this.stopped || this.socket) return;
    this.attempt = 0;
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
