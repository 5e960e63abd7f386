"""What a run's results may be once they leave the execution process: untrusted outputs filtered
to known MIME types, the notebook's secret values redacted, errors bounded to fit an event, large
outputs set apart as blobs.

Pure functions: no asyncio, no store (the caller writes the blobs `by_reference` returns).
"""
import hashlib
import html
import json
import re

from ..constants import ERROR_TEXT_LIMIT, OUTPUT_INLINE_LIMIT
from .display import CHART_MIME_TYPES
from .ui import UI_MIME

# What the execution process may produce. It runs user code, so it can send anything: never the
# page-trusted markdown HTML (rendered and sanitized here only), never a reference or URL.
CHILD_MIME_TYPES = {"text/plain": str, "text/html": str, "image/png": str, UI_MIME: dict} | dict.fromkeys(CHART_MIME_TYPES, dict)
# HTML that needs scripts of its own (folium maps, widgets, a _repr_html_ with <script>, inline
# event handlers) is always stored apart: its URL serves it as a document whose own policy lets
# its scripts run in an opaque origin (views.cell_output_data); inline HTML runs none.
# A frame inside it (folium's srcdoc, whose scripts are escaped) counts too.
SCRIPTED_HTML = re.compile(r"<script[\s>/]|&lt;script|<iframe[\s>/]|\son[a-z]+\s*=|javascript:", re.IGNORECASE)


def untrusted_outputs(outputs):
    """The outputs of a run, keeping only known MIME types with data of their type, and no other
    key: an output shown as trusted HTML, or one pointing the page at any URL, cannot be forged."""
    kept = []
    for output in outputs if isinstance(outputs, list) else ():
        mime = output.get("mimeType") if isinstance(output, dict) else None
        if mime in CHILD_MIME_TYPES and isinstance(output.get("data"), CHILD_MIME_TYPES[mime]):
            kept.append({"mimeType": mime, "data": output["data"]})
    return kept


SECRET_MIN_LENGTH = 4  # shorter values are too likely to be ordinary text to be redacted


class Redactor:
    """The notebook's secret values (exact, and as repr() and HTML escape them) replaced by
    `[secret NAME]` in what a run sends back, before it is stored or published. A courtesy
    against printing a key by mistake, not a boundary: code that can read a secret can send it
    out encoded (docs/security.md)."""

    def __init__(self, secrets=()):
        names = {}  # each form of each value -> its secret's name
        for name, value in secrets:
            if len(value) < SECRET_MIN_LENGTH:
                continue
            for form in (value, repr(value)[1:-1], html.escape(value), html.escape(value, quote=False)):
                names.setdefault(form, name)
        forms = sorted(names, key=len, reverse=True)  # the longest first: no secret is half-replaced
        self._names = names
        self._pattern = re.compile("|".join(map(re.escape, forms))) if forms else None
        self._longest = max(map(len, forms), default=0)

    def __bool__(self):
        return self._pattern is not None

    def text(self, text):
        if self._pattern is None or not isinstance(text, str):
            return text
        return self._pattern.sub(lambda match: f"[secret {self._names[match.group()]}]", text)

    def value(self, data):
        """Every string inside `data` (JSON: str, list, dict keys and values) redacted."""
        if self._pattern is None:
            return data
        if isinstance(data, str):
            return self.text(data)
        if isinstance(data, list):
            return [self.value(item) for item in data]
        if isinstance(data, dict):
            return {self.text(key): self.value(item) for key, item in data.items()}
        return data

    def outputs(self, outputs):
        """Outputs redacted; images are left as they are (base64 of pixels, not text)."""
        if self._pattern is None:
            return outputs
        return [output if str(output.get("mimeType", "")).startswith("image/") else {**output, "data": self.value(output.get("data"))} for output in outputs]

    def held_back(self, text):
        """How many characters at the end of `text` could begin a secret completed by what
        comes next (a stream holds them back until it knows)."""
        if self._pattern is None:
            return 0
        longest = 0
        window = min(len(text), self._longest - 1)
        for form in self._names:
            start = len(text) - min(window, len(form) - 1)
            while (start := text.find(form[0], start)) != -1:
                if form.startswith(text[start:]):
                    longest = max(longest, len(text) - start)
                    break
                start += 1
        return longest

    def stream(self):
        return RedactedStream(self)


class RedactedStream:
    """One cell's stdout as it streams: redacted chunk by chunk, holding back the end of a chunk
    that may be the start of a secret split across two writes; `flush()` when the cell ends."""

    def __init__(self, redactor):
        self.redactor = redactor
        self.pending = ""

    def feed(self, text):
        if not self.redactor:
            return text
        text = self.redactor.text(self.pending + text)
        keep = self.redactor.held_back(text)
        self.pending = text[len(text) - keep:] if keep else ""
        return text[: len(text) - keep]

    def flush(self):
        rest, self.pending = self.pending, ""
        return rest


def cut(text, limit):
    """`text`, or its first `limit` characters with a note of how much was left out."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[… {len(text) - limit:,} more characters not shown]"


def bounded_error(error):
    """An error whose message and traceback fit in an event (ERROR_TEXT_LIMIT each): a huge
    exception message is cut, a huge traceback keeps its last lines (nearest the error)."""
    if not error:
        return error
    evalue = cut(str(error.get("evalue", "")), ERROR_TEXT_LIMIT)
    lines, kept, size = list(error.get("traceback") or []), [], 0
    for line in reversed(lines):
        line = cut(str(line), ERROR_TEXT_LIMIT // 4)
        if size + len(line) > ERROR_TEXT_LIMIT:
            kept.append(f"[… {len(lines) - len(kept)} earlier traceback lines not shown]")
            break
        kept.append(line)
        size += len(line) + 1
    return {**error, "ename": cut(str(error.get("ename", "")), 200), "evalue": evalue, "traceback": list(reversed(kept))}


def by_reference(outputs, url_of):
    """(outputs, blobs): outputs over OUTPUT_INLINE_LIMIT (and scripted HTML) replaced by a
    reference, {mimeType, ref, size, url} with `url_of(digest)`, and the blobs (digest, mimeType,
    data) to store before the references are announced."""
    blobs, kept = [], []
    for output in outputs:
        data, mime = output.get("data"), output.get("mimeType", "text/plain")
        if mime in CHART_MIME_TYPES:
            text = json.dumps(data, separators=(",", ":"))
            data = text if len(text) > OUTPUT_INLINE_LIMIT else None
        elif mime == "text/html" and isinstance(data, str) and SCRIPTED_HTML.search(data):
            pass
        elif not isinstance(data, str) or len(data) <= OUTPUT_INLINE_LIMIT:
            data = None
        if data is None:
            kept.append(output)
            continue
        digest = hashlib.sha256(mime.encode() + b"\0" + data.encode("utf-8", "replace")).hexdigest()
        size = len(data) * 3 // 4 if mime.startswith("image/") else len(data.encode("utf-8", "replace"))
        blobs.append({"digest": digest, "mimeType": mime, "data": data})
        kept.append({"mimeType": mime, "ref": digest, "size": size, "url": url_of(digest)})
    return kept, blobs
