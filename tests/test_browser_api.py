"""The API's pages in Chromium: Swagger UI at /api/v1/docs draws the API under the pages' CSP
(no violation, no error) and, logged in, its "Try it out" reads a notebook with the session;
the API tokens page makes a token that then works (docs/api.md)."""
import json
import re
import urllib.request

from playwright.async_api import expect

from tests.async_pages import BROWSER_MODULE, TIMEOUT_MS, chromium, daphne, log_in, new_context, watch_errors  # noqa: F401 (fixtures)

pytestmark = BROWSER_MODULE
expect.set_options(timeout=TIMEOUT_MS)


async def test_swagger_ui_draws_the_api_under_the_csp_and_tries_it_with_the_session(new_context, daphne, notebook):
    page = watch_errors(await (await new_context()).new_page())
    violations = []
    page.on("console", lambda message: violations.append(message.text) if "Content Security Policy" in message.text else None)
    await log_in(page, daphne, "alice")
    await page.goto(f"{daphne}/api/v1/docs")
    operation = page.locator("#operations-notebooks-notebooks_retrieve")
    await expect(operation).to_be_visible()
    await operation.locator(".opblock-summary").click()
    await operation.locator("button.try-out__btn").click()
    await operation.locator("input[placeholder='notebook_id']").fill(str(notebook.pk))
    await operation.locator("button.execute").click()
    body = operation.locator(".responses-wrapper .live-responses-table .response-col_description pre").first
    await expect(body).to_contain_text("Shared analysis")
    assert violations == []


async def test_the_tokens_page_makes_a_token_that_works(new_context, daphne):
    page = watch_errors(await (await new_context()).new_page())
    await log_in(page, daphne, "bob")
    await page.click("text=API tokens")
    await page.fill("input[name=name]", "laptop")
    await page.check("input[name=scopes][value=read]")
    await page.click("button:has-text('Create token')")
    token = await page.locator("#new-token input").input_value()
    assert re.fullmatch(r"nbk_[A-Za-z0-9_-]{43}", token)
    request = urllib.request.Request(f"{daphne}/api/v1/notebooks", headers={"Authorization": f"Bearer {token}"})
    assert json.load(urllib.request.urlopen(request))["count"] == 0
