"""The jobs page against the live scheduler: run now and watch the run arrive in the
feed and the history chart, pause and resume."""

from __future__ import annotations

import pytest

from tests.console.pixels import count_colour, decode
from tests.console.support import signed_in

SUCCEEDED_GREEN = "#2e7d32"


@pytest.fixture(scope="module")
def services():
    return ("scheduler", "batch", "rules", "tracking")


pytestmark = pytest.mark.timeout(180)


async def test_run_now_shows_the_run_in_the_live_feed_and_the_history_chart(browser, suite, screenshots):
    page = await signed_in(browser, suite)
    await page.goto(f"{suite.console}#/jobs")
    card = page.locator('article.job[data-job="orchestrate-batches"]')
    await card.locator(".summary .stat").first.wait_for()
    await page.locator(".badge.live", has_text="live").wait_for()
    columns_before = await card.locator("rect.column").count()

    await card.get_by_role("button", name="Run now").click()
    feed_item = page.locator(
        '.feed li[data-status="JOB_RUN_STATUS_SUCCEEDED"]', has_text="orchestrate-batches"
    ).filter(has_text="manual")
    await feed_item.first.wait_for(timeout=15000)
    await card.locator("rect.column").nth(columns_before).wait_for()
    assert await card.locator(".facts").get_by_text("succeeded").count() == 1
    assert "runs" in await card.locator(".summary").inner_text()

    await page.screenshot(path=screenshots / "jobs.png", full_page=True)
    chart = decode(await card.get_by_role("img", name="Duration of the last").screenshot(path=screenshots / "jobs-history.png"))
    assert count_colour(chart, SUCCEEDED_GREEN, tolerance=8) > 0
    assert page.errors == []
    await page.context.close()


async def test_pause_and_resume_change_the_schedule_shown_and_stored(browser, suite):
    page = await signed_in(browser, suite)
    await page.goto(f"{suite.console}#/jobs")
    card = page.locator('article.job[data-job="aggregate-popularity"]')
    await card.get_by_role("button", name="Pause").click()
    await card.locator(".badge", has_text="paused").wait_for()
    assert "none (paused)" in await card.locator(".facts").inner_text()
    async with suite.http("admin") as admin:
        assert (await admin.get("/v1/jobs/aggregate-popularity")).json()["job"]["paused"] is True
    await card.get_by_role("button", name="Resume").click()
    await card.locator(".badge", has_text="scheduled").wait_for()
    async with suite.http("admin") as admin:
        job = (await admin.get("/v1/jobs/aggregate-popularity")).json()["job"]
    assert not job.get("paused") and job["nextRunTime"]
    await page.context.close()


async def test_run_now_refreshes_the_cards_last_run_and_run_count(browser, suite):
    page = await signed_in(browser, suite)
    await page.goto(f"{suite.console}#/jobs")
    card = page.locator('article.job[data-job="purge-rules-data"]')
    await card.locator(".summary .stat").first.wait_for()
    await card.get_by_role("button", name="Run now").click()
    await card.locator(".facts .badge", has_text="succeeded").wait_for(timeout=15000)
    async with suite.http("admin") as admin:
        runs = (await admin.get("/v1/jobRuns", params={"jobName": "purge-rules-data"})).json()["runs"]
    assert runs[0]["status"] == "JOB_RUN_STATUS_SUCCEEDED"
    await card.locator(f'.facts time[datetime="{runs[0]["startTime"]}"]').wait_for()
    await card.locator(".summary", has_text=f"{len(runs)} runs").wait_for()
    assert "never" not in await card.locator(".facts").inner_text()
    await page.context.close()


async def test_a_job_that_never_ran_says_so_instead_of_drawing_empty_axes(browser, suite):
    async with suite.http("admin") as admin:
        names = [job["jobName"] for job in (await admin.get("/v1/jobs")).json()["jobs"]]
        idle = [n for n in names if not (await admin.get("/v1/jobRuns", params={"jobName": n})).json().get("runs")]
    assert idle, "every job has run: nothing to look at"
    page = await signed_in(browser, suite)
    await page.goto(f"{suite.console}#/jobs")
    card = page.locator(f'article.job[data-job="{idle[0]}"]')
    await card.locator(".history", has_text="No runs yet.").wait_for()
    assert await card.locator(".history svg").count() == 0
    await page.context.close()


PAGES = ("batches", "rules", "rules/new", "jobs", "engagement")


async def test_every_page_fits_a_phone_and_labels_every_control(browser, suite, screenshots):
    page = await signed_in(browser, suite, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    for name in PAGES:
        await page.goto(f"{suite.console}#/{name}")
        await page.locator("main h1").wait_for()
        await page.wait_for_function("() => !document.querySelector('main').textContent.includes('Loading…')")
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390, name
        unlabelled = await page.evaluate(
            """[...document.querySelectorAll('main input, main select, main textarea, main button')]
                .filter((el) => !(el.labels?.length || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby')
                                  || (el.tagName === 'BUTTON' && el.textContent.trim())))
                .map((el) => el.outerHTML.slice(0, 80))"""
        )
        assert unlabelled == [], name
        await page.screenshot(path=screenshots / f"phone-{name.replace('/', '-')}.png", full_page=True)
    assert page.errors == []
    await page.context.close()
