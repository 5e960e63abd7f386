"""The import's rewrite of a top-to-bottom notebook (notebooks_app/rewrite.py, magics.py), pure.

The oracle: the original cells run top to bottom in one namespace (what Jupyter does) print
exactly what the rewritten cells print when run in the order this server's graph gives them,
and the rewritten notebook has no blocked cell.  The real kernel and Jupyter itself are
compared on whole notebooks in test_jupyter_corpus.py."""
import contextlib
import io
from dataclasses import dataclass

import pytest

from notebooks_app import magics, rewrite
from notebooks_app.kernel.analysis import analyze_python
from notebooks_app.kernel.graph import DependencyGraph


@dataclass
class Cell:
    type: str
    code: str
    result_variable: str = ""


def run_in_order(codes):
    """stdout of each cell, run in the given order in one namespace; an exception's name ends it."""
    namespace, printed = {}, []
    for code in codes:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            try:
                exec(compile(code, "<cell>", "exec"), namespace)  # noqa: S102 - the test's own code
            except Exception as exc:  # noqa: BLE001
                print(type(exc).__name__)
        printed.append(out.getvalue())
    return printed


def reactive_order(cells):
    graph = DependencyGraph()
    for index, cell in enumerate(cells):
        analysis = analyze_python(cell.code)
        graph.add(str(index), reads=analysis.reads, writes=analysis.writes, position=index)
    return graph, [int(cell) for cell in graph.topological(graph.cell_ids())]


def rewritten(*codes):
    cells = [Cell("python", code) for code in codes]
    report = rewrite.rewrite_cells(cells)
    return cells, report


CASES = {
    "rebinding in place": ["import math\nvalues = [4, None, 9]", "values = [v for v in values if v is not None]\nprint(values)", "values = [math.sqrt(v) for v in values]", "print(values)"],
    "augmented assignment across cells": ["x = 1", "x += 1\nprint(x)", "x *= 10", "print(x)"],
    "a value redefined later": ["x = 1\nprint(x)", "y = x + 1", "x = 10\nprint(x)", "print(x, y)"],
    "accumulating in a loop": ["total = 0\nitems = []", "for v in range(5):\n    total += v\n    items.append(v)", "print(total, items)", "total = total / 2\nprint(total)"],
    "the same loop variable everywhere": ["for i in range(3):\n    print(i)", "for i in range(2):\n    print(i * 10)", "print(i)"],
    "a function redefined": ["def f(a):\n    return a + 1", "print(f(1))", "def f(a):\n    return a * 100", "print(f(1))"],
    "a class redefined": ["class P:\n    n = 1", "print(P.n)", "class P:\n    n = 2", "print(P.n)"],
    "imports repeated": ["import math\nfrom math import sqrt", "import math\nprint(math.pi > 3)", "from math import sqrt\nprint(sqrt(16))", "import os.path\nimport os", "import os.path\nprint(os.path.join('a', 'b'))"],
    "an import after a statement that fails is not one to rely on": ["import math\nvalue = 1 / 0\nimport json", "import json\nprint(json.dumps([math.pi > 3]))"],
    "except and with names": ["try:\n    1 / 0\nexcept ZeroDivisionError as e:\n    print('caught', e)", "try:\n    {}['k']\nexcept KeyError as e:\n    print('caught', repr(e))", "import io\nwith io.StringIO('a') as f:\n    print(f.read())", "import io\nwith io.StringIO('b') as f:\n    print(f.read())"],
    "binding in a branch keeps the old value": ["level = 'low'", "if 1 > 2:\n    level = 'high'\nprint(level)", "print(level)"],
    "del then redefined": ["x = 5", "del x", "x = 7", "print(x)"],
    "a binding that failed leaves nothing to start from": ["try:\n    x = 1 / 0\nexcept ZeroDivisionError:\n    pass", "try:\n    x = 2 / 0\nexcept ZeroDivisionError as err:\n    print(err)"],
    "a global written by a function": ["counter = 0", "def bump():\n    global counter\n    counter += 1\nbump()\nbump()", "print(counter)"],
    "a function defined before a name is bound again keeps the value it was defined with": ["scale = 2", "def scaled(v):\n    return v * scale\nprint(scaled(3))", "scale = 5\nprint(scale)"],
    "a comprehension's variable is not the global": ["n = 3", "squares = [n * n for n in range(n)]\nprint(squares, n)", "n = n + 1\nprint(n)"],
    "cell-private by nature: a scratch name printed in its own cell": ["tmp = 1\nprint(tmp)", "tmp = 2\nprint(tmp)", "tmp = 3\nprint(tmp)"],
}


@pytest.mark.parametrize("codes", CASES.values(), ids=CASES.keys())
def test_rewritten_cells_print_what_the_original_printed_top_to_bottom(codes):
    expected = run_in_order(codes)
    cells, report = rewritten(*codes)
    graph, order = reactive_order(cells)
    assert graph.blocked() == {} and report.blocked == {}, [c.code for c in cells]
    printed = run_in_order([cells[index].code for index in order])
    assert [printed[order.index(index)] for index in range(len(cells))] == expected, [c.code for c in cells]


def test_a_later_definition_that_a_later_cell_reads_becomes_a_new_name():
    cells, report = rewritten("df = [3, 1, None]", "df = [v for v in df if v]", "print(sorted(df))")
    assert [c.code for c in cells] == ["df = [3, 1, None]", "df_2 = [v for v in df if v]", "print(sorted(df_2))"]
    assert [(r.cell, r.old, r.new, r.private) for r in report.renames] == [(2, "df", "df_2", False)]
    assert "cell 2: df → df_2" in report.notes()[0]


def test_augmented_assignment_starts_the_new_version_from_the_old_object():
    cells, _ = rewritten("items = [1]\nalias = items", "items += [2]", "print(items, alias)")
    assert cells[1].code == "items_2 = items\nitems_2 += [2]"
    assert run_in_order([c.code for c in cells])[2] == "[1, 2] [1, 2]\n"  # one list, as in Jupyter


def test_names_used_in_one_cell_only_become_private_and_comments_stay():
    cells, report = rewritten("for i in range(2):  # first\n    pass", "for i in range(3):  # second\n    print(i)")
    assert [c.code for c in cells] == ["for _i in range(2):  # first\n    pass", "for _i in range(3):  # second\n    print(_i)"]
    assert all(r.private for r in report.renames)


def test_locals_attributes_and_keywords_of_the_same_name_are_left_alone():
    cells, _ = rewritten("x = 1", "print(x)", "x = 2\ndef f(x):\n    return x\nclass C:\n    x = 3\nprint(f(x=x), C.x, dict(x=x))", "print(x)")
    assert cells[2].code == "x_2 = 2\ndef f(x):\n    return x\nclass C:\n    x = 3\nprint(f(x=x_2), C.x, dict(x=x_2))"


def test_previous_results_name_the_cells_they_came_from():
    cells, report = rewritten("6 * 7", "print('not a result')", "[1, 2]", "print(_, __)")
    assert [c.code for c in cells] == ["(out_1 := 6 * 7)", "print('not a result')", "(out_3 := [1, 2])", "print(out_3, out_1)"]
    assert run_in_order([c.code for c in cells])[3] == "[1, 2] 42\n"
    assert report.results_named == [(4, "_", "out_3"), (4, "__", "out_1")]


def test_a_cell_that_cannot_be_rewritten_is_left_as_it_was_and_reported():
    match = "match {'a': 1}:\n    case {**x}:\n        pass"
    cells, report = rewritten("x = 1", "print(x)", match, "print(x)")
    # The cell keeps its name; the other version takes a new one, so nothing is blocked.
    assert [c.code for c in cells] == ["x_2 = 1", "print(x_2)", match, "print(x)"]
    assert report.unchanged_cells == [(3, "a `**rest` pattern")] and report.blocked == {}


def test_sql_cells_read_and_write_versions_too():
    cells = [Cell("python", "limit = 1"), Cell("sql", "SELECT {limit}", "df"), Cell("python", "limit = 5"), Cell("sql", "SELECT {limit} AS n", "df"), Cell("python", "print(df, limit)")]
    rewrite.rewrite_cells(cells)
    assert [(c.code, c.result_variable) for c in cells[1:4]] == [("SELECT {limit}", "_df"), ("limit_2 = 5", ""), ("SELECT {limit_2} AS n", "df")]
    assert cells[4].code == "print(df, limit_2)"


# --- magics ---------------------------------------------------------------------------------


def run_cell(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return run_in_order([code])[0]


def test_timeit_and_time_run_the_code_and_print_a_timing(tmp_path, monkeypatch):
    assert "µs per loop" in run_cell(magics.translate("x = 3\n%timeit -n 10 x * 2").code, tmp_path, monkeypatch)
    timed = magics.translate("%%time\ny = sum(range(10))\nprint(y)\ny")
    printed = run_cell(timed.code + "\nprint('value', _value)", tmp_path, monkeypatch)
    assert printed.startswith("45\nCPU times: total:") and "Wall time:" in printed and printed.endswith("value 45\n")
    assert analyze_python(timed.code).writes == {"y"}  # %%time keeps the cell's names, as in IPython
    assert "Wall time" in run_cell(magics.translate("%time z = 1").code + "\nprint(z)", tmp_path, monkeypatch)
    cell = magics.translate("%%timeit -r 2 base = 2\nbase ** 10")
    assert "µs per loop" in run_cell(cell.code, tmp_path, monkeypatch) and analyze_python(cell.code).writes == set()


def test_writefile_then_shell_lines_read_the_working_directory(tmp_path, monkeypatch):
    written = magics.translate("%%writefile data.csv\na,b\n1,2\n3,4")
    assert run_cell(written.code, tmp_path, monkeypatch) == "Writing data.csv\n"
    assert (tmp_path / "data.csv").read_text() == "a,b\n1,2\n3,4\n"
    shell = magics.translate("!ls -1\n!head -n 2 data.csv\n!tail -1 data.csv\n!cat data.csv\n!wc -l data.csv\nfiles = !ls\nprint(files)")
    assert run_cell(shell.code, tmp_path, monkeypatch) == "data.csv\na,b\n1,2\n3,4\na,b\n1,2\n3,4\n3 data.csv\n['data.csv']\n"
    (tmp_path / "more.txt").write_text("")
    assert run_cell(magics.translate("!ls").code, tmp_path, monkeypatch) == "data.csv  more.txt\n"
    assert run_cell(magics.translate("!ls *.txt").code, tmp_path, monkeypatch) == "more.txt\n"


def test_front_end_magics_are_dropped_and_other_shell_lines_say_why():
    cell = magics.translate("%matplotlib inline\n!rm -rf /\n!pip install seaborn==0.13 -q\nx = 1")
    assert cell.code.split("\n") == [
        f"# %matplotlib inline  ({magics.FRONT_END_NOTE})",
        f"# !rm -rf /  ({magics.SHELL_NOTE}: commented out on import)",
        f"# !pip install seaborn==0.13 -q  ({magics.PIP_NOTE})",
        "x = 1",
    ]
    assert cell.requirements == ["seaborn==0.13"]


def test_cell_magics_become_cells_of_the_right_kind():
    assert (magics.translate("%%markdown\n# Title").type, magics.translate("%%markdown\n# Title").code) == ("markdown", "# Title")
    assert (magics.translate("%%sql counts <<\nSELECT 1").type, magics.translate("%%sql counts <<\nSELECT 1").result_variable) == ("sql", "counts")
    html = magics.translate("%%html\n<b>bold</b>").code
    namespace = {}
    exec(compile(html.rsplit("\n", 1)[0], "<cell>", "exec"), namespace)  # noqa: S102
    assert eval(html.rsplit("\n", 1)[1], namespace)._repr_html_() == "<b>bold</b>"  # noqa: S307
    assert magics.translate("%%bash\nls").code.startswith("# %%bash does not run here")
