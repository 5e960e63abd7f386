"""Interactive charts and HTML with scripts, on the server side (docs/frontend.md#outputs):
what a cell's plotly, altair, bokeh and folium values become, through the real worker and the
sandboxed execution process; how their documents are served (policy, CDN addresses rewritten to
our vendored copies, members only). tests/test_browser_charts.py draws them in Chromium."""
import json
import re
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from django.contrib.staticfiles import finders
from django.test import Client

from notebooks_app import output_documents
from notebooks_app.constants import OUTPUT_INLINE_LIMIT
from notebooks_app.kernel.display import BOKEH_MIME, PLOTLY_MIME, VEGALITE_MIME
from tests.conftest import create, run_and_wait

pytestmark = pytest.mark.django_db(transaction=True)

PLOTLY = "import plotly.express as px\nfig = px.scatter(x=[1, 2, 3], y=[4, 1, 9], title='Points')\nfig"
ALTAIR = "import altair as alt\nimport pandas as pd\nalt.Chart(pd.DataFrame({'a': [1, 2, 3], 'b': [4, 1, 9]})).mark_point(tooltip=True).encode(x='a', y='b')"
BOKEH = "from bokeh.plotting import figure\np = figure(title='Line')\np.line([1, 2, 3], [4, 1, 9])\np"
FOLIUM = "import folium\nfolium.Map(location=[59.91, 10.75], zoom_start=11)"


def outputs_of(client, cell_id):
    return client.state[cell_id]["outputs"]


def get(user, url):
    client = Client()
    if user is not None:
        client.force_login(user)
    return client.get(url)


@pytest.mark.parametrize(
    "code, mime, check",
    [
        (PLOTLY, PLOTLY_MIME, lambda data: data["data"][0]["type"] == "scatter" and data["layout"]["title"]["text"] == "Points"),
        (ALTAIR, VEGALITE_MIME, lambda data: data["mark"]["type"] == "point" and "vega-lite" in data["$schema"]),
        (BOKEH, BOKEH_MIME, lambda data: {"target_id", "root_id", "doc", "version"} <= set(data)),
    ],
    ids=["plotly", "altair", "bokeh"],
)
async def test_a_chart_as_the_last_value_is_its_librarys_json(ws, notebook, users, code, mime, check):
    alice = await ws(users["alice"], notebook)
    cell = await create(alice, code)
    await run_and_wait(alice, cell)
    assert alice.state[cell]["status"] == "success", alice.state[cell]
    outputs = outputs_of(alice, cell)
    assert [o["mimeType"] for o in outputs] == [mime], outputs
    assert check(outputs[0]["data"])
    # The same JSON after a reload (what the page opens with) and in the database.
    bob = await ws(users["bob"], notebook)
    assert outputs_of(bob, cell) == outputs


async def test_bokeh_json_is_for_the_bokehjs_we_serve(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    cell = await create(alice, BOKEH)
    await run_and_wait(alice, cell)
    version = outputs_of(alice, cell)[0]["data"]["version"]
    bundled = open(finders.find("notebooks/vendor/bokeh/bokeh.min.js")).read(200_000)
    assert version in bundled, f"BokehJS in static/ is not bokeh {version}: rebuild with scripts/build_editor.sh"
    package_json = Path("package.json")
    assert json.loads(package_json.read_text())["devDependencies"]["@bokeh/bokehjs"] == version


async def test_fig_show_shows_the_figure_below_the_cell(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    cell = await create(alice, "import plotly.graph_objects as go\nfor n in (1, 2):\n    go.Figure(go.Bar(y=[n, n * 2])).show()\n'done'")
    await run_and_wait(alice, cell)
    outputs = outputs_of(alice, cell)
    assert [o["mimeType"] for o in outputs] == [PLOTLY_MIME, PLOTLY_MIME, "text/plain"], outputs
    assert outputs[1]["data"]["data"][0]["type"] == "bar"


async def test_bokeh_show_and_output_notebook_work_as_in_jupyter(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    cell = await create(alice, "from bokeh.plotting import figure, show, output_notebook\noutput_notebook()\np = figure()\np.scatter([1, 2], [3, 4])\nshow(p)")
    await run_and_wait(alice, cell)
    assert alice.state[cell]["status"] == "success", alice.state[cell]
    assert [o["mimeType"] for o in outputs_of(alice, cell)] == [BOKEH_MIME]


async def test_a_big_chart_travels_by_reference_and_is_served_as_json_to_members_only(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    cell = await create(alice, "import plotly.graph_objects as go\nimport numpy as np\ngo.Figure(go.Scatter(y=np.random.default_rng(1).normal(size=40_000), text=[f'point {i}' for i in range(40_000)]))")
    await run_and_wait(alice, cell)
    (output,) = outputs_of(alice, cell)
    assert output["mimeType"] == PLOTLY_MIME and "data" not in output and output["size"] > OUTPUT_INLINE_LIMIT
    response = await database_sync_to_async(get)(users["carol"], output["url"])  # a viewer
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert json.loads(response.content)["data"][0]["text"][39_999] == "point 39999"
    stranger = await database_sync_to_async(lambda: users["alice"].__class__.objects.create_user("mallory", password="x"))()
    assert (await database_sync_to_async(get)(stranger, output["url"])).status_code == 404


async def test_a_broken_chart_falls_back_to_its_text_and_says_why(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    cell = await create(alice, "class C:\n    __module__ = 'plotly.fake'\n    def to_plotly_json(self):\n        raise ValueError('no figure here')\n    def __repr__(self):\n        return 'C()'\nC()")
    await run_and_wait(alice, cell)
    assert alice.state[cell]["status"] == "success"
    outputs = outputs_of(alice, cell)
    assert outputs == [{"mimeType": "text/plain", "data": "C()"}], outputs
    assert "could not be drawn as an interactive chart" in alice.state[cell]["stdout"]


async def test_folium_map_is_served_as_a_scripted_frame_that_loads_our_leaflet(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    cell = await create(alice, FOLIUM)
    await run_and_wait(alice, cell)
    html = next(o for o in outputs_of(alice, cell) if o["mimeType"] == "text/html")
    assert "ref" in html and "data" not in html  # scripted HTML is always stored apart
    response = await database_sync_to_async(get)(users["bob"], html["url"])
    assert response.status_code == 200
    policy = response["Content-Security-Policy"]
    assert policy.startswith("sandbox allow-scripts;") and "connect-src 'none'" in policy and "form-action 'none'" in policy
    assert "allow-same-origin" not in policy and "allow-top-navigation" not in policy and "allow-popups" not in policy
    body = response.content.decode()
    assert "/static/notebooks/frame." in body
    assert re.search(r"/static/notebooks/vendor/leaflet/leaflet\.[0-9a-f]{12}\.js", body)
    assert "cdn.jsdelivr.net/npm/leaflet" not in body and "code.jquery.com" not in body
    assert (await database_sync_to_async(get)(None, html["url"])).status_code in (302, 404)


async def test_small_html_without_scripts_stays_inline(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    cell = await create(alice, "import pandas as pd\npd.DataFrame({'a': [1, 2]})")
    await run_and_wait(alice, cell)
    html = next(o for o in outputs_of(alice, cell) if o["mimeType"] == "text/html")
    assert "data" in html and "ref" not in html


def test_every_cdn_address_points_at_a_vendored_file_that_exists():
    for name, path in output_documents.VENDOR.items():
        assert finders.find(path), f"{name}: {path} missing; run scripts/build_editor.sh"
    samples = {
        "https://cdn.jsdelivr.net/npm/leaflet@1.9.3/dist/leaflet.js": "leaflet.js",
        "https://cdn.jsdelivr.net/npm/leaflet@1.9.3/dist/leaflet.css": "leaflet.css",
        "https://code.jquery.com/jquery-3.7.1.min.js": "jquery",
        "https://cdn.jsdelivr.net/npm/bootstrap@5.2.2/dist/js/bootstrap.bundle.min.js": "bootstrap.js",
        "https://cdn.jsdelivr.net/npm/bootstrap@5.2.2/dist/css/bootstrap.min.css": "bootstrap.css",
        "https://cdnjs.cloudflare.com/ajax/libs/Leaflet.awesome-markers/2.0.2/leaflet.awesome-markers.js": "awesome-markers.js",
        "https://cdn.plot.ly/plotly-3.0.1.min.js": "plotly",
        "https://cdn.bokeh.org/bokeh/release/bokeh-3.9.2.min.js": "bokeh",
        "https://cdn.bokeh.org/bokeh/release/bokeh-widgets-3.9.2.min.js": "bokeh-widgets",
        "https://cdn.jsdelivr.net/npm/vega@6": "vega",
        "https://cdn.jsdelivr.net/npm/vega-lite@6.4.1": "vega-lite",
        "https://cdn.jsdelivr.net/npm/vega-embed@7": "vega-embed",
    }
    for url, name in samples.items():
        rewritten = output_documents.rewrite_cdn(f'<script src="{url}"></script>')
        assert rewritten == f'<script src="{output_documents.static(output_documents.VENDOR[name])}"></script>', url
    untouched = '<script src="https://example.com/leaflet.js"></script><img src="https://tile.openstreetmap.org/1/1/1.png">'
    assert output_documents.rewrite_cdn(untouched) == untouched


def test_the_chart_frame_is_an_opaque_origin_with_our_renderers(users):
    response = get(None, "/frames/chart/")
    assert response.status_code == 200
    assert response["Content-Security-Policy"] == output_documents.FRAME_POLICY
    body = response.content.decode()
    assert 'data-renderer="chart"' in body and "plotly" in body and "vega-embed" in body and "bokeh" in body


async def test_charts_export_to_ipynb_as_their_json_and_to_the_report_drawn_offline(ws, notebook, users):
    import nbformat

    from notebooks_app import exporting

    alice = await ws(users["alice"], notebook)
    small = await create(alice, PLOTLY)
    big = await create(alice, "import plotly.graph_objects as go\ngo.Figure(go.Scatter(y=list(range(20_000))))")
    for cell in (small, big):
        await run_and_wait(alice, cell)
    assert "ref" in outputs_of(alice, big)[0]

    def export():
        notebook.refresh_from_db()
        return exporting.to_ipynb(notebook), exporting.to_html(notebook)

    ipynb, report = await database_sync_to_async(export)()
    document = nbformat.reads(ipynb, as_version=4)
    nbformat.validate(document)
    charts = [output["data"][PLOTLY_MIME] for cell in document.cells for output in cell.outputs if PLOTLY_MIME in output.get("data", {})]
    assert [chart["data"][0]["type"] for chart in charts] == ["scatter", "scatter"]
    # Drawn offline in sandboxed frames (their scripts only inside srcdoc), never a placeholder.
    assert report.count('class="chart-output" sandbox="allow-scripts"') == 2 and "<script" not in report and "interactive chart (" not in report
