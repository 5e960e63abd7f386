"""What a cell's value and the figures it left open become as output bundles, in the execution process.

`ValueOutputs` turns a value into its bundles (a widget's definition, a chart's JSON through
display.py, a matplotlib figure as PNG, else `repr` and `_repr_html_`), collects the figures
a cell left open, and cuts every bundle to the caps: text and HTML to `output_cap`
characters, an image to `image_cap` bytes (a note replaces what is not kept).  It runs inside
the sandbox, imported by `_child.py` only: no Django, nothing of the project but display.py
and ui.py; it never sends anything (the kernel puts the bundles in the cell's result).
"""
import base64
import io
import json
import sys

from notebooks_app.kernel import display


class ValueOutputs:
    def __init__(self, output_cap, image_cap):
        self.output_cap = output_cap  # characters of one text or HTML output
        self.image_cap = image_cap  # bytes of one image output

    def of(self, value):
        """A cell's last value and the figures it left open, capped."""
        return self.cap(self.value_outputs(value) + self.open_figures())

    def value_outputs(self, value):
        """A value's own bundles: a chart, a figure's PNG, or its text (and HTML) form."""
        from notebooks_app.kernel import ui

        outputs = []
        if isinstance(value, ui.Widget):
            return [{"mimeType": ui.UI_MIME, "data": value.definition()}]
        charts = None
        if value is not None:
            try:
                charts = display.chart_outputs(value)
            except Exception as exc:  # noqa: BLE001 - a chart that cannot be drawn is shown as its repr
                print(f"[this {type(value).__name__} could not be drawn as an interactive chart: {type(exc).__name__}: {exc}]", file=sys.stderr)
        if charts:
            outputs.extend(charts)
        elif value is not None:
            png = _figure_png(value)
            if png is not None:
                outputs.append({"mimeType": "image/png", "data": png})
                _close_figure(value)  # shown as the value: not once more as an open figure
            else:
                html = None
                repr_html = getattr(value, "_repr_html_", None)
                if callable(repr_html) and not isinstance(value, type):
                    try:
                        html = repr_html()
                    except Exception:  # a broken _repr_html_ falls back to the plain repr
                        html = None
                try:
                    text = repr(value)
                except Exception as exc:  # noqa: BLE001
                    text = f"<repr failed: {type(exc).__name__}: {exc}>"
                outputs.append({"mimeType": "text/plain", "data": text})
                if isinstance(html, str):
                    outputs.append({"mimeType": "text/html", "data": html})
        return outputs

    def open_figures(self):
        """Figures the cell left open (plt.plot without returning the figure)."""
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is None:
            return []
        outputs = []
        try:
            for number in pyplot.get_fignums():
                png = _figure_png(pyplot.figure(number))
                if png is not None:
                    outputs.append({"mimeType": "image/png", "data": png})
            pyplot.close("all")
        except Exception:  # rendering a broken figure must not fail the cell
            pass
        return outputs

    def cap(self, outputs):
        """Text and HTML over the output cap are cut; an image is kept whole up to the image cap
        (large outputs travel by reference, docs/protocol.md#sizes), or replaced by a note."""
        capped = []
        for output in outputs:
            data = output["data"]
            if output["mimeType"] in display.CHART_MIME_TYPES:
                size = len(json.dumps(data, separators=(",", ":")))
                if size > self.output_cap:
                    output = {"mimeType": "text/plain", "data": f"[{output['mimeType']} chart of {size:,} characters is larger than the {self.output_cap:,} character cap and was not kept: plot fewer points]"}
            elif isinstance(data, str) and output["mimeType"].startswith("image/"):
                if len(data) * 3 // 4 > self.image_cap:
                    output = {"mimeType": "text/plain", "data": f"[{output['mimeType']} output of {len(data) * 3 // 4:,} bytes is larger than the {self.image_cap:,} byte image cap and was not kept]"}
            elif isinstance(data, str) and len(data) > self.output_cap:
                note = f"[output truncated: {len(data):,} characters, showing the first {self.output_cap:,}]"
                if output["mimeType"] == "text/plain":
                    output = {"mimeType": "text/plain", "data": data[: self.output_cap] + "\n" + note}
                else:
                    output = {"mimeType": "text/plain", "data": f"[{output['mimeType']} output of {len(data):,} characters is larger than the {self.output_cap:,} character cap and was not kept]"}
            capped.append(output)
        return capped


def _figure_of(value):
    figure_module = sys.modules.get("matplotlib.figure")
    if figure_module is None:
        return None
    if isinstance(value, figure_module.Figure):
        return value
    figure = getattr(value, "figure", None)
    return figure if isinstance(figure, figure_module.Figure) else None


def _close_figure(value):
    pyplot = sys.modules.get("matplotlib.pyplot")
    figure = _figure_of(value)
    if pyplot is not None and figure is not None:
        try:
            pyplot.close(figure)
        except Exception:  # a figure pyplot does not manage
            pass


def _figure_png(value):
    figure = _figure_of(value)
    if figure is None:
        return None
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
