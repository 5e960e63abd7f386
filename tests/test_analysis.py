"""Cell analysis: the global names a Python or SQL cell reads and writes, and its syntax errors.

Pure: no database, no kernel.  Each table row is (code, expected reads, expected writes);
builtins are checked separately (they are neither reads nor writes unless defined).
"""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notebooks_app.kernel import sql
from notebooks_app.kernel.analysis import Analysis, analyze_python, analyze_sql, is_private, placeholders


def names(text):
    return frozenset(text.split())


PYTHON_CASES = [
    # --- assignment, in evaluation order -------------------------------------------
    ("x = 1", "", "x"),
    ("x = y", "y", "x"),
    ("a, b = c", "c", "a b"),
    ("[a, b] = c", "c", "a b"),
    ("first, *rest = items", "items", "first rest"),
    ("x = y = z", "z", "x y"),
    ("x = 1; y = x", "", "x y"),
    ("x = 1\ny = x", "", "x y"),
    ("y = x\nx = 1", "x", "x y"),
    ("x = x + 1", "x", "x"),
    ("x += 1", "x", "x"),
    ("x = 0\nx += 1", "", "x"),
    ("obj.count += 1", "obj", ""),
    ("df['a'] = 1", "df", ""),
    ("df.col = values", "df values", ""),
    ("a[i], b = pair", "a i pair", "b"),
    ("x = a if cond else b", "a cond b", "x"),
    ("if flag:\n    x = 1\nelse:\n    x = 2\ny = x", "flag", "x y"),
    ("global x\nx = 1", "", "x"),
    # --- annotations: a value binds, a bare annotation does not -----------------
    ("x: int = 5", "", "x"),
    ("x: int", "", ""),
    ("x: MyType", "MyType", ""),
    ("x: MyType = make()", "MyType make", "x"),
    ("obj.field: int = 1", "obj", ""),
    ("from __future__ import annotations\nx: MyType = 1", "", "x"),
    # --- walrus ---------------------------------------------------------------------
    ("if (n := compute()) > 0:\n    pass", "compute", "n"),
    ("[y := f(v) for v in data]", "f data", "y"),
    ("any((hit := w) == 'x' for w in words)\nprint(hit)", "words", "hit"),
    ("sums = [total := total + v for v in values]", "total values", "sums total"),
    # --- comprehensions run immediately, in their own scope -------------------------
    ("[i for i in range(n)]", "n", ""),
    ("[x for x in xs if x > limit]", "xs limit", ""),
    ("{k: v for k, v in pairs}", "pairs", ""),
    ("{c for row in grid for c in row}", "grid", ""),
    ("[[c for c in row] for row in grid]", "grid", ""),
    ("[x for x in x]", "x", ""),
    ("y = [i * k for i in r]\nk = 2", "r k", "y k"),
    ("g = (i for i in items)", "items", "g"),
    ("i = 5\n[i for i in range(3)]\nprint(i)", "", "i"),
    # --- for / while / with / try ---------------------------------------------------
    ("for i in items:\n    last = i", "items", "i last"),
    ("for k, v in d.items():\n    pass", "d", "k v"),
    ("for i in range(3):\n    pass\nelse:\n    done = i", "", "i done"),
    ("while n > 0:\n    n -= 1", "n", "n"),
    ("with open(path) as f:\n    data = f.read()", "path", "f data"),
    ("with a as (b, c), d:\n    pass", "a d", "b c"),
    ("try:\n    x = risky()\nexcept ValueError as err:\n    msg = str(err)", "risky", "x err msg"),
    ("try:\n    pass\nexcept* TypeError as group:\n    pass", "", "group"),
    ("try:\n    pass\nexcept MyError:\n    pass\nfinally:\n    done = True", "MyError", "done"),
    ("assert ok, message", "ok message", ""),
    ("raise Problem from cause", "Problem cause", ""),
    # --- imports --------------------------------------------------------------------
    ("import os", "", "os"),
    ("import os.path", "", "os"),
    ("import numpy as np", "", "np"),
    ("import xml.etree.ElementTree as ET", "", "ET"),
    ("from math import pi, tau as t", "", "pi t"),
    ("from . import sibling", "", "sibling"),
    ("from os import *", "", ""),
    ("from __future__ import annotations", "", ""),
    # --- functions: definition-time parts are reads, bodies are deferred ------------
    ("def f(x):\n    return x + y", "y", "f"),
    ("def f():\n    return g()\ndef g():\n    return 1", "", "f g"),
    ("def f():\n    return x\nx = 1", "", "f x"),
    ("x = 1\ndef f():\n    return x", "", "x f"),
    ("def f():\n    x = 1\n    return x", "", "f"),
    ("def f(a=default, *, b=other):\n    pass", "default other", "f"),
    ("def f(a: A, *args: B, **kw: C) -> D:\n    pass", "A B C D", "f"),
    ("from __future__ import annotations\ndef f(a: A) -> D:\n    pass", "", "f"),
    ("@decorator\ndef f():\n    pass", "decorator", "f"),
    ("@app.route('/')\ndef index():\n    pass", "app", "index"),
    ("async def fetch():\n    return await client.get(url)", "client url", "fetch"),
    ("def outer():\n    def inner():\n        return z\n    return inner", "z", "outer"),
    ("def f(x):\n    return [x * k for k in ks]", "ks", "f"),
    ("def f():\n    v = 1\n    def g():\n        nonlocal v\n        v += 1\n    return g", "", "f"),
    ("def counter():\n    global count\n    count += 1", "", "counter count"),
    ("def reader():\n    global setting\n    return setting", "setting", "reader"),
    ("def f():\n    global np\n    import numpy as np", "", "f np"),
    ("def f():\n    import json\n    return json", "", "f"),
    # A local annotation is never evaluated, but symtable sees it: a harmless extra read.
    ("def f():\n    y: Hint = 1\n    return y", "Hint", "f"),
    ("f = lambda a: a + b", "b", "f"),
    ("f = lambda a=d: a", "d", "f"),
    ("key = lambda row: row[col]\ncol = 0", "", "key col"),
    ("nums = [1]\nsquares = list(map(lambda n: n * n, nums))", "", "nums squares"),
    ("fs = [lambda: i + offset for i in range(3)]", "offset", "fs"),
    # --- classes: bodies run immediately; methods do not see the class scope --------
    ("class A(Base, metaclass=Meta):\n    pass", "Base Meta", "A"),
    ("@dataclass\nclass P:\n    x: int = 0\n    y: Ann = fallback", "dataclass Ann fallback", "P"),
    ("class C:\n    a = 1\n    b = a + 1", "", "C"),
    ("class C:\n    b = a + 1\n    a = 2", "a", "C"),
    ("class C:\n    def m(self):\n        return helper(self)", "helper", "C"),
    ("class C:\n    def m(self):\n        return C()", "", "C"),
    ("class C:\n    x = 1\n    def m(self):\n        return x", "x", "C"),
    ("class C:\n    y = 1\n    z = [y for _ in range(2)]", "y", "C"),
    ("class C:\n    global g\n    g = 1", "", "C g"),
    ("class Outer:\n    class Inner:\n        pass\n    ref = Inner", "", "Outer"),
    # --- del: needs the name, then removes it ---------------------------------------
    ("del x", "x", "x"),
    ("x = 1\ndel x", "", "x"),
    ("del d['k']", "d", ""),
    ("del obj.attr", "obj", ""),
    # --- match ----------------------------------------------------------------------
    ("match cmd:\n    case [action, target]:\n        pass", "cmd", "action target"),
    ("match p:\n    case Point(x=0, y=py):\n        pass", "p Point", "py"),
    ("match c:\n    case Color.RED:\n        hit = 1", "c Color", "hit"),
    ("match m:\n    case {'k': v, **rest}:\n        pass", "m", "v rest"),
    ("match s:\n    case [head, *tail]:\n        pass", "s", "head tail"),
    ("match v:\n    case (1 | 2) as small:\n        pass", "v", "small"),
    ("match v:\n    case int(n) if n > limit:\n        pass", "v limit", "n"),
    ("match v:\n    case _:\n        pass", "v", ""),
    # --- private names never leave the cell ------------------------------------------
    ("_tmp = 1\nresult = _tmp", "", "result"),
    ("x = _hidden", "", "x"),
    ("def _helper():\n    return data", "data", ""),
    ("for _ in range(3):\n    pass", "", ""),
    # --- builtins: not reads; writing one is a write --------------------------------
    ("print(len(items))", "items", ""),
    ("list = [1]", "", "list"),
    ("list = list(pairs)", "list pairs", "list"),
    # --- odds and ends --------------------------------------------------------------
    ("", "", ""),
    ("# only a comment", "", ""),
    ("x = f'{a}{b!r:{width}}'", "a b width", "x"),
    ("await asyncio.sleep(0)", "asyncio", ""),
    ("async with lock:\n    pass", "lock", ""),
    ("async for item in stream:\n    pass", "stream", "item"),
]


@pytest.mark.parametrize("code, reads, writes", PYTHON_CASES)
def test_python_reads_and_writes(code, reads, writes):
    result = analyze_python(code)
    assert result.error is None
    assert (result.reads, result.writes) == (names(reads), names(writes))


@pytest.mark.parametrize(
    "code, builtins_used",
    [
        ("print(len(items))", "print len"),
        ("def f():\n    return sorted(data)", "sorted"),
        ("x: int", "int"),
        ("list = [1]", ""),
        ("list = list(pairs)", ""),  # written by the cell: a (self) read, not a builtin use
        ("range = 3\nfor i in range:\n    pass", ""),
        ("match v:\n    case int(n):\n        pass", "int"),
        ("class C:\n    z = [len(q) for q in qs]", "len"),
    ],
)
def test_builtins_are_reported_apart(code, builtins_used):
    assert analyze_python(code).builtins_used == names(builtins_used)


def test_long_expression_needs_no_recursion():
    result = analyze_python("s = " + " + ".join(["a"] * 1500))
    assert (result.error, result.reads, result.writes) == (None, names("a"), names("s"))


@pytest.mark.parametrize(
    "code, ename, message, line, source",
    [
        ("x = (", "SyntaxError", "'(' was never closed", 1, "x = ("),
        ("a = 1\nb = 2 +\n", "SyntaxError", "invalid syntax", 2, "b = 2 +"),
        ("if x:\nprint(1)", "IndentationError", "expected an indented block", 2, "print(1)"),
        ("x = 1\n  y = 2", "IndentationError", "unexpected indent", 2, "y = 2"),
        ("y = 1\nreturn y", "SyntaxError", "'return' outside function", 2, "return y"),
        ("def f():\n    nonlocal q", "SyntaxError", "no binding for nonlocal 'q' found", 2, "nonlocal q"),
        ("for i in r:\n    pass\nbreak", "SyntaxError", "'break' outside loop", 3, "break"),
    ],
)
def test_syntax_errors_are_returned_with_the_line(code, ename, message, line, source):
    result = analyze_python(code)
    assert (result.reads, result.writes, result.builtins_used) == (frozenset(), frozenset(), frozenset())
    assert result.error["ename"] == ename
    assert message in result.error["evalue"]
    assert f"(line {line})" in result.error["evalue"]
    traceback = result.error["traceback"]
    assert traceback[0] == f'  File "<cell>", line {line}'
    assert traceback[1].strip() == source
    assert not any(row.startswith(ename + ":") for row in traceback)  # the title is ename: evalue


def test_syntax_error_points_a_caret_at_the_problem():
    traceback = analyze_python("total = (1 +\n").error["traceback"]
    assert traceback[-1].strip().startswith("^")


def test_null_byte_is_a_syntax_error():
    result = analyze_python("x = 1\0")
    assert result.error["ename"] == "SyntaxError"
    assert result.writes == frozenset()


def test_code_too_deep_to_compile_is_an_error_not_a_crash():
    result = analyze_python("s = " + "+".join(["a"] * 5000))
    assert result.error is not None
    assert result.writes == frozenset()


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("xy_=+()[]{}:.,;*@ \n\tifordelamb'\"0\\")), max_size=40))
def test_arbitrary_text_never_raises(code):
    result = analyze_python(code)
    assert isinstance(result, Analysis)
    assert (result.error is None) or (result.reads == result.writes == frozenset())
    assert not any(is_private(name) for name in result.reads | result.writes)


# --- SQL ---------------------------------------------------------------------------

SQL_CASES = [
    ("SELECT * FROM t WHERE id = {user_id}", ["user_id"]),
    ("SELECT {a}, {b}, {a}", ["a", "b"]),
    ("SELECT {b} + {a}", ["b", "a"]),
    ("SELECT {a}{b}", ["a", "b"]),
    ("SELECT '{not_me}', {me}", ["me"]),
    ("SELECT 'it''s {x}', {y}", ["y"]),
    ('SELECT "{col}" FROM t', []),
    ("SELECT 1 -- {comment}\n, {after}", ["after"]),
    ("/* {a} */ SELECT {b}", ["b"]),
    ("SELECT '{{x}}', {{y}}, {z}", ["z"]),
    ("SELECT {{{x}}}", ["x"]),
    ("SELECT { x }", []),
    ("SELECT {1abc}", []),
    ("SELECT {naïve}", []),  # ASCII identifiers only, like the runner's binding
    ("SELECT 'unterminated {x}", []),
    ("SELECT /* unterminated {x}", []),
    ("SELECT {_private}", ["_private"]),
    ("SELECT {}", []),
    ("", []),
]


@pytest.mark.parametrize("code, expected", SQL_CASES)
def test_sql_placeholders_in_order_of_first_appearance(code, expected):
    assert placeholders(code) == expected


class _Recorder(dict):
    """A namespace that has every name and records which ones `sql.bind` looks up."""

    def __init__(self):
        super().__init__()
        self.names = []

    def __contains__(self, name):
        return True

    def __getitem__(self, name):
        if name not in self.names:
            self.names.append(name)
        return 1


def bound_names(code):
    namespace = _Recorder()
    sql.bind(code, namespace, "qmark")
    return namespace.names


@pytest.mark.parametrize("code, expected", SQL_CASES)
def test_sql_binding_looks_up_exactly_the_placeholders(code, expected):
    """The runner binds the names the graph sees as reads: each case's expected names, written out."""
    assert bound_names(code) == expected


@pytest.mark.parametrize(
    "code, query",
    [
        ("SELECT {a} -- {b}", "SELECT ? -- {b}"),
        ("SELECT '{a}', {b}", "SELECT '{a}', ?"),
        ("SELECT {{a}}, {a}", "SELECT {a}, ?"),
        ('SELECT "{a}" /* {b} */, {c}', 'SELECT "{a}" /* {b} */, ?'),
        ("SELECT {x}{y}", "SELECT ??"),
    ],
)
def test_sql_binding_rewrites_only_placeholders_outside_strings_and_comments(code, query):
    assert sql.bind(code, _Recorder(), "qmark")[0] == query


@pytest.mark.parametrize(
    "code, result_variable, reads, writes, builtins_used",
    [
        ("SELECT * FROM t WHERE id = {user_id}", "df", "user_id", "df", ""),
        ("SELECT {a}, {b}", "rows", "a b", "rows", ""),
        ("SELECT {_private}, {shown}", "df", "shown", "df", ""),
        ("SELECT 1", "_tmp", "", "", ""),
        ("SELECT 1", "", "", "", ""),
        ("SELECT {len}", "out", "", "out", "len"),
        ("SELECT '{x}' -- {y}", "df", "", "df", ""),
    ],
)
def test_sql_reads_placeholders_and_writes_result(code, result_variable, reads, writes, builtins_used):
    result = analyze_sql(code, result_variable)
    assert result.error is None
    assert (result.reads, result.writes, result.builtins_used) == (names(reads), names(writes), names(builtins_used))


def test_is_private():
    assert is_private("_x") and is_private("__dunder__")
    assert not is_private("x_")
