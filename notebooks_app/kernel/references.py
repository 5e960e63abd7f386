"""Where a cell's code names each global: every load, binding, `def`, import alias, `except ... as`
name and `global` declaration of a module-level name, with its line and columns.

Scoping is the compiler's own (`symtable`): a function's local, a parameter, a comprehension's
variable or a class attribute of the same name is not the global and is never reported.  Used
to rename a global in place (rewrite.py) without touching anything else in the cell; a
reference that cannot be placed with certainty raises Unsupported rather than guess.
Pure: no I/O, nothing of the project, and nothing here runs the code.
"""
import ast
import re
import symtable
import warnings
from dataclasses import dataclass


class Unsupported(Exception):
    """A cell whose references cannot all be found with certainty: it is left as it was."""


@dataclass(frozen=True)
class Ref:
    """One place where a cell's code names a global."""

    name: str
    line: int  # 1-based
    start: int  # character offsets in that line
    end: int
    kind: str  # "load", "store", "del", "def", "import", "except", "global"
    immediate: bool  # evaluated when the cell runs (not inside a function body run later)
    statement: int  # index of the top-level statement it is in
    node: ast.AST | None = None  # the Name node, or the alias of an import


@dataclass


class LineIndex:
    """ast positions (UTF-8 byte columns) as character columns."""

    def __init__(self, code):
        self.lines = code.split("\n")
        self._encoded = {}

    def column(self, line, byte_column):
        text = self.lines[line - 1]
        if text.isascii():
            return byte_column
        encoded = self._encoded.get(line)
        if encoded is None:
            encoded = self._encoded[line] = text.encode("utf-8")
        return len(encoded[:byte_column].decode("utf-8", errors="replace"))

    def span(self, node):
        if node.lineno != node.end_lineno:
            raise Unsupported("a name spread over lines")
        return node.lineno, self.column(node.lineno, node.col_offset), self.column(node.end_lineno, node.end_col_offset)

    def find(self, pattern, line, start, group=1):
        """The span of `group` of `pattern` searched in `line` from character `start`."""
        match = re.compile(pattern).search(self.lines[line - 1], start)
        if match is None:
            raise Unsupported("a binding whose name could not be located")
        return line, match.start(group), match.end(group)


_COMPREHENSION_NAMES = {ast.ListComp: "listcomp", ast.SetComp: "setcomp", ast.DictComp: "dictcomp", ast.GeneratorExp: "genexpr"}


def references(code):
    """Every reference to a global name in `code`, in source order; Unsupported when one
    cannot be placed with certainty (SyntaxError when the code does not compile)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tree = ast.parse(code)
        table = symtable.symtable(code, "<cell>", "exec")
    finder = _Finder(LineIndex(code))
    try:
        for index, statement in enumerate(tree.body):
            finder.statement = index
            finder.visit(statement, table, deferred=False)
    except RecursionError:
        raise Unsupported("nested too deeply to rewrite") from None
    return tree, finder.refs


class _Finder:
    def __init__(self, lines):
        self.lines = lines
        self.refs = []
        self.statement = 0
        self._children = {}  # id(table) -> {(name, lineno): [child tables in order]}

    def _child(self, table, name, lineno):
        children = self._children.get(id(table))
        if children is None:
            children = self._children[id(table)] = {}
            for child in table.get_children():
                children.setdefault((child.get_name(), child.get_lineno()), []).append(child)
        found = children.get((name, lineno))
        if not found:
            raise Unsupported("a scope the compiler did not report")
        return found.pop(0)

    @staticmethod
    def _is_global(table, name):
        if table.get_type() == "module":
            return True
        try:
            return table.lookup(name).is_global()
        except KeyError:
            return False

    def add(self, table, name, span, kind, deferred, node=None):
        if self._is_global(table, name):
            line, start, end = span
            self.refs.append(Ref(name, line, start, end, kind, not deferred, self.statement, node))

    def visit_all(self, nodes, table, deferred):
        for node in nodes:
            if node is not None:
                self.visit(node, table, deferred)

    def visit(self, node, table, deferred):
        if isinstance(node, ast.Name):
            kind = {ast.Load: "load", ast.Store: "store", ast.Del: "del"}[type(node.ctx)]
            self.add(table, node.id, self.lines.span(node), kind, deferred, node=node)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            self._function(node, table, deferred)
        elif isinstance(node, ast.Lambda):
            args = node.args
            self.visit_all([*args.defaults, *args.kw_defaults], table, deferred)
            inner = self._child(table, "lambda", node.lineno)
            self._arguments(args, inner, deferred=True, annotations=False)
            self.visit(node.body, inner, deferred=True)
        elif isinstance(node, ast.ClassDef):
            self.visit_all([*node.bases, *(k.value for k in node.keywords), *node.decorator_list], table, deferred)
            inner = self._child(table, node.name, node.lineno)
            self.visit_all(node.body, inner, deferred)
            column = self.lines.column(node.lineno, node.col_offset)
            self.add(table, node.name, self.lines.find(r"class\s+(\w+)", node.lineno, column), "def", deferred)
        elif type(node) in _COMPREHENSION_NAMES:
            generators = node.generators
            self.visit(generators[0].iter, table, deferred)
            inner = self._child(table, _COMPREHENSION_NAMES[type(node)], node.lineno)
            for index, generator in enumerate(generators):
                self.visit(generator.target, inner, deferred)
                if index:
                    self.visit(generator.iter, inner, deferred)
                self.visit_all(generator.ifs, inner, deferred)
            results = [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
            self.visit_all(results, inner, deferred)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name == "*" or (isinstance(node, ast.ImportFrom) and node.module == "__future__"):
                    continue
                bound = alias.asname or alias.name.partition(".")[0]
                line, start, end = self.lines.span(alias)
                self.add(table, bound, (line, start, end), "import", deferred, node=alias)
        elif isinstance(node, ast.ExceptHandler):
            self.visit_all([node.type], table, deferred)
            if node.name:
                column = self.lines.column(node.lineno, node.col_offset)
                line = node.type.end_lineno if node.type is not None else node.lineno
                start = self.lines.column(line, node.type.end_col_offset) if node.type is not None else column
                self.add(table, node.name, self.lines.find(r"\bas\s+(\w+)", line, start), "except", deferred)
            self.visit_all(node.body, table, deferred)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            if isinstance(node, ast.Global):
                column = self.lines.column(node.lineno, node.col_offset)
                for name in node.names:
                    self.add(table, name, self.lines.find(rf"\b({re.escape(name)})\b", node.lineno, column + len("global")), "global", deferred)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)):
            if node.name:
                line, start, end = self.lines.span(node)
                self.add(table, node.name, (line, end - len(node.name), end), "store", deferred)
            self.visit_all([getattr(node, "pattern", None)], table, deferred)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            raise Unsupported("a `**rest` pattern")
        else:
            for child in ast.iter_child_nodes(node):
                self.visit(child, table, deferred)

    def _function(self, node, table, deferred):
        args = node.args
        # Evaluated where the function is defined (the compiler's order), then bound there.
        self.visit_all([*args.defaults, *args.kw_defaults], table, deferred)
        self._arguments(args, table, deferred, annotations=True)
        self.visit_all([node.returns, *node.decorator_list], table, deferred)
        inner = self._child(table, node.name, node.lineno)
        self.visit_all(node.body, inner, deferred=True)
        column = self.lines.column(node.lineno, node.col_offset)
        self.add(table, node.name, self.lines.find(r"def\s+(\w+)", node.lineno, column), "def", deferred)

    def _arguments(self, args, table, deferred, *, annotations):
        if annotations:
            every = [*args.posonlyargs, *args.args, args.vararg, *args.kwonlyargs, args.kwarg]
            self.visit_all([a.annotation for a in every if a is not None], table, deferred)
