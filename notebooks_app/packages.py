"""A notebook's requirements as text: checking them, and reading and writing them in files.

A notebook's packages are a list of PEP 508 requirements (a name, extras, version specifiers
and markers), nothing else: never a path, a URL, a VCS reference, an editable install nor a
pip option, because the kernel worker resolves them on the server (kernel/environments.py).
This module checks such a list (`parse_requirements`), reads and writes it as a PEP 723
`# /// script` block (the `.py` exports), and knows the common cases where the name a cell
imports is not the name of the package that provides it (`distribution_for_module`).

Pure: no Django, no I/O.
"""
import re

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

# Where a notebook's packages go in an exported .ipynb's metadata: {"requirements": [...]}.
NOTEBOOK_METADATA_KEY = "reactive_notebooks"
MAX_REQUIREMENTS = 50
MAX_REQUIREMENT_LENGTH = 200

# Import names whose package on the index is called otherwise (the prompt after a
# ModuleNotFoundError shows the distribution, for the user to confirm; nothing is installed on
# a guess).  A module not listed here is offered under its own name.
DISTRIBUTIONS_BY_MODULE = {
    "sklearn": "scikit-learn",
    "skimage": "scikit-image",
    "cv2": "opencv-python-headless",
    "PIL": "pillow",
    "yaml": "PyYAML",
    "bs4": "beautifulsoup4",
    "dateutil": "python-dateutil",
    "dotenv": "python-dotenv",
    "Crypto": "pycryptodome",
    "OpenSSL": "pyOpenSSL",
    "jwt": "PyJWT",
    "google.protobuf": "protobuf",
    "attr": "attrs",
    "serial": "pyserial",
    "usb": "pyusb",
    "magic": "python-magic",
    "docx": "python-docx",
    "pptx": "python-pptx",
    "fitz": "PyMuPDF",
    "Levenshtein": "python-Levenshtein",
    "igraph": "igraph",
    "sentencepiece": "sentencepiece",
    "tensorflow_datasets": "tensorflow-datasets",
    "mpl_toolkits.basemap": "basemap",
    "osgeo": "GDAL",
    "MySQLdb": "mysqlclient",
    "psycopg2": "psycopg2-binary",
    "lxml.etree": "lxml",
    "statsmodels.api": "statsmodels",
    "xgboost": "xgboost",
    "wx": "wxPython",
    "gi": "PyGObject",
    "zmq": "pyzmq",
    "ruamel": "ruamel.yaml",
    "pkg_resources": "setuptools",
    "IPython": "ipython",
}

# PEP 723's reference expression for a `# /// TYPE` ... `# ///` block.
_SCRIPT_BLOCK = re.compile(r"(?m)^# /// (?P<type>[a-zA-Z0-9-]+)$\s(?P<content>(^#(| .*)$\s)+)^# ///$")
_MODULE_NOT_FOUND = re.compile(r"No module named '([A-Za-z_][\w.]*)'")


class RequirementsError(ValueError):
    """A requirement list that cannot be used; the message says which line and why."""


def parse_requirement(text):
    """One requirement, checked: the `packaging.requirements.Requirement` it is."""
    if not isinstance(text, str):
        raise RequirementsError("each requirement must be a string")
    line = text.strip()
    shown = line if len(line) <= 60 else line[:57] + "..."
    if not line:
        raise RequirementsError("a requirement is empty")
    if len(line) > MAX_REQUIREMENT_LENGTH:
        raise RequirementsError(f"{shown!r} is {len(line)} characters long; the limit is {MAX_REQUIREMENT_LENGTH}")
    if "\x00" in line or any(ord(c) < 32 for c in line):
        raise RequirementsError(f"{shown!r} contains control characters")
    if line.startswith("-"):
        raise RequirementsError(f"{shown!r}: pip options (such as -e, -r or --index-url) are not requirements; give a package name and versions")
    if line.startswith((".", "/", "~")) or "://" in line or line.startswith(("git+", "hg+", "svn+", "bzr+", "file:")):
        raise RequirementsError(f"{shown!r}: paths, URLs and version-control references cannot be installed here; give a package name from the index, e.g. 'pandas>=2'")
    try:
        requirement = Requirement(line)
    except InvalidRequirement as exc:
        raise RequirementsError(f"{shown!r} is not a valid requirement ({str(exc).splitlines()[0]}); write it as e.g. 'seaborn' or 'scipy>=1.11'") from None
    if requirement.url:
        raise RequirementsError(f"{shown!r}: direct references (name @ URL) cannot be installed here; give a package name from the index")
    return requirement


def parse_requirements(items):
    """`items` (a list of strings, or text of one requirement a line, `#` comments allowed)
    as the normalised list stored with a notebook; RequirementsError when any is unusable."""
    if isinstance(items, str):
        items = [line.split(" #", 1)[0] for line in items.splitlines()]
        items = [line for line in items if line.strip() and not line.strip().startswith("#")]
    if not isinstance(items, (list, tuple)):
        raise RequirementsError("requirements must be a list of strings")
    if len(items) > MAX_REQUIREMENTS:
        raise RequirementsError(f"{len(items)} requirements; a notebook may have at most {MAX_REQUIREMENTS}")
    result, seen = [], {}
    for item in items:
        requirement = parse_requirement(item)
        name = canonicalize_name(requirement.name)
        if name in seen:
            raise RequirementsError(f"{requirement.name} is listed twice ({seen[name]!r} and {str(requirement)!r}); keep one line per package")
        seen[name] = str(requirement)
        result.append(str(requirement))
    return result


def requirement_name(text):
    """The canonical name of a requirement already checked (for comparing and sorting)."""
    return canonicalize_name(Requirement(text).name)


def missing_module(error_text):
    """The module a `ModuleNotFoundError: No module named 'x.y'` names, or None."""
    match = _MODULE_NOT_FOUND.search(error_text or "")
    return match.group(1) if match else None


def distribution_for_module(module):
    """The package that most likely provides `module` (its dotted name): the table's entry for
    the longest prefix, else the top-level name itself."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        found = DISTRIBUTIONS_BY_MODULE.get(".".join(parts[:end]))
        if found:
            return found
    return parts[0].replace("_", "-")


# --- PEP 723 inline script metadata ----------------------------------------------------------
def read_script_dependencies(text):
    """The `dependencies` of a `.py` file's PEP 723 `# /// script` block: None when it has none,
    RequirementsError when the block is not valid TOML or names more than one block."""
    import tomllib

    blocks = [m for m in _SCRIPT_BLOCK.finditer(text) if m.group("type") == "script"]
    if not blocks:
        return None
    if len(blocks) > 1:
        raise RequirementsError("the file has more than one '# /// script' block")
    content = "".join(line[2:] if line.startswith("# ") else line[1:] for line in blocks[0].group("content").splitlines(keepends=True))
    try:
        metadata = tomllib.loads(content)
    except tomllib.TOMLDecodeError as exc:
        raise RequirementsError(f"the '# /// script' block is not valid TOML: {exc}") from None
    dependencies = metadata.get("dependencies", [])
    if not isinstance(dependencies, list):
        raise RequirementsError("'dependencies' in the '# /// script' block must be a list of strings")
    return parse_requirements(dependencies)


def without_script_block(text):
    """`text` without its PEP 723 `# /// script` block (the rest as it was)."""
    return _SCRIPT_BLOCK.sub(lambda m: "" if m.group("type") == "script" else m.group(0), text, count=0).lstrip("\n")


def script_block(requirements, requires_python=None):
    """A PEP 723 `# /// script` block declaring `requirements` (empty string when there are none
    and no Python requirement)."""
    if not requirements and not requires_python:
        return ""
    import json

    lines = ["# /// script"]
    if requires_python:
        lines.append(f"# requires-python = {json.dumps(requires_python)}")
    if requirements:
        lines.append("# dependencies = [")
        lines += [f"#     {json.dumps(r)}," for r in requirements]
        lines.append("# ]")
    lines.append("# ///")
    return "\n".join(lines) + "\n"
