// Small DOM helpers (outputs are rendered in outputs.js). User data only ever goes in through textContent or attributes, never innerHTML.

/** el("button.run-cell", {title: "Run"}, "▶") -> <button class="run-cell" title="Run">▶</button> */
export function el(spec, attrs = {}, ...children) {
  const [tag, ...classes] = spec.split(".");
  const node = document.createElement(tag || "div");
  if (classes.length) node.className = classes.join(" ");
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "dataset") Object.assign(node.dataset, value);
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** The children of a .cell-error block: "ename: evalue" then the traceback. */
export function renderError(error) {
  // Preformatted and monospace: a database's message points at the query with a caret line.
  const nodes = [el("strong.error-head", { text: `${error.ename || "Error"}: ${error.evalue || ""}` })];
  const traceback = Array.isArray(error.traceback) ? error.traceback : [];
  // Entries may end with their own newline (Python's format_exception) or not.
  if (traceback.length) nodes.push(el("pre", { text: traceback.map((line) => String(line).replace(/\n$/, "")).join("\n") }));
  return nodes;
}

export function formatElapsed(ms) {
  const seconds = ms / 1000;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const minutes = Math.floor(seconds / 60);
  return `${minutes} min ${Math.floor(seconds % 60)} s`;
}
