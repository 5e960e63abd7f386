"""Uploaded notebooks read into cells: Jupyter `.ipynb` (nbformat 4), Jupytext percent `.py` and
marimo `.py` files.  Pure: no Django, no database; operations.import_notebook stores the result.

An upload is data, never code: a `.ipynb` is JSON read by nbformat, a marimo file is parsed with
`ast` and nothing in it is imported or run.  Every limit is checked before the step it guards
(size before decoding, nesting while parsing JSON, the number of cells before reading them), and
anything wrong is one NotebookFileError whose message says what, so nothing half-read is stored.
Outputs are not imported: cells are recomputed here.  What maps to what: docs/files.md.
"""
import ast
import json
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import PurePath

from . import magics, packages, rewrite
from .constants import CELL_MARKDOWN, CELL_PYTHON, CELL_SQL

IMPORT_MAX_CELLS = 10_000
# Jupytext takes about 2 ms a cell (nbformat validates each one with jsonschema) and seconds per
# megabyte, on a web process's thread, so percent files have lower limits than other files; a
# real one is a few kilobytes and a few dozen cells.
PERCENT_MAX_BYTES = 1024 * 1024
PERCENT_MAX_CELLS = 2_000
# The Jupyter notebook format this server reads (any minor version of it).
NBFORMAT_MAJOR = 4
# Attachments of markdown cells kept as data: URLs (no SVG: it can carry script).
ATTACHMENT_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
PERCENT_MARKER = re.compile(r"^# %%", re.M)
ATTACHMENT_LINK = re.compile(r"attachment:([^)\s\"'>]+)")


class NotebookFileError(ValueError):
    """An upload that cannot be imported; the message is for the person who uploaded it."""


@dataclass
class ImportedCell:
    type: str
    code: str
    result_variable: str = ""


@dataclass
class ImportedNotebook:
    name: str
    cells: list
    notes: list = field(default_factory=list)
    requirements: list = field(default_factory=list)  # what its `pip install` lines asked for
    report: object = None  # rewrite.RewriteReport for files written to run top to bottom


def read_notebook(filename, data, *, max_bytes, max_code_bytes, max_cells=IMPORT_MAX_CELLS):
    """The cells of an uploaded file (`data`: bytes), by its extension and content."""
    if len(data) > max_bytes:
        raise NotebookFileError(f"The file is larger than the import limit of {max_bytes:,} bytes.")
    suffix = PurePath(filename or "").suffix.lower()
    if suffix not in (".ipynb", ".py"):
        raise NotebookFileError("Upload a Jupyter notebook (.ipynb) or a Jupytext or marimo notebook (.py).")
    text = _text(data)
    reader = _Reader(max_cells=max_cells, max_code_bytes=max_code_bytes)
    report = None
    if suffix == ".ipynb":
        reader.read_ipynb(text)
        report = reader.rewrite()
    elif _looks_like_marimo(text):
        reader.read_marimo(text)  # reactive already: one definition per name
    else:
        reader.read_percent(text)
        report = reader.rewrite()
    if not reader.cells:
        raise NotebookFileError("The file has no cells.")
    name = PurePath(filename).stem.strip() or "Imported notebook"
    return ImportedNotebook(name=name, cells=reader.cells, notes=reader.notes(), requirements=reader.requirements, report=report)


def _text(data):
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise NotebookFileError("The file is not UTF-8 text (a notebook is JSON or Python source, not an archive or binary file).") from None
    if "\x00" in text:
        raise NotebookFileError("The file contains NUL bytes: it is binary, not a notebook.")
    return text.removeprefix("\ufeff")


def _looks_like_marimo(text):
    return re.search(r"^import marimo\b", text, re.M) is not None and "marimo.App(" in text


class _Reader:
    """Collects cells and the notes about what was changed on the way in."""

    def __init__(self, *, max_cells, max_code_bytes):
        self.cells = []
        self.max_cells = max_cells
        self.max_code_bytes = max_code_bytes
        self.magic_cells = 0
        self.requirements = []
        self.other_notes = []

    def notes(self):
        notes = []
        if self.magic_cells:
            notes.append(
                f"IPython magics or shell commands in {self.magic_cells} cell(s) were turned into Python where that is safe "
                "(timings, files read or written in the working directory); the rest are comments that say why."
            )
        if self.requirements:
            notes.append(
                f"The notebook's packages ({', '.join(self.requirements)}) are its own here (the Packages panel): "
                "they are installed when it first runs."
            )
        return notes + self.other_notes

    def add_requirements(self, items, source):
        """Requirements the file declares (`source`: where, for the notes); one a line of the
        Packages panel could not take is left out, with a note."""
        known = {packages.requirement_name(r) for r in self.requirements}
        for item in items:
            try:
                requirement = str(packages.parse_requirement(item))
            except packages.RequirementsError as exc:
                self.other_notes.append(f"The package {str(item)[:80]!r} from {source} was left out: {exc}.")
                continue
            name = packages.requirement_name(requirement)
            if name not in known:
                if len(self.requirements) >= packages.MAX_REQUIREMENTS:
                    self.other_notes.append(f"Only the first {packages.MAX_REQUIREMENTS} packages were kept.")
                    return
                known.add(name)
                self.requirements.append(requirement)

    def _check_count(self, count):
        if count > self.max_cells:
            raise NotebookFileError(f"The notebook has {count:,} cells; at most {self.max_cells:,} can be imported.")

    def add(self, cell):
        self._check_count(len(self.cells) + 1)
        if len(cell.code.encode("utf-8")) > self.max_code_bytes:
            raise NotebookFileError(f"Cell {len(self.cells) + 1} is larger than {self.max_code_bytes:,} bytes, the limit for one cell.")
        self.cells.append(cell)

    # --- cell kinds ---------------------------------------------------------------------

    def add_markdown(self, text):
        self.add(ImportedCell(CELL_MARKDOWN, text))

    def add_code(self, source):
        """A Jupyter code cell, its IPython magics and shell lines turned into what they meant."""
        translated = magics.translate(source)
        if translated.changes:
            self.magic_cells += 1
        self.add_requirements(translated.requirements, "a pip install line")
        self.add(ImportedCell(translated.type, translated.code, result_variable=translated.result_variable))

    def rewrite(self):
        """Cells written to run top to bottom, rewritten to run the same way here (rewrite.py)."""
        report = rewrite.rewrite_cells(self.cells)
        self.other_notes.extend(report.notes())
        return report

    # --- formats ------------------------------------------------------------------------

    def read_ipynb(self, text):
        import nbformat
        from nbformat.v4.rwbase import rejoin_lines

        try:
            raw = json.loads(text)
        except RecursionError:
            raise NotebookFileError("The file's JSON is nested too deeply to be a notebook.") from None
        except ValueError as exc:
            raise NotebookFileError(f"The file is not valid JSON ({exc}); is it cut short?") from None
        if not isinstance(raw, dict) or "cells" not in raw and "worksheets" not in raw:
            raise NotebookFileError("The file is JSON but not a Jupyter notebook (no cells).")
        major = raw.get("nbformat")
        if major != NBFORMAT_MAJOR:
            raise NotebookFileError(
                f"This is an nbformat {major} notebook; only nbformat 4 can be imported (open and save it in a current Jupyter to convert it)."
            )
        cells = raw.get("cells")
        if not isinstance(cells, list):
            raise NotebookFileError("The notebook's cells are not a list.")
        self._check_count(len(cells))
        for index, cell in enumerate(cells, start=1):
            if not isinstance(cell, dict) or not isinstance(cell.get("source", ""), (str, list)):
                raise NotebookFileError(f"Cell {index} of the notebook is malformed.")
        ours = (raw.get("metadata") or {}).get(packages.NOTEBOOK_METADATA_KEY) if isinstance(raw.get("metadata"), dict) else None
        if isinstance(ours, dict) and isinstance(ours.get("requirements"), list):
            self.add_requirements(ours["requirements"], "the notebook's metadata")
        try:
            notebook = nbformat.from_dict(raw)
            rejoin_lines(notebook)
        except (TypeError, ValueError, RecursionError) as exc:
            raise NotebookFileError(f"The notebook could not be read: {exc}") from None
        for index, cell in enumerate(notebook.cells, start=1):
            source = cell.get("source", "")
            if not isinstance(source, str):
                raise NotebookFileError(f"Cell {index} of the notebook is malformed.")
            kind = cell.get("cell_type")
            if kind == "markdown":
                self.add_markdown(self._with_attachments(source, cell.get("attachments")))
            elif kind == "code":
                self.add_code(source)
            elif kind == "raw":
                self.other_notes.append(f"Cell {index} was a raw cell: imported as a Python cell of comments.")
                self.add(ImportedCell(CELL_PYTHON, "\n".join(f"# {line}".rstrip() for line in source.split("\n"))))
            else:
                raise NotebookFileError(f"Cell {index} has an unknown cell type {kind!r}.")

    def _with_attachments(self, source, attachments):
        """`attachment:name` links replaced by data: URLs (images only): the attachment itself
        has nowhere to live here."""
        attachments = attachments if isinstance(attachments, dict) else {}

        def inline(match):
            bundle = attachments.get(match.group(1))
            if isinstance(bundle, dict):
                for mime in ATTACHMENT_TYPES:
                    data = bundle.get(mime)
                    if isinstance(data, list):
                        data = "".join(data)
                    if isinstance(data, str) and re.fullmatch(r"[A-Za-z0-9+/=\s]*", data):
                        return f"data:{mime};base64,{''.join(data.split())}"
            self.other_notes.append(f"The attachment {match.group(1)!r} could not be kept (only PNG, JPEG, GIF and WebP images are).")
            return match.group(0)

        return ATTACHMENT_LINK.sub(inline, source)

    def read_script_block(self, text):
        """A PEP 723 `# /// script` block's dependencies become the notebook's packages; the text
        without the block is returned."""
        try:
            declared = packages.read_script_dependencies(text)
        except packages.RequirementsError as exc:
            self.other_notes.append(f"The file's '# /// script' block was left out: {exc}.")
            declared = None
        if declared:
            self.add_requirements(declared, "the '# /// script' block")
        return packages.without_script_block(text) if declared is not None else text

    def read_percent(self, text):
        import jupytext

        text = self.read_script_block(text)
        # Checked before jupytext reads them: it takes a while per cell and per byte.
        if len(text.encode("utf-8")) > PERCENT_MAX_BYTES:
            raise NotebookFileError(f"A Jupytext .py notebook can be at most {PERCENT_MAX_BYTES:,} bytes.")
        pieces = PERCENT_MARKER.split(text)
        if len(pieces) - 1 > PERCENT_MAX_CELLS:
            raise NotebookFileError(f"The file has {len(pieces) - 1:,} cells; at most {PERCENT_MAX_CELLS:,} can be imported from a Jupytext .py file.")
        for index, piece in enumerate(pieces):
            if len(piece.encode("utf-8")) > self.max_code_bytes + 1000:  # the marker line's text besides the code
                raise NotebookFileError(f"Cell {max(index, 1)} is larger than {self.max_code_bytes:,} bytes, the limit for one cell.")
        try:
            notebook = jupytext.reads(text, fmt="py:percent")
        except Exception as exc:  # jupytext raises many kinds on malformed input; all mean "cannot read"
            raise NotebookFileError(f"The file could not be read as a Jupytext percent notebook: {exc}") from None
        self._check_count(len(notebook.cells))
        for cell in notebook.cells:
            if cell.cell_type == "markdown":
                self.add_markdown(cell.source)
            elif cell.cell_type == "code" and cell.metadata.get("title") == "[sql]":
                self.add(ImportedCell(CELL_SQL, cell.source))
            elif cell.cell_type == "code":
                self.add_code(cell.source)
            else:
                self.add(ImportedCell(CELL_PYTHON, "\n".join(f"# {line}".rstrip() for line in cell.source.split("\n"))))

    def read_marimo(self, text):
        self.read_script_block(text)
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
            raise NotebookFileError(f"The marimo notebook is not valid Python: {exc}") from None
        lines = text.split("\n")
        for node in tree.body:
            kind = _marimo_kind(node)
            if kind == "cell":
                self._add_marimo_cell(_function_body(node, lines))
            elif kind in ("function", "setup"):
                source = _function_body(node, lines) if kind == "setup" else _segment(lines, _first_line(node, lines, skip_decorators=True), node.end_lineno)
                self.add(ImportedCell(CELL_PYTHON, magics.translate(source).code))
            elif kind == "unparsable":
                self.add(ImportedCell(CELL_PYTHON, node.value.args[0].value))

    def _add_marimo_cell(self, source):
        try:
            body = ast.parse(source).body
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            body = None
        if body and len(body) == 1:
            markdown = _marimo_markdown(body[0])
            if markdown is not None:
                self.add_markdown(markdown)
                return
            sql = _marimo_sql(body[0])
            if sql is not None:
                self.add(ImportedCell(CELL_SQL, sql[1], result_variable=sql[0]))
                return
        self.add(ImportedCell(CELL_PYTHON, source))


# --- marimo ---------------------------------------------------------------------------------


def _is_app_attribute(node, *names):
    node = node.func if isinstance(node, ast.Call) else node
    return isinstance(node, ast.Attribute) and node.attr in names and isinstance(node.value, ast.Name) and node.value.id == "app"


def _marimo_kind(node):
    """What a top-level statement of a marimo file is to an import, or None (its header,
    `app = marimo.App()`, the `__main__` guard: nothing)."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        for decorator in node.decorator_list:
            if _is_app_attribute(decorator, "cell") and not isinstance(node, ast.ClassDef):
                return "cell"
            if _is_app_attribute(decorator, "function", "class_definition"):
                return "function"
    if isinstance(node, ast.With) and node.items and _is_app_attribute(node.items[0].context_expr, "setup"):
        return "setup"
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and _is_app_attribute(node.value, "_unparsable_cell"):
        arguments = node.value.args
        if arguments and isinstance(arguments[0], ast.Constant) and isinstance(arguments[0].value, str):
            return "unparsable"
    return None


def _first_line(node, lines, *, skip_decorators=False):
    """The 1-based first line of `node`, with the comment lines just above it."""
    start = node.lineno
    if not skip_decorators and getattr(node, "decorator_list", None):
        start = min(decorator.lineno for decorator in node.decorator_list)
    while start > 1 and lines[start - 2].strip().startswith("#"):
        start -= 1
    return start


def _segment(lines, first, last):
    return textwrap.dedent("\n".join(lines[first - 1:last])).strip("\n")


def _function_body(node, lines):
    """The source of a marimo cell's body (or a `with app.setup:` block), without its wrapper
    and its final `return`."""
    body = list(node.body)
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and body and isinstance(body[-1], ast.Return):
        body.pop()
    if not body:
        return ""
    # Comments above the first statement belong to the cell; the `def` line does not.
    first = max(_first_line(body[0], lines), node.lineno + 1)
    return _segment(lines, first, body[-1].end_lineno)


def _is_mo_call(node, name):
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == name and isinstance(node.func.value, ast.Name) and node.func.value.id == "mo"


def _marimo_markdown(statement):
    """The text of a cell that is only `mo.md("...")`, or None."""
    if isinstance(statement, ast.Expr) and _is_mo_call(statement.value, "md") and len(statement.value.args) == 1:
        argument = statement.value.args[0]
        if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
            return textwrap.dedent(argument.value).strip("\n")
    return None


def _marimo_sql(statement):
    """(result variable, query) of a cell that is only `name = mo.sql(f"...")`, or None. The
    f-string's `{name}` fields are this server's SQL placeholders too (bound as parameters)."""
    if isinstance(statement, ast.Assign) and len(statement.targets) == 1 and isinstance(statement.targets[0], ast.Name):
        target, call = statement.targets[0].id, statement.value
    elif isinstance(statement, ast.Expr):
        target, call = "", statement.value
    else:
        return None
    if not _is_mo_call(call, "sql") or len(call.args) != 1 or call.keywords:
        return None
    argument = call.args[0]
    if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
        return target, textwrap.dedent(argument.value).strip("\n")
    if not isinstance(argument, ast.JoinedStr):
        return None
    parts = []
    for value in argument.values:
        if isinstance(value, ast.Constant):
            parts.append(value.value)
        elif isinstance(value, ast.FormattedValue) and isinstance(value.value, ast.Name) and value.conversion == -1 and value.format_spec is None:
            parts.append("{" + value.value.id + "}")
        else:
            return None
    return target, textwrap.dedent("".join(parts)).strip("\n")
