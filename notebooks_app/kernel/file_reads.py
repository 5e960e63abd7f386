"""A notebook's files inside its execution process (docs/notebook-files.md): they appear in the
working directory, read-only, and the files a cell opens are noted.

The worker keeps the notebook's current files in a directory of its own, bound read-only into
the sandbox at `/notebook/.files` (NOTEBOOK_FILES); `link()` makes a symlink in the working
directory for each (`sales.csv`, `data/x.json`), so `pd.read_csv("sales.csv")` works as in
Jupyter, a write through it fails (read-only file system) and the files take none of the
tmpfs's room.  A deleted file leaves its symlink dangling: opening it fails with
FileNotFoundError naming it.  While a cell runs, an audit hook notes every file it opens that
lies in that directory (Python's own `open` and `os.open`: what pandas, json, csv and most
libraries use; a C library that opens files itself is not seen), so the worker can rerun the
cells that read a file when it changes.

`save(path, data)` is what cells call as `from reactive_notebook import files; files.save("out.csv",
data)`: the bytes go to the worker over the protocol pipe, which checks and stores them as a
new version of the notebook's file, for everyone (and reruns its readers).

Runs inside the sandbox: no Django, standard library only.
"""
import base64
import os
import sys

SAVE_LIMIT = 32 << 20  # bytes one files.save may send through the protocol pipe
_sender = None  # (path, base64 text) -> reply dict, given by the kernel (_child.py)

FILES = os.environ.get("NOTEBOOK_FILES", "")
# Notebook files are reached through the working directory's links (or FILES itself, inside it):
# an absolute path elsewhere is not resolved (imports open hundreds of files).
_WORK = os.path.dirname(FILES) if FILES else "/notebook"
_reading = None  # the set of files the running cell opened, or None between cells


def install():
    if FILES and os.path.isdir(FILES):
        sys.addaudithook(_audit)
        link()


def link(root="."):
    """A symlink in `root` for every file of the notebook (made again after they change)."""
    if not FILES or not os.path.isdir(FILES):
        return
    root = os.path.abspath(root)
    for directory, _, names in os.walk(FILES):
        for name in names:
            target = os.path.join(directory, name)
            relative = os.path.relpath(target, FILES)
            place = os.path.join(root, relative)
            try:
                os.makedirs(os.path.dirname(place), exist_ok=True)
                if os.path.islink(place):
                    if os.readlink(place) == target:
                        continue
                    os.unlink(place)
                elif os.path.exists(place):
                    continue  # a file the cells made themselves: theirs wins
                os.symlink(target, place)
            except OSError:
                continue


def begin():
    global _reading
    _reading = set()


def end():
    """The notebook files opened since `begin()`, as paths relative to the files' root."""
    global _reading
    found, _reading = _reading or set(), None
    return sorted(found)


def _audit(event, args):
    if _reading is None or event != "open" or not args:
        return
    path = args[0]
    if isinstance(path, int):
        return
    try:
        path = os.fsdecode(os.fspath(path))
        if os.path.isabs(path) and not path.startswith(_WORK):
            return  # a module being imported, a library's data: not cheap enough to resolve each
        real = os.path.realpath(path if os.path.isabs(path) else os.path.join(os.getcwd(), path))
    except (TypeError, ValueError, OSError):
        return
    if real.startswith(FILES + os.sep):
        _reading.add(os.path.relpath(real, FILES))


def install_sender(sender):
    global _sender
    _sender = sender


def save(path, data):
    """Save `data` (bytes, or text: UTF-8) as the notebook file `path` ("out.csv",
    "results/summary.json") for everyone on the notebook: a new version if it exists. Returns
    the path saved.  Raises ValueError when the name or size is refused (the message says why)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"files.save takes bytes or text, not {type(data).__name__}")
    data = bytes(data)
    if len(data) > SAVE_LIMIT:
        raise ValueError(f"files.save sends at most {SAVE_LIMIT >> 20} MB at once; this is {len(data) / 1e6:,.1f} MB")
    if not isinstance(path, str):
        raise TypeError("files.save takes the file's name as a string, such as 'out.csv'")
    if _sender is None:
        raise RuntimeError("files.save works only while a cell runs")
    reply = _sender(path, base64.b64encode(data).decode("ascii"))
    if reply.get("error"):
        raise ValueError(reply["error"])
    link()  # the worker mirrored it before answering: the next cells read it
    return reply.get("path", path)
