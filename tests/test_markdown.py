"""Markdown cells: rendered and sanitized by the server, interpolating notebook values, reactive."""
from html.parser import HTMLParser

import pytest

from notebooks_app.constants import MARKDOWN_MIME
from notebooks_app.kernel import markdown
from tests.conftest import create, run_and_wait

pytestmark = pytest.mark.django_db(transaction=True)

HOSTILE = [
    "<script>alert(document.cookie)</script>",
    '<img src="x" onerror="alert(1)">',
    "[click](javascript:alert(1))",
    "[click](JaVaScRiPt:alert(1))",
    '<a href="javascript:alert(1)">x</a>',
    "![x](javascript:alert(1))",
    '<svg onload="alert(1)"></svg>',
    "<iframe src=\"https://example.com\"></iframe>",
    '<div style="background:url(javascript:alert(1))">x</div>',
    "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
]


def html_of(client, cell_id):
    return next(o["data"] for o in client.state[cell_id]["outputs"] if o["mimeType"] == MARKDOWN_MIME)


class ActiveParts(HTMLParser):
    """Every element and attribute of the HTML that could run or load something."""

    def __init__(self):
        super().__init__()
        self.found = []

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "iframe", "svg", "object", "embed", "style", "form", "input", "base", "meta", "link"):
            self.found.append(tag)
        for name, value in attrs:
            value = (value or "").strip().lower()
            if name.startswith("on") or (name in ("href", "src") and value.startswith(("javascript:", "data:text", "vbscript:"))):
                self.found.append(f"{tag} {name}={value}")
            if name == "style" and not value.startswith("text-align"):
                self.found.append(f"{tag} style={value}")


def active_parts(html):
    parser = ActiveParts()
    parser.feed(html)
    return parser.found


@pytest.mark.parametrize("source", HOSTILE)
def test_hostile_markdown_renders_without_script_handlers_or_javascript_urls(source):
    rendered = markdown.render(source)
    assert active_parts(rendered) == [], rendered
    assert active_parts(source) != [] or "javascript:" in source.lower() or "data:" in source  # the input was hostile


def test_markdown_features_survive_sanitizing():
    rendered = markdown.render("# Title\n\n**bold** and `code` and $x^2$\n\n$$\\int f$$\n\n| a | b |\n|---|--:|\n| 1 | 2 |\n\n```python\nx = 1\n```\n\n[ok](https://example.com)")
    assert "<h1>Title</h1>" in rendered and "<strong>bold</strong>" in rendered and "<code>code</code>" in rendered
    assert '<span class="math inline">x^2</span>' in rendered and '<div class="math block">' in rendered
    assert "<table>" in rendered and 'style="text-align:right"' in rendered
    assert 'class="language-python"' in rendered and '<span class="n">x</span>' in rendered
    assert 'href="https://example.com"' in rendered and 'rel="noopener noreferrer nofollow"' in rendered


def test_fields_outside_code_are_the_reads():
    code = "Grew {growth:.1%} to {total.sum}, `{not_this}`\n```\n{nor_this}\n```\n{{literal}} {items[0]}"
    assert markdown.placeholders(code) == ["growth", "total", "items"]


async def test_markdown_interpolates_values_and_rerenders_when_they_change(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    growth = await create(alice, "growth = 0.125")
    prose = await create(alice, "# Q3\nRevenue grew **{growth:.1%}**.", cellType="markdown")
    assert alice.state[prose]["reads"] == ["growth"]
    await run_and_wait(alice, prose)  # runs `growth` first: never run, out of date
    assert "<strong>12.5%</strong>" in html_of(alice, prose) and "<h1>Q3</h1>" in html_of(alice, prose)
    await alice.request(type="cell_update", cellId=growth, code="growth = 0.2")
    await run_and_wait(alice, growth)
    await alice.wait_status(prose, "success")
    assert "<strong>20.0%</strong>" in html_of(alice, prose)


async def test_values_are_shown_as_text_never_as_html(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    await create(alice, "evil = '<img src=x onerror=alert(1)> **not bold** [x](javascript:alert(1))'")
    prose = await create(alice, "Value: {evil}", cellType="markdown")
    await run_and_wait(alice, prose)
    rendered = html_of(alice, prose)
    assert active_parts(rendered) == [] and "<img" not in rendered and "<strong>" not in rendered
    assert "&lt;img src=x onerror=alert(1)&gt;" in rendered and "**not bold**" in rendered


async def test_a_missing_name_is_a_name_error_and_plain_prose_needs_no_kernel(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    prose = await create(alice, "Plain *prose*.", cellType="markdown")
    await run_and_wait(alice, prose)
    assert html_of(alice, prose) == "<p>Plain <em>prose</em>.</p>\n"
    broken = await create(alice, "Total: {nowhere}", cellType="markdown")
    await run_and_wait(alice, broken)
    assert alice.state[broken]["status"] == "error" and alice.state[broken]["error"]["ename"] == "NameError"


def test_math_keeps_its_braces_and_inline_images_show():
    code = "Area $\\frac{a}{b}$ and $$x^{2}$$ cost $5 or {price}\n\n![dot](data:image/png;base64,iVBORw0KGgo=)"
    assert markdown.placeholders(code) == ["price"]
    rendered = markdown.render("$\\frac{a}{b}$ ![dot](data:image/png;base64,iVBORw0KGgo=) [doc](data:text/html,x)")
    assert "\\frac{a}{b}" in rendered and 'src="data:image/png;base64,iVBORw0KGgo="' in rendered
    assert active_parts(rendered) == [] and 'href="data' not in rendered
