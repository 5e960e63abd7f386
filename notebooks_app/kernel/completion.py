"""Completion and inspection of a cell's code at a cursor: Python through jedi, SQL from a schema.

`python_completions` and `python_inspection` use jedi's Interpreter over the notebook's live
namespace, so they run only inside the execution process (`_child.py`), never in the worker,
and with `allow_unsafe_interpreter_executions` off: jedi reads attributes statically, so a
property or `__getattr__` of a value is never called.  `static_completions` (keywords,
builtins and the names written in the cell) and `sql_completions` (keywords, tables and
their columns, given as data) read no namespace and import nothing: the worker uses them
when there is no execution process, and the child while a cell runs.

Positions: `cursor`, `from` and `to` count UTF-16 code units, as the page's editor does
(the same as Python's indexes for text without characters outside the BMP).
"""
import builtins
import keyword
import os
import re
import tempfile
import threading

MAX_ITEMS = 300  # a popup longer than this is never read
DOC_LIMIT = 8000  # characters of a docstring
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

SQL_KEYWORDS = (
    "SELECT", "FROM", "WHERE", "GROUP BY", "ORDER BY", "HAVING", "LIMIT", "OFFSET", "JOIN", "LEFT JOIN",
    "INNER JOIN", "RIGHT JOIN", "FULL JOIN", "CROSS JOIN", "ON", "USING", "AS", "AND", "OR", "NOT", "IN",
    "IS", "NULL", "LIKE", "ILIKE", "BETWEEN", "CASE", "WHEN", "THEN", "ELSE", "END", "DISTINCT", "UNION",
    "UNION ALL", "EXCEPT", "INTERSECT", "WITH", "INSERT INTO", "VALUES", "UPDATE", "SET", "DELETE FROM",
    "CREATE TABLE", "CREATE VIEW", "DROP TABLE", "ALTER TABLE", "COUNT", "SUM", "AVG", "MIN", "MAX",
    "CAST", "COALESCE", "ASC", "DESC", "TRUE", "FALSE", "OVER", "PARTITION BY",
)


# --- positions ---------------------------------------------------------------------------
def index_of(code, cursor):
    """The Python index of a UTF-16 offset (clamped to the code)."""
    if code.isascii():
        return max(0, min(cursor, len(code)))
    units = 0
    for index, char in enumerate(code):
        if units >= cursor:
            return index
        units += 2 if ord(char) > 0xFFFF else 1
    return len(code)


def utf16_offset(code, index):
    """The UTF-16 offset of a Python index."""
    head = code[:index]
    return len(head) + sum(1 for char in head if ord(char) > 0xFFFF)


def word_start(code, index):
    """Where the identifier that ends at `index` begins (`index` itself if none does)."""
    start = index
    while start > 0 and (code[start - 1].isalnum() or code[start - 1] == "_"):
        start -= 1
    return start


def _line_column(code, index):
    """jedi's position: a 1-based line and a column in code points."""
    line = code.count("\n", 0, index) + 1
    return line, index - (code.rfind("\n", 0, index) + 1)


def _answer(code, start, end, items):
    return {"from": utf16_offset(code, start), "to": utf16_offset(code, end), "items": items[:MAX_ITEMS]}


# --- Python: static --------------------------------------------------------------------
def static_completions(code, cursor):
    """Keywords, builtins and the names the cell itself writes, for the word before the
    cursor; nothing after a dot (an attribute needs the value).  Reads no namespace."""
    index = index_of(code, cursor)
    start = word_start(code, index)
    prefix = code[start:index]
    if start > 0 and code[start - 1] == "." or prefix[:1].isdigit():
        return _answer(code, start, index, [])
    seen, items = set(), []
    own = [name for name in _IDENTIFIER.findall(code[:start] + " " + code[index:]) if not keyword.iskeyword(name)]
    for names, kind in ((own, "variable"), (keyword.kwlist, "keyword"), (dir(builtins), "builtin")):
        for name in names:
            if name.startswith(prefix) and name != prefix and name not in seen and not name.startswith("__"):
                seen.add(name)
                items.append({"label": name, "type": kind})
    items.sort(key=lambda item: (item["label"].startswith("_"), item["label"].lower()))
    return _answer(code, start, index, items)


# --- Python: jedi over the live namespace ----------------------------------------------------
_JEDI_READY = False
_JEDI_LOCK = threading.Lock()  # jedi's caches are not thread-safe: the warm-up and the command thread
_TYPES = {"module": "module", "class": "class", "instance": "variable", "function": "function",
          "param": "variable", "path": "text", "keyword": "keyword", "property": "property", "statement": "variable"}


def _jedi():
    """jedi, set up once: no executions of descriptors, a cache in the writable temp dir."""
    global _JEDI_READY
    import jedi

    if not _JEDI_READY:
        jedi.settings.allow_unsafe_interpreter_executions = False
        # The sandbox's Python is read-only and HOME is the notebook's own directory.
        jedi.settings.cache_directory = os.path.join(tempfile.gettempdir(), "jedi-cache")
        jedi.settings.call_signatures_validity = 0.0
        _static_unwrap_in_jedi()
        _JEDI_READY = True
    return jedi


def _static_unwrap_in_jedi():
    """jedi 0.20 looks for a value's source through `inspect.unwrap`, whose `hasattr(value,
    '__wrapped__')` calls a class's `__getattr__`: user code.  Its copy of `inspect` gets an
    `unwrap` that follows only `__wrapped__` attributes that really exist (jedi is pinned)."""
    import inspect
    import types

    try:
        from jedi.inference.compiled import mixed
    except ImportError:  # another jedi layout: nothing to patch
        return

    def unwrap(value):
        for _ in range(100):
            try:
                wrapped = inspect.getattr_static(value, "__wrapped__")
            except AttributeError:
                return value
            if not callable(wrapped) and isinstance(wrapped, (property, types.MemberDescriptorType, types.GetSetDescriptorType)):
                return value  # a descriptor: reading it would run code
            value = wrapped
        return value

    mixed.inspect = types.SimpleNamespace(**{**vars(inspect), "unwrap": unwrap})


def warm():
    """Load jedi and the builtins' stubs (about a second of CPU) before the first completion;
    the child calls it on its main thread after a second without commands (_child.warm_up_completion)."""
    with _JEDI_LOCK:
        _jedi().Interpreter("import builtins\nbuiltins.l", [{}]).complete(2, 10)


def python_completions(code, cursor, namespace):
    """Completions from jedi's Interpreter: live variables, their attributes, modules."""
    with _JEDI_LOCK:
        return _python_completions(code, cursor, namespace)


def python_inspection(code, cursor, namespace):
    """The signature of the call around the cursor, or of the name under it, and its docstring."""
    with _JEDI_LOCK:
        return _python_inspection(code, cursor, namespace)


def _python_completions(code, cursor, namespace):
    jedi = _jedi()
    index = index_of(code, cursor)
    line, column = _line_column(code, index)
    completions = jedi.Interpreter(code, [namespace]).complete(line, column)
    items, start = [], index
    for completion in completions[:MAX_ITEMS]:
        name = completion.name
        typed = len(name) - len(completion.complete)
        start = index - typed
        items.append({"label": name, "type": _TYPES.get(completion.type, "variable")})
    if not items:
        start = word_start(code, index)
    return _answer(code, start, index, items)


def _python_inspection(code, cursor, namespace):
    jedi = _jedi()
    index = index_of(code, cursor)
    line, column = _line_column(code, index)
    script = jedi.Interpreter(code, [namespace])
    answer = {}
    signatures = script.get_signatures(line, column)
    names = script.infer(line, column) or script.help(line, column)
    if signatures:
        answer["signature"] = signatures[0].to_string()
        doc = signatures[0].docstring(raw=True)
    elif names:
        name = names[0]
        found = name.get_signatures()
        if found:
            answer["signature"] = found[0].to_string()
        doc = name.docstring(raw=True)
    else:
        doc = ""
    if doc:
        answer["doc"] = doc if len(doc) <= DOC_LIMIT else doc[:DOC_LIMIT] + "\n…"
    return answer


# --- SQL -------------------------------------------------------------------------------
def sql_completions(code, cursor, tables):
    """Keywords, table names and column names for the word before the cursor.

    `tables`: {name: [column, ...]}, the connection's tables and the DataFrames in scope.
    After `name.` only that table's columns; otherwise tables, the columns of the tables the
    query names, and keywords (matched without regard to case)."""
    index = index_of(code, cursor)
    start = word_start(code, index)
    prefix = code[start:index].lower()
    qualifier = re.search(r'"?([A-Za-z_][A-Za-z0-9_]*)"?\.$', code[:start])
    if qualifier:
        columns = _case_insensitive(tables).get(qualifier.group(1).lower(), [])
        return _answer(code, start, index, _matching(columns, prefix, "property"))
    if prefix[:1].isdigit():
        return _answer(code, start, index, [])
    words = {word.lower() for word in _IDENTIFIER.findall(code)}
    used = [columns for name, columns in tables.items() if name.lower() in words]
    items = _matching(list(tables), prefix, "type")
    items += _matching([column for columns in used for column in columns], prefix, "property")
    items += _matching(SQL_KEYWORDS, prefix, "keyword")
    return _answer(code, start, index, items)


def _case_insensitive(tables):
    return {name.lower(): columns for name, columns in tables.items()}


def _matching(names, prefix, kind):
    seen, items = set(), []
    for name in names:
        if name.lower().startswith(prefix) and name.lower() != prefix and name not in seen:
            seen.add(name)
            items.append({"label": name, "type": kind})
    return items


def frame_tables(namespace):
    """{name: columns} of the pandas DataFrames in the namespace (DuckDB queries them by name)."""
    import sys

    pandas = sys.modules.get("pandas")
    if pandas is None:  # no cell imported pandas: no DataFrame can exist
        return {}
    return {
        name: [str(column) for column in list(value.columns)[:MAX_ITEMS]]
        for name, value in list(namespace.items())
        if isinstance(value, pandas.DataFrame) and name.isidentifier() and not name.startswith("_")
    }
