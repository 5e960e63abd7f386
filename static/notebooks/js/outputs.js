// Rendering a cell's outputs (docs/protocol.md: text/plain, text/html, image/png, inline or by
// reference; markdown in markdown_view.js, inputs in widgets.js). Cheap ones are built at once;
// HTML frames and outputs by reference are placeholders with a `load()` the cell view calls when
// the cell comes near the viewport.
import { el } from "./dom.js";
import { MARKDOWN_MIME, renderMarkdown } from "./markdown_view.js";
import { UI_MIME, renderWidget } from "./widgets.js";

/** What to show of a cell's outputs: a value's text/plain is dropped when its text/html
 * follows it (the richest form wins; notebooks_app/models.py Cell.shown_outputs does the same). */
export function shownOutputs(outputs) {
  return outputs.filter((output, index) => !(output.mimeType === "text/plain" && outputs[index + 1]?.mimeType === "text/html"));
}

/** One output item: `{node}`, or `{node, load}` when the node is a placeholder until `load()`. */
export function renderOutput(output) {
  if (output.ref) return referenceOutput(output);
  const { mimeType, data } = output;
  if (mimeType === "image/png") {
    return { node: el("img.output.output-image", { alt: "cell output", src: `data:image/png;base64,${String(data).replace(/[^A-Za-z0-9+/=]/g, "")}` }) };
  }
  if (mimeType === "text/html") return inlineHtmlOutput(String(data));
  if (mimeType === MARKDOWN_MIME) return renderMarkdown(data);
  if (mimeType === UI_MIME) return renderWidget(output);
  return { node: el("pre.output.output-text", { text: String(data ?? "") }) };
}

/** Never allow-same-origin: the output's scripts must not reach this page, its cookies or its socket. */
function htmlFrame(spec, attrs) {
  return el(spec, { sandbox: "allow-scripts", referrerpolicy: "no-referrer", title: "HTML output", ...attrs });
}

function inlineHtmlOutput(data) {
  // The sandboxed document cannot report its height (no scripts under the page's CSP):
  // size tables by their rows, up to a scrollable 420 px; the frame stays resizable.
  const rows = (data.match(/<tr[\s>]/gi) || []).length;
  const height = rows ? `${Math.min(420, 44 + rows * 25)}px` : null;
  // A frame is a document of its own: built only when the cell is near the viewport.
  const node = el("div.output.output-pending");
  if (height) node.style.height = height;
  const load = () => {
    const frame = htmlFrame("iframe.output.output-html", {});
    // The base style of output frames comes from the server (constants.OUTPUT_HTML_STYLE).
    frame.srcdoc = (document.getElementById("notebook")?.dataset.outputStyle || "") + data;
    if (height) frame.style.height = height;
    node.replaceWith(frame);
  };
  return { node, load };
}

/** An output stored apart ({mimeType, ref, size, url}): its size until it is fetched. */
function referenceOutput(output) {
  const label = `${output.mimeType} output, ${formatSize(output.size)}`;
  const box = el("div.output.output-ref", { dataset: { state: "waiting", mimeType: output.mimeType } },
    el("span.output-ref-note", { text: `${label}: loads when shown` }));
  const failed = (reason) => {
    box.dataset.state = "failed";
    box.replaceChildren(
      el("span.output-ref-note", { text: `Could not load this ${label} (${reason}).` }),
      el("button.retry-output", { type: "button", onclick: load }, "Retry"),
    );
  };
  const loading = () => {
    box.dataset.state = "loading";
    box.replaceChildren(el("span.output-ref-note", { text: `Loading ${label}…` }));
  };
  function load() {
    loading();
    if (output.mimeType === "image/png") {
      const image = el("img.output-image", { alt: "cell output", src: output.url, hidden: true });
      image.addEventListener("load", () => {
        box.replaceChildren(image);
        image.hidden = false;
        box.dataset.state = "loaded";
      });
      image.addEventListener("error", () => failed("the server did not send it"));
      box.append(image);
    } else if (output.mimeType === "text/html") {
      // The URL serves the document with its own policy (sandbox, no scripts); big by definition.
      box.replaceChildren(htmlFrame("iframe.output-html.output-html-ref", { src: output.url }));
      box.dataset.state = "loaded";
    } else {
      fetch(output.url, { credentials: "same-origin" })
        .then((response) => {
          if (!response.ok) throw new Error(`HTTP ${response.status}`);
          return response.text();
        })
        .then((text) => {
          box.replaceChildren(el("pre.output-text", { text }));
          box.dataset.state = "loaded";
        })
        .catch((error) => failed(error.message));
    }
  }
  return { node: box, load };
}

/** 2_100_000 -> "2.0 MB" (binary multiples, as Django's filesizeformat on the server-rendered page). */
export function formatSize(bytes) {
  if (!(bytes >= 1024)) return `${bytes} bytes`;
  const units = ["KB", "MB", "GB"];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}
