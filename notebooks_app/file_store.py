"""Where a notebook's file bytes live (docs/notebook-files.md), shared by the web side
(notebook_files.py, which stores them) and the kernel worker (which mirrors a notebook's
current files into a directory its sandbox binds read-only).

Bytes are in Django's default storage at `notebook-files/<sha256[:2]>/<sha256>`, once per
content.  `mirror()` keeps `NOTEBOOK_FILES_CACHE_DIR/<notebook id>/` holding exactly the
notebook's current files at their paths: hardlinks of the stored files when the storage is on
this file system (FileSystemStorage), streamed copies otherwise (S3 and the like); each file
replaced by a rename, so the execution process never reads half of one.
"""
import hashlib
import json
import os
import posixpath
import re
import shutil
import tempfile
import unicodedata
import uuid
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db.models import Max, Sum

from .models import EVENT_FILE_ADDED, NotebookEvent, NotebookFile

STORAGE_PREFIX = "notebook-files"
MANIFEST = ".manifest.json"
TEMPORARY = ".nbtmp"
MAX_PATH = 255
MAX_PART = 100
CHUNK = 1 << 20
_BAD_CHARACTERS = re.compile(r'[\x00-\x1f\x7f\\:*?"<>|]')


class FileRefused(ValueError):
    """A file refused (a bad name, a size over a limit); `message` is one sentence, `code` the
    protocol's error code."""

    def __init__(self, message, code="invalid_field"):
        super().__init__(message)
        self.message = message
        self.code = code


def clean_path(name):
    """`name` as a stored path: relative, "/"-separated, no `..`, no control characters, no
    empty parts; FileRefused otherwise."""
    if not isinstance(name, str) or not name.strip():
        raise FileRefused("Give the file a name.")
    name = unicodedata.normalize("NFC", name.strip())
    if name.startswith(("/", "~")) or re.match(r"^[A-Za-z]:", name):
        raise FileRefused(f"{name[:80]!r} is an absolute path: give a name inside the notebook, such as 'data/sales.csv'.")
    if _BAD_CHARACTERS.search(name):
        raise FileRefused(f"{name[:80]!r} contains a character a file name cannot have here (control characters, \\ : * ? \" < > |).")
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise FileRefused(f"{name[:80]!r} is not a plain path: no '..', '.', or empty parts ('data/sales.csv' is fine).")
    if any(len(part) > MAX_PART for part in parts) or len(name) > MAX_PATH:
        raise FileRefused(f"The name is too long: at most {MAX_PATH} characters, {MAX_PART} per folder or file name.")
    if parts[0] == ".files" or parts[-1].endswith(TEMPORARY):
        raise FileRefused(f"Names '.files/…' and '…{TEMPORARY}' are reserved.")
    return posixpath.normpath(name)


def max_file_bytes():
    return settings.NOTEBOOK_FILE_MAX_MB * 1024 * 1024


def quota_bytes():
    return settings.NOTEBOOK_FILES_QUOTA_MB * 1024 * 1024


def used_bytes(notebook_id, *, without_path=None):
    rows = NotebookFile.objects.filter(notebook_id=notebook_id, current=True)
    if without_path is not None:
        rows = rows.exclude(path=without_path)
    return rows.aggregate(total=Sum("size"))["total"] or 0


def check_size(size, notebook_id, path):
    """Refuse before anything is stored: an empty file, one over NOTEBOOK_FILE_MAX_MB, or one
    that would take the notebook over NOTEBOOK_FILES_QUOTA_MB."""
    if size <= 0:
        raise FileRefused("The file is empty (0 bytes): nothing was stored.")
    if size > max_file_bytes():
        raise FileRefused(f"The file is {size / 1e6:,.1f} MB; a notebook file may be at most {settings.NOTEBOOK_FILE_MAX_MB:,} MB (NOTEBOOK_FILE_MAX_MB).", code="too_large")
    used = used_bytes(notebook_id, without_path=path)
    if used + size > quota_bytes():
        raise FileRefused(
            f"The notebook's files would take {(used + size) / 1e6:,.1f} MB; its quota is {settings.NOTEBOOK_FILES_QUOTA_MB:,} MB (NOTEBOOK_FILES_QUOTA_MB). Delete some first.",
            code="too_large",
        )


def store_bytes(stream, *, expected_size=None):
    """Read `stream` (a file-like object) in chunks into the storage, once per content:
    (sha256, size).  Hashed from a temporary copy on disk (never the whole file in memory),
    then saved under its content's name unless it is there already."""
    digest, size = hashlib.sha256(), 0
    with tempfile.TemporaryFile() as spool:
        while True:
            chunk = stream.read(CHUNK)
            if not chunk:
                break
            if isinstance(chunk, str):
                chunk = chunk.encode("utf-8")
            digest.update(chunk)
            size += len(chunk)
            if size > max_file_bytes():
                raise FileRefused(f"The file is over {settings.NOTEBOOK_FILE_MAX_MB:,} MB, the limit for one notebook file (NOTEBOOK_FILE_MAX_MB).", code="too_large")
            spool.write(chunk)
        if expected_size is not None and size != expected_size:
            raise FileRefused(f"The upload was cut short ({size:,} of {expected_size:,} bytes arrived): nothing was stored.")
        sha256 = digest.hexdigest()
        name = storage_name(sha256)
        if size and not default_storage.exists(name):
            spool.seek(0)
            saved = default_storage.save(name, File(spool, name=sha256))
            if saved != name:  # another upload of the same bytes won the race: keep one
                default_storage.delete(saved)
    return sha256, size


def record_version(notebook, user_id, path, sha256, size):
    """A new current version of `path` (in the caller's transaction, the notebook row locked):
    the row and its history event. Two uploads of one name at once: both kept, the later current."""
    check_size(size, notebook.pk, path)
    last = NotebookFile.objects.filter(notebook=notebook, path=path).aggregate(v=Max("version"))["v"] or 0
    previous = NotebookFile.objects.filter(notebook=notebook, path=path, current=True).first()
    NotebookFile.objects.filter(notebook=notebook, path=path, current=True).update(current=False)
    row = NotebookFile.objects.create(notebook=notebook, path=path, sha256=sha256, size=size, version=last + 1, current=True, added_by_id=user_id)
    before = {"path": path, "version": previous.version, "size": previous.size} if previous else None
    NotebookEvent.objects.record(notebook, user_id, EVENT_FILE_ADDED, before=before, after={"path": path, "version": row.version, "size": size})
    return row


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
