"""A notebook's files (docs/notebook-files.md): names checked, bytes stored once per content,
versions and history, the page's HTTP endpoints and the command, and the sandbox seeing them
read-only, with readers rerun when a file changes (production shape: the real worker)."""
import io
import os
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from django.core.files.storage import default_storage
from django.core.management import CommandError, call_command

from notebooks_app import notebook_files
from notebooks_app.file_store import storage_name
from notebooks_app.models import EVENT_FILE_ADDED, EVENT_FILE_DELETED, EVENT_FILE_RESTORED, NotebookEvent, NotebookFile
from tests.conftest import create, run_and_wait, text_output


@pytest.mark.parametrize(
    "name, says",
    [
        ("/etc/passwd", "absolute"),
        ("C:/x.csv", "absolute"),
        ("../secret", "not a plain path"),
        ("data/../../x", "not a plain path"),
        ("a//b", "not a plain path"),
        ("bad\x00name", "character"),
        ("tab\tname", "character"),
        ("back\\slash", "character"),
        ("x" * 101, "too long"),
        ("", "Give the file a name"),
        (".files/x", "reserved"),
    ],
)
def test_file_names_that_are_refused(name, says):
    with pytest.raises(notebook_files.FileError) as caught:
        notebook_files.clean_path(name)
    assert says in caught.value.message


def test_file_names_that_are_fine():
    assert notebook_files.clean_path(" data/sales.csv ") == "data/sales.csv"
    assert notebook_files.clean_path("résumé.txt") == "résumé.txt"
    assert notebook_files.clean_path(".env") == ".env"


@pytest.mark.django_db
def test_versions_history_and_content_addressed_storage(notebook, users):
    alice = users["alice"]
    first = notebook_files.add_file(notebook.pk, alice, path="sales.csv", stream=io.BytesIO(b"a,b\n1,2\n"), size=8)
    second = notebook_files.add_file(notebook.pk, users["bob"], path="sales.csv", stream=io.BytesIO(b"a,b\n3,4\n"), size=8)
    copy = notebook_files.add_file(notebook.pk, alice, path="data/copy.csv", stream=io.BytesIO(b"a,b\n3,4\n"), size=8)
    assert (first.version, second.version, copy.version) == (1, 2, 1)
    assert copy.sha256 == second.sha256 and default_storage.exists(storage_name(copy.sha256))
    assert [row.path for row in notebook_files.current_files(notebook.pk)] == ["data/copy.csv", "sales.csv"]
    assert notebook_files.current_files(notebook.pk).get(path="sales.csv").version == 2
    notebook_files.delete_file(notebook.pk, alice, path="sales.csv")
    assert [row.path for row in notebook_files.current_files(notebook.pk)] == ["data/copy.csv"]
    restored = notebook_files.restore_file(notebook.pk, alice, path="sales.csv")
    assert restored.version == 2
    kinds = list(NotebookEvent.objects.filter(notebook=notebook).order_by("id").values_list("kind", flat=True))
    assert kinds == [EVENT_FILE_ADDED] * 3 + [EVENT_FILE_DELETED, EVENT_FILE_RESTORED]
    notebook.refresh_from_db()
    assert notebook.revision == 5


@pytest.mark.django_db
def test_limits_are_checked_before_anything_is_stored(notebook, users, settings):
    settings.NOTEBOOK_FILE_MAX_MB = 1
    settings.NOTEBOOK_FILES_QUOTA_MB = 2
    alice = users["alice"]
    with pytest.raises(notebook_files.FileError, match="at most 1 MB"):
        notebook_files.add_file(notebook.pk, alice, path="big.bin", stream=io.BytesIO(b"x" * (2 << 20)), size=2 << 20)
    with pytest.raises(notebook_files.FileError, match="empty"):
        notebook_files.add_file(notebook.pk, alice, path="empty.txt", stream=io.BytesIO(b""), size=0)
    with pytest.raises(notebook_files.FileError, match="cut short"):
        notebook_files.add_file(notebook.pk, alice, path="cut.txt", stream=io.BytesIO(b"abc"), size=10)
    for index in range(2):
        notebook_files.add_file(notebook.pk, alice, path=f"f{index}.bin", stream=io.BytesIO(bytes([index]) * (900 << 10)), size=900 << 10)
    with pytest.raises(notebook_files.FileError, match="quota is 2 MB"):
        notebook_files.add_file(notebook.pk, alice, path="f3.bin", stream=io.BytesIO(b"z" * (900 << 10)), size=900 << 10)
    assert NotebookFile.objects.filter(notebook=notebook).count() == 2
    from notebooks_app.operations import OperationError

    with pytest.raises(OperationError, match="not change it"):
        notebook_files.add_file(notebook.pk, users["carol"], path="v.txt", stream=io.BytesIO(b"v"), size=1)


@pytest.mark.django_db
def test_upload_and_download_over_http(client, notebook, users):
    from django.core.files.uploadedfile import SimpleUploadedFile

    client.force_login(users["bob"])
    url = f"/notebooks/{notebook.pk}/files/"
    response = client.post(url, {"file": [SimpleUploadedFile("sales.csv", b"a,b\n1,2\n"), SimpleUploadedFile("notes.txt", b"hello")]})
    assert response.status_code == 200, response.content
    assert [f["path"] for f in response.json()["files"]] == ["sales.csv", "notes.txt"]
    response = client.post(url, {"file": SimpleUploadedFile("x.csv", b"1"), "name": "data/../../etc/x"})
    assert response.status_code == 400 and "not a plain path" in response.json()["error"]
    response = client.post(url, {"file": SimpleUploadedFile("x.csv", b"1"), "name": "data/x.csv"})
    assert response.json()["files"][0]["path"] == "data/x.csv"
    client.force_login(users["carol"])  # a viewer downloads, never uploads
    download = client.get(f"/notebooks/{notebook.pk}/files/data/x.csv")
    assert download.status_code == 200 and b"".join(download.streaming_content) == b"1" and "attachment" in download["Content-Disposition"]
    assert client.post(url, {"file": SimpleUploadedFile("v.txt", b"v")}).status_code == 403
    assert {f["path"] for f in client.get(url).json()["files"]} == {"sales.csv", "notes.txt", "data/x.csv"}
    client.force_login(users["dave"])  # a stranger learns nothing
    assert client.get(f"/notebooks/{notebook.pk}/files/sales.csv").status_code == 404
    assert client.get(url).status_code == 404


@pytest.mark.django_db
def test_the_command(notebook, users, tmp_path):
    source = tmp_path / "sales.csv"
    source.write_bytes(b"a,b\n1,2\n")
    out = io.StringIO()
    call_command("notebook_files", str(notebook.pk), "add", str(source), "--name", "data/sales.csv", stdout=out)
    assert "Added data/sales.csv (8 bytes, version 1)" in out.getvalue()
    out = io.StringIO()
    call_command("notebook_files", str(notebook.pk), "list", stdout=out)
    assert out.getvalue().startswith("data/sales.csv\t8\tv1\talice\t")
    target = tmp_path / "back.csv"
    call_command("notebook_files", str(notebook.pk), "get", "data/sales.csv", "--output", str(target))
    assert target.read_bytes() == b"a,b\n1,2\n"
    for arguments, says in ((["add", str(tmp_path / "none.csv")], "is not a file"), (["get", "../x"], "not a plain path"), (["rm", "nope.csv"], "There is no file")):
        with pytest.raises(CommandError, match=says):
            call_command("notebook_files", str(notebook.pk), *arguments)
    call_command("notebook_files", str(notebook.pk), "rm", "data/sales.csv", stdout=io.StringIO())
    assert not notebook_files.current_files(notebook.pk).exists()


# --- in the sandbox, through the real worker -----------------------------------------------------
@database_sync_to_async
def upload(notebook, user, path, data):
    return notebook_files.add_file(notebook.pk, user, path=path, stream=io.BytesIO(data), size=len(data))


@pytest.mark.django_db(transaction=True)
async def test_cells_read_files_read_only_and_rerun_when_one_changes(ws, notebook, users, settings):
    alice = await ws(users["alice"], notebook)
    await upload(notebook, users["alice"], "data/sales.csv", b"region,amount\nnorth,10\nsouth,32\n")
    await alice.wait_for(lambda e: e["type"] == "files_updated", 30, "files_updated")
    reader = await create(alice, "import pandas as pd\nsales = pd.read_csv('data/sales.csv')\nint(sales.amount.sum())")
    other = await create(alice, "other = 1\nother")
    assert (await run_and_wait(alice, reader))[-1]["status"] == "success", alice.state[reader]
    assert text_output(alice, reader) == "42"
    assert (await run_and_wait(alice, other))[-1]["status"] == "success"
    writer = await create(alice, "try:\n    open('data/sales.csv', 'w')\n    wrote = 'wrote'\nexcept OSError as exc:\n    wrote = exc.errno\nwrote")
    assert (await run_and_wait(alice, writer))[-1]["status"] == "success"
    assert text_output(alice, writer) == "30"  # EROFS
    # A new version reruns exactly its reader.
    await upload(notebook, users["bob"], "data/sales.csv", b"region,amount\nnorth,1\nsouth,2\n")
    seen = await alice.wait_for(lambda e: e["type"] == "cell_status" and e.get("cellId") == reader and e["status"] == "success", 60, "the reader reruns")
    assert text_output(alice, reader) == "3"
    assert not [e for e in seen if e["type"] == "cell_status" and e.get("cellId") in (other, writer) and e["status"] == "running"]
    # Deleted: the reader fails naming the file; restored: it runs again by itself.
    await database_sync_to_async(notebook_files.delete_file)(notebook.pk, users["alice"], path="data/sales.csv")
    await alice.wait_for(lambda e: e["type"] == "cell_status" and e.get("cellId") == reader and e["status"] == "error", 60, "the reader fails")
    assert "FileNotFoundError" in str(alice.state[reader]["error"]) and "data/sales.csv" in str(alice.state[reader]["error"])
    reply = await alice.request(type="restore_file", path="data/sales.csv")
    assert reply["type"] == "files_updated" and [f["path"] for f in reply["files"]] == ["data/sales.csv"]
    await alice.wait_for(lambda e: e["type"] == "cell_status" and e.get("cellId") == reader and e["status"] == "success", 60, "the reader runs again")
    for bad in ({"path": "../x"}, {"path": "/etc/passwd"}):
        reply = await alice.request(type="delete_file", **bad)
        assert reply["type"] == "error" and reply["code"] == "invalid_field"
    carol = await ws(users["carol"], notebook)
    reply = await carol.request(type="delete_file", path="data/sales.csv")
    assert reply["type"] == "error" and reply["code"] == "forbidden"


@pytest.mark.django_db(transaction=True)
async def test_a_cell_saves_a_file_for_everyone(ws, notebook, users):
    alice, bob = await ws(users["alice"], notebook), await ws(users["bob"], notebook)
    saver = await create(alice, "from notebook import files\nsaved = files.save('results/out.csv', 'x,y\\n1,2\\n')\nsaved")
    reader = await create(alice, "saved\nopen('results/out.csv').read().count(',')")
    assert (await run_and_wait(alice, saver))[-1]["status"] == "success", alice.state[saver]
    assert text_output(alice, saver) == "'results/out.csv'"
    seen = await bob.wait_for(lambda e: e["type"] == "files_updated", 30, "bob hears of the file")
    assert [(f["path"], f["size"], f["by"]) for f in seen[-1]["files"]] == [("results/out.csv", 8, None)]
    assert (await run_and_wait(alice, reader))[-1]["status"] == "success", alice.state[reader]
    assert text_output(alice, reader) == "2"
    row = await database_sync_to_async(lambda: notebook_files.current_files(notebook.pk).get())()
    assert row.path == "results/out.csv" and row.added_by is None
    bad = await create(alice, "from notebook import files as f\ntry:\n    f.save('../escape', b'x')\n    said = 'saved'\nexcept ValueError as exc:\n    said = str(exc)\nsaid")
    assert (await run_and_wait(alice, bad))[-1]["status"] == "success"
    assert "not a plain path" in text_output(alice, bad)


@pytest.mark.django_db
def test_a_storage_without_local_paths_is_mirrored_by_copies(notebook, users, monkeypatch, tmp_path, settings):
    """S3 and the like have no local path: the mirror streams copies (InMemoryStorage stands in)."""
    from django.core.files.storage import InMemoryStorage

    from notebooks_app import file_store

    memory = InMemoryStorage()
    monkeypatch.setattr(file_store, "default_storage", memory)
    settings.NOTEBOOK_FILES_CACHE_DIR = tmp_path / "mirrors"
    row = notebook_files.add_file(notebook.pk, users["alice"], path="data/a.csv", stream=io.BytesIO(b"a\n1\n"), size=4)
    assert memory.exists(storage_name(row.sha256))
    directory = file_store.mirror(notebook.pk, [("data/a.csv", row.sha256)])
    assert (directory / "data" / "a.csv").read_bytes() == b"a\n1\n"
    assert file_store.mirror(notebook.pk, []) == directory and not (directory / "data").exists()  # a deleted file leaves


@pytest.mark.django_db(transaction=True)
def test_two_uploads_of_one_name_at_once_keep_both_versions(notebook, users):
    """Both are kept, the later one current (the notebook row's lock orders them)."""
    import threading

    from django.db import connections

    errors = []

    def upload_as(user, data):
        try:
            notebook_files.add_file(notebook.pk, user, path="same.csv", stream=io.BytesIO(data), size=len(data))
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=upload_as, args=(users[name], name.encode() * 10)) for name in ("alice", "bob")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    rows = list(NotebookFile.objects.filter(notebook=notebook, path="same.csv").order_by("version"))
    assert [row.version for row in rows] == [1, 2] and [row.current for row in rows] == [False, True]
    assert {row.added_by.username for row in rows} == {"alice", "bob"}
