// Small DOM helpers. User data only ever goes in through textContent or attributes, never innerHTML.

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

/** What to show of a cell's outputs: a value's text/plain is dropped when its text/html
 * follows it (the richest form wins; notebooks_app/models.py Cell.shown_outputs does the same). */
export function shownOutputs(outputs) {
  return outputs.filter((output, index) => !(output.mimeType === "text/plain" && outputs[index + 1]?.mimeType === "text/html"));
}

/** One rendered output item (docs/protocol.md: text/plain, text/html, image/png). */
export function renderOutput(output) {
  const { mimeType, data } = output;
  if (mimeType === "image/png") {
    return el("img.output.output-image", { alt: "cell output", src: `data:image/png;base64,${String(data).replace(/[^A-Za-z0-9+/=]/g, "")}` });
  }
  if (mimeType === "text/html") {
    // Never allow-same-origin: the output's scripts must not reach this page, its cookies or its socket.
    const frame = el("iframe.output.output-html", { sandbox: "allow-scripts", referrerpolicy: "no-referrer", title: "HTML output" });
    // The base style of output frames comes from the server (constants.OUTPUT_HTML_STYLE).
    frame.srcdoc = (document.getElementById("notebook")?.dataset.outputStyle || "") + String(data);
    // The sandboxed document cannot report its height (no scripts under the page's CSP):
    // size tables by their rows, up to a scrollable 420 px; the frame stays resizable.
    const rows = (String(data).match(/<tr[\s>]/gi) || []).length;
    if (rows) frame.style.height = `${Math.min(420, 44 + rows * 25)}px`;
    return frame;
  }
  return el("pre.output.output-text", { text: String(data ?? "") });
}

/** The children of a .cell-error block: "ename: evalue" then the traceback. */
export function renderError(error) {
  const nodes = [el("strong", { text: `${error.ename || "Error"}: ${error.evalue || ""}` })];
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
