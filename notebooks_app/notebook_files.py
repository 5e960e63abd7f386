"""A notebook's files (docs/notebook-files.md): names checked, bytes stored once per content
through Django's storage API, versions, history, limits.

Bytes go to the default storage (`FileSystemStorage` under MEDIA_ROOT in the embedded default;
any django-storages backend in production) at `notebook-files/<sha256[:2]>/<sha256>`, streamed
in chunks and never held whole in memory; a `NotebookFile` row is one version of one path. Every
change is one transaction with a history event and a revision bump, and the kernel hears of it
on commit (`kernel.files`): it refreshes the files its execution process sees and reruns the
cells that read a changed one.
"""
import hashlib
import posixpath
import re
import unicodedata

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Max, Sum

from .file_store import storage_name
from .models import EVENT_FILE_ADDED, EVENT_FILE_DELETED, EVENT_FILE_RENAMED, EVENT_FILE_RESTORED, NotebookFile
from .operations import OperationError, bump_revision, lock_notebook, record_event, tell_kernel
from .permissions import VIEW

MAX_PATH = 255
MAX_PART = 100
CHUNK = 1 << 20
_BAD_CHARACTERS = re.compile(r'[\x00-\x1f\x7f\\:*?"<>|]')


class FileError(OperationError):
    """A file operation refused; the message says why, in a sentence."""

    def __init__(self, message, code="invalid_field"):
        super().__init__(code, message)


def clean_path(name):
    """`name` as a stored path: relative, "/"-separated, no `..`, no control characters, no
    empty or hidden-dot-only parts; FileError otherwise."""
    if not isinstance(name, str) or not name.strip():
        raise FileError("Give the file a name.")
    name = unicodedata.normalize("NFC", name.strip())
    if name.startswith(("/", "~")) or re.match(r"^[A-Za-z]:", name):
        raise FileError(f"{name[:80]!r} is an absolute path: give a name inside the notebook, such as 'data/sales.csv'.")
    if _BAD_CHARACTERS.search(name):
        raise FileError(f"{name[:80]!r} contains a character a file name cannot have here (control characters, \\ : * ? \" < > |).")
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise FileError(f"{name[:80]!r} is not a plain path: no '..', '.', or empty parts ('data/sales.csv' is fine).")
    if any(len(part) > MAX_PART for part in parts) or len(name) > MAX_PATH:
        raise FileError(f"The name is too long: at most {MAX_PATH} characters, {MAX_PART} per folder or file name.")
    if parts[0] == ".files" or parts[-1].endswith(".nbtmp"):
        raise FileError("Names '.files/…' and '….nbtmp' are reserved.")
    return posixpath.normpath(name)


def max_file_bytes():
    return settings.NOTEBOOK_FILE_MAX_MB * 1024 * 1024


def quota_bytes():
    return settings.NOTEBOOK_FILES_QUOTA_MB * 1024 * 1024


def current_files(notebook_id):
    return NotebookFile.objects.filter(notebook_id=notebook_id, current=True).select_related("added_by").order_by("path")


def used_bytes(notebook_id, *, without_path=None):
    rows = NotebookFile.objects.filter(notebook_id=notebook_id, current=True)
    if without_path is not None:
        rows = rows.exclude(path=without_path)
    return rows.aggregate(total=Sum("size"))["total"] or 0


def describe(row):
    """A file as the protocol and the page show it."""
    return {
        "path": row.path,
        "size": row.size,
        "version": row.version,
        "sha256": row.sha256,
        "by": row.added_by.get_username() if row.added_by_id and row.added_by else None,
        "at": row.added_at.isoformat(),
    }


def check_size(size, notebook_id, path):
    """Refuse before anything is stored: an empty file, one over NOTEBOOK_FILE_MAX_MB, or one
    that would take the notebook over NOTEBOOK_FILES_QUOTA_MB."""
    if size <= 0:
        raise FileError("The file is empty (0 bytes): nothing was stored.")
    if size > max_file_bytes():
        raise FileError(f"The file is {size / 1e6:,.1f} MB; a notebook file may be at most {settings.NOTEBOOK_FILE_MAX_MB:,} MB (NOTEBOOK_FILE_MAX_MB).", code="too_large")
    used = used_bytes(notebook_id, without_path=path)
    if used + size > quota_bytes():
        raise FileError(
            f"The notebook's files would take {(used + size) / 1e6:,.1f} MB; its quota is {settings.NOTEBOOK_FILES_QUOTA_MB:,} MB (NOTEBOOK_FILES_QUOTA_MB). Delete some first.",
            code="too_large",
        )


def store_bytes(stream, *, expected_size=None):
    """Read `stream` (a file-like object) in chunks into the storage, once per content:
    (sha256, size).  Hashes first from a temporary copy on disk (never the whole file in
    memory), then saves under its content's name unless it is there already."""
    import tempfile

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
                raise FileError(f"The file is over {settings.NOTEBOOK_FILE_MAX_MB:,} MB, the limit for one notebook file (NOTEBOOK_FILE_MAX_MB).", code="too_large")
            spool.write(chunk)
        if expected_size is not None and size != expected_size:
            raise FileError(f"The upload was cut short ({size:,} of {expected_size:,} bytes arrived): nothing was stored.")
        sha256 = digest.hexdigest()
        name = storage_name(sha256)
        if size and not default_storage.exists(name):
            spool.seek(0)
            saved = default_storage.save(name, File(spool, name=sha256))
            if saved != name:  # another upload of the same bytes won the race: keep one
                default_storage.delete(saved)
    return sha256, size


def add_file(notebook_id, user, *, path, stream, size=None, request_id=None):
    """A new file, or a new version of `path`: stored, then the row, its history event and the
    revision in one transaction (two uploads of one name at once: both kept, the later current)."""
    path = clean_path(path)
    if size is not None:
        check_size(size, notebook_id, path)
    _may_edit(notebook_id, user)  # checked before the bytes are stored (storing is slow: no lock held)
    sha256, stored = store_bytes(stream, expected_size=size)
    with transaction.atomic():
        notebook = lock_notebook(notebook_id, user)
        check_size(stored, notebook.pk, path)
        last = NotebookFile.objects.filter(notebook=notebook, path=path).aggregate(v=Max("version"))["v"] or 0
        previous = NotebookFile.objects.filter(notebook=notebook, path=path, current=True).first()
        NotebookFile.objects.filter(notebook=notebook, path=path, current=True).update(current=False)
        row = NotebookFile.objects.create(notebook=notebook, path=path, sha256=sha256, size=stored, version=last + 1, current=True, added_by=user if user.is_authenticated else None)
        before = {"path": path, "version": previous.version, "size": previous.size} if previous else None
        record_event(notebook, user, EVENT_FILE_ADDED, before=before, after={"path": path, "version": row.version, "size": stored})
        _announce(notebook, request_id, changed=[path])
    return row


def delete_file(notebook_id, user, *, path, request_id=None):
    path = clean_path(path)
    with transaction.atomic():
        notebook = lock_notebook(notebook_id, user)
        row = NotebookFile.objects.filter(notebook=notebook, path=path, current=True).first()
        if row is None:
            raise FileError(f"There is no file {path!r} in this notebook.", code="not_found")
        NotebookFile.objects.filter(pk=row.pk).update(current=False)
        record_event(notebook, user, EVENT_FILE_DELETED, before={"path": path, "version": row.version, "size": row.size})
        _announce(notebook, request_id, changed=[path])
    return row


def restore_file(notebook_id, user, *, path, request_id=None):
    """A deleted file back: its last version current again."""
    path = clean_path(path)
    with transaction.atomic():
        notebook = lock_notebook(notebook_id, user)
        if NotebookFile.objects.filter(notebook=notebook, path=path, current=True).exists():
            raise FileError(f"{path!r} is not deleted.", code="conflict")
        row = NotebookFile.objects.filter(notebook=notebook, path=path).order_by("-version").first()
        if row is None:
            raise FileError(f"There was never a file {path!r} in this notebook.", code="not_found")
        check_size(row.size, notebook.pk, path)
        NotebookFile.objects.filter(pk=row.pk).update(current=True)
        record_event(notebook, user, EVENT_FILE_RESTORED, after={"path": path, "version": row.version, "size": row.size})
        _announce(notebook, request_id, changed=[path])
    return row


def rename_file(notebook_id, user, *, path, new_path, request_id=None):
    """`path` becomes `new_path` (a new version there: the bytes are not copied)."""
    path, new_path = clean_path(path), clean_path(new_path)
    if path == new_path:
        raise FileError("The new name is the same as the old one.")
    with transaction.atomic():
        notebook = lock_notebook(notebook_id, user)
        row = NotebookFile.objects.filter(notebook=notebook, path=path, current=True).first()
        if row is None:
            raise FileError(f"There is no file {path!r} in this notebook.", code="not_found")
        if NotebookFile.objects.filter(notebook=notebook, path=new_path, current=True).exists():
            raise FileError(f"There is already a file {new_path!r}: delete or rename it first.", code="conflict")
        last = NotebookFile.objects.filter(notebook=notebook, path=new_path).aggregate(v=Max("version"))["v"] or 0
        NotebookFile.objects.filter(pk=row.pk).update(current=False)
        moved = NotebookFile.objects.create(notebook=notebook, path=new_path, sha256=row.sha256, size=row.size, version=last + 1, current=True, added_by=user if user.is_authenticated else None)
        record_event(notebook, user, EVENT_FILE_RENAMED, before={"path": path, "version": row.version}, after={"path": new_path, "version": moved.version, "size": row.size})
        _announce(notebook, request_id, changed=[path, new_path])
    return moved


def _may_edit(notebook_id, user):
    from .models import Notebook
    from .operations import get_notebook
    from .permissions import EDIT

    return get_notebook(Notebook.objects.all(), notebook_id, user, action=EDIT)


def open_file(notebook_id, user, path):
    """(row, readable file) of the current version of `path`, for anyone who may view."""
    from .operations import get_notebook
    from .models import Notebook

    notebook = get_notebook(Notebook.objects.all(), notebook_id, user, action=VIEW)
    path = clean_path(path)
    row = NotebookFile.objects.filter(notebook=notebook, path=path, current=True).first()
    if row is None:
        raise FileError(f"There is no file {path!r} in this notebook.", code="not_found")
    return row, default_storage.open(storage_name(row.sha256), "rb")


def _announce(notebook, request_id, *, changed):
    revision = bump_revision(notebook)
    tell_kernel(notebook, "files", revision=revision, request_id=request_id, changed=changed)
