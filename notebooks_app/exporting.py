"""A notebook written out as a file: Jupyter `.ipynb` (with its current outputs), Jupytext percent
`.py` (code only, diff-friendly) or a static HTML report.  Reads the database, changes nothing.

Every format imports back (importing.py) as the same cells in the same order: SQL cells travel as
`%%sql <result variable> <<` cells.  Outputs stored apart (models.OutputBlob, an output with a
`ref` and no `data`) are read back here so files carry them whole.  What maps to what:
docs/files.md.
"""
import json
from dataclasses import dataclass

import jupytext
import nbformat
from django.template.loader import render_to_string
from django.utils.text import slugify
from nbformat.v4 import new_notebook, new_output

from .constants import CELL_MARKDOWN, CELL_SQL, MARKDOWN_MIME, OUTPUT_HTML_STYLE
from .kernel.display import CHART_MIME_TYPES
from .kernel.markdown import render as render_markdown
from .models import OutputBlob
from .packages import NOTEBOOK_METADATA_KEY, script_block

FORMATS = {
    "ipynb": ("application/x-ipynb+json", ".ipynb"),
    "py": ("text/x-python; charset=utf-8", ".py"),
    "html": ("text/html; charset=utf-8", ".html"),
}
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}
# The percent file has no YAML header: nothing in it changes unless the cells do.
PERCENT_METADATA = {"jupytext": {"notebook_metadata_filter": "-all", "cell_metadata_filter": "-all"}}
# The report has no script and loads nothing; HTML outputs are sandboxed srcdoc frames, which
# inherit this policy too. Also sent as a header when the report is downloaded.
REPORT_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-src 'self'"


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
    says so as text)."""
    resolved = []
    for output in cell.outputs or []:
        mime = output.get("mimeType", "text/plain")
        if mime in CHART_MIME_TYPES:  # JSON: a dict in .ipynb (JupyterLab draws these itself)
            data = output["data"] if "data" in output else json.loads(blobs[output["ref"]]) if output.get("ref") in blobs else None
            if data is not None:
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
    """Consecutive forms of one value (text/plain then text/html) as one MIME bundle each."""
    bundles = []
    for mime, data in outputs:
        if bundles and mime == "text/html" and set(bundles[-1]) == {"text/plain"}:
            bundles[-1][mime] = data
        else:
            bundles.append({mime: data})
    return bundles


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
            jupyter_cells.append({"id": str(cell.pk), "cell_type": "markdown", "metadata": {}, "source": cell.code})
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
    """A self-contained report: markdown and outputs (code only with show_code), no script;
    HTML outputs in sandboxed frames."""
    cells = _cells(notebook)
    blobs = _blob_data(notebook, cells)
    shown = [_report_cell(cell, blobs) for cell in cells]
    context = {"notebook": notebook, "cells": shown, "show_code": show_code, "output_style": OUTPUT_HTML_STYLE, "policy": REPORT_POLICY}
    return render_to_string("notebooks/export.html", context)


def _report_cell(cell, blobs):
    if cell.type == CELL_MARKDOWN:
        return {"markdown": True, "html": _markdown_html(cell), "code": cell.code}
    outputs = []
    for bundle in _bundles(_resolved_outputs(cell, blobs)):
        chart = next((mime for mime in bundle if mime in CHART_MIME_TYPES), None)
        if chart:  # a report runs no script: the chart is interactive in the notebook only
            outputs.append({"kind": "text", "data": f"[interactive chart ({chart}): open the notebook to see it]"})
        elif "text/html" in bundle:
            outputs.append({"kind": "html", "data": bundle["text/html"]})
        elif "image/png" in bundle:
            outputs.append({"kind": "image", "data": f"data:image/png;base64,{bundle['image/png']}"})
        else:
            outputs.append({"kind": "text", "data": next(iter(bundle.values()))})
    return {"markdown": False, "type": cell.type, "code": cell.code, "stdout": cell.stdout, "outputs": outputs, "error": cell.error}


def _markdown_html(cell):
    """A markdown cell's sanitized HTML: its rendered output when it has run (placeholders
    filled in), else its text rendered now; never raw HTML from the cell."""
    for output in cell.outputs or []:
        if output.get("mimeType") == MARKDOWN_MIME and "data" in output:
            return output["data"]
    return render_markdown(cell.code)
