"""IPython magics and shell lines of an imported cell, turned into what they meant.

A Jupyter cell may hold IPython syntax that is not Python: `%timeit`, `%%time`, `%matplotlib
inline`, `!ls`, `!pip install x`.  Where the meaning is safe to keep, it becomes plain Python
that does the same thing (and so also runs in Jupyter after an export): timings print a timing,
`%%writefile` writes the file, `!ls` / `!head` / `!cat` / `!wc -l` / `!pwd` read the working
directory; `%%markdown` becomes a markdown cell, `%%html` a cell whose value is that HTML,
`%%sql` a SQL cell.  What needs only a notebook front end (`%matplotlib inline`: figures show by
themselves here) or what cannot run here (other shell commands: a notebook's sandbox has no
shell) is kept as a comment that says why.  `pip install` lines give the packages the notebook
asked for.

Pure: text in, text out; nothing is run.  importing.py calls `translate` for every code cell.
"""
import ast
import re
import shlex
from dataclasses import dataclass, field

from .constants import CELL_MARKDOWN, CELL_PYTHON, CELL_SQL
from .kernel.analysis import install_requirements

# Cell magics whose body is Python that runs as it is (only the magic line goes).
PYTHON_BODY_MAGICS = {"capture", "prun"}
MARKDOWN_MAGICS = {"markdown", "md"}
# Line magics that only set up IPython's front end: not needed here.
FRONT_END_MAGICS = {"matplotlib", "config", "load_ext", "reload_ext", "unload_ext", "autoreload", "aimport", "precision", "notebook", "xmode", "pprint", "colors", "autosave"}
SHELL_NOTE = "does not run here: a notebook's sandbox has no shell"
PIP_NOTE = "installed from the notebook's Packages panel instead (docs/packages.md)"
FRONT_END_NOTE = "not needed here: figures and outputs show by themselves"
MAGIC_LINE = re.compile(r"^(\s*)((?:([A-Za-z_][\w.]*)\s*=\s*)?([%!].*))$")
SQL_RESULT = re.compile(r"^\s*([A-Za-z_]\w*)\s*<<")
HELP_LINE = re.compile(r"^(\s*)(\?\??[\w.]+|[\w.]+\?\??)\s*$")
TIMING_OPTIONS = {"-n", "-r", "-p"}  # %timeit options that take a value
TIMEIT = (
    "{indent}_loops, _seconds = __import__('timeit').Timer(_timed).autorange()\n"
    "{indent}print(f'{{_seconds / _loops * 1e6:.3g}} µs per loop (mean of {{_loops:,}} loops)')"
)
TIME_START = "{indent}_time = __import__('time')\n{indent}_wall, _cpu = _time.perf_counter(), _time.process_time()"
TIME_END = (
    "{indent}print(f'CPU times: total: {{(_time.process_time() - _cpu) * 1e3:.3g}} ms')\n"
    "{indent}print(f'Wall time: {{(_time.perf_counter() - _wall) * 1e3:.3g}} ms')"
)


@dataclass
class Translated:
    type: str
    code: str
    result_variable: str = ""
    changes: list = field(default_factory=list)  # what was done, for the import's notes
    requirements: list = field(default_factory=list)  # packages a `pip install` asked for


def translate(source):
    """A Jupyter code cell's source as a cell of this server."""
    first, _, body = source.lstrip("\n").partition("\n")
    if first.startswith("%%"):
        return _cell_magic(first, body, source)
    result = Translated(CELL_PYTHON, source)
    if not _parses(source):
        result.code = _line_magics(source, result)
    return result


def _parses(source):
    try:
        ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True


def commented(source, reason):
    """Every line as a comment, under one that says why."""
    return "\n".join([f"# {reason}", *(f"# {line}".rstrip() for line in source.split("\n"))])


# --- cell magics ----------------------------------------------------------------------------


def _cell_magic(first, body, source):
    name, _, arguments = first[2:].partition(" ")
    name = name.strip()
    if name == "sql":
        match = SQL_RESULT.match(arguments)
        return Translated(CELL_SQL, body, result_variable=match.group(1) if match else "")
    if name in MARKDOWN_MAGICS:
        return Translated(CELL_MARKDOWN, body, changes=[f"%%{name} became a markdown cell"])
    if name == "html":
        code = (
            f"# {first}  (this cell's value is the HTML below)\n"
            "class _HTML(str):\n"
            "    def _repr_html_(self):\n"
            "        return str(self)\n"
            f"_HTML({body!r})"
        )
        return Translated(CELL_PYTHON, code, changes=["%%html became a cell whose value is its HTML"])
    if name in PYTHON_BODY_MAGICS:
        result = Translated(CELL_PYTHON, "", changes=[f"%%{name} was dropped (its body runs as it is)"])
        result.code = f"# {first}  (dropped on import: the body runs as it is)\n" + _python(body, result)
        return result
    if name == "time":
        result = Translated(CELL_PYTHON, "", changes=["%%time times the cell with Python's time module"])
        result.code = f"# {first}  (timed below with Python's time module)\n" + _timed_in_place(_python(body, result))
        return result
    if name == "timeit":
        result = Translated(CELL_PYTHON, "", changes=["%%timeit times the cell with Python's timeit module"])
        setup = _without_options(arguments)
        timed = _indented(_python(body, result), "    ")
        code = [f"# {first}  (timed below with Python's timeit module)"]
        if setup:  # run once, in the timed code's own scope (IPython does not keep its names either)
            code += ["def _timer():", f"    {setup}", "    def _timed():", _indented(timed, "    "), "    return _timed", "_timed = _timer()"]
        else:
            code += ["def _timed():", timed]
        code.append(TIMEIT.format(indent=""))
        result.code = "\n".join(code)
        return result
    if name == "writefile":
        return _write_file(first, arguments, body, source)
    return Translated(CELL_PYTHON, commented(source, f"%%{name} {SHELL_NOTE if name in ('bash', 'sh', 'script', 'system') else 'has no equivalent here'}: commented out on import."), changes=[f"%%{name} was commented out"])


def _python(body, result):
    """A magic's Python body, with its own line magics translated."""
    return body if _parses(body) else _line_magics(body, result)


def _write_file(first, arguments, body, source):
    try:
        words = shlex.split(arguments)
    except ValueError:
        words = []
    append = "-a" in words or "--append" in words
    paths = [word for word in words if not word.startswith("-")]
    if len(paths) != 1:
        return Translated(CELL_PYTHON, commented(source, f"{first.strip()} could not be read: commented out on import."))
    path = paths[0]
    if append:
        message = f"print('Appending to ' + {path!r})"
    else:
        message = f"print(('Overwriting ' if __import__('os').path.exists({path!r}) else 'Writing ') + {path!r})"
    code = "\n".join([
        f"# {first}  (written with Python's open)",
        message,
        f"with open({path!r}, {'a' if append else 'w'!r}) as _file:",
        f"    _file.write({body if body.endswith(chr(10)) else body + chr(10)!r})",
    ])
    return Translated(CELL_PYTHON, code, changes=["%%writefile writes the file with Python"])


def _timed_in_place(code):
    """The code between two clock readings, printing the times like IPython's %%time; its last
    expression is still the cell's value."""
    body, last = code, ""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        tree = None
    if tree is not None and tree.body and isinstance(tree.body[-1], ast.Expr) and not code.rstrip().endswith(";"):
        lines = code.split("\n")
        node = tree.body[-1]
        start = sum(len(line) + 1 for line in lines[: node.lineno - 1]) + len(lines[node.lineno - 1].encode()[: node.col_offset].decode())
        body, last = code[:start] + "_value = " + code[start:], "_value"
    return "\n".join(part for part in (TIME_START.format(indent=""), body, TIME_END.format(indent=""), last) if part)


def _without_options(arguments):
    """%timeit's arguments without its options (`-n 100 -r 3 -q -o`)."""
    words = arguments.strip().split(" ")
    while words and words[0].startswith("-"):
        option = words.pop(0)
        if option in TIMING_OPTIONS and words:
            words.pop(0)
        while words and not words[0]:
            words.pop(0)
    return " ".join(words).strip()


def _indented(code, prefix):
    return "\n".join(prefix + line if line.strip() else line for line in code.split("\n")) if code.strip() else prefix + "pass"


# --- line magics and shell lines -------------------------------------------------------------


def _line_magics(source, result):
    """Each IPython line (`%magic`, `!command`, `x = !command`, `name?`) as Python, or as a
    comment that says why it does not run."""
    lines = []
    for line in source.split("\n"):
        help_match = HELP_LINE.match(line)
        if help_match and not _parses(line.strip()):
            lines.append(f"{help_match.group(1)}# {help_match.group(2)}  (help: hover a name, or Shift+Tab, shows its documentation here)")
            result.changes.append("help lines were commented out")
            continue
        match = MAGIC_LINE.match(line)
        if match is None:
            lines.append(line)
            continue
        indent, whole, target, command = match.groups()
        translated = _line(indent, target, command, result)
        lines.append(translated if translated is not None else f"{indent}# {whole}  ({_why(command)}: commented out on import)")
    return "\n".join(lines)


def _why(command):
    if command.startswith("!"):
        return SHELL_NOTE
    return f"%{_magic_name(command)} has no equivalent here"


def _magic_name(command):
    return command.lstrip("%!").split(" ", 1)[0]


def _line(indent, target, command, result):
    """One IPython line as Python at `indent`, or None to keep it as a comment."""
    pip = install_requirements(command)
    if pip is not None:
        result.requirements.extend(pip)
        result.changes.append("pip install lines were commented out (their packages are listed in the import's notes)")
        return f"{indent}# {command}  ({PIP_NOTE})"
    if command.startswith("!"):
        code = _shell(command[1:].strip(), target)
        if code is None:
            return None
        result.changes.append("shell lines became Python")
        return "\n".join(indent + line for line in code.split("\n"))
    name, _, arguments = command[1:].partition(" ")
    arguments = arguments.strip()
    if target is not None:
        return None  # `x = %magic`: IPython's return values have no equivalent
    if name in FRONT_END_MAGICS:
        result.changes.append(f"%{name} was dropped (not needed here)")
        return f"{indent}# {command}  ({FRONT_END_NOTE})"
    if name == "timeit" and arguments:
        result.changes.append("%timeit times with Python's timeit module")
        statement = _without_options(arguments)
        return "\n".join([f"{indent}def _timed():", f"{indent}    {statement}", TIMEIT.format(indent=indent)])
    if name == "time" and arguments:
        result.changes.append("%time times with Python's time module")
        return "\n".join([TIME_START.format(indent=indent), f"{indent}{arguments}", TIME_END.format(indent=indent)])
    if name == "cd" and arguments:
        result.changes.append("%cd became os.chdir")
        return f"{indent}__import__('os').chdir({_one_path(arguments)!r}); print(__import__('os').getcwd())"
    if name == "pwd":
        return f"{indent}print(__import__('os').getcwd())"
    if name == "env" and "=" in arguments:
        key, _, value = arguments.partition("=")
        result.changes.append("%env became os.environ")
        return f"{indent}__import__('os').environ[{key.strip()!r}] = {value.strip()!r}; print('env: ' + {key.strip() + '=' + value.strip()!r})"
    return None


def _one_path(arguments):
    words = shlex.split(arguments)
    return words[0] if words else "."


def _shell(command, target):
    """Shell commands that only read the working directory, as Python; None for the rest."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    if not words or any(word in ("|", ">", ">>", "<", "&&", ";", "||") or "$" in word or "{" in word for word in words):
        return None
    program, arguments = words[0], words[1:]
    options = [word for word in arguments if word.startswith("-")]
    paths = [word for index, word in enumerate(arguments) if not word.startswith("-") and (index == 0 or arguments[index - 1] != "-n")]
    globbed = bool(paths) and all(any(c in path for c in "*?[") for path in paths)
    if target is not None:
        if program == "ls" and not options and len(paths) <= 1 and not globbed:
            return f"{target} = sorted(__import__('os').listdir({(paths or ['.'])[0]!r}))"
        return None
    if program == "ls" and options == ["-1"] and len(paths) <= 1 and not globbed:
        return f"for _name in sorted(__import__('os').listdir({(paths or ['.'])[0]!r})): print(_name)"
    if program == "ls" and not options and paths and all(any(c in path for c in "*?[") for path in paths):
        listed = " + ".join(f"__import__('glob').glob({path!r})" for path in paths)
        return f"if (_names := sorted({listed})): print('  '.join(_names))"
    if program == "ls" and not options and globbed:
        listed = " + ".join(f"__import__('glob').glob({path!r})" for path in paths)
        return f"if (_names := sorted({listed})): print('  '.join(_names))"
    if program == "ls" and not options and len(paths) <= 1:
        # On one line, two spaces apart: what ls prints to Jupyter's terminal (80 columns) for a few names.
        return f"if (_names := sorted(__import__('os').listdir({(paths or ['.'])[0]!r}))): print('  '.join(_names))"
    if program == "pwd" and not arguments:
        return "print(__import__('os').getcwd())"
    if program == "cat" and not options and paths:
        return "\n".join(f"with open({path!r}) as _file: print(_file.read(), end='')" for path in paths)
    if program in ("head", "tail") and len(paths) == 1:
        count = _line_count(options, arguments)
        if count is None:
            return None
        if program == "head":
            return f"with open({paths[0]!r}) as _file: print(*__import__('itertools').islice(_file, {count}), sep='', end='')"
        return f"with open({paths[0]!r}) as _file: print(*__import__('collections').deque(_file, {count}), sep='', end='')"
    if program == "wc" and options == ["-l"] and len(paths) == 1:
        return f"with open({paths[0]!r}) as _file: print(sum(1 for _line in _file), {paths[0]!r})"
    if program == "mkdir" and set(options) <= {"-p"} and paths:
        return "; ".join(f"__import__('os').makedirs({path!r}, exist_ok=True)" for path in paths)
    return None


def _line_count(options, arguments):
    """`head -n 5 f`, `head -5 f`, `head f` (10)."""
    if not options:
        return 10
    if len(options) == 1 and re.fullmatch(r"-\d+", options[0]):
        return int(options[0][1:])
    if options == ["-n"]:
        index = arguments.index("-n")
        if index + 1 < len(arguments) and arguments[index + 1].isdigit():
            return int(arguments[index + 1])
    return None
