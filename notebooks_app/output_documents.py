"""Output documents: the documents that HTML outputs with scripts, and interactive charts, are drawn
in (docs/frontend.md#outputs).

Every such document is served with a policy of its own that makes it an opaque origin (CSP
`sandbox allow-scripts`, and the page's <iframe sandbox="allow-scripts"> without
allow-same-origin): its scripts run, but cannot read this site's cookies, storage or pages,
reach the parent page, navigate the top window, submit forms or open windows, and requests
it makes to this site carry no session. `connect-src 'none'` leaves it no fetch, XHR or
WebSocket at all. Scripts come inline (the output's own) or from this site's static files
(the vendored chart libraries and Leaflet): well-known CDN addresses are rewritten to those,
so a folium map or a plotly/bokeh/altair HTML export works with no internet access.

Each document loads static/notebooks/frame.js, which reports its height to the page
(postMessage, checked there), prints its errors into the frame and, in the chart frame,
draws the chart JSON the page posts to it."""
import json
import re

from django.http import HttpResponse
from django.templatetags.static import static
from django.utils.html import escape
from django.views.decorators.http import require_http_methods

from .constants import OUTPUT_HTML_STYLE

FRAME_POLICY = "; ".join(
    [
        "sandbox allow-scripts",
        "default-src 'none'",
        # 'unsafe-eval': plotly's WebGL traces and vega's expressions compile code; harmless in
        # an opaque origin with no network.
        "script-src 'self' 'unsafe-inline' 'unsafe-eval'",
        "style-src 'self' 'unsafe-inline'",
        # Map tiles come from tile servers: images may load from any https address.
        "img-src 'self' data: blob: https:",
        "font-src 'self' data:",
        "media-src 'self' data: blob:",
        "connect-src 'none'",
        "frame-src 'self' data: blob:",
        "worker-src blob:",
        "form-action 'none'",
        "base-uri 'none'",
        "frame-ancestors 'self'",
    ]
)

# Vendored files (scripts/build_editor.sh copies them from the pinned npm packages).
VENDOR = {
    "plotly": "notebooks/vendor/plotly/plotly.min.js",
    "vega": "notebooks/vendor/vega/vega.min.js",
    "vega-lite": "notebooks/vendor/vega/vega-lite.min.js",
    "vega-embed": "notebooks/vendor/vega/vega-embed.min.js",
    "bokeh": "notebooks/vendor/bokeh/bokeh.min.js",
    "bokeh-gl": "notebooks/vendor/bokeh/bokeh-gl.min.js",
    "bokeh-widgets": "notebooks/vendor/bokeh/bokeh-widgets.min.js",
    "bokeh-tables": "notebooks/vendor/bokeh/bokeh-tables.min.js",
    "bokeh-api": "notebooks/vendor/bokeh/bokeh-api.min.js",
    "leaflet.js": "notebooks/vendor/leaflet/leaflet.js",
    "leaflet.css": "notebooks/vendor/leaflet/leaflet.css",
    "jquery": "notebooks/vendor/jquery/jquery.min.js",
    "bootstrap.js": "notebooks/vendor/bootstrap/bootstrap.bundle.min.js",
    "bootstrap.css": "notebooks/vendor/bootstrap/bootstrap.min.css",
    "awesome-markers.js": "notebooks/vendor/leaflet.awesome-markers/leaflet.awesome-markers.js",
    "awesome-markers.css": "notebooks/vendor/leaflet.awesome-markers/leaflet.awesome-markers.css",
}

# Addresses of those libraries on the CDNs that folium, plotly, bokeh and altair write into
# their HTML (any version: ours is the one these packages' Python sides are pinned to).
_CDN = r"https?://[a-z0-9.-]+(?:/[^\s\"'<>()]*?)?/"
CDN_REWRITES = [
    (re.compile(_CDN + r"leaflet(?:@[\w.-]+)?/dist/leaflet\.js"), "leaflet.js"),
    (re.compile(_CDN + r"leaflet(?:@[\w.-]+)?/dist/leaflet\.css"), "leaflet.css"),
    (re.compile(_CDN + r"jquery-\d[\w.]*?(?:\.min)?\.js"), "jquery"),
    (re.compile(_CDN + r"bootstrap(?:@[\w.-]+)?/dist/js/bootstrap\.bundle(?:\.min)?\.js"), "bootstrap.js"),
    (re.compile(_CDN + r"bootstrap(?:@[\w.-]+)?/dist/css/bootstrap(?:\.min)?\.css"), "bootstrap.css"),
    (re.compile(_CDN + r"Leaflet\.awesome-markers/[\w.-]+/leaflet\.awesome-markers(?:\.min)?\.js"), "awesome-markers.js"),
    (re.compile(_CDN + r"Leaflet\.awesome-markers/[\w.-]+/leaflet\.awesome-markers(?:\.min)?\.css"), "awesome-markers.css"),
    (re.compile(r"https?://cdn\.plot\.ly/plotly-[\w.-]*?(?:\.min)?\.js"), "plotly"),
    (re.compile(r"https?://cdn\.bokeh\.org/bokeh/release/bokeh-(?:\d[\w.-]*?)(?:\.min)?\.js"), "bokeh"),
    (re.compile(r"https?://cdn\.bokeh\.org/bokeh/release/bokeh-gl-[\w.-]*?(?:\.min)?\.js"), "bokeh-gl"),
    (re.compile(r"https?://cdn\.bokeh\.org/bokeh/release/bokeh-widgets-[\w.-]*?(?:\.min)?\.js"), "bokeh-widgets"),
    (re.compile(r"https?://cdn\.bokeh\.org/bokeh/release/bokeh-tables-[\w.-]*?(?:\.min)?\.js"), "bokeh-tables"),
    (re.compile(r"https?://cdn\.bokeh\.org/bokeh/release/bokeh-api-[\w.-]*?(?:\.min)?\.js"), "bokeh-api"),
    (re.compile(_CDN + r"vega@[\w.-]+(?:/build/vega(?:\.min)?\.js)?(?=[\"'&?])"), "vega"),
    (re.compile(_CDN + r"vega-lite@[\w.-]+(?:/build/vega-lite(?:\.min)?\.js)?(?=[\"'&?])"), "vega-lite"),
    (re.compile(_CDN + r"vega-embed@[\w.-]+(?:/build/vega-embed(?:\.min)?\.js)?(?=[\"'&?])"), "vega-embed"),
]


def rewrite_cdn(html):
    """`html` with the known CDN addresses of vendored libraries pointing at our static files."""
    for pattern, name in CDN_REWRITES:
        html = pattern.sub(static(VENDOR[name]), html)
    return html


def _document(body, *, renderer=False):
    libraries = escape(json.dumps({name: static(path) for name, path in VENDOR.items()})) if renderer else ""
    attributes = f' data-renderer="chart" data-libraries="{libraries}"' if renderer else ""
    return (
        f'<!DOCTYPE html><html lang="en"{attributes}><head><meta charset="utf-8">'
        f'<meta name="color-scheme" content="light dark">{OUTPUT_HTML_STYLE}'
        f'<script src="{static("notebooks/frame.js")}"></script></head><body>{body}</body></html>'
    )


def html_document(html):
    """An HTML output as the document of its frame."""
    return _document(rewrite_cdn(html))


def frame_response(content):
    response = HttpResponse(content, content_type="text/html; charset=utf-8")
    response["Content-Security-Policy"] = FRAME_POLICY
    response["X-Content-Type-Options"] = "nosniff"
    response["Referrer-Policy"] = "no-referrer"
    return response


@require_http_methods(["GET", "HEAD"])
def chart_frame(request):
    """The document charts are drawn in: the page posts it {type: "render", mimeType, data}.
    The same for everyone and holds nothing private. Not cached: it names the static files of
    this deployment by their hashed names, which the next deployment replaces."""
    response = frame_response(_document('<div id="chart"></div>', renderer=True))
    response["Cache-Control"] = "no-cache"
    return response
