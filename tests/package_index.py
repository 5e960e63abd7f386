"""A package index of the tests' own, offline: tiny wheels made on the fly, served as a PEP 503
"simple" index by an HTTP server on loopback (what an operator's mirror is to uv).

The packages (all pure Python, `py3-none-any`):
* `nbt-alpha` 1.0 (module `nbt_alpha`, VALUE = "alpha"), which needs `nbt-beta>=1`;
* `nbt-beta` 1.0 and 2.0 (module `nbt_beta`, VERSION = "1.0" / "2.0");
* `nbt-gamma` 1.0 (module `nbt_gamma`, with a `.pth` file that puts `nbt_gamma_extra` on sys.path);
* `nbt-numpy-fan` 1.0, which needs `numpy>=99` (never satisfiable beside the server's numpy);
* `nbt-sdist-only` 1.0: a source distribution and no wheel;
* `scikit-learn` 1.0 (module `sklearn`): a stand-in, so the ModuleNotFoundError prompt
  installs something real offline.
"""
import base64
import hashlib
import http.server
import os
import threading
import zipfile
from collections import defaultdict
from pathlib import Path


def _record_hash(data):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_wheel(directory, name, version, files, requires=()):
    """A valid wheel of `name` `version` with `files` (path inside the wheel -> text)."""
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    contents = {path: text.encode() for path, text in files.items()}
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires)
    contents[f"{info}/METADATA"] = metadata.encode()
    contents[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = "".join(f"{path},{_record_hash(data)},{len(data)}\n" for path, data in contents.items()) + f"{info}/RECORD,,\n"
    contents[f"{info}/RECORD"] = record.encode()
    path = Path(directory) / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in sorted(contents.items()):
            archive.writestr(member, data)
    return path


def build_packages(directory):
    files = Path(directory) / "files"
    files.mkdir(parents=True, exist_ok=True)
    make_wheel(files, "nbt-alpha", "1.0", {"nbt_alpha/__init__.py": 'VALUE = "alpha"\n'}, requires=["nbt-beta>=1"])
    for version in ("1.0", "2.0"):
        make_wheel(files, "nbt-beta", version, {"nbt_beta/__init__.py": f'VERSION = "{version}"\n'})
    make_wheel(files, "nbt-gamma", "1.0", {"nbt_gamma/__init__.py": "VALUE = 3\n", "nbt_gamma.pth": "nbt_gamma_extra_dir\n", "nbt_gamma_extra_dir/nbt_gamma_extra.py": "EXTRA = True\n"})
    make_wheel(files, "nbt-numpy-fan", "1.0", {"nbt_numpy_fan/__init__.py": ""}, requires=["numpy>=99"])
    make_wheel(files, "scikit-learn", "1.0", {"sklearn/__init__.py": '__version__ = "1.0-test"\n'})
    (files / "nbt_sdist_only-1.0.tar.gz").write_bytes(b"not really an sdist")
    return files


def write_simple_index(directory):
    """`simple/<name>/index.html` for every file under `files/` (PEP 503, with sha256 fragments)."""
    root = Path(directory)
    by_project = defaultdict(list)
    for path in sorted((root / "files").iterdir()):
        project = path.name.split("-")[0].replace("_", "-").lower()
        by_project[project].append(path)
    for project, paths in by_project.items():
        page = root / "simple" / project
        page.mkdir(parents=True, exist_ok=True)
        links = "".join(f'<a href="../../files/{p.name}#sha256={hashlib.sha256(p.read_bytes()).hexdigest()}">{p.name}</a>\n' for p in paths)
        (page / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{links}</body></html>\n")
    names = "".join(f'<a href="{p}/">{p}</a>\n' for p in sorted(by_project))
    (root / "simple" / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{names}</body></html>\n")


class PackageIndex:
    """The index, served from a thread of this process until `stop()`; `url` is its simple/ URL."""

    def __init__(self, directory):
        self.directory = Path(directory)
        build_packages(self.directory)
        write_simple_index(self.directory)
        handler = _quiet_handler(str(self.directory))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/simple"
        self.requests = []
        self.server.requests = self.requests
        self.thread = threading.Thread(target=self.server.serve_forever, name="package-index", daemon=True)
        self.thread.start()

    def add_wheel(self, name, version, files, requires=()):
        make_wheel(self.directory / "files", name, version, files, requires)
        write_simple_index(self.directory)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def _quiet_handler(directory):
    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=directory, **kwargs)

        def log_message(self, format, *args):  # noqa: A002 - the base class's name
            self.server.requests.append(self.path)

    return Handler


if __name__ == "__main__":  # serve it by hand: python -m tests.package_index DIR
    import sys
    import time

    index = PackageIndex(sys.argv[1] if len(sys.argv) > 1 else os.getcwd())
    print(index.url, flush=True)
    while True:
        time.sleep(3600)
