"""Static analysis of a cell: which global names it reads and which it writes.

Python cells are analysed with `ast` (statements in evaluation order, so a name read
before the cell binds it is a read) and `symtable` (the compiler's own scoping for
function bodies); SQL cells by their `{name}` placeholders (reads: the root name of
`{slider.value}`) and, through sqlglot, the names they use as tables (edges only when a cell
defines them).  Pure: no I/O, no Django, nothing of the project but markdown.py's grammar of
`{fields}`, and nothing here ever runs the code.

Decisions worth knowing (docs/architecture.md repeats them for users):

* `x: int` (an annotation without a value) does not bind `x`, so it is not a write;
  the annotation itself is evaluated at module level, so its names are reads.
* `from m import *` writes nothing: its names cannot be known without importing `m`.
  Import names explicitly to make them edges.  `from __future__ import ...` writes nothing.
* Names used only inside function and lambda bodies are read when the function is
  called, so a name the cell writes anywhere is not a read there.  At module level (and
  in class bodies and comprehensions, which run immediately) a name read before the
  cell binds it is a read, even if the cell binds it later (`x = x + 1` reads and
  writes `x`); the graph ignores such self edges.
* A read inside a function is attributed to the cell even when that function is never
  called; local annotations inside functions (`y: T`), which Python never evaluates,
  count as reads of `T` too (harmless extra edges, never missing ones).
* Top-level `await` is accepted (the runner may run it); everything else the compiler
  rejects is a syntax error.
"""
import ast
import builtins
import re
import symtable
import traceback
import warnings
from dataclasses import dataclass

BUILTIN_NAMES = frozenset(dir(builtins))
CELL_FILENAME = "<cell>"

# A SQL placeholder is a markdown field without a format spec (`{name}`, `{slider.value}`,
# `{d["key"]}`): one grammar for both, and the runner's parameter binding (kernel/sql.py) uses
# these segments too, so edges and bound parameters agree.
_ROOT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Analysis:
    reads: frozenset  # global names read that are neither builtins nor private
    writes: frozenset  # global names bound (never private)
    builtins_used: frozenset  # builtin names read and not written: edges only if some cell defines them
    error: dict | None = None  # {"ename", "evalue", "traceback"} for code that does not compile
    # SQL cells: names used as tables (DuckDB scans a DataFrame of that name); like
    # builtins_used, an edge only when some cell defines the name, so a real table of
    # the connected database is no read.
    tables: frozenset = frozenset()


def is_private(name: str) -> bool:
    """Names starting with `_` stay inside their cell: never reads, never writes."""
    return name.startswith("_")


# --- Python ---------------------------------------------------------------------------


def analyze_python(code: str) -> Analysis:
    """Reads and writes of a Python cell; a syntax error is returned, never raised."""
    try:
        # The compiler, not just the parser, decides what is a syntax error ('return'
        # outside a function, a bad `nonlocal`); its warnings concern the runner, not us.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # From the source, as the runner will: compiling the tree instead has a much
            # lower nesting limit (a 1,000-term sum would fail).
            compile(code, CELL_FILENAME, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
            tree = ast.parse(code, CELL_FILENAME)
            table = symtable.symtable(code, CELL_FILENAME, "exec")
    except SyntaxError as exc:
        return _failed(_syntax_error(exc, code))
    except ValueError as exc:  # null bytes in the source
        return _failed({"ename": "SyntaxError", "evalue": str(exc), "traceback": []})
    except (RecursionError, MemoryError) as exc:
        # Nested too deep for the compiler: the runner could not compile it either.
        return _failed({"ename": type(exc).__name__, "evalue": str(exc), "traceback": []})

    walker = _ImmediateWalker(future_annotations=_has_future_annotations(tree))
    walker.run(tree.body)
    deferred_reads, deferred_writes = _deferred_names(table)

    writes = walker.writes | deferred_writes
    reads = walker.reads | (deferred_reads - writes)
    return _result(reads, writes)


def _result(reads, writes):
    writes = frozenset(name for name in writes if not is_private(name))
    public_reads = {name for name in reads if not is_private(name)}
    builtins_used = frozenset(n for n in public_reads if n in BUILTIN_NAMES and n not in writes)
    return Analysis(reads=frozenset(public_reads - builtins_used), writes=writes, builtins_used=builtins_used)


def _failed(error):
    return Analysis(reads=frozenset(), writes=frozenset(), builtins_used=frozenset(), error=error)


def _syntax_error(exc, code):
    """Python's own rendering: the offending line of the cell and a caret, then the message."""
    lineno = exc.lineno
    lines = code.splitlines()
    if exc.text is None and lineno and 0 < lineno <= len(lines):
        # Errors found by the compiler (not the parser) carry no source text.
        exc.text = lines[lineno - 1] + "\n"
    rendered = "".join(traceback.format_exception_only(type(exc), exc)).rstrip("\n").split("\n")
    # The last line repeats "ename: evalue", which the client shows as the error's title.
    if rendered and rendered[-1].startswith(type(exc).__name__ + ":"):
        rendered.pop()
    evalue = f"{exc.msg} (line {lineno})" if lineno else str(exc.msg)
    ipython = _IPYTHON_LINE.match(lines[lineno - 1]) if lineno and 0 < lineno <= len(lines) else None
    if ipython:
        evalue = _not_python(ipython.group(1).strip(), lineno)
    return {"ename": type(exc).__name__, "evalue": evalue, "traceback": rendered}


# A line of IPython's, not Python: `!command`, `%magic`, `%%cell magic`, `files = !ls`.
_IPYTHON_LINE = re.compile(r"^\s*(?:[A-Za-z_][A-Za-z0-9_]*\s*=\s*)?([!%].*)$")
_INSTALLERS = ("pip", "pip3", "conda", "mamba")
_OPTIONS_WITH_VALUES = {"-r", "--requirement", "-c", "--constraint", "-i", "--index-url", "--extra-index-url", "-e", "--editable", "-f", "--find-links", "-t", "--target"}


def _not_python(command, lineno):
    """What a syntax error on an IPython line says instead: it does not run here, and where
    packages come from when it was a `pip install`."""
    shown = command if len(command) <= 80 else command[:79] + "…"
    kind = "a shell command, and shell commands" if command.startswith("!") else "an IPython magic, and magics"
    packages = install_requirements(command)
    if packages:
        names = ", ".join(packages[:-1]) + " and " + packages[-1] if len(packages) > 1 else packages[0]
        advice = f"add {names} in the Packages card (docs/packages.md)"
    elif packages is not None:
        advice = "add packages in the Packages card (docs/packages.md)"
    else:
        advice = "a cell runs Python only"
    return f"`{shown}` (line {lineno}) is {kind} do not run in cells: {advice}"


def install_requirements(command):
    """The packages an IPython install line names (`!pip install -q seaborn`, `%pip install x`,
    `!python -m pip install x`, `!conda install x`): a list, possibly empty; None for any
    other line."""
    import shlex

    try:
        words = shlex.split(command.lstrip("!%"))
    except ValueError:  # an unclosed quote
        return None
    while words and words[0] not in _INSTALLERS:
        if words[0] != "-m" and not words[0].startswith(("python", "uv", "{sys.executable}", "$")):
            return None
        words.pop(0)
    if len(words) < 2 or words[1] != "install":
        return None
    packages, skip = [], False
    for word in words[2:]:
        if skip:
            skip = False
        elif word in _OPTIONS_WITH_VALUES:
            skip = True
        elif not word.startswith("-"):
            packages.append(word)
    return packages


def _has_future_annotations(tree):
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            if any(alias.name == "annotations" for alias in node.names):
                return True
        elif not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):
            break  # future imports must come first (after the docstring)
    return False


def _deferred_names(table):
    """Global names read and written by function and lambda bodies, wherever they are.

    Their bodies run later (when called), so the order of statements does not matter
    there and symtable's scoping is exact.  Class bodies and comprehensions at module
    level run immediately and are left to `_ImmediateWalker`.
    """
    reads, writes = set(), set()
    stack = [(table, False)]
    while stack:
        current, deferred = stack.pop()
        if deferred:
            for symbol in current.get_symbols():
                if not symbol.is_global():
                    continue
                name = symbol.get_name()
                if symbol.is_referenced():
                    reads.add(name)
                if symbol.is_declared_global() and (symbol.is_assigned() or symbol.is_imported()):
                    writes.add(name)
        for child in current.get_children():
            is_function = child.get_type() == "function" and not _is_comprehension(child)
            stack.append((child, deferred or is_function))
    return reads, writes


def _is_comprehension(table):
    # Comprehensions are function scopes whose only parameter is the hidden iterator
    # `.0`, a name no user code can write.
    return ".0" in table.get_parameters()


class _Scope:
    __slots__ = ("kind", "bound", "globals")

    def __init__(self, kind, declared_globals=()):
        self.kind = kind  # "module", "class" or "comprehension"
        self.bound = set()
        self.globals = set(declared_globals)


class _ImmediateWalker:
    """Walks the code that runs when the cell runs, in evaluation order.

    Iterative (an explicit stack of nodes and actions) so that a long expression such as
    a 2,000-term sum cannot exhaust Python's recursion limit.
    """

    def __init__(self, *, future_annotations):
        self.future_annotations = future_annotations
        self.module = _Scope("module")
        self.scopes = [self.module]
        self.reads = set()
        self.writes = set()

    def run(self, statements):
        stack = list(reversed(statements))
        while stack:
            item = stack.pop()
            if not isinstance(item, ast.AST):
                item()  # an action scheduled between nodes: bind a name, enter or leave a scope
                continue
            visit = getattr(self, "visit_" + type(item).__name__, None)
            children = visit(item) if visit is not None else _children(item)
            stack.extend(reversed(children))

    # --- names ---------------------------------------------------------------------
    def load(self, name):
        top = len(self.scopes) - 1
        for index in range(top, -1, -1):
            scope = self.scopes[index]
            if scope.kind == "comprehension":
                if name in scope.bound:
                    return
            elif scope.kind == "class":
                # A class body sees its own names; nested scopes never do.
                if index == top and name not in scope.globals and name in scope.bound:
                    return
            else:
                if name not in scope.bound:
                    self.reads.add(name)
                return

    def bind(self, name):
        scope = self.scopes[-1]
        if scope.kind == "module" or (scope.kind == "class" and name in scope.globals):
            self.module.bound.add(name)
            self.writes.add(name)
        else:
            scope.bound.add(name)

    def bind_walrus(self, name):
        # `:=` in a comprehension binds in the nearest enclosing non-comprehension scope.
        for scope in reversed(self.scopes):
            if scope.kind != "comprehension":
                if scope is self.module:
                    self.module.bound.add(name)
                    self.writes.add(name)
                else:
                    scope.bound.add(name)
                return

    def delete(self, name):
        # `del x` needs x to exist (a read unless bound earlier) and removes it (a write).
        self.load(name)
        self.bind(name)

    def _bind_action(self, name):
        return lambda: self.bind(name)

    def _enter(self, scope):
        return lambda: self.scopes.append(scope)

    def _leave(self):
        self.scopes.pop()

    # --- expressions ---------------------------------------------------------------
    def visit_Name(self, node):
        if isinstance(node.ctx, ast.Load):
            self.load(node.id)
        elif isinstance(node.ctx, ast.Store):
            self.bind(node.id)
        else:
            self.delete(node.id)
        return []

    def visit_NamedExpr(self, node):
        name = node.target.id
        return [node.value, lambda: self.bind_walrus(name)]

    def visit_Lambda(self, node):
        # Only the defaults run now; the body is a deferred scope (see _deferred_names).
        return [*node.args.defaults, *(d for d in node.args.kw_defaults if d is not None)]

    def _comprehension(self, node, results):
        scope = _Scope("comprehension")
        generators = node.generators
        # The first iterable is evaluated in the enclosing scope, the rest inside.
        out = [generators[0].iter, self._enter(scope)]
        for index, generator in enumerate(generators):
            if index:
                out.append(generator.iter)
            out.append(generator.target)
            out.extend(generator.ifs)
        out.extend(results)
        out.append(self._leave)
        return out

    def visit_ListComp(self, node):
        return self._comprehension(node, [node.elt])

    visit_SetComp = visit_GeneratorExp = visit_ListComp

    def visit_DictComp(self, node):
        return self._comprehension(node, [node.key, node.value])

    # --- statements ----------------------------------------------------------------
    def visit_FunctionDef(self, node):
        args = node.args
        out = [*node.decorator_list, *args.defaults, *(d for d in args.kw_defaults if d is not None)]
        if not self.future_annotations:
            every_arg = [*args.posonlyargs, *args.args, args.vararg, *args.kwonlyargs, args.kwarg]
            out.extend(a.annotation for a in every_arg if a is not None and a.annotation is not None)
            if node.returns is not None:
                out.append(node.returns)
        out.append(self._bind_action(node.name))
        return out

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node):
        scope = _Scope("class", _declared_globals(node.body))
        return [
            *node.decorator_list,
            *node.bases,
            *(keyword.value for keyword in node.keywords),
            self._enter(scope),
            *node.body,
            self._leave,
            self._bind_action(node.name),
        ]

    def visit_Assign(self, node):
        return [node.value, *node.targets]

    def visit_AugAssign(self, node):
        target = node.target
        if isinstance(target, ast.Name):
            name = target.id
            return [lambda: self.load(name), node.value, self._bind_action(name)]
        return [*_children(target), node.value]

    def visit_AnnAssign(self, node):
        out = []
        target = node.target
        if node.value is not None:
            out.append(node.value)
            out.append(target)
        elif not isinstance(target, ast.Name):
            out.extend(_children(target))  # `a.b: int` evaluates `a`
        # Module and class level annotations are evaluated (and stored in __annotations__).
        if not self.future_annotations:
            out.append(node.annotation)
        return out

    def visit_For(self, node):
        return [node.iter, node.target, *node.body, *node.orelse]

    visit_AsyncFor = visit_For

    def visit_ExceptHandler(self, node):
        out = [node.type] if node.type is not None else []
        if node.name:
            out.append(self._bind_action(node.name))
        out.extend(node.body)
        return out

    def visit_Import(self, node):
        for alias in node.names:
            # `import a.b` binds `a`; `import a.b as c` binds `c`.
            self.bind(alias.asname or alias.name.partition(".")[0])
        return []

    def visit_ImportFrom(self, node):
        if node.module == "__future__":
            # A compiler directive: the name it also binds is an artifact no cell uses, and
            # counting it would make every cell with the same directive a duplicate definition.
            return []
        for alias in node.names:
            if alias.name != "*":
                self.bind(alias.asname or alias.name)
        return []

    def visit_Global(self, node):
        return []  # module level: a no-op; class bodies are pre-scanned (_declared_globals)

    visit_Nonlocal = visit_Global

    # --- match patterns ------------------------------------------------------------
    def visit_MatchAs(self, node):
        out = [node.pattern] if node.pattern is not None else []
        if node.name:
            out.append(self._bind_action(node.name))
        return out

    def visit_MatchStar(self, node):
        if node.name:
            self.bind(node.name)
        return []

    def visit_MatchMapping(self, node):
        out = [*node.keys, *node.patterns]
        if node.rest:
            out.append(self._bind_action(node.rest))
        return out


def _children(node):
    out = []
    for _, value in ast.iter_fields(node):
        if isinstance(value, ast.AST):
            out.append(value)
        elif isinstance(value, list):
            out.extend(item for item in value if isinstance(item, ast.AST))
    return out


def _declared_globals(body):
    """Names a class body declares `global` (its own statements, not nested scopes)."""
    names, stack = set(), list(body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Global):
            names.update(node.names)
        elif not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            stack.extend(_children(node))
    return names


# --- SQL ------------------------------------------------------------------------------


def analyze_sql(code: str, result_variable: str) -> Analysis:
    """A SQL cell reads its `{name}` placeholders and writes its result variable.

    The names it uses as tables are `tables`: edges only when another cell defines
    them (a DataFrame the embedded DuckDB engine queries by its variable name).
    """
    writes = {result_variable} if result_variable and result_variable.isidentifier() else set()
    result = _result(set(placeholders(code)), writes)
    tables = frozenset(
        name for name in sql_table_names(code) if name.isidentifier() and not is_private(name) and name not in result.writes
    ) - result.reads - result.builtins_used
    return Analysis(reads=result.reads, writes=result.writes, builtins_used=result.builtins_used, tables=tables)


def analyze_markdown(code: str) -> Analysis:
    """A markdown cell reads the names of its `{name}` fields (kernel/markdown.py) and writes nothing."""
    from .markdown import placeholders as markdown_placeholders

    return _result(set(markdown_placeholders(code)), set())


def sql_segments(code: str) -> list:
    """Split SQL into ("sql", text) and ("param", field) pieces (the runner binds params);
    `field` is the placeholder without its braces (`slider.value`: `placeholder_root` is its
    name, the rest its steps, markdown.follow).

    Placeholders inside quoted strings, quoted identifiers and comments stay text;
    `{{` and `}}` are literal braces; `{name:spec}` is text (a DuckDB struct literal, not a
    field).  Same rules as `placeholders`.
    """
    from .markdown import FIELD

    out, buf, i, n = [], [], 0, len(code)

    def flush():
        if buf:
            out.append(("sql", "".join(buf)))
            buf.clear()

    while i < n:
        ch = code[i]
        if ch in "'\"":
            end = _end_of_quoted(code, i)
            buf.append(code[i:end])
            i = end
        elif code.startswith("--", i):
            end = code.find("\n", i)
            end = n if end < 0 else end
            buf.append(code[i:end])
            i = end
        elif code.startswith("/*", i):
            end = code.find("*/", i + 2)
            end = n if end < 0 else end + 2
            buf.append(code[i:end])
            i = end
        elif code.startswith("{{", i) or code.startswith("}}", i):
            buf.append(ch)
            i += 2
        elif ch == "{" and (field := FIELD.match(code, i)) and field.group(3) is None:
            flush()
            out.append(("param", code[i + 1 : field.end() - 1]))
            i = field.end()
        else:
            buf.append(ch)
            i += 1
    flush()
    return out


# sqlglot parses ~100 KB a second, on the worker's event loop: a longer query gets the
# keyword scan below instead (names after FROM / JOIN, minus WITH names).
SQLGLOT_MAX_CHARS = 20_000
_AFTER_FROM = re.compile(r"\b(?:FROM|JOIN)\s+([A-Za-z_][A-Za-z0-9_]*)\b(?!\s*[.(])", re.IGNORECASE)
_CTE_NAME = re.compile(r"(?:\bWITH(?:\s+RECURSIVE)?|,)\s*([A-Za-z_][A-Za-z0-9_]*)\s+AS\s*(?:NOT\s+)?(?:MATERIALIZED\s+)?\(", re.IGNORECASE)


def _table_names_by_keywords(text):
    text = re.sub(r"'(?:[^']|'')*'|--[^\n]*|/\*.*?\*/", " ", text, flags=re.DOTALL)
    ctes = {name.lower() for name in _CTE_NAME.findall(text)}
    names = []
    for name in _AFTER_FROM.findall(text):
        if name.lower() not in ctes and name not in names and name.upper() not in ("SELECT", "LATERAL", "ONLY"):
            names.append(name)
    return names


def sql_table_names(code: str) -> list[str]:
    """Unqualified names the query uses as tables (not CTEs), in order; [] if unparsable.

    Parsed with sqlglot's DuckDB dialect, placeholders standing in as NULL.
    """
    try:
        import sqlglot
        from sqlglot import exp
    except ImportError:  # pragma: no cover - sqlglot is a pinned dependency
        return []
    text = "".join(value if kind == "sql" else "NULL" for kind, value in sql_segments(code))
    if not text.strip():
        return []
    if len(text) > SQLGLOT_MAX_CHARS:
        return _table_names_by_keywords(text)
    try:
        statements = sqlglot.parse(text, read="duckdb")
    except Exception:  # an unparsable query has no table edges; the engine reports the error
        return []
    ctes, names = set(), []
    for statement in statements:
        if statement is None:
            continue
        ctes |= {cte.alias_or_name for cte in statement.find_all(exp.CTE)}
        for table in statement.find_all(exp.Table):
            if not table.db and table.name and table.name not in ctes and table.name not in names:
                names.append(table.name)
    return names


def placeholders(code: str) -> list[str]:
    """The names a SQL cell's placeholders read (`slider` of `{slider.value}`), in order of
    first appearance.

    Found by `sql_segments`, so the graph's edges and the runner's bound parameters
    follow the same rules (quoted text and comments skipped, `{{`/`}}` literal).
    """
    return list(dict.fromkeys(placeholder_root(value) for kind, value in sql_segments(code) if kind == "param"))


def placeholder_root(field):
    """The name a placeholder reads: `slider` of `slider.value`, `d` of `d["key"]`."""
    return _ROOT.match(field).group(0)


def _end_of_quoted(code, start):
    quote, i, n = code[start], start + 1, len(code)
    while i < n:
        if code[i] == quote:
            if i + 1 < n and code[i + 1] == quote:  # a doubled quote escapes itself
                i += 2
                continue
            return i + 1
        i += 1
    return n  # unterminated: the rest of the cell is inside the quotes
