// Which cells are near the viewport, for the work a big notebook defers: editors are created
// near it and let go far from it, outputs load near it. Two IntersectionObservers serve every
// cell of the page (not one per cell); `inFrames` spreads the work over animation frames, and
// `whenIdle` runs what can wait in the page's idle time.

const NEAR_MARGIN = "300px 0px"; // closer than this to the viewport: create, load
const FAR_MARGIN = "3000px 0px"; // further than this: what can be made again may be let go
const FRAME_BUDGET_MS = 12; // inFrames: work per frame, beyond the first task
const IDLE_BUDGET_MS = 8; // whenIdle: work per idle callback at least (a browser's idle period is at most 50 ms)
const IDLE_TIMEOUT_MS = 1000; // whenIdle: a page that is never idle still gets on with it

let shared = null;

class Proximity {
  constructor() {
    this.watchers = new WeakMap(); // element -> {near(), far()}
    const report = (which) => (entries) => {
      for (const entry of entries) {
        const watcher = this.watchers.get(entry.target);
        if (which === "near" && entry.isIntersecting && watcher) {
          watcher.near();
          this.farObserver.observe(entry.target); // only what came near has anything to let go
        }
        if (which === "far" && !entry.isIntersecting) watcher?.far();
      }
    };
    this.nearObserver = new IntersectionObserver(report("near"), { rootMargin: NEAR_MARGIN });
    this.farObserver = new IntersectionObserver(report("far"), { rootMargin: FAR_MARGIN });
  }

  watch(element, watcher) {
    this.watchers.set(element, watcher);
    this.nearObserver.observe(element);
  }

  unwatch(element) {
    this.watchers.delete(element);
    this.nearObserver.unobserve(element);
    this.farObserver.unobserve(element);
  }
}

/** Call `near()` when `element` comes near the viewport, `far()` when it goes far from it. */
export function watchProximity(element, { near, far }) {
  shared ??= new Proximity();
  shared.watch(element, { near, far });
}

export function unwatchProximity(element) {
  shared?.unwatch(element);
}

const queue = [];
let frameRequested = false;

/** Run `task` in a coming animation frame, as many per frame as fit in FRAME_BUDGET_MS: the
 * dozen editors of a big notebook opening do not hold the tab all at once. */
export function inFrames(task) {
  queue.push(task);
  if (!frameRequested) {
    frameRequested = true;
    requestAnimationFrame(runQueued);
  }
}

function runQueued() {
  const start = performance.now();
  try {
    do queue.shift()();
    while (queue.length && performance.now() - start < FRAME_BUDGET_MS);
  } finally {
    frameRequested = queue.length > 0;
    if (frameRequested) requestAnimationFrame(runQueued);
  }
}

const idleQueue = [];
let idleRequested = false;

/** Run `task` when the page is idle, in order, as many per idle period as it lasts (at least
 * IDLE_BUDGET_MS): the thousands of far cells of a big notebook are built after it shows its
 * first ones. Few long periods rather than many short ones: every change of the page costs a
 * frame, and a frame of a page with 10,000 cells costs tens of milliseconds whatever changed. */
export function whenIdle(task) {
  idleQueue.push(task);
  if (!idleRequested) requestIdle();
}

function requestIdle() {
  idleRequested = true;
  if (window.requestIdleCallback) requestIdleCallback(runIdle, { timeout: IDLE_TIMEOUT_MS });
  else setTimeout(runIdle, 1); // Safari: a task of its own each time
}

function runIdle(deadline) {
  const start = performance.now();
  const budget = Math.max(deadline?.timeRemaining() ?? 0, IDLE_BUDGET_MS);
  try {
    do idleQueue.shift()();
    while (idleQueue.length && performance.now() - start < budget);
  } finally {
    idleRequested = false;
    if (idleQueue.length) requestIdle();
  }
}
