"""A notebook written to run top to bottom, rewritten so that it runs the same way here.

Jupyter runs cells in order in one namespace, so a name may be bound by many cells
(`df = df.dropna()`, `x += 1`, `for i in ...` in every cell).  Here a name has one defining
cell (kernel/analysis.py, kernel/graph.py): two definitions block both.  So each later
definition of a name becomes a *version* of it, and every reference is pointed at the version
it would have seen in Jupyter:

* A version that a later cell reads (or that the next version starts from) is public:
  the first keeps the name, the next ones are `name_2`, `name_3`, ... .  Later cells read the
  latest version before them.
* A version no other cell reads (a loop variable, `e` of `except ... as e`, a scratch value
  printed in its own cell) becomes cell-private, `_name`: no edge, no conflict, no new name.
* A cell that reads the name before binding it reads the previous version: `df = df.dropna()`
  becomes `df_2 = df.dropna()`; where the binding is not a plain assignment (`x += 1`, a loop
  that accumulates, a binding inside `if`/`try`, `del x`, a `global` write in a function) the
  cell starts the new version from the previous one (`x_2 = x` just before that statement),
  which is exactly what Python's rebinding does to the object.
* An import repeated in a later cell (`import numpy as np` again) is commented out: the name
  already holds that module.
* Jupyter's `_` and `__` (the last two results shown) name the cells' results they meant.

References are found with `ast` and `symtable` (the compiler's scoping: a local of a function,
a comprehension's variable or a class attribute is never renamed) and edited in place, so the
cell keeps its comments and layout.  A cell the rewrite cannot edit with certainty (a syntax
error, a pattern it does not know) is left exactly as it was, and the report counts it.

Pure: no Django, no I/O, nothing of the file is run.  importing.py calls it for Jupyter and
Jupytext files (a marimo file is reactive already).
"""
import ast
import collections
import keyword
import re
from dataclasses import dataclass, field

from .constants import CELL_PYTHON, CELL_SQL
from .kernel.analysis import BUILTIN_NAMES, analyze_python, analyze_sql, is_private, placeholder_root, sql_segments
from .kernel.graph import DependencyGraph
from .kernel.references import LineIndex, Unsupported, references

# Names Jupyter binds to the results of earlier cells: `_` is the last result shown, `__` the one before.
PREVIOUS_RESULTS = {"_": 1, "__": 2}
PREVIOUS_RESULT_NAMES = re.compile(r"(?<![\w.])__?(?!\w)")
RESULT_NAME = "out_{number}"


@dataclass
class Rename:
    cell: int  # 1-based position of the cell in the file
    old: str
    new: str
    private: bool


@dataclass
class RewriteReport:
    renames: list = field(default_factory=list)  # Rename
    imports_dropped: list = field(default_factory=list)  # (cell, statement text)
    results_named: list = field(default_factory=list)  # (cell, Jupyter name, name here)
    changed_cells: int = 0
    unchanged_cells: list = field(default_factory=list)  # cells left as they were: (cell, why)
    blocked: dict = field(default_factory=dict)  # cell number -> why it would still be blocked

    def notes(self):
        notes = []
        if self.renames or self.imports_dropped or self.results_named:
            by_cell = {}
            renames_of = {}
            for rename in self.renames:
                renames_of.setdefault(rename.cell, []).append(rename)
            for cell, renames in sorted(renames_of.items()):
                by_cell[cell] = [f"{r.old} → {r.new}" for r in renames if not r.private]
                private = [f"{r.old} → {r.new}" for r in renames if r.private]
                if private:
                    by_cell[cell].append(", ".join(private) + " (used in this cell only)")
            for cell, statement in self.imports_dropped:
                by_cell.setdefault(cell, []).append(f"`{statement}` again: dropped, the name holds that module already")
            for cell, jupyter_name, name in self.results_named:
                by_cell.setdefault(cell, []).append(f"{jupyter_name} → {name}")
            listed = "; ".join(f"cell {cell}: {', '.join(items)}" for cell, items in sorted(by_cell.items()))
            notes.append(
                f"Rewritten to run top to bottom here, where each name has one defining cell: {listed}. "
                f"The cells after a rename read the new name ({self.changed_cells} cell(s) changed in all)."
            )
        for cell, why in self.unchanged_cells:
            notes.append(f"Cell {cell} was left as it was: {why}.")
        if self.blocked:
            listed = "; ".join(f"cell {cell}: {why}" for cell, why in sorted(self.blocked.items()))
            notes.append(f"{len(self.blocked)} cell(s) will be blocked until they are fixed: {listed}.")
        return notes


# --- the plan -------------------------------------------------------------------------------


@dataclass
class _Version:
    name: str
    cell: int  # index in the cells list
    import_key: tuple | None = None  # what an import bound the name to
    read: bool = False
    identifier: str = ""


@dataclass
class _CellPlan:
    """What one Python cell reads and binds, and how each binding starts."""

    tree: ast.Module
    refs: list
    reads: frozenset
    writes: frozenset
    starts_from_previous: dict  # name -> "direct" | "prologue" | "fresh"
    first_binding: dict  # name -> index of the top-level statement that first binds it
    dropped_imports: set = field(default_factory=set)  # names whose import repeats the one in force


def _import_key(plan, name, *, leading=False):
    """What the cell's top-level imports bind `name` to, when imports are its only bindings
    and all bind the same thing; else None.  With `leading`, only imports among the cell's
    first statements count (nothing before them can fail and leave the name unbound)."""
    keys = set()
    first_other = next((i for i, s in enumerate(plan.tree.body) if not isinstance(s, (ast.Import, ast.ImportFrom))), len(plan.tree.body))
    for ref in plan.refs:
        if ref.name != name or ref.kind == "load":
            continue
        statement = plan.tree.body[ref.statement]
        if ref.kind != "import" or not ref.immediate or not isinstance(statement, (ast.Import, ast.ImportFrom)) or ref.node not in statement.names:
            return None
        if leading and ref.statement > first_other:
            return None
        keys.add(_bound_value(ref.node, statement))
    return keys.pop() if len(keys) == 1 else None


def _plan_cell(code, analysis):
    if analysis.error is not None:
        raise Unsupported("it has a syntax error")
    tree, refs = references(code)
    first_binding, starts = {}, {}
    bindings = {}
    for ref in refs:
        if ref.kind != "load" and ref.name in analysis.writes:
            bindings.setdefault(ref.name, []).append(ref)
    # Names the cell reads anywhere (`x += 1` reads x too): a binding that may not happen then
    # leaves them the value they had before, which the new version must start from.
    augmented = {id(node.target) for node in ast.walk(tree) if isinstance(node, ast.AugAssign)}
    loaded = {ref.name for ref in refs if ref.kind == "load" or id(ref.node) in augmented}
    for name in analysis.writes:
        immediate = [ref for ref in bindings.get(name, []) if ref.immediate]
        if not immediate:
            starts[name] = "prologue" if name in loaded else "fresh"  # bound only by a function's `global`: maybe never
            first_binding[name] = 0
            continue
        first = immediate[0]
        statement = tree.body[first.statement]
        first_binding[name] = first.statement
        guaranteed = _binds_for_certain(statement, first)
        reads_previous = name in analysis.reads
        if first.kind == "except" and not reads_previous:
            starts[name] = "fresh"  # unbound again when the handler ends: nothing to start from
        elif first.kind == "del":
            starts[name] = "prologue"
        elif reads_previous and guaranteed and _plain_assignment(statement, name):
            starts[name] = "direct"
        elif reads_previous or (not guaranteed and name in loaded):
            starts[name] = "prologue"  # the cell may go on with the value it had before
        else:
            starts[name] = "fresh"
    return _CellPlan(tree, refs, analysis.reads, analysis.writes, starts, first_binding)


def _binds_for_certain(statement, ref):
    """Whether the top-level statement binds the name whenever it runs (not only on some path)."""
    if any(isinstance(node, ast.NamedExpr) for node in ast.walk(statement)):
        return False  # `:=` may sit in a branch of the expression
    if isinstance(statement, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return True
    if isinstance(statement, (ast.For, ast.AsyncFor)):
        return _names_in(statement.target, ref.name)
    if isinstance(statement, (ast.With, ast.AsyncWith)):
        return any(item.optional_vars is not None and _names_in(item.optional_vars, ref.name) for item in statement.items)
    return False


def _names_in(node, name):
    return any(isinstance(child, ast.Name) and child.id == name for child in ast.walk(node))


def _plain_assignment(statement, name):
    """`name = <expression reading name>` (or annotated): the value reads the previous version,
    the target binds the new one, and nothing in the targets reads the name."""
    if isinstance(statement, ast.Assign):
        targets = statement.targets
    elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
        targets = [statement.target]
    else:
        return False
    return not any(
        isinstance(node, ast.Name) and node.id == name and isinstance(node.ctx, ast.Load) for target in targets for node in ast.walk(target)
    )


def _bound_value(alias, statement):
    """What an import binds its name to: repeated when a later import binds the same."""
    if isinstance(statement, ast.ImportFrom):
        return ("from", statement.level, statement.module, alias.name)
    if alias.asname:
        return ("module", alias.name)
    return ("module", alias.name.partition(".")[0])


# --- the rewrite ----------------------------------------------------------------------------


def rewrite_cells(cells):
    """The cells (objects with `type`, `code`, `result_variable`, changed in place) rewritten
    to run top to bottom here; returns the RewriteReport."""
    return _Rewrite(cells).run()


class _Rewrite:
    def __init__(self, cells):
        self.cells = cells
        self.report = RewriteReport()
        self.plans = {}  # cell index -> _CellPlan (Python cells that can be edited)
        self.pinned = set()  # cell indexes whose bindings keep their names (cells not edited)
        self.versions = {}  # name -> [_Version], in cell order
        self.bound = {}  # cell index -> {name: (previous version or None, new version)}
        self.read = {}  # cell index -> {name: version read (None: read before any definition)}
        self.analyses = {}  # cell index -> (reads, writes) of its code as it ends up
        self.taken = set(BUILTIN_NAMES) | set(keyword.kwlist) | set(keyword.softkwlist)
        self.shown = []  # indexes of the cells so far whose last expression Jupyter shows as a result
        self.results_read = {}  # cell index -> {"_" or "__": index of the cell whose result it is}
        self.result_names = {}  # index of a cell whose result is read -> the name it gets

    def run(self):
        self._plan()
        self._name_versions()
        for producer in sorted(self.result_names):
            self.result_names[producer] = self._public(RESULT_NAME.format(number=producer + 1))
        originals = [(cell.code, cell.result_variable) for cell in self.cells]
        for index, cell in enumerate(self.cells):
            if cell.type == CELL_PYTHON and index in self.plans:
                self._edit_python(index, cell)
            elif cell.type == CELL_SQL:
                self._edit_sql(index, cell)
        self.report.changed_cells = sum(1 for cell, before in zip(self.cells, originals) if (cell.code, cell.result_variable) != before)
        self.report.blocked = self._still_blocked()
        return self.report

    def _still_blocked(self):
        """Cell number (1-based) -> why it would be blocked here, from each cell's final analysis."""
        graph = DependencyGraph()
        for index, (reads, writes) in self.analyses.items():
            graph.add(str(index + 1), reads=reads, writes=writes, position=index)
        return {int(cell): why for cell, why in graph.blocked().items()}

    # --- what each cell reads and binds, in order ----------------------------------------

    def _plan(self):
        self.first_analyses = {index: analyze_python(cell.code) for index, cell in enumerate(self.cells) if cell.type == CELL_PYTHON}
        definitions = collections.Counter(name for analysis in self.first_analyses.values() for name in analysis.writes)
        definitions.update(cell.result_variable for cell in self.cells if cell.type == CELL_SQL and cell.result_variable)
        self.defined_twice = {name for name, count in definitions.items() if count > 1}
        # Jupyter's `_` / `__` anywhere: every cell may be the one whose result they name.
        self.results_used = any(PREVIOUS_RESULT_NAMES.search(cell.code) for cell in self.cells if cell.type == CELL_PYTHON)
        current = {}
        for index, cell in enumerate(self.cells):
            self.taken.update(re.findall(r"[A-Za-z_]\w*", cell.code))
            if cell.type == CELL_PYTHON:
                reads, writes, dropped = self._python_names(index, cell)
            elif cell.type == CELL_SQL:
                analysis = analyze_sql(cell.code, cell.result_variable)
                reads, writes, dropped = analysis.reads, analysis.writes, set()
            else:
                continue
            self.analyses[index] = (reads, writes)
            plan = self.plans.get(index)
            if plan is not None:
                self._previous_results(index, plan)
            self.read[index] = {}
            for name in reads - writes:
                self._read(index, name, current.get(name))
            self.bound[index] = {}
            for name in sorted(writes):
                previous = current.get(name)
                if name in dropped:
                    self._read(index, name, previous)
                    continue
                if previous is not None and (name in reads or (plan is not None and plan.starts_from_previous[name] == "prologue")):
                    previous.read = True
                version = _Version(name, index, import_key=_import_key(plan, name, leading=True) if plan is not None else None)
                self.versions.setdefault(name, []).append(version)
                self.bound[index][name] = (previous, version)
                current[name] = version

    def _previous_results(self, index, plan):
        """Jupyter's `_` / `__` read in this cell: the results of the cells shown before it."""
        bound = {ref.name for ref in plan.refs if ref.kind != "load"}
        for name, back in PREVIOUS_RESULTS.items():
            if name not in bound and len(self.shown) >= back and any(ref.name == name for ref in plan.refs):
                producer = self.shown[-back]
                self.results_read.setdefault(index, {})[name] = producer
                self.result_names[producer] = ""
        if _shows_a_result(plan.tree, self.cells[index].code):
            self.shown.append(index)

    def _public(self, name):
        candidate, number = name, 2
        while candidate in self.taken:
            candidate, number = f"{name}_{number}", number + 1
        self.taken.add(candidate)
        return candidate

    def _read(self, index, name, version):
        self.read[index][name] = version
        if version is not None:
            version.read = True

    def _python_names(self, index, cell):
        analysis = self.first_analyses[index]
        if not (analysis.reads | analysis.writes) & self.defined_twice and not self.results_used:
            return analysis.reads, analysis.writes, set()  # nothing here to rename: no need to find references
        try:
            plan = _plan_cell(cell.code, analysis)
        except (Unsupported, SyntaxError, ValueError) as exc:
            if analysis.error is None:
                self.pinned.add(index)
                self.report.unchanged_cells.append((index + 1, str(exc) if isinstance(exc, Unsupported) else "it could not be analysed"))
            return analysis.reads, analysis.writes, set()
        self.plans[index] = plan
        plan.dropped_imports = self._repeated_imports(plan)
        return plan.reads, plan.writes, plan.dropped_imports

    def _repeated_imports(self, plan):
        """Names this cell binds only by top-level imports of what the name holds already."""
        repeated = set()
        for name in plan.writes:
            version = self._latest(name)
            key = _import_key(plan, name)
            if version is not None and key is not None and version.import_key == key:
                repeated.add(name)
        return repeated

    def _latest(self, name):
        versions = self.versions.get(name)
        return versions[-1] if versions else None

    # --- names for the versions ----------------------------------------------------------

    def _name_versions(self):
        for index, reads in self.read.items():
            for name, version in reads.items():
                if version is None and name in self.versions:
                    self.versions[name][0].read = True  # read before any definition: the first one
        for name, versions in self.versions.items():
            if len(versions) == 1:
                versions[0].identifier = name
                continue
            for version in versions:
                if version.cell in self.pinned:
                    version.identifier = name
            used = {v.identifier for v in versions if v.identifier}
            number = 1
            for version in versions:
                if version.identifier:
                    continue
                if not version.read and not is_private(name):
                    version.identifier = self._private(name, version.cell)
                    continue
                while True:
                    candidate = name if number == 1 else f"{name}_{number}"
                    number += 1
                    if candidate not in used and (candidate == name or candidate not in self.taken):
                        break
                version.identifier = candidate
                used.add(candidate)
                self.taken.add(candidate)

    def _private(self, name, index):
        """`_name`, or `_name_2`... when the cell uses that already."""
        used = set(re.findall(r"[A-Za-z_]\w*", self.cells[index].code))
        candidate, number = "_" + name, 2
        while candidate in used:
            candidate, number = f"_{name}_{number}", number + 1
        return candidate

    def _identifier_read(self, index, name):
        version = self.read[index].get(name)
        if version is None:
            versions = self.versions.get(name)
            return versions[0].identifier if versions else name
        return version.identifier

    # --- editing -------------------------------------------------------------------------

    def _edit_python(self, index, cell):
        try:
            self._edit_python_cell(index, cell)
        except Unsupported as exc:
            self.report.unchanged_cells.append((index + 1, str(exc)))

    def _edit_python_cell(self, index, cell):
        plan = self.plans[index]
        bound = self.bound.get(index, {})
        lines = LineIndex(cell.code)
        edits = []  # (start offset, end offset, text)
        offsets = _line_offsets(cell.code)

        def at(line, column):
            return offsets[line - 1] + column

        value_ids = {}
        for name, (previous, version) in bound.items():
            if plan.starts_from_previous[name] == "direct":
                statement = plan.tree.body[plan.first_binding[name]]
                value_ids[name] = {id(node) for node in ast.walk(statement.value)}
        import_changes = {}  # id(statement) -> (statement, {alias: new bound name or None to drop})
        results = self.results_read.get(index, {})
        for ref in plan.refs:
            name = ref.name
            if name in results:
                edits.append((at(ref.line, ref.start), at(ref.line, ref.end), self.result_names[results[name]]))
                continue
            if name in bound:
                previous, version = bound[name]
                start = plan.first_binding[name]
                form = plan.starts_from_previous[name]
                reads_previous = (
                    ref.kind == "load" and ref.immediate and previous is not None
                    and (ref.statement < start or (ref.statement == start and form == "direct" and id(ref.node) in value_ids.get(name, ())))
                )
                target = previous.identifier if reads_previous else version.identifier
            elif name in plan.dropped_imports or name in self.read[index]:
                target = self._identifier_read(index, name)
            else:
                continue
            if ref.kind == "import":
                statement = _statement_of(plan.tree, ref)
                aliases = import_changes.setdefault(id(statement), (statement, {}))[1]
                aliases[id(ref.node)] = None if name in plan.dropped_imports and name not in bound else target
            elif target != name:
                edits.append((at(ref.line, ref.start), at(ref.line, ref.end), target))
        for statement, aliases in import_changes.values():
            text = self._import_text(statement, aliases, lines)
            if text is not None:
                start = at(statement.lineno, lines.column(statement.lineno, statement.col_offset))
                end = at(statement.end_lineno, lines.column(statement.end_lineno, statement.end_col_offset))
                edits.append((start, end, text))
        for name, (previous, version) in bound.items():
            if previous is not None and plan.starts_from_previous[name] == "prologue" and previous.identifier != version.identifier:
                statement = plan.tree.body[plan.first_binding[name]]
                first = min([statement.lineno, *(d.lineno for d in getattr(statement, "decorator_list", []))])
                column = lines.column(statement.lineno, statement.col_offset) if first == statement.lineno else 0
                separator = "\n" if column == 0 else "; "
                edits.append((at(first, column), at(first, column), f"{version.identifier} = {previous.identifier}{separator}"))
        result_name = self.result_names.get(index)
        if result_name:
            last = plan.tree.body[-1].value
            edits.append((at(last.lineno, lines.column(last.lineno, last.col_offset)),) * 2 + (f"({result_name} := ",))
            edits.append((at(last.end_lineno, lines.column(last.end_lineno, last.end_col_offset)),) * 2 + (")",))
        if not edits:
            return
        code = cell.code
        for start, end, text in sorted(edits, key=lambda edit: (edit[0], edit[1]), reverse=True):
            code = code[:start] + text + code[end:]
        expected = {version.identifier for previous, version in bound.values() if not is_private(version.identifier)}
        if result_name:
            expected.add(result_name)
        analysis = analyze_python(code)
        if analysis.error is not None or analysis.writes != expected:
            self.report.unchanged_cells.append((index + 1, "its rewrite could not be checked"))
            return
        cell.code = code
        self.analyses[index] = (analysis.reads, analysis.writes)
        for name, (previous, version) in sorted(bound.items()):
            if version.identifier != name:
                self.report.renames.append(Rename(index + 1, name, version.identifier, is_private(version.identifier)))
        for statement, aliases in import_changes.values():
            if all(target is None for target in aliases.values()):
                self.report.imports_dropped.append((index + 1, ast.unparse(statement)))
        for jupyter_name, producer in sorted(results.items()):
            self.report.results_named.append((index + 1, jupyter_name, self.result_names[producer]))

    def _import_text(self, statement, aliases, lines):
        """The import statement with its aliases renamed or dropped; None when unchanged."""
        kept, assigned, changed = [], [], False
        for alias in statement.names:
            if id(alias) not in aliases:
                kept.append(alias)
                continue
            target = aliases[id(alias)]
            bound = alias.asname or alias.name.partition(".")[0]
            if target is None:
                changed = True
                if isinstance(statement, ast.Import) and "." in alias.name and not alias.asname:
                    # `import a.b` again binds `a` to what it holds; the submodule still loads.
                    kept.append(ast.alias(alias.name, "_" + alias.name.replace(".", "_")))
                continue
            if target == bound:
                kept.append(alias)
                continue
            changed = True
            if isinstance(statement, ast.Import) and "." in alias.name and not alias.asname:
                # `import a.b` binds `a`: the same under another name.
                assigned.append(f"{target} = __import__({alias.name!r})")
                continue
            kept.append(ast.alias(alias.name, target))
        if not changed:
            return None
        if assigned:
            new = [ast.unparse(ast.Import(names=kept))] if kept else []
            return "; ".join(new + assigned)
        if not kept:
            rest = lines.lines[statement.end_lineno - 1][lines.column(statement.end_lineno, statement.end_col_offset):]
            if statement.col_offset == 0 and (not rest.strip() or rest.strip().startswith("#")):
                return "\n".join(f"# {line}" for line in ast.get_source_segment("\n".join(lines.lines), statement).split("\n")) + "  (imported by an earlier cell)"
            return "pass  # " + ast.unparse(statement) + ": imported by an earlier cell"
        new = ast.Import(names=kept) if isinstance(statement, ast.Import) else ast.ImportFrom(module=statement.module, names=kept, level=statement.level)
        return ast.unparse(new)

    def _edit_sql(self, index, cell):
        bound = self.bound.get(index, {})
        if cell.result_variable in bound:
            cell.result_variable = bound[cell.result_variable][1].identifier
        renamed = {name: self._identifier_read(index, name) for name in self.read.get(index, {})}
        renamed = {old: new for old, new in renamed.items() if old != new}
        if renamed:
            cell.code = "".join(value if kind == "sql" else "{" + _renamed_field(value, renamed) + "}" for kind, value in sql_segments(cell.code))
        if renamed or bound:
            analysis = analyze_sql(cell.code, cell.result_variable)
            self.analyses[index] = (analysis.reads, analysis.writes)


def _renamed_field(field, renamed):
    """A placeholder (`df`, `slider.value`, `d["key"]`) with its root name renamed."""
    root = placeholder_root(field)
    return renamed.get(root, root) + field[len(root):]


# Calls whose value is None, so Jupyter shows no result for them (a heuristic: a call of any
# other name is taken to show one).
_RETURN_NONE = {"print", "display", "show", "info", "savefig", "append", "extend", "update", "sort", "plot_show"}


def _shows_a_result(tree, code):
    """Whether Jupyter would show the cell's last expression as a result (`Out[n]`)."""
    if not tree.body or not isinstance(tree.body[-1], ast.Expr):
        return False
    node = tree.body[-1]
    line = code.split("\n")[node.end_lineno - 1]
    if line.encode("utf-8")[node.end_col_offset:].decode("utf-8", errors="replace").lstrip().startswith(";"):
        return False
    value = node.value
    if isinstance(value, ast.Constant) and value.value is None:
        return False
    if isinstance(value, ast.Call):
        function = value.func
        called = function.id if isinstance(function, ast.Name) else function.attr if isinstance(function, ast.Attribute) else ""
        return called not in _RETURN_NONE
    return True


def _statement_of(tree, ref):
    for node in ast.walk(tree.body[ref.statement]):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and ref.node in node.names:
            return node
    raise Unsupported("an import outside its statement")  # pragma: no cover


def _line_offsets(code):
    offsets, total = [], 0
    for line in code.split("\n"):
        offsets.append(total)
        total += len(line) + 1
    return offsets
