"""A notebook written out as a file: Jupyter `.ipynb` (with its current outputs), Jupytext percent
`.py` (code only, diff-friendly) or a static HTML report.  Reads the database, changes nothing.

Every format imports back (importing.py) as the same cells in the same order: SQL cells travel as
`%%sql <result variable> <<` cells.  Outputs stored apart (models.OutputBlob, an output with a
`ref` and no `data`) are read back here so files carry them whole.  Interactive charts and
inputs keep what the page shows: the report draws charts with the vendored libraries inlined
into sandboxed frames, and every file shows an input as its label and current value.  What maps
to what: docs/files.md.
"""
import base64
import functools
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from types import SimpleNamespace

import jupytext
import nbformat
from django.contrib.staticfiles import finders
from django.template.loader import render_to_string
from django.utils.html import escape
from django.utils.text import slugify
from nbformat.v4 import new_notebook, new_output

from .constants import CELL_MARKDOWN, CELL_SQL, MARKDOWN_MIME, OUTPUT_HTML_STYLE
from .kernel.display import BOKEH_MIME, CHART_MIME_TYPES, PLOTLY_MIME, VEGA_MIME, VEGALITE_MIME
from .kernel.markdown import render as render_markdown
from .kernel.ui import UI_MIME
from .models import OutputBlob
from .output_documents import VENDOR
from .packages import NOTEBOOK_METADATA_KEY, script_block

logger = logging.getLogger(__name__)

FORMATS = {
    "ipynb": ("application/x-ipynb+json", ".ipynb"),
    "py": ("text/x-python; charset=utf-8", ".py"),
    "html": ("text/html; charset=utf-8", ".html"),
}
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}
# The percent file has no YAML header: nothing in it changes unless the cells do.
PERCENT_METADATA = {"jupytext": {"notebook_metadata_filter": "-all", "cell_metadata_filter": "-all"}}
# Outputs whose data is JSON: a dict in .ipynb, with text fallbacks next to it.
JSON_MIME_TYPES = (*CHART_MIME_TYPES, UI_MIME)
# The vendored libraries each chart is drawn with, in load order (as static/notebooks/frame.js).
CHART_LIBRARIES = {
    PLOTLY_MIME: ("plotly",),
    VEGALITE_MIME: ("vega", "vega-lite", "vega-embed"),
    VEGA_MIME: ("vega", "vega-lite", "vega-embed"),
    BOKEH_MIME: ("bokeh", "bokeh-gl", "bokeh-widgets", "bokeh-tables"),
}
CHART_NAMES = {PLOTLY_MIME: "Plotly chart", VEGALITE_MIME: "Vega-Lite chart", VEGA_MIME: "Vega chart", BOKEH_MIME: "Bokeh figure"}
# A chart frame's last script: draws the JSON of its #chart-data element (the drawing calls of
# static/notebooks/frame.js, without the messages to a page the report does not have).
CHART_DRAW_SCRIPT = """(function () {
  var root = document.documentElement, target = document.getElementById("chart");
  function failed(error) {
    root.setAttribute("data-state", "failed");
    target.textContent = "Could not draw this chart: " + (error && error.message ? error.message : String(error));
  }
  try {
    var spec = JSON.parse(document.getElementById("chart-data").textContent), mime = root.getAttribute("data-mime"), drawn;
    if (mime === "application/vnd.plotly.v1+json") {
      drawn = Plotly.newPlot(target, spec.data || [], spec.layout || {}, Object.assign({ responsive: true, displaylogo: false }, spec.config || {}));
    } else if (mime === "application/vnd.bokehjs.item+json") {
      drawn = Bokeh.embed.embed_item(spec, target);
    } else {
      drawn = vegaEmbed(target, spec, { actions: false, renderer: "svg" });
    }
    Promise.resolve(drawn).then(function () { root.setAttribute("data-state", "drawn"); }, failed);
  } catch (error) {
    failed(error);
  }
})();"""


def _script_hash(text):
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


@functools.cache
def vendored_script(name):
    """The text of vendored library `name` as a chart frame inlines it, or None when this
    deployment lacks it or it cannot sit in a <script> element unchanged."""
    path = finders.find(VENDOR[name])
    if path is None:
        logger.warning("The report cannot draw charts that need %s: %s is not in the static files", name, VENDOR[name])
        return None
    with open(path, encoding="utf-8") as file:
        text = file.read().replace("\r\n", "\n").replace("\r", "\n")  # as the HTML parser reads it
    if re.search(r"</script", text, re.I) or "<!--" in text and re.search(r"<script[\s/>]", text, re.I):
        logger.warning("The report cannot inline %s: its text would end its <script> element early", name)
        return None
    return text


@functools.cache
def report_policy():
    """No fetch of any kind (default-src 'none', no URL anywhere). Scripts run only where their
    hash is listed: the vendored chart libraries and CHART_DRAW_SCRIPT, which the report holds
    only inside <iframe sandbox="allow-scripts" srcdoc> chart frames (an opaque origin; a srcdoc
    frame inherits this policy). The report itself has none. 'unsafe-eval': vega compiles its
    expressions and plotly's WebGL traces their shaders, as in the page's chart frame."""
    names = sorted({name for libraries in CHART_LIBRARIES.values() for name in libraries})
    scripts = [CHART_DRAW_SCRIPT] + [text for text in map(vendored_script, names) if text is not None]
    return "; ".join(
        [
            "default-src 'none'",
            "script-src " + " ".join(_script_hash(text) for text in scripts) + " 'unsafe-eval'",
            "style-src 'unsafe-inline'",
            "img-src data:",
            "font-src data:",
            "form-action 'none'",
            "base-uri 'none'",
        ]
    )



@dataclass
class ExportedFile:
    content: str
    content_type: str
    filename: str


def export_notebook(notebook, fmt, *, show_code=False):
    """The notebook as `fmt` ("ipynb", "py" or "html"); show_code: the HTML report with code."""
    content_type, extension = FORMATS[fmt]
    if fmt == "ipynb":
        content = to_ipynb(notebook)
    elif fmt == "py":
        content = to_percent(notebook)
    else:
        content = to_html(notebook, show_code=show_code)
    return ExportedFile(content=content, content_type=content_type, filename=(slugify(notebook.name) or "notebook") + extension)


def _cells(notebook):
    return list(notebook.cells.order_by("position"))


def _blob_data(notebook, cells):
    """digest -> data of the outputs these cells hold by reference."""
    digests = {output["ref"] for cell in cells for output in cell.outputs or [] if "ref" in output and "data" not in output}
    if not digests:
        return {}
    return dict(OutputBlob.objects.filter(cell__notebook=notebook, digest__in=digests).values_list("digest", "data"))


def _resolved_outputs(cell, blobs):
    """The cell's outputs with their data (by reference ones read back; one whose blob is gone
    says so as text); an input with the value people set on it (Cell.inputs)."""
    resolved = []
    for output in cell.outputs or []:
        mime = output.get("mimeType", "text/plain")
        if mime in JSON_MIME_TYPES:  # JSON: a dict in .ipynb (JupyterLab draws charts itself)
            data = output["data"] if "data" in output else json.loads(blobs[output["ref"]]) if output.get("ref") in blobs else None
            if isinstance(data, dict):
                if mime == UI_MIME and data.get("id") in (cell.inputs or {}):
                    data = {**data, "value": cell.inputs[data["id"]]}
                resolved.append((mime, data))
                continue
        if "data" in output:
            resolved.append((mime, str(output["data"])))
        elif output.get("ref") in blobs:
            resolved.append((mime, blobs[output["ref"]]))
        else:
            resolved.append(("text/plain", f"[{mime} output no longer stored]"))
    return resolved


def _bundles(outputs):
    """Consecutive forms of one value (text/plain then text/html) as one MIME bundle each; a
    chart or an input with its text forms (for readers that do not know its MIME type)."""
    bundles = []
    for mime, data in outputs:
        if mime in JSON_MIME_TYPES:
            bundles.append({mime: data, **_text_forms(mime, data)})
        elif bundles and mime == "text/html" and set(bundles[-1]) == {"text/plain"}:
            bundles[-1][mime] = data
        else:
            bundles.append({mime: data})
    return bundles


def _text_forms(mime, data):
    if mime == UI_MIME:
        text = input_text(data)
        return {"text/plain": text, "text/html": f'<p class="notebook-input">{escape(text)}</p>'}
    return {"text/plain": chart_text(mime, data)}  # an HTML form would need a script to draw


def input_text(definition):
    """An input as the page shows it: "Threshold: 40"."""
    kind, value = definition.get("kind", "input"), definition.get("value")
    label = definition.get("label") or kind.capitalize()
    if kind == "checkbox":
        shown = "yes" if value else "no"
    elif kind == "table":
        rows = value or []
        total = (definition.get("props") or {}).get("total", 0)
        shown = f"{len(rows)} of {total} rows selected" + (f" (rows {', '.join(map(str, rows))})" if rows else "")
    else:
        shown = str(value)
    return f"{label}: {shown}"


def _title(title):
    return title.get("text") if isinstance(title, dict) else title


def chart_text(mime, data):
    """A chart in one line: its library, title and what it draws."""
    parts = []
    if mime == PLOTLY_MIME:
        title = _title((data.get("layout") or {}).get("title"))
        traces = [trace.get("type", "scatter") for trace in data.get("data") or [] if isinstance(trace, dict)]
        parts = [repr(title) if title else "", f"{len(traces)} trace{'s' * (len(traces) != 1)}: {', '.join(traces)}" if traces else ""]
    elif mime in (VEGALITE_MIME, VEGA_MIME):
        title, mark = _title(data.get("title")), data.get("mark")
        parts = [repr(title) if isinstance(title, str) else "", f"mark: {mark.get('type') if isinstance(mark, dict) else mark}" if mark else ""]
    parts = [part for part in parts if part]
    return f"<{CHART_NAMES[mime]}{' ' + ', '.join(parts) if parts else ''}>"


def _source(cell):
    if cell.type == CELL_SQL:
        return f"%%sql {cell.result_variable} <<\n{cell.code}" if cell.result_variable else f"%%sql\n{cell.code}"
    return cell.code


def _jupyter_outputs(cell, blobs):
    outputs = []
    if cell.stdout:
        outputs.append(new_output("stream", name="stdout", text=cell.stdout))
    for bundle in _bundles(_resolved_outputs(cell, blobs)):
        if set(bundle) <= {"text/plain", "text/html"}:
            outputs.append(new_output("execute_result", data=bundle, execution_count=None))
        else:
            outputs.append(new_output("display_data", data=bundle))
    if cell.error:
        error = cell.error
        outputs.append(
            new_output("error", ename=str(error.get("ename", "")), evalue=str(error.get("evalue", "")), traceback=[str(line) for line in error.get("traceback") or []])
        )
    return outputs


def _jupyter_notebook(notebook, *, with_outputs):
    cells = _cells(notebook)
    blobs = _blob_data(notebook, cells) if with_outputs else {}
    # Cells as plain dicts, validated once with the notebook: nbformat's new_code_cell()
    # validates each cell on its own, with the slow validator (milliseconds a cell).
    jupyter_cells = []
    for cell in cells:
        if cell.type == CELL_MARKDOWN:
            # The source stays (Jupyter has no {name} fields; the file imports back the same);
            # what the page last showed, fields filled in, rides along in the cell's metadata.
            rendered = _rendered_markdown(cell) if with_outputs else None
            metadata = {NOTEBOOK_METADATA_KEY: {"rendered": rendered}} if rendered is not None else {}
            jupyter_cells.append({"id": str(cell.pk), "cell_type": "markdown", "metadata": metadata, "source": cell.code})
        else:
            outputs = _jupyter_outputs(cell, blobs) if with_outputs else []
            jupyter_cells.append({"id": str(cell.pk), "cell_type": "code", "metadata": {}, "execution_count": None, "outputs": outputs, "source": _source(cell)})
    metadata = {"kernelspec": KERNELSPEC, "language_info": {"name": "python"}}
    if notebook.requirements:
        metadata[NOTEBOOK_METADATA_KEY] = {"requirements": list(notebook.requirements)}
    return nbformat.from_dict({**new_notebook(metadata=metadata), "cells": jupyter_cells})


def to_ipynb(notebook):
    """nbformat 4 JSON, valid against its schema, outputs included."""
    jupyter = _jupyter_notebook(notebook, with_outputs=True)
    nbformat.validate(jupyter)
    return nbformat.v4.writes(jupyter)  # nbformat.writes() would validate it a second time


def to_percent(notebook):
    """Jupytext percent-format Python: `# %%` cells, `# %% [markdown]`, SQL as `%%sql` cells; the
    notebook's packages first, as a PEP 723 `# /// script` block (`uv run` reads it too)."""
    jupyter = _jupyter_notebook(notebook, with_outputs=False)
    jupyter.metadata.pop(NOTEBOOK_METADATA_KEY, None)
    jupyter.metadata.update(PERCENT_METADATA)
    block = script_block(list(notebook.requirements or []))
    text = jupytext.writes(jupyter, fmt="py:percent")
    return f"{block}\n{text}" if block else text


def to_html(notebook, *, show_code=False):
    """A self-contained report: markdown and outputs (code only with show_code); HTML outputs in
    sandboxed frames without scripts, charts in sandboxed frames with their libraries inlined."""
    cells = _cells(notebook)
    blobs = _blob_data(notebook, cells)
    shown = [_report_cell(cell, blobs) for cell in cells]
    context = {"notebook": notebook, "cells": shown, "show_code": show_code, "output_style": OUTPUT_HTML_STYLE, "policy": report_policy()}
    return render_to_string("notebooks/export.html", context)


def run_to_html(run, *, show_code=False):
    """A run with an id (models.NotebookRun) as a report like to_html's: its cells' outputs as the
    run left them (inputs at the run's parameter values), from the run's row alone."""
    cells = [
        SimpleNamespace(type=r.get("type"), code=r.get("code", ""), outputs=r.get("outputs") or [], inputs={}, stdout=r.get("stdout") or "", error=r.get("error"))
        for r in run.results or []
    ]
    shown = [_report_cell(cell, {}) for cell in cells]
    context = {"notebook": run.notebook, "run": run, "cells": shown, "show_code": show_code, "output_style": OUTPUT_HTML_STYLE, "policy": report_policy()}
    return render_to_string("notebooks/export.html", context)


def _report_cell(cell, blobs):
    if cell.type == CELL_MARKDOWN:
        return {"markdown": True, "html": _markdown_html(cell), "code": cell.code}
    outputs = []
    for bundle in _bundles(_resolved_outputs(cell, blobs)):
        chart = next((mime for mime in bundle if mime in CHART_MIME_TYPES), None)
        if chart:
            outputs.append(_chart_output(chart, bundle[chart]))
        elif UI_MIME in bundle:
            outputs.append({"kind": "input", "data": bundle["text/plain"]})
        elif "text/html" in bundle:
            outputs.append({"kind": "html", "data": bundle["text/html"]})
        elif "image/png" in bundle:
            outputs.append({"kind": "image", "data": f"data:image/png;base64,{bundle['image/png']}"})
        else:
            outputs.append({"kind": "text", "data": next(iter(bundle.values()))})
    return {"markdown": False, "type": cell.type, "code": cell.code, "stdout": cell.stdout, "outputs": outputs, "error": cell.error}


def _chart_output(mime, data):
    """A chart as the report draws it: a frame document holding its libraries, its JSON and
    CHART_DRAW_SCRIPT; as its text form when a library is missing here."""
    libraries = [vendored_script(name) for name in CHART_LIBRARIES[mime]]
    if None in libraries:
        return {"kind": "text", "data": chart_text(mime, data) + "\n" + json.dumps(data, indent=1)}
    scripts = "".join(f"<script>{text}</script>" for text in libraries)
    spec = json.dumps(data).replace("<", "\\u003c")  # nothing in it can end its element
    document = (
        f'<!DOCTYPE html><html lang="en" data-mime="{escape(mime)}"><head><meta charset="utf-8">{OUTPUT_HTML_STYLE}{scripts}</head>'
        f'<body><div id="chart"></div><script type="application/json" id="chart-data">{spec}</script>'
        f"<script>{CHART_DRAW_SCRIPT}</script></body></html>"
    )
    return {"kind": "chart", "document": document, "height": _chart_height(mime, data), "title": chart_text(mime, data)}


def _chart_height(mime, data):
    """The frame's height in pixels (the report has no script to measure it): the chart's own
    height where its JSON says, plus room for axes and legend, else its library's default."""
    if mime == PLOTLY_MIME:
        height, extra, default = (data.get("layout") or {}).get("height"), 20, 470
    elif mime == BOKEH_MIME:
        height, extra, default = None, 0, 640
    else:
        height, extra, default = data.get("height"), 100, 380
    if not isinstance(height, (int, float)) or isinstance(height, bool):
        return default
    return int(min(max(height, 100), 2000)) + extra


def _rendered_markdown(cell):
    """A markdown cell's stored output: its sanitized HTML with its fields filled in, as the
    page last showed it; None when it has not run."""
    for output in cell.outputs or []:
        if output.get("mimeType") == MARKDOWN_MIME and "data" in output:
            return str(output["data"])
    return None


def _markdown_html(cell):
    """A markdown cell's sanitized HTML: its rendered output when it has run (placeholders
    filled in), else its text rendered now; never raw HTML from the cell."""
    rendered = _rendered_markdown(cell)
    return render_markdown(cell.code) if rendered is None else rendered
