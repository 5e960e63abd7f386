"""Exports keep what the page shows (issue 33, item 4): charts drawn in the HTML report with the
vendored libraries inlined and no network, inputs as "label: value", markdown fields with their
last rendered value, and .ipynb bundles with JSON as dicts and text fallbacks."""
import html
import json
import os
import re

import nbformat
import pytest
from django.urls import reverse

from notebooks_app import exporting
from notebooks_app.constants import CELL_MARKDOWN, MARKDOWN_MIME
from notebooks_app.kernel.display import BOKEH_MIME, PLOTLY_MIME, VEGALITE_MIME
from notebooks_app.kernel.ui import UI_MIME
from notebooks_app.models import Cell

pytestmark = pytest.mark.django_db

PLOTLY = {"data": [{"type": "bar", "x": ["a", "b"], "y": [3, 5]}], "layout": {"title": {"text": "Sales by region"}, "height": 300}}
VEGALITE = {"$schema": "https://vega.github.io/schema/vega-lite/v6.json", "mark": "line", "title": "Trend",
            "data": {"values": [{"x": 1, "y": 2}, {"x": 2, "y": 4}]}, "encoding": {"x": {"field": "x", "type": "quantitative"}, "y": {"field": "y", "type": "quantitative"}}}
BOKEH = {"target_id": None, "root_id": "p1001", "version": "3.7.3", "doc": {"version": "3.7.3", "title": "", "roots": [{"type": "object", "name": "Figure", "id": "p1001"}]}}
SLIDER = {"id": "CELL:0", "kind": "slider", "label": "Threshold", "props": {"start": 0, "stop": 100, "step": 1}, "value": 10}


@pytest.fixture
def shown(notebook):
    """A notebook as the page shows it: a markdown field, a slider moved to 40, three charts."""
    make = Cell.objects.create
    make(notebook=notebook, position=256, type=CELL_MARKDOWN, code="Cut-off is **{threshold.value}**", status="success",
         outputs=[{"mimeType": MARKDOWN_MIME, "data": "<p>Cut-off is <strong>40</strong></p>"}])
    slider = make(notebook=notebook, position=512, code="threshold = ui.slider(0, 100, label='Threshold')", status="success")
    slider.outputs = [{"mimeType": UI_MIME, "data": {**SLIDER, "id": f"{slider.pk}:0"}}]
    slider.inputs = {f"{slider.pk}:0": 40}  # moved on the page after the cell ran
    slider.save()
    make(notebook=notebook, position=1024, code="px.bar(...)", status="success", outputs=[{"mimeType": PLOTLY_MIME, "data": PLOTLY}])
    make(notebook=notebook, position=2048, code="alt.Chart(...)", status="success", outputs=[{"mimeType": VEGALITE_MIME, "data": VEGALITE}])
    make(notebook=notebook, position=3072, code="figure(...)", status="success", outputs=[{"mimeType": BOKEH_MIME, "data": BOKEH}])
    return notebook


def export(client, user, notebook, fmt):
    client.force_login(user)
    return client.get(reverse("notebooks:export", kwargs={"notebook_id": notebook.pk, "fmt": fmt}))


def chart_documents(page):
    return [html.unescape(match) for match in re.findall(r'<iframe class="chart-output" sandbox="allow-scripts" srcdoc="([^"]*)"', page)]


def test_html_report_draws_each_chart_with_its_library_inline(client, users, shown):
    page = export(client, users["carol"], shown, "html").content.decode()
    plotly, vegalite, bokeh = chart_documents(page)
    assert "[interactive chart" not in page
    for document, libraries, spec in [(plotly, ["plotly"], PLOTLY), (vegalite, ["vega", "vega-lite", "vega-embed"], VEGALITE), (bokeh, ["bokeh", "bokeh-widgets"], BOKEH)]:
        for name in libraries:
            assert f"<script>{exporting.vendored_script(name)}</script>" in document
        data = re.search(r'<script type="application/json" id="chart-data">(.*?)</script>', document).group(1)
        assert json.loads(data) == spec
        assert exporting.CHART_DRAW_SCRIPT in document
    assert "vega-lite" not in plotly.replace(exporting.vendored_script("plotly"), "")  # only what it needs


def test_html_report_fetches_nothing_and_runs_scripts_only_in_chart_frames(client, users, shown):
    response = export(client, users["carol"], shown, "html")
    page = response.content.decode()
    policy = response["Content-Security-Policy"]
    assert f'<meta http-equiv="Content-Security-Policy" content="{html.escape(policy)}">' in page
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["default-src"] == "'none'"
    sources = " ".join(directives.values()).split()
    assert [s for s in sources if ":" in s] == ["data:", "data:"] and "'self'" not in sources and "*" not in sources
    assert all(s.startswith("'sha256-") for s in directives["script-src"].split() if s != "'unsafe-eval'")
    assert "'unsafe-inline'" not in directives["script-src"]
    # The report itself has no script: every <script> is inside a frame's escaped srcdoc, and
    # none of them loads anything.
    assert "<script" not in page
    for document in chart_documents(page):
        assert not re.search(r"<script[^>]*\ssrc=", document)


def test_an_input_shows_its_label_and_current_value(client, users, shown):
    page = export(client, users["carol"], shown, "html").content.decode()
    assert '<p class="input-value">Threshold: 40</p>' in page and "&#x27;kind&#x27;" not in page
    nb = nbformat.reads(export(client, users["carol"], shown, "ipynb").content.decode(), as_version=4)
    (output,) = nb.cells[1].outputs
    assert output.data["text/plain"] == "Threshold: 40" and "Threshold: 40" in output.data["text/html"]
    assert output.data[UI_MIME]["value"] == 40 and output.data[UI_MIME]["label"] == "Threshold"


def test_markdown_fields_show_their_last_rendered_value(client, users, shown):
    page = export(client, users["carol"], shown, "html").content.decode()
    assert "<p>Cut-off is <strong>40</strong></p>" in page
    nb = nbformat.reads(export(client, users["carol"], shown, "ipynb").content.decode(), as_version=4)
    markdown = nb.cells[0]
    assert markdown.source == "Cut-off is **{threshold.value}**"  # imports back as the same field
    assert markdown.metadata["reactive_notebooks"]["rendered"] == "<p>Cut-off is <strong>40</strong></p>"


def test_ipynb_charts_are_json_with_a_text_fallback_and_validate(client, users, shown):
    text = export(client, users["carol"], shown, "ipynb").content.decode()
    nb = nbformat.reads(text, as_version=4)
    nbformat.validate(nb)
    plotly, vegalite, bokeh = (cell.outputs[0] for cell in nb.cells[2:])
    assert plotly.output_type == "display_data" and plotly.data[PLOTLY_MIME] == PLOTLY
    assert plotly.data["text/plain"] == "<Plotly chart 'Sales by region', 1 trace: bar>"
    assert vegalite.data[VEGALITE_MIME] == VEGALITE and vegalite.data["text/plain"] == "<Vega-Lite chart 'Trend', mark: line>"
    assert bokeh.data[BOKEH_MIME] == BOKEH and bokeh.data["text/plain"] == "<Bokeh figure>"
    raw = json.loads(text)["cells"]
    assert isinstance(raw[2]["outputs"][0]["data"][PLOTLY_MIME], dict) and isinstance(raw[1]["outputs"][0]["data"][UI_MIME], dict)


@pytest.mark.browser
def test_exported_report_draws_a_plotly_chart_offline_in_chromium(client, users, shown, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    from tests.test_browser import CHROMIUM_ARGS

    report = tmp_path / "report.html"
    report.write_bytes(export(client, users["carol"], shown, "html").content)
    requests = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.on("request", lambda request: requests.append(request.url))
            page.goto(report.as_uri())
            frame = page.frame_locator("iframe.chart-output").first
            expect(frame.locator("svg.main-svg").first).to_be_visible(timeout=20_000)
        finally:
            browser.close()
    assert requests == [report.as_uri()]  # nothing fetched but the file itself
