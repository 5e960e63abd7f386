"""Interactive inputs for notebooks: `from reactive_notebook import ui`, then `ui.slider(0, 100, value=10)`.

A widget is a value object in the notebook's process with a stable id (its cell's id and its
place among the widgets that cell makes).  Its output is a declarative JSON bundle
(`UI_MIME`) the page draws itself, so an input never needs script in an output frame.  Moving
it sends `set_input`; the web side checks the value with `check()` against the definition the
page was shown, persists it, and the kernel sets it here and re-runs the cells that read the
widget, never the cell that defines it.  A re-run of that cell keeps the persisted value when it
still fits the new definition.

Pure: `check()` is shared by the web side (operations.set_input) and this process.
"""
import datetime
import math

UI_MIME = "application/vnd.notebook.ui+json"
TABLE_ROWS_SHOWN = 200
TEXT_MAX = 10_000
TABLE_TEXT_SHOWN = 200_000  # characters of a table widget's rows sent to the page


class InvalidValue(ValueError):
    """A value that does not fit the widget's definition; the message says why."""


def check(kind, props, value):
    """`value` if it fits a widget of `kind` with `props`, else InvalidValue."""
    checker = CHECKS.get(kind)
    if checker is None:
        raise InvalidValue(f"unknown input kind {kind!r}")
    return checker(props, value)


def _number(props, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidValue("the value must be a number")
    start, stop = props.get("start"), props.get("stop")
    if start is not None and value < start or stop is not None and value > stop:
        raise InvalidValue(f"the value must be between {start} and {stop}")
    step = props.get("step")
    if step and start is not None:
        steps = (value - start) / step
        if abs(steps - round(steps)) > 1e-9 * max(1.0, abs(steps)):
            raise InvalidValue(f"the value must be {start} plus a whole number of steps of {step}")
    return value


def _text(props, value):
    if not isinstance(value, str):
        raise InvalidValue("the value must be text")
    if len(value) > props.get("maxLength", TEXT_MAX):
        raise InvalidValue(f"the text is longer than {props.get('maxLength', TEXT_MAX)} characters")
    if "\x00" in value:
        raise InvalidValue("the text must not contain NUL characters")
    return value


def _dropdown(props, value):
    if value not in props.get("options", []):
        raise InvalidValue("the value must be one of the options")
    return value


def _checkbox(props, value):
    if not isinstance(value, bool):
        raise InvalidValue("the value must be true or false")
    return value


def _date(props, value):
    try:
        day = datetime.date.fromisoformat(value) if isinstance(value, str) and len(value) == 10 else None
    except ValueError:
        day = None
    if day is None:
        raise InvalidValue("the value must be a date, YYYY-MM-DD")
    if props.get("start") and value < props["start"] or props.get("stop") and value > props["stop"]:
        raise InvalidValue(f"the date must be between {props.get('start')} and {props.get('stop')}")
    return value


def _selection(props, value):
    if not isinstance(value, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in value):
        raise InvalidValue("the value must be a list of row numbers")
    if any(i < 0 or i >= props.get("total", 0) for i in value) or len(set(value)) != len(value):
        raise InvalidValue("the selection must name rows of the table, each once")
    if props.get("selection") == "single" and len(value) > 1:
        raise InvalidValue("this table selects one row at most")
    return sorted(value)


CHECKS = {"slider": _number, "number": _number, "text": _text, "dropdown": _dropdown, "checkbox": _checkbox, "date": _date, "table": _selection}


# --- the widgets, in the notebook's process ------------------------------------------------

_run = {"cell": None, "count": 0, "saved": {}, "made": []}
registry = {}  # widget id -> widget, for set_input


def begin_run(cell_id, saved):
    """Called by the kernel before a cell runs: its widgets get ids `<cell>:<n>`, and the
    values persisted for them (when they still fit)."""
    for widget_id in [w for w in registry if w.startswith(f"{cell_id}:")]:
        del registry[widget_id]
    _run.update(cell=cell_id, count=0, saved=dict(saved or {}), made=[])


def end_run():
    made = _run["made"]
    _run.update(cell=None, count=0, saved={}, made=[])
    return made


class Widget:
    kind = ""

    def __init__(self, value, label="", **props):
        self.label = str(label or "")
        self.props = {k: v for k, v in props.items() if v is not None}
        cell = _run["cell"] or "detached"
        self.id = f"{cell}:{_run['count']}"
        _run["count"] += 1
        self._value = check(self.kind, self.props, value)
        saved = _run["saved"].get(self.id)
        if saved is not None:
            try:
                self._value = check(self.kind, self.props, saved)
            except InvalidValue:
                pass  # the definition changed: the new default wins
        registry[self.id] = self
        _run["made"].append(self)

    @property
    def value(self):
        return self._value

    def set(self, value):
        self._value = check(self.kind, self.props, value)

    def definition(self):
        return {"id": self.id, "kind": self.kind, "label": self.label, "props": self.props, "value": self._value}

    def __repr__(self):
        return f"{type(self).__name__}({self.label + ': ' if self.label else ''}{self._value!r})"


class Slider(Widget):
    kind = "slider"

    def __init__(self, start, stop, step=1, value=None, label=""):
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (start, stop, step)) or step <= 0 or stop < start:
            raise ValueError("ui.slider(start, stop, step) needs numbers with start <= stop and step > 0")
        super().__init__(start if value is None else value, label, start=start, stop=stop, step=step)


class Number(Widget):
    kind = "number"

    def __init__(self, value=0, start=None, stop=None, step=None, label=""):
        super().__init__(value, label, start=start, stop=stop, step=step)


class Text(Widget):
    kind = "text"

    def __init__(self, value="", label="", max_length=TEXT_MAX):
        super().__init__(value, label, maxLength=max_length)


class Dropdown(Widget):
    kind = "dropdown"

    def __init__(self, options, value=None, label=""):
        options = [str(o) for o in options]
        if not options:
            raise ValueError("ui.dropdown needs at least one option")
        super().__init__(options[0] if value is None else str(value), label, options=options)


class Checkbox(Widget):
    kind = "checkbox"

    def __init__(self, value=False, label=""):
        super().__init__(bool(value), label)


class Date(Widget):
    kind = "date"

    def __init__(self, value=None, start=None, stop=None, label=""):
        value = (value or datetime.date.today()).isoformat() if not isinstance(value, str) else value
        start = start.isoformat() if isinstance(start, datetime.date) else start
        stop = stop.isoformat() if isinstance(stop, datetime.date) else stop
        super().__init__(value, label, start=start, stop=stop)

    @property
    def date(self):
        return datetime.date.fromisoformat(self._value)


class Table(Widget):
    """A DataFrame to pick rows from: `.value` is the selected row numbers, `.selected` the rows."""

    kind = "table"

    def __init__(self, frame, selection="multi", value=None, label=""):
        if selection not in ("single", "multi"):
            raise ValueError("selection is 'single' or 'multi'")
        self.frame = frame
        rows, size = [], 0
        for row in frame.head(TABLE_ROWS_SHOWN).itertuples(index=False, name=None):
            rows.append([_cell_text(v) for v in row])
            size += sum(len(v) for v in rows[-1])
            if size > TABLE_TEXT_SHOWN:  # the definition travels in events: keep it small
                break
        super().__init__(list(value or []), label, selection=selection, columns=[str(c) for c in frame.columns], rows=rows, total=len(frame))

    @property
    def selected(self):
        return self.frame.iloc[self._value]


def _cell_text(value):
    text = str(value)
    return text if len(text) <= 100 else text[:99] + "…"


slider, number, text, dropdown, checkbox, date, table = Slider, Number, Text, Dropdown, Checkbox, Date, Table
