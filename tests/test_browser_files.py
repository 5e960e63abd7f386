"""A notebook's files in Chromium (docs/notebook-files.md, docs/frontend.md "Files"): an editor
uploads a file into a folder and every page on the notebook lists it at once, and a cell reads it;
a new version dropped on another page reruns that cell by itself; an empty file is refused on the
page and a bad name by the server, each with its sentence; delete, Restore and rename from the
page; a viewer gets the list and working downloads but no controls, and a page without JavaScript
the list.

Async Playwright with the shared Daphne and per-module Chromium of tests/async_pages.py.
"""
import io
import re

from channels.db import database_sync_to_async
from playwright.async_api import expect

from tests.async_pages import BROWSER_MODULE, cells, chromium, daphne, log_in, make_cells, new_context, open_page  # noqa: F401 (fixtures)

pytestmark = BROWSER_MODULE

# A first `import pandas` in a fresh execution process takes a few seconds on a busy machine.
RUN_MS = 30_000
expect.set_options(timeout=RUN_MS)

SALES = "region,amount\nnorth,10\nsouth,32\n"  # the amounts add up to 42
SALES_V2 = "region,amount\nnorth,10\nsouth,32\neast,58\n"  # 100
READ_SALES = "import pandas as pd\nint(pd.read_csv('data/sales.csv').amount.sum())"

# Drops `files` ([name, text] pairs) on the drop zone as a drag from the desktop would; answers
# whether the zone was highlighted while the files were over it.
DROP = """([files]) => {
  const data = new DataTransfer();
  for (const [name, text] of files) data.items.add(new File([text], name, {type: "text/csv"}));
  const zone = document.querySelector("#files .files-drop");
  const drag = (type) => zone.dispatchEvent(new DragEvent(type, {dataTransfer: data, bubbles: true, cancelable: true}));
  drag("dragenter");
  drag("dragover");
  const highlighted = zone.classList.contains("dragover");
  drag("drop");
  return highlighted && !zone.classList.contains("dragover");
}"""


def listed(page, path):
    return page.locator(f'#files .file[data-path="{path}"]')


async def choose_files(page, *files, folder=""):
    """Upload (name, text) pairs through the panel's file input, as "Choose files…" does."""
    await page.fill("#files .files-folder", folder)
    payloads = [{"name": name, "mimeType": "text/csv", "buffer": text.encode()} for name, text in files]
    await page.set_input_files("#files .files-input", files=payloads)


async def add_file(notebook, user, path, text):
    """A file stored as `manage.py notebook_files add` would, before the pages open. It wakes the
    notebook's kernel, which loads the cells then: make the cells first."""
    from notebooks_app import notebook_files

    data = text.encode()
    await database_sync_to_async(notebook_files.add_file)(notebook.pk, user, path=path, stream=io.BytesIO(data), size=len(data))


def output(page):
    return cells(page).first.locator(".output-text")


async def test_an_upload_into_a_folder_is_listed_on_every_page_and_cells_read_it(open_page, notebook):
    await make_cells(notebook, READ_SALES)
    alice, bob = await open_page("alice"), await open_page("bob")
    await expect(alice.locator("#files .files-empty")).to_have_text("No files yet.")
    await choose_files(alice, ("sales.csv", SALES), folder="data")
    upload = alice.locator('#files .file-upload[data-name="data/sales.csv"]')
    await expect(upload).to_have_attribute("data-state", "done")
    await expect(upload.locator("progress.file-upload-progress")).to_have_count(1)
    await expect(upload.locator(".file-upload-status")).to_have_text("Stored.")
    for page in (alice, bob):  # bob's page hears of it live (files_updated)
        await expect(listed(page, "data/sales.csv").locator("a.file-download")).to_have_text("data/sales.csv")
        await expect(listed(page, "data/sales.csv").locator(".file-meta")).to_have_text(f"{len(SALES)} bytes · v1 · alice · just now")
    await alice.click("#run-all")
    await expect(output(alice)).to_have_text("42")
    await expect(output(bob)).to_have_text("42")


async def test_a_new_version_dropped_on_another_page_reruns_the_cells_that_read_it(open_page, notebook, users):
    await make_cells(notebook, READ_SALES, "1 + 1")  # first: add_file wakes the kernel, which loads the cells then
    await add_file(notebook, users["alice"], "data/sales.csv", SALES)
    alice, bob = await open_page("alice"), await open_page("bob")
    await alice.click("#run-all")
    await expect(output(alice)).to_have_text("42")
    await expect(cells(alice).nth(1).locator(".output-text")).to_have_text("2")
    runs_of_the_other_cell = await alice.evaluate("""() => {
      window.otherRuns = 0;
      document.getElementById("notebook").addEventListener("notebook:event", ({detail}) => {
        if (detail.type === "cell_status" && detail.status === "running" && detail.cellId === document.querySelectorAll("#cells .cell.live")[1].dataset.cellId) window.otherRuns += 1;
      });
      return window.otherRuns;
    }""")
    await bob.fill("#files .files-folder", "data")
    assert await bob.evaluate(DROP, [[["sales.csv", SALES_V2]]]) is True  # highlighted while over the zone
    await expect(bob.locator('#files .file-upload[data-name="data/sales.csv"]')).to_have_attribute("data-state", "done")
    # alice did nothing: the server reran the cell that reads the file, and only that one.
    await expect(output(alice)).to_have_text("100")
    for page in (alice, bob):
        await expect(listed(page, "data/sales.csv").locator(".file-meta")).to_have_text(re.compile(r" · v2 · bob · just now$"))
    assert await alice.evaluate("() => window.otherRuns") == runs_of_the_other_cell == 0


async def test_an_empty_file_is_refused_on_the_page_and_a_bad_name_by_the_server(open_page, notebook):
    alice = await open_page("alice")
    posts = []
    alice.on("request", lambda request: posts.append(request.url) if request.method == "POST" and "/files/" in request.url else None)
    await choose_files(alice, ("empty.csv", ""))
    refused = alice.locator('#files .file-upload[data-name="empty.csv"]')
    await expect(refused).to_have_attribute("data-state", "failed")
    await expect(refused.locator(".file-upload-error")).to_have_text("empty.csv is empty (0 bytes): nothing was sent.")
    await expect(refused.locator(".file-upload-error")).to_have_attribute("role", "alert")
    assert posts == []  # refused before sending
    await choose_files(alice, ("x.csv", SALES), folder="../x")
    bad = alice.locator('#files .file-upload[data-name="../x/x.csv"]')
    await expect(bad).to_have_attribute("data-state", "failed")
    await expect(bad.locator(".file-upload-error")).to_contain_text("is not a plain path")  # the server's sentence
    assert len(posts) == 1
    await expect(alice.locator("#files .file")).to_have_count(0)
    await refused.locator(".file-upload-dismiss").click()
    await expect(refused).to_have_count(0)
    await expect(bad).to_have_count(1)


async def test_delete_then_restore_and_rename_from_the_page(open_page, notebook, users):
    await make_cells(notebook, READ_SALES)
    await add_file(notebook, users["bob"], "data/sales.csv", SALES)
    alice, bob = await open_page("alice"), await open_page("bob")
    await alice.click("#run-all")
    await expect(output(alice)).to_have_text("42")

    await listed(alice, "data/sales.csv").locator(".file-delete").click()
    for page in (alice, bob):
        await expect(listed(page, "data/sales.csv")).to_have_count(0)
    deleted = alice.locator('#files .files-deleted[data-path="data/sales.csv"]')
    await expect(deleted).to_contain_text("Deleted data/sales.csv")
    await expect(bob.locator("#files .files-deleted")).to_have_count(0)  # only on the page that deleted it
    # The cell that reads it fails, naming the file, and runs again when it is back.
    await expect(cells(alice).first.locator(".cell-error")).to_contain_text("data/sales.csv")
    await deleted.locator(".file-restore").click()
    for page in (alice, bob):
        await expect(listed(page, "data/sales.csv").locator(".file-meta")).to_have_text(re.compile(r"^\d+ bytes · v1 · bob · "))
    await expect(deleted).to_have_count(0)
    await expect(output(alice)).to_have_text("42")

    # Rename inline: Escape cancels, Enter saves.
    item = listed(alice, "data/sales.csv")
    await item.locator(".file-rename").click()
    field = alice.locator("#files .file-rename-input")
    await expect(field).to_be_focused()
    await expect(field).to_have_value("data/sales.csv")
    await field.press("Escape")
    await expect(field).to_have_count(0)
    await expect(item.locator(".file-rename")).to_be_focused()
    await item.locator(".file-rename").click()
    await field.fill("data/sales-2024.csv")
    await field.press("Enter")
    for page in (alice, bob):
        await expect(listed(page, "data/sales-2024.csv").locator(".file-meta")).to_have_text(re.compile(r" · v1 · alice · just now$"))
        await expect(listed(page, "data/sales.csv")).to_have_count(0)
    # A name the server refuses says why and keeps the field to correct it.
    await listed(alice, "data/sales-2024.csv").locator(".file-rename").click()
    await field.fill("/etc/passwd")
    await field.press("Enter")
    await expect(alice.locator("#files .files-error")).to_contain_text("absolute path")
    await expect(field).to_be_enabled()
    await expect(field).to_have_value("/etc/passwd")


async def test_a_viewer_gets_the_list_and_downloads_but_no_controls(open_page, new_context, daphne, notebook, users):
    await add_file(notebook, users["alice"], "data/sales.csv", SALES)
    carol = await open_page("carol")
    link = listed(carol, "data/sales.csv").locator("a.file-download")
    await expect(link).to_have_text("data/sales.csv")
    await expect(listed(carol, "data/sales.csv").locator(".file-meta")).to_contain_text(f"{len(SALES)} bytes · v1 · alice")
    await expect(carol.locator("#files .files-drop, #files input, #files button")).to_have_count(0)
    response = await carol.request.get(daphne + await link.get_attribute("href"))
    assert response.status == 200
    assert await response.body() == SALES.encode()
    assert response.headers["content-disposition"].startswith("attachment")

    # Without JavaScript the server-rendered card lists the same file with the same link.
    page = await (await new_context(java_script_enabled=False)).new_page()
    await log_in(page, daphne, "carol")
    await page.goto(f"{daphne}/notebooks/{notebook.pk}/")
    still = listed(page, "data/sales.csv")
    await expect(still.locator("a.file-download")).to_have_attribute("href", await link.get_attribute("href"))
    await expect(still.locator(".file-meta")).to_contain_text("· v1 · alice ·")
