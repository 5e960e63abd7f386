"""Interactive charts as MIME bundles, in the notebook's execution process (docs/frontend.md#outputs).

A cell whose last value is a plotly figure, an altair chart or a bokeh model produces the JSON
its library's own renderer draws (plotly.js, vega-embed, BokehJS). The page draws it with those
renderers, vendored into our static files, inside an opaque-origin frame: no user script runs
in the page and nothing is fetched from the internet. Everything else keeps its usual forms
(text/plain, text/html, image/png).

Imported by kernel/_child.py and kernel/value_outputs.py only: this module runs inside the sandbox and imports the chart
libraries only when a value comes from one of them (their import is slow)."""

import json
import re
import sys

PLOTLY_MIME = "application/vnd.plotly.v1+json"
VEGALITE_MIME = "application/vnd.vegalite.v6+json"
VEGA_MIME = "application/vnd.vega.v6+json"
# bokeh.embed.json_item(model): {target_id, root_id, doc, version}, drawn by Bokeh.embed.embed_item.
BOKEH_MIME = "application/vnd.bokehjs.item+json"
CHART_MIME_TYPES = (PLOTLY_MIME, VEGALITE_MIME, VEGA_MIME, BOKEH_MIME)

# altair writes "application/vnd.vegalite.v6.json", older ones "...v5+json": one name each here
# (vega-lite 6 and vega 6 on the page read v5 specifications too).
_VEGA_FAMILY = re.compile(r"^application/vnd\.(vegalite|vega)\.v\d+[.+]json$")

_shown = []  # charts a cell showed with fig.show() (plotly) or show(p) (bokeh), collected by its run


def chart_outputs(value):
    """The chart outputs for `value`, or None when it is not a chart of a known library."""
    module = type(value).__module__ or ""
    top = module.partition(".")[0]
    if top == "plotly" and callable(getattr(value, "to_plotly_json", None)):
        return [{"mimeType": PLOTLY_MIME, "data": plotly_json(value)}]
    if top == "bokeh":
        item = _bokeh_item(value)
        if item is not None:
            return [{"mimeType": BOKEH_MIME, "data": item}]
    if top == "altair" and callable(getattr(value, "_repr_mimebundle_", None)):
        return _vega_outputs(value)
    return None


def plotly_json(figure):
    """A figure as plotly.js reads it: data, layout and config, numbers as typed arrays."""
    import plotly.io

    return json.loads(plotly.io.to_json(figure, validate=False, remove_uids=False))


def _bokeh_item(value):
    try:
        from bokeh.embed import json_item
        from bokeh.model import Model
    except ImportError:
        return None
    if not isinstance(value, Model):
        return None
    return json.loads(json.dumps(json_item(value)))


def _vega_outputs(value):
    import altair

    with altair.renderers.enable("mimetype"):
        bundle = value._repr_mimebundle_()
    if isinstance(bundle, tuple):
        bundle = bundle[0]
    outputs = []
    for mime, data in (bundle or {}).items():
        family = _VEGA_FAMILY.match(mime)
        if family and isinstance(data, dict):
            outputs.append({"mimeType": VEGALITE_MIME if family.group(1) == "vegalite" else VEGA_MIME, "data": data})
    return outputs or None


def install_plotly_renderer(plotly_io):
    """`fig.show()` in a cell shows the figure below it (plotly's own renderers would open a
    browser or need IPython)."""
    from plotly.io._base_renderers import ExternalRenderer

    class NotebookServerRenderer(ExternalRenderer):
        def render(self, fig_dict):
            _shown.append({"mimeType": PLOTLY_MIME, "data": json.loads(plotly_io.to_json(fig_dict, validate=False))})

    plotly_io.renderers["notebook_server"] = NotebookServerRenderer()
    plotly_io.renderers.default = "notebook_server"


def install_bokeh_show(showing):
    """`show(p)` in a cell shows the figure below it (bokeh's would write an HTML file and open
    a browser); `show` is replaced before bokeh.io and bokeh.plotting import it."""

    def show(obj, *args, **kwargs):
        item = _bokeh_item(obj)
        if item is None:
            raise TypeError(f"show() draws bokeh models here, not {type(obj).__name__}")
        _shown.append({"mimeType": BOKEH_MIME, "data": item})

    show.__doc__ = "Show a bokeh figure or layout below the cell."
    showing.show = show


def install_bokeh_output(output):
    """`output_notebook()` (Jupyter habit) is not needed here: BokehJS is already on the page."""

    def output_notebook(*args, **kwargs):
        return None

    output.output_notebook = output_notebook


# module -> what to set up in it right after it is first imported, by whatever cell imports it
_SETUP = {
    "plotly.io": install_plotly_renderer,
    "bokeh.io.showing": install_bokeh_show,
    "bokeh.io.output": install_bokeh_output,
}


class ImportHook:
    """Sets up chart libraries as their modules are first imported (the imports are slow: only
    when a cell asks for them)."""

    def find_spec(self, name, path=None, target=None):
        setup = _SETUP.get(name)
        if setup is None:
            return None
        import importlib.util

        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return None
        exec_module = spec.loader.exec_module

        def exec_and_set_up(module):
            exec_module(module)
            setup(module)

        spec.loader.exec_module = exec_and_set_up
        return spec


def install():
    """At the child's start: before any cell runs."""
    sys.meta_path.insert(0, ImportHook())


def install_display(outputs_of):
    """`display(obj, ...)` as IPython and Jupyter have it, for notebooks written there: each
    object's outputs (`outputs_of(obj)`: its bundles) join the cell's where it was called."""
    import builtins

    def display(*objects, **options):
        for obj in objects:
            _shown.extend(outputs_of(obj))

    builtins.display = display


def shown_charts():
    """The charts shown with fig.show() or show(p), and the objects given to display(), since
    the last call, in order."""
    charts = list(_shown)
    _shown.clear()
    return charts
