"""A notebook's files (docs/notebook-files.md): names checked, bytes stored once per content
through Django's storage API, versions, history, limits.

Bytes go to the default storage (`FileSystemStorage` under MEDIA_ROOT in the embedded default;
any django-storages backend in production) at `notebook-files/<sha256[:2]>/<sha256>`, streamed
in chunks and never held whole in memory; a `NotebookFile` row is one version of one path. Every
change is one transaction with a history event and a revision bump, and the kernel hears of it
on commit (`kernel.files`): it refreshes the files its execution process sees and reruns the
cells that read a changed one.
"""
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Max

from . import file_store
from .file_store import FileRefused, storage_name
from .models import EVENT_FILE_DELETED, EVENT_FILE_RENAMED, EVENT_FILE_RESTORED, NotebookFile
from .operations import OperationError, bump_revision, lock_notebook, record_event, tell_kernel
from .permissions import VIEW



class FileError(OperationError):
    """A file operation refused; the message says why, in a sentence."""

    def __init__(self, message, code="invalid_field"):
        super().__init__(code, message)


def _refusals(func):
    """file_store's refusals as the operations' errors (the consumer and views answer those)."""
    import functools

    @functools.wraps(func)
    def checked(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except FileRefused as exc:
            raise FileError(exc.message, exc.code) from None

    return checked


clean_path = _refusals(file_store.clean_path)
check_size = _refusals(file_store.check_size)
max_file_bytes, quota_bytes, used_bytes = file_store.max_file_bytes, file_store.quota_bytes, file_store.used_bytes


def current_files(notebook_id):
    return NotebookFile.objects.filter(notebook_id=notebook_id, current=True).select_related("added_by").order_by("path")


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


@_refusals
def add_file(notebook_id, user, *, path, stream, size=None, request_id=None):
    """A new file, or a new version of `path`: stored, then the row, its history event and the
    revision in one transaction (two uploads of one name at once: both kept, the later current)."""
    path = file_store.clean_path(path)
    if size is not None:
        file_store.check_size(size, notebook_id, path)
    _may_edit(notebook_id, user)  # checked before the bytes are stored (storing is slow: no lock held)
    sha256, stored = file_store.store_bytes(stream, expected_size=size)
    with transaction.atomic():
        notebook = lock_notebook(notebook_id, user)
        row = file_store.record_version(notebook, user.pk if user.is_authenticated else None, path, sha256, stored)
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
