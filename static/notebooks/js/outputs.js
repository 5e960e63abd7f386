// Rendering a cell's outputs (docs/protocol.md: text/plain, text/html, image/png, charts, inline or
// by reference; markdown in markdown_view.js, inputs in widgets.js). Cheap ones are built at once;
// frames (HTML, charts) and outputs by reference are placeholders with a `load()` the cell view
// calls when the cell comes near the viewport. Frames size themselves by message (frame.js).
import { el } from "./dom.js";
import { resolvedTheme } from "./theme.js";
import { MARKDOWN_MIME, renderMarkdown } from "./markdown_view.js";
import { UI_MIME, renderWidget } from "./widgets.js";

/** What to show of a cell's outputs: a value's text/plain is dropped when its text/html
 * follows it (the richest form wins; notebooks_app/models.py Cell.shown_outputs does the same). */
export function shownOutputs(outputs) {
  return outputs.filter((output, index) => !(output.mimeType === "text/plain" && outputs[index + 1]?.mimeType === "text/html"));
}

/** One output item: `{node}`, or `{node, load}` when the node is a placeholder until `load()`. */
export function renderOutput(output) {
  if (CHART_MIME_TYPES.has(output.mimeType)) return chartOutput(output);
  if (output.ref) return referenceOutput(output);
  const { mimeType, data } = output;
  if (mimeType === "image/png") {
    return { node: el("img.output.output-image", { alt: "cell output", src: `data:image/png;base64,${String(data).replace(/[^A-Za-z0-9+/=]/g, "")}` }) };
  }
  if (mimeType === "text/html") return inlineHtmlOutput(String(data));
  if (CHART_MIME_TYPES.has(mimeType)) return chartOutput(output);
  if (mimeType === MARKDOWN_MIME) return renderMarkdown(data);
  if (mimeType === UI_MIME) return renderWidget(output);
  return { node: el("pre.output.output-text", { text: String(data ?? "") }) };
}

// Interactive charts, drawn in the chart frame by the vendored renderer of their MIME type
// (notebooks_app/kernel/display.py, static/notebooks/frame.js).
export const CHART_MIME_TYPES = new Set([
  "application/vnd.plotly.v1+json",
  "application/vnd.vegalite.v6+json",
  "application/vnd.vega.v6+json",
  "application/vnd.bokehjs.item+json",
]);
const CHART_LABELS = { "application/vnd.plotly.v1+json": "plotly chart", "application/vnd.vegalite.v6+json": "vega-lite chart", "application/vnd.vega.v6+json": "vega chart", "application/vnd.bokehjs.item+json": "bokeh chart" };

// Frame heights are reported by the frame (frame.js) and believed only within these bounds.
const FRAME_MIN_HEIGHT = 24;
const FRAME_MAX_HEIGHT = 4000;
const frames = new Set(); // {frame, onMessage} of every output frame made

window.addEventListener("message", (event) => {
  // Only our own output frames, which are opaque origins ("null"), and only what they may say.
  if (event.origin !== "null" || !event.source) return;
  let entry = null;
  for (const candidate of frames) {
    if (!candidate.frame.isConnected) frames.delete(candidate);
    else if (candidate.frame.contentWindow === event.source) entry = candidate;
  }
  const message = event.data;
  if (!entry || !message || typeof message !== "object" || typeof message.type !== "string") return;
  if (message.type === "notebook-frame") {
    const height = Number(message.height);
    if (!Number.isFinite(height)) return;
    entry.frame.style.height = `${Math.round(Math.min(FRAME_MAX_HEIGHT, Math.max(FRAME_MIN_HEIGHT, height)))}px`;
    entry.frame.dataset.sized = "true";
    if (entry.themed && entry.theme !== resolvedTheme()) postTheme(entry); // its first word: it is listening
  } else {
    entry.onMessage?.(message);
  }
});

// HTML outputs follow the page's theme (docs/frontend.md, "Dark mode"): told when they first
// report (frame.js) and whenever it changes. Opaque origins: "*" is the only target there is.
function postTheme(entry) {
  entry.theme = resolvedTheme();
  entry.frame.contentWindow?.postMessage({ type: "notebook-theme", theme: entry.theme }, "*");
}

document.addEventListener("themechange", () => {
  for (const entry of frames) if (entry.themed && entry.frame.isConnected) postTheme(entry);
});

/** An output frame: never allow-same-origin, so the output's scripts reach neither this page,
 * its cookies nor its socket; no allow-forms, allow-popups or allow-top-navigation either.
 * `themed`: an HTML output, which follows the page's theme (charts keep their own). */
function outputFrame(spec, attrs, onMessage, { themed = false } = {}) {
  const frame = el(spec, { sandbox: "allow-scripts", referrerpolicy: "no-referrer", title: "output", ...attrs });
  frames.add({ frame, onMessage, themed, theme: null });
  return frame;
}

function pageData() {
  return document.getElementById("notebook")?.dataset || {};
}

function inlineHtmlOutput(data) {
  // A frame is a document of its own: built only when the cell is near the viewport. Its
  // scripts do not run (it inherits this page's policy), except frame.js, which reports its height.
  const rows = (data.match(/<tr[\s>]/gi) || []).length;
  const node = el("div.output.output-pending");
  const estimate = `${rows ? Math.min(420, 44 + rows * 25) : 60}px`;
  node.style.height = estimate;
  const load = () => {
    const frame = outputFrame("iframe.output.output-html", { title: "HTML output" }, null, { themed: true });
    const { outputStyle = "", frameScript } = pageData();
    // Dark from its first paint when the page is (a leading <html> tag sets the root's attributes).
    const start = `<html data-theme="${resolvedTheme()}">`;
    frame.srcdoc = start + outputStyle + (frameScript ? `<script src="${frameScript}"></script>` : "") + data;
    frame.style.height = estimate;
    node.replaceWith(frame);
  };
  return { node, load };
}

/** A chart: its JSON is posted to a chart frame (an opaque origin with the vendored renderers). */
function chartOutput(output) {
  const label = CHART_LABELS[output.mimeType] || "chart";
  const box = el("div.output.output-chart", { dataset: { state: "waiting", mimeType: output.mimeType } },
    el("span.output-ref-note", { text: `Interactive ${label}: loads when shown` }));
  box.style.minHeight = "120px";
  const failed = (reason) => {
    box.dataset.state = "failed";
    box.replaceChildren(
      el("span.output-ref-note", { text: `Could not load this ${label} (${reason}).` }),
      el("button.retry-output", { type: "button", onclick: load }, "Retry"),
    );
  };
  function load() {
    const started = performance.now();
    box.dataset.state = "loading";
    box.replaceChildren(el("span.output-ref-note", { text: `Loading ${label}…` }));
    const data = output.ref
      ? fetch(output.url, { credentials: "same-origin" }).then((response) => {
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        return response.json();
      })
      : Promise.resolve(output.data);
    data.then((chart) => {
      const frame = outputFrame("iframe.output-chart-frame", { src: pageData().chartFrame, title: label }, (message) => {
        if (message.type === "notebook-frame-ready") {
          frame.contentWindow?.postMessage({ type: "render", mimeType: output.mimeType, data: chart }, "*");
        } else if (message.type === "notebook-frame-drawn") {
          box.dataset.state = "loaded";
          box.dataset.drawnMs = String(Math.round(performance.now() - started)); // docs/performance.md: charts
          box.style.minHeight = "";
        }
      });
      frame.style.height = "460px";
      box.replaceChildren(frame);
      box.dataset.state = "drawing";
    }).catch((error) => failed(error.message));
  }
  return { node: box, load };
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
      // The URL serves the document with its own policy: an opaque origin whose scripts run
      // (maps, widgets) and reach nothing of this site (notebooks_app/output_documents.py).
      const frame = outputFrame("iframe.output-html.output-html-ref", { src: output.url, title: "HTML output" }, null, { themed: true });
      frame.style.height = "150px";
      box.replaceChildren(frame);
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
