"""A notebook's named inputs, and a run's parameters checked against them (docs/api.md#runs).

A named input is a widget a Python cell assigns to a variable at its top level,
`threshold = ui.slider(0, 100, value=10)`: its name is the variable's. Its definition (kind,
props) is the one the cell's last run showed (its UI output), so a cell must have run once for
its inputs to be parameters, as for `set_input`. Values are checked by `ui.check`, the check
`set_input` makes. A cell whose widgets cannot all be matched to such assignments (a widget made
in a loop, in a function, or not assigned) names none of them.

Pure: no Django, no I/O; the API checks parameters with it before a run is recorded, and the
copy run resolves them again against the code it runs (kernel/copy_runs.py).
"""
import ast
from dataclasses import dataclass

from ..constants import CELL_PYTHON
from . import ui


class InvalidParameters(ValueError):
    """Parameters that do not fit the notebook's named inputs; the message says which and why."""


@dataclass(frozen=True)
class NamedInput:
    name: str
    cell_id: str
    widget_id: str
    kind: str
    props: dict
    label: str
    value: object  # the value the notebook holds now (the cell's persisted one, else its default)


WIDGET_MAKERS = {"slider", "number", "text", "dropdown", "checkbox", "date", "table"}


def _maker(call):
    """The widget kind a call makes (`ui.slider(...)`, `ui.Slider(...)`), or None."""
    func = call.func if isinstance(call, ast.Call) else None
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "ui":
        kind = func.attr.lower()
        return kind if kind in WIDGET_MAKERS else None
    return None


def assigned_widgets(code):
    """[(variable, kind)] of a cell's top-level `name = ui.<kind>(...)`, in order, or [] when the
    cell makes any widget otherwise (its widgets' numbering could not be matched to names)."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return []
    assigned = []
    for statement in tree.body:
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1 and isinstance(statement.targets[0], ast.Name) and _maker(statement.value):
            assigned.append((statement.targets[0].id, _maker(statement.value)))
    made = sum(1 for node in ast.walk(tree) if _maker(node))
    return assigned if made == len(assigned) else []


def _field(cell, name, default=None):
    return cell.get(name, default) if isinstance(cell, dict) else getattr(cell, name, default)


def named_inputs(cells):
    """{name: NamedInput} of `cells` (rows or objects with id, type, code, outputs, inputs); a name
    two cells assign is nobody's (the graph blocks both)."""
    found, taken_twice = {}, set()
    for cell in cells:
        if (_field(cell, "type") or CELL_PYTHON) != CELL_PYTHON:
            continue
        cell_id = str(_field(cell, "id"))
        definitions = {}
        for output in _field(cell, "outputs") or ():
            data = output.get("data") if isinstance(output, dict) else None
            if output.get("mimeType") == ui.UI_MIME and isinstance(data, dict):
                definitions[data.get("id")] = data
        persisted = _field(cell, "inputs") or {}
        for index, (name, kind) in enumerate(assigned_widgets(_field(cell, "code") or "")):
            widget_id = f"{cell_id}:{index}"
            definition = definitions.get(widget_id)
            if definition is None or definition.get("kind") != kind:
                continue
            if name in found:
                taken_twice.add(name)
                continue
            value = persisted.get(widget_id, definition.get("value"))
            found[name] = NamedInput(name, cell_id, widget_id, kind, definition.get("props") or {}, definition.get("label") or "", value)
    for name in taken_twice:
        del found[name]
    return found


def resolve(inputs, parameters):
    """{cell id: {widget id: value}} setting `parameters` ({name: value}) on `inputs` (named_inputs'
    answer): each value checked as set_input checks it. InvalidParameters names the first problem."""
    if not isinstance(parameters, dict):
        raise InvalidParameters("parameters must be an object of input names and values")
    overrides = {}
    for name, value in parameters.items():
        named = inputs.get(name)
        if named is None:
            known = ", ".join(sorted(inputs)) or "none (assign a widget to a variable: threshold = ui.slider(0, 100), and run its cell)"
            raise InvalidParameters(f"{name!r} is not a named input of this notebook; its named inputs: {known}")
        try:
            checked = ui.check(named.kind, named.props, value)
        except ui.InvalidValue as exc:
            raise InvalidParameters(f"{name}: that value does not fit the {named.kind}: {exc}") from None
        overrides.setdefault(named.cell_id, {})[named.widget_id] = checked
    return overrides
