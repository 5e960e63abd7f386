"""A notebook's own packages in Chromium (docs/packages.md, docs/frontend.md "Packages"): an editor
adds one in the Packages panel and every page on the notebook sees the progress, then the list with
its locked version, and the cell that failed to import it runs again and succeeds; a cell's
ModuleNotFoundError offers the package that provides the module, installed only once confirmed;
a package that cannot be installed shows why and changes nothing; a viewer gets no controls.

The packages come from the tests' offline index (tests/package_index.py). Async Playwright with
the shared Daphne and per-module Chromium of tests/async_pages.py.
"""
import re

from playwright.async_api import expect

from tests.async_pages import BROWSER_MODULE, cells, chromium, daphne, make_cells, new_context, open_page  # noqa: F401 (fixtures)

pytestmark = BROWSER_MODULE

# Resolving and installing from the local index takes about a second; the kernel restarts after.
INSTALL_MS = 30_000
expect.set_options(timeout=INSTALL_MS)

# Every text the panel's status line shows (with " [disabled]" while the field is), kept by the
# page itself: a change from the local index can be over before a poll from here would see it.
RECORD_STATUS = """() => {
  const status = document.querySelector("#packages .packages-status");
  const input = document.querySelector("#packages .packages-input");
  window.packageStatuses = [];
  new MutationObserver(() => {
    if (!status.hidden) window.packageStatuses.push(status.textContent + (input?.disabled ? " [disabled]" : ""));
  }).observe(status, {childList: true, characterData: true, subtree: true, attributes: true});
}"""


async def run_all_to(page, *statuses):
    await page.click("#run-all")
    for i, status in enumerate(statuses):
        await expect(cells(page).nth(i).locator(".cell-status")).to_have_text(status)


async def status_was_shown(page, pattern):
    """Wait until the page's status line has shown a text matching `pattern` (a JS regex)."""
    await page.wait_for_function(f"() => (window.packageStatuses || []).some((text) => /{pattern}/.test(text))", timeout=INSTALL_MS)


async def test_an_added_package_installs_for_everyone_and_the_failed_import_runs_again(open_page, notebook):
    await make_cells(notebook, "import nbt_alpha\nnbt_alpha.VALUE")
    alice, carol = await open_page("alice"), await open_page("carol")
    await run_all_to(alice, "error")
    await expect(cells(carol).first.locator(".cell-error")).to_contain_text("No module named 'nbt_alpha'")
    await expect(alice.locator("#packages .packages-empty")).to_be_visible()
    await carol.evaluate(RECORD_STATUS)
    await alice.evaluate(RECORD_STATUS)
    await alice.fill("#packages .packages-input", "nbt-alpha")
    await alice.press("#packages .packages-input", "Enter")
    # Everyone sees who changes what, and how far it is.
    await status_was_shown(carol, r"^alice is adding nbt-alpha: (resolving|downloading|installing|restarting)")
    await status_was_shown(alice, r"^You are adding nbt-alpha: (resolving|downloading|installing|restarting).* \[disabled\]$")
    for page in (alice, carol):
        await expect(page.locator("#packages .package-label")).to_have_text(["nbt-alpha — 1.0"])
        await expect(page.locator("#packages .packages-also")).to_contain_text("nbt-beta 2.0")  # its dependency
        await expect(cells(page).first.locator(".output-text")).to_have_text("'alpha'")
    await expect(alice.locator("#packages .packages-status")).to_have_text("Installed.")
    await expect(alice.locator("#packages .packages-input")).to_be_enabled()
    await expect(alice.locator("#packages .packages-input")).to_have_value("")
    await expect(carol.locator("#packages .packages-status")).to_have_text("Installed (changed by alice).")
    # Read-only for the viewer: the list, no field, no remove buttons.
    await expect(carol.locator("#packages .packages-input, #packages .package-remove")).to_have_count(0)


async def test_a_missing_module_offers_its_package_and_installs_it_once_confirmed(open_page, notebook):
    await make_cells(notebook, "import sklearn\nsklearn.__version__")
    bob = await open_page("bob")
    await run_all_to(bob, "error")
    cell = cells(bob).first
    await expect(cell.locator(".cell-error .error-head")).to_have_text("ModuleNotFoundError: No module named 'sklearn'")
    offer = cell.locator(".package-prompt-offer")
    await expect(offer).to_have_text("Add scikit-learn to this notebook's packages?")
    await offer.click()
    # Nothing is sent before the confirmation, which shows the exact name to install.
    await expect(cell.locator(".package-prompt-name")).to_have_value("scikit-learn")
    await expect(bob.locator("#packages .packages-empty")).to_be_visible()
    await cell.locator(".package-prompt-cancel").click()
    await expect(cell.locator(".package-prompt-name")).to_have_count(0)
    await offer.click()
    await cell.locator(".package-prompt-confirm").click()
    await expect(bob.locator("#packages .package-label")).to_have_text(["scikit-learn — 1.0"])
    await expect(cell.locator(".output-text")).to_have_text("'1.0-test'")
    await expect(cell.locator(".package-prompt")).to_have_count(0)


async def test_a_package_that_cannot_be_installed_shows_why_and_changes_nothing(open_page, notebook):
    await make_cells(notebook, "x = 1\nx")
    alice = await open_page("alice")
    await run_all_to(alice, "success")
    await alice.fill("#packages .packages-input", "nbt-sdist-only")
    await alice.click("#packages .packages-add")
    error = alice.locator("#packages .packages-error")
    await expect(error).to_be_visible()
    await expect(error).to_have_attribute("role", "alert")
    await expect(error).to_have_text(re.compile(r"nbt-sdist-only.*Nothing was changed\.$"))
    await expect(alice.locator("#packages .package")).to_have_count(0)
    await expect(alice.locator("#packages .packages-empty")).to_be_visible()
    # Nothing changed: the kernel kept its state, the field keeps the text to correct it.
    await expect(alice.locator("#packages .packages-input")).to_be_enabled()
    await expect(alice.locator("#packages .packages-input")).to_have_value("nbt-sdist-only")
    await expect(cells(alice).first.locator(".cell-status")).to_have_text("success")
    # An empty field is refused on the page; a request the server refuses says why.
    await alice.fill("#packages .packages-input", "  ")
    await alice.click("#packages .packages-add")
    await expect(error).to_contain_text("Type a package name")
    await alice.fill("#packages .packages-input", "https://example.com/x.whl")
    await alice.click("#packages .packages-add")
    await expect(error).to_contain_text("URL")


async def test_a_viewer_sees_the_packages_without_controls_or_offers(open_page, notebook):
    await make_cells(notebook, "import nbt_gamma")
    alice, carol = await open_page("alice"), await open_page("carol")
    await run_all_to(alice, "error")
    await expect(cells(alice).first.locator(".package-prompt-offer")).to_have_text("Add nbt-gamma to this notebook's packages?")
    await expect(cells(carol).first.locator(".cell-error")).to_contain_text("No module named 'nbt_gamma'")
    await expect(carol.locator("#packages h2")).to_have_text("Packages")
    await expect(carol.locator("#packages .packages-body")).to_have_text("None: the notebook runs on the server's packages.")
    await expect(carol.locator("#packages form, #packages input, #packages button")).to_have_count(0)
    await expect(carol.locator(".package-prompt")).to_have_count(0)
