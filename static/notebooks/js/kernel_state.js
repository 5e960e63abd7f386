// The notebook's execution process as the page shows it: a badge in the header (#kernel-state:
// not started / starting / running / pending / stopped) and, while a run waits for a place or
// after the server stopped the kernel, a notice saying why and when (#kernel-notice). Fed by
// notebook_state's `kernel` and every `kernel_status` event (docs/protocol.md).

const ORDINALS = ["", "1st", "2nd", "3rd"];
const ordinal = (n) => ORDINALS[n] || `${n}th`;
const clock = (iso) => (iso ? new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : "");

export class KernelState {
  constructor({ badge, notice }) {
    this.badge = badge;
    this.notice = notice;
    this.status = { state: "none" };
  }

  render(status) {
    this.status = status || { state: "none" };
    const { state } = this.status;
    const [label, title] = {
      none: ["kernel: not started", "The notebook's Python process starts with the first run"],
      running: ["kernel: running", `Started ${clock(this.status.since)}${this.status.user ? ` by ${this.status.user}` : ""}`],
      pending: [`kernel: pending (${ordinal(this.status.position)} in line)`, this.status.reason],
      stopped: ["kernel: stopped", this.status.reason],
    }[state] || [`kernel: ${state}`, ""];
    if (this.badge) {
      this.badge.textContent = label;
      this.badge.title = title || "";
      this.badge.dataset.state = state;
      this.badge.hidden = false;
    }
    if (!this.notice) return;
    // A restart someone asked for says so in a toast and the history; the server's own stops and
    // a wait for a place stay said here until the kernel runs again.
    const lifecycleStop = state === "stopped" && this.status.cause && this.status.cause !== "restart";
    if (state === "pending") {
      this.notice.textContent = `Waiting for a kernel, ${ordinal(this.status.position)} in line: ${this.status.reason}.`;
    } else if (lifecycleStop) {
      this.notice.textContent = `${this.status.reason} (stopped at ${clock(this.status.at)}).`;
    }
    this.notice.dataset.state = state;
    this.notice.hidden = !(state === "pending" || lifecycleStop);
  }
}
