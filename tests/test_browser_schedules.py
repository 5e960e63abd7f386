"""The Schedules page in Chromium (schedule_views.py, docs/api.md#schedules): an editor adds a
schedule through its form, the time zone starting as the browser's, and sees it listed with its
next run times."""
from channels.db import database_sync_to_async
from playwright.async_api import expect

from notebooks_app.models import NotebookSchedule
from tests.async_pages import BROWSER_MODULE, TIMEOUT_MS, chromium, daphne, log_in, new_context, watch_errors  # noqa: F401 (fixtures)
from tests.test_api_runs import slider_cell

pytestmark = BROWSER_MODULE
expect.set_options(timeout=TIMEOUT_MS)


async def test_an_editor_adds_a_schedule_through_the_form_and_sees_its_next_runs(new_context, daphne, notebook):
    await database_sync_to_async(slider_cell)(notebook)
    page = watch_errors(await (await new_context(timezone_id="Asia/Tokyo")).new_page())
    await log_in(page, daphne, "bob")
    await page.goto(f"{daphne}/notebooks/{notebook.pk}/schedules/")
    form = page.locator("#add-schedule form")
    await expect(form.locator("input[name=timezone]")).to_have_value("Asia/Tokyo")  # the browser's, not UTC
    await form.locator("input[name=name]").fill("weekday report")
    await form.locator("input[name=cron]").fill("30 6 * * 1-5")
    await form.locator("input[name=param_threshold]").fill("40")
    await form.locator("button[type=submit]").click()

    await expect(page.locator(".flash")).to_contain_text("Added the schedule “weekday report”: next run")
    row = page.locator("tr.schedule", has_text="weekday report")
    await expect(row.locator("time.next-run")).to_have_count(3)
    await expect(row.locator("time.next-run").first).to_contain_text("06:30 JST")
    await expect(row).to_contain_text("threshold = 40")
    schedule = await database_sync_to_async(NotebookSchedule.objects.select_related("owner").get)()
    assert (schedule.timezone, schedule.parameters, schedule.owner.username) == ("Asia/Tokyo", {"threshold": 40}, "bob")
