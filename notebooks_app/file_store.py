"""Where a notebook's file bytes live (docs/notebook-files.md), shared by the web side
(notebook_files.py, which stores them) and the kernel worker (which mirrors a notebook's
current files into a directory its sandbox binds read-only).

Bytes are in Django's default storage at `notebook-files/<sha256[:2]>/<sha256>`, once per
content.  `mirror()` keeps `NOTEBOOK_FILES_CACHE_DIR/<notebook id>/` holding exactly the
notebook's current files at their paths: hardlinks of the stored files when the storage is on
this file system (FileSystemStorage), streamed copies otherwise (S3 and the like); each file
replaced by a rename, so the execution process never reads half of one.
"""
import json
import os
import shutil
import uuid
from pathlib import Path

from django.conf import settings
from django.core.files.storage import default_storage

STORAGE_PREFIX = "notebook-files"
MANIFEST = ".manifest.json"
TEMPORARY = ".nbtmp"


def storage_name(sha256):
    return f"{STORAGE_PREFIX}/{sha256[:2]}/{sha256}"


def mirror_directory(notebook_id):
    return Path(settings.NOTEBOOK_FILES_CACHE_DIR) / str(notebook_id) / "files"


def mirror(notebook_id, files):
    """`files`: (path, sha256) of the notebook's current files. Returns the directory."""
    directory = mirror_directory(notebook_id)
    directory.mkdir(parents=True, exist_ok=True)
    manifest_path = directory.parent / MANIFEST
    try:
        had = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        had = {}
    wanted = dict(files)
    for place in sorted(directory.rglob("*"), reverse=True):
        relative = place.relative_to(directory).as_posix()
        if place.is_file() and relative not in wanted:
            place.unlink(missing_ok=True)
        elif place.is_dir() and not any(place.iterdir()):
            place.rmdir()
    for path, sha256 in wanted.items():
        target = directory / path
        if had.get(path) == sha256 and target.is_file():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_dir():
            shutil.rmtree(target)
        scratch = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}{TEMPORARY}"
        _place(sha256, scratch)
        os.replace(scratch, target)
    manifest_path.write_text(json.dumps(wanted))
    return directory


def _place(sha256, scratch):
    name = storage_name(sha256)
    try:
        os.link(default_storage.path(name), scratch)
        return
    except (NotImplementedError, OSError):
        pass
    with default_storage.open(name, "rb") as source, open(scratch, "wb") as copy:
        shutil.copyfileobj(source, copy, 1 << 20)
    os.chmod(scratch, 0o644)


def forget(notebook_id):
    shutil.rmtree(mirror_directory(notebook_id).parent, ignore_errors=True)
