"""Markdown cells: where their `{name}` placeholders are, and their safe HTML.

`placeholders()` finds `{name}`, `{name:.1%}`, `{name.attr}`, `{name[0]}` and `{name["key"]}` fields
outside code (spans and fenced blocks); `{{` / `}}` are literal braces; `follow()` reads a field's
steps (SQL cells' placeholders are the same fields, without a format spec).  The values are
formatted inside the notebook's sandboxed process (`_child.py`, which has them) and come back as
text; `render()` runs
on the trusted side only: markdown-it-py (CommonMark, tables, strikethrough, `$…$` / `$$…$$`
math left for KaTeX on the page, fenced code highlighted by Pygments), raw HTML off, then nh3 with
an allow-list, so no script, event handler or `javascript:` URL survives whatever the cell or its
values contain.  No Django, no I/O.
"""
import re

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
# One step after the name: `.attr`, `[0]`, `[key]` (str.format's string key), `["key"]`, `['key']`.
_STEP = rf"""\.({_NAME})|\[([0-9]+)\]|\[({_NAME})\]|\["([^"\\\]\n]*)"\]|\['([^'\\\]\n]*)'\]"""
STEP = re.compile(_STEP)
_ANY_STEP = _STEP.replace("(", "(?:")  # the same steps, capturing nothing (no "(" in _NAME)
# A field: a name, then attribute or index steps, then an optional format spec.  SQL cells'
# placeholders are the same fields without a spec (analysis.sql_segments).
FIELD = re.compile(rf"\{{({_NAME})((?:{_ANY_STEP})*)(?::([^{{}}]*))?\}}")
FENCE = re.compile(r"^(\s{0,3})(`{3,}|~{3,})")

ALLOWED_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "code", "del", "div", "em", "h1", "h2", "h3", "h4", "h5", "h6",
    "hr", "i", "img", "kbd", "li", "ol", "p", "pre", "s", "span", "strong", "sub", "sup", "table",
    "tbody", "td", "th", "thead", "tr", "ul",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title"},
    "span": {"class"},
    "div": {"class"},
    "code": {"class"},
    "pre": {"class"},
    "td": {"style"},
    "th": {"style"},
}
ALLOWED_CLASSES = re.compile(r"^(math|inline|block|language-[\w+-]+|highlight|[a-z]{1,3}[0-9]?)$")


def segments(code):
    """("text", str) and ("field", (name, steps, spec, source)) pieces, in order."""
    out, buf = [], []
    in_fence = None
    for line in code.splitlines(keepends=True):
        fence = FENCE.match(line)
        if in_fence is not None:
            buf.append(line)
            if fence and fence.group(2)[0] == in_fence[0] and len(fence.group(2)) >= len(in_fence):
                in_fence = None
            continue
        if fence:
            in_fence = fence.group(2)
            buf.append(line)
            continue
        _line_segments(line, out, buf)
    if buf:
        out.append(("text", "".join(buf)))
    return out


def _line_segments(line, out, buf):
    i, n = 0, len(line)
    while i < n:
        ch = line[i]
        if ch in "`$":
            # Code spans and math ($…$, $$…$$: LaTeX braces like \frac{a}{b}) are never fields.
            ticks = len(line[i:]) - len(line[i:].lstrip(ch))
            end = line.find(ch * ticks, i + ticks)
            if ch == "$" and end < 0:
                buf.append(line[i : i + ticks])  # a lone dollar sign is just text
                i += ticks
                continue
            end = n if end < 0 else end + ticks
            buf.append(line[i:end])
            i = end
        elif line.startswith("{{", i) or line.startswith("}}", i):
            buf.append(ch)
            i += 2
        elif ch == "{" and (match := FIELD.match(line, i)):
            if buf:
                out.append(("text", "".join(buf)))
                buf.clear()
            out.append(("field", (match.group(1), match.group(2) or "", match.group(3), match.group(0))))
            i = match.end()
        else:
            buf.append(ch)
            i += 1


def follow(value, steps):
    """`value` through a field's `steps` (`.attr`, `[0]`, `[key]`, `["key"]`), read as str.format
    reads them: `[0]` an integer index, any other key a string."""
    for attribute, number, bare, double, single in STEP.findall(steps):
        if attribute:
            value = getattr(value, attribute)
        elif number:
            value = value[int(number)]
        else:
            value = value[bare or double or single]
    return value


def placeholders(code):
    """The names a markdown cell reads, in order of first appearance."""
    names = []
    for kind, value in segments(code):
        if kind == "field" and value[0] not in names:
            names.append(value[0])
    return names


_renderer = None


def _markdown():
    global _renderer
    if _renderer is None:
        from markdown_it import MarkdownIt  # the sandboxed process needs only segments()
        from mdit_py_plugins.dollarmath import dollarmath_plugin

        _renderer = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False, "highlight": _highlight})
        _renderer.use(dollarmath_plugin).enable(["table", "strikethrough"])
    return _renderer


def _highlight(code, language, attrs):
    try:
        from pygments import highlight
        from pygments.formatters import HtmlFormatter
        from pygments.lexers import get_lexer_by_name
        from pygments.util import ClassNotFound
    except ImportError:  # pragma: no cover - Pygments comes with the requirements
        return ""
    try:
        lexer = get_lexer_by_name(language or "text")
    except ClassNotFound:
        return ""
    # nowrap: markdown-it wraps it in <pre><code>; the spans carry Pygments' short classes.
    return highlight(code, lexer, HtmlFormatter(nowrap=True))


def render(text):
    """Safe HTML for markdown `text` (already interpolated)."""
    import nh3

    raw = _markdown().render(text)
    return nh3.clean(
        raw,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto", "data"},  # data: only for images (below)
        link_rel="noopener noreferrer nofollow",
        attribute_filter=_keep_attribute,
    )


def _keep_attribute(tag, attribute, value):
    if attribute == "class":
        kept = " ".join(c for c in value.split() if ALLOWED_CLASSES.match(c))
        return kept or None
    if attribute == "style":
        return value if re.fullmatch(r"text-align:\s*(left|right|center)", value.strip()) else None
    if tag == "img" and attribute == "src":
        return value if value.startswith(("https://", "http://", "data:image/png;base64,", "data:image/jpeg;base64,", "data:image/gif;base64,")) else None
    if attribute in ("href", "src") and value.strip().lower().startswith("data:"):
        return None  # a data: link could be a document of its own
    return value


def escape_value(text):
    """A value as it goes into markdown, shown as it is: every character markdown would read as
    formatting is escaped (raw HTML is off, so `<` is text anyway)."""
    return re.sub(r"([\\`*_\[\]{}()<>#|~$!+.-])", r"\\\1", str(text))
