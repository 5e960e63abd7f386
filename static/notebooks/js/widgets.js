// Inputs (docs/protocol.md, "Inputs"): outputs of UI_MIME drawn by the page itself, no frame.
// A widget sends its new value through `onSet` (set_input), debounced while dragged; it follows
// `input_changed` from every page unless its own user is moving it, and goes back to the last
// value the server accepted when one is refused. Viewers get disabled widgets.
import { el } from "./dom.js";

export const UI_MIME = "application/vnd.notebook.ui+json";
const DRAG_DEBOUNCE_MS = 150;

let settings = { canEdit: false, onSet: () => null };
const live = new Map(); // widget id -> Widget shown on the page (the newest drawing of that id)

/** Once, by the app: whether this user may move inputs, and how a value is sent (-> requestId). */
export function configureWidgets({ canEdit, onSet }) {
  settings = { canEdit, onSet };
}

/** The widget on the page with this id (`<cell id>:<index>`), if it is still shown. */
export function widgetById(widgetId) {
  const widget = live.get(widgetId);
  return widget?.node.isConnected ? widget : null;
}

/** One output item, like outputs.js renderOutput: `{node}`. */
export function renderWidget(output) {
  const widget = new Widget(output.data || {});
  live.set(widget.id, widget);
  return { node: widget.node };
}

class Widget {
  constructor(definition) {
    this.definition = definition;
    this.id = String(definition.id || "");
    const [cellId, index] = this.id.split(":");
    this.cellId = cellId;
    this.index = Number(index) || 0;
    this.accepted = definition.value; // the last value the server confirmed
    this.active = false; // the user is dragging or typing: remote values wait
    this.timer = null;
    this.lastRequest = null;
    const build = BUILDERS[definition.kind] || buildUnknown;
    this.control = build(this, definition.props || {});
    const label = definition.label ? el("span.widget-label", { text: definition.label }) : null;
    this.node = el("div.output.widget", { dataset: { widgetId: this.id, kind: definition.kind } }, label, this.control.node);
    for (const input of this.node.querySelectorAll("input, select")) input.disabled = !settings.canEdit;
    this.control.set(definition.value);
  }

  /** The user changed it; `final` on release (change), else debounced while dragging (input). */
  changed(value, final) {
    if (!settings.canEdit) return;
    clearTimeout(this.timer);
    const send = () => {
      this.timer = null;
      this.lastRequest = settings.onSet({ cellId: this.cellId, index: this.index, value, widgetId: this.id });
    };
    if (final) {
      this.active = false;
      send();
    } else {
      this.active = true;
      this.timer = setTimeout(send, DRAG_DEBOUNCE_MS);
    }
  }

  /** `input_changed`: everyone's new value, ours included. */
  remote(value, requestId) {
    this.definition.value = value;
    if (requestId && requestId === this.lastRequest) this.lastRequest = null;
    // Our own older values coming back while the user is still moving it would fight them.
    if (this.active || this.timer || this.lastRequest) {
      this.accepted = value;
      return;
    }
    this.accepted = value;
    this.control.set(value);
  }

  /** The server refused a value (invalid_field): back to the last accepted one. */
  refused() {
    clearTimeout(this.timer);
    this.timer = null;
    this.active = false;
    this.lastRequest = null;
    this.control.set(this.accepted);
  }
}

function buildSlider(widget, props) {
  const input = el("input.widget-slider", { type: "range", min: props.start, max: props.stop, step: props.step ?? "any" });
  const shown = el("output.widget-value");
  const show = () => { shown.textContent = input.value; };
  input.addEventListener("input", () => { show(); widget.changed(Number(input.value), false); });
  input.addEventListener("change", () => widget.changed(Number(input.value), true));
  return { node: el("span.widget-row", {}, input, shown), set: (value) => { input.value = value; show(); } };
}

function buildNumber(widget, props) {
  const input = el("input.widget-number", { type: "number", min: props.start, max: props.stop, step: props.step ?? "any" });
  input.addEventListener("input", () => { widget.active = true; });
  input.addEventListener("change", () => {
    if (input.value !== "") widget.changed(Number(input.value), true);
  });
  return { node: input, set: (value) => { input.value = value; } };
}

function buildText(widget, props) {
  const input = el("input.widget-text", { type: "text", maxlength: props.maxLength });
  input.addEventListener("input", () => widget.changed(input.value, false));
  input.addEventListener("change", () => widget.changed(input.value, true));
  return { node: input, set: (value) => { input.value = value ?? ""; } };
}

function buildDropdown(widget, props) {
  const select = el("select.widget-dropdown", {}, ...(props.options || []).map((option) => el("option", { value: option, text: option })));
  select.addEventListener("change", () => widget.changed(select.value, true));
  return { node: select, set: (value) => { select.value = value; } };
}

function buildCheckbox(widget) {
  const input = el("input.widget-checkbox", { type: "checkbox" });
  input.addEventListener("change", () => widget.changed(input.checked, true));
  return { node: input, set: (value) => { input.checked = Boolean(value); } };
}

function buildDate(widget, props) {
  const input = el("input.widget-date", { type: "date", min: props.start, max: props.stop });
  input.addEventListener("change", () => {
    if (input.value) widget.changed(input.value, true);
  });
  return { node: input, set: (value) => { input.value = value ?? ""; } };
}

/** Rows with a checkbox each (selection "multi") or a radio button ("single"). */
function buildTable(widget, props) {
  const single = props.selection === "single";
  const name = `select-${widget.id}`;
  const boxes = [];
  const selection = () => boxes.flatMap((box, row) => (box.checked ? [row] : []));
  const rows = (props.rows || []).map((cells, row) => {
    const box = el("input.widget-row-select", { type: single ? "radio" : "checkbox", name, "aria-label": `Select row ${row + 1}` });
    box.addEventListener("change", () => widget.changed(selection(), true));
    boxes.push(box);
    return el("tr", {}, el("td", {}, box), ...cells.map((text) => el("td", { text })));
  });
  const head = el("tr", {}, el("th"), ...(props.columns || []).map((column) => el("th", { text: column })));
  const shownRows = props.rows?.length ?? 0;
  const note = props.total > shownRows ? el("p.widget-note", { text: `${props.total.toLocaleString("en")} rows, showing the first ${shownRows}` }) : null;
  const table = el("table.widget-table", {}, el("thead", {}, head), el("tbody", {}, ...rows));
  return {
    node: el("div.widget-table-wrap", {}, table, note),
    set: (value) => {
      const chosen = new Set(Array.isArray(value) ? value : []);
      boxes.forEach((box, row) => { box.checked = chosen.has(row); });
    },
  };
}

function buildUnknown(widget) {
  return { node: el("span.widget-unknown", { text: `(an input of kind ${widget.definition.kind} this page cannot draw)` }), set: () => {} };
}

const BUILDERS = { slider: buildSlider, number: buildNumber, text: buildText, dropdown: buildDropdown, checkbox: buildCheckbox, date: buildDate, table: buildTable };
