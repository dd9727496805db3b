"""axe-core over the rule-history views as they look in use (a finished replay with its table,
a diff of two versions in both layouts, the rollback dialog, the bell's open panel), at
desktop and phone width, with a screenshot of each."""

from __future__ import annotations

import uuid

import pytest

from tests.console.history_support import big_orders, create_rule, notify, run_live, update_rule
from tests.console.support import serious_accessibility_violations, signed_in
from tests.console.test_accessibility import VIEWPORTS

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def services():
    return ("rules",)


@pytest.fixture(scope="module")
async def rule(suite) -> dict:
    """A rule with three versions, live executions and an unread notification for the admins."""
    tag = f"a11y_{uuid.uuid4().hex[:8]}"
    rule = await create_rule(suite, f"Big orders {tag}", conditions=big_orders(tag, 10))
    await run_live(suite, tag, [5, 20, 30, 8, 50])
    await update_rule(suite, rule["ruleId"], conditions=big_orders(tag, 25))
    await update_rule(suite, rule["ruleId"], priority=70, description="Raised above the defaults")
    await notify(suite, role="admin")
    return rule


@pytest.mark.parametrize("width", VIEWPORTS)
async def test_the_history_views_have_no_serious_accessibility_violation(browser, suite, rule, axe_source, screenshots, width):
    page = await signed_in(browser, suite, **VIEWPORTS[width])
    found: dict[str, list[str]] = {}

    await page.goto(f"{suite.console}#/rules/{rule['ruleId']}")
    await page.get_by_role("button", name="Replay", exact=True).click()
    await page.locator("table.replay-results").wait_for()
    await page.locator(".replay").scroll_into_view_if_needed()
    found["replay"] = await serious_accessibility_violations(page, axe_source)
    await page.locator(".replay").screenshot(path=screenshots / f"{width}-rule-replay.png")

    await page.goto(f"{suite.console}#/rules/{rule['ruleId']}/versions?from=1&to=3")
    await page.locator("table.line-diff").wait_for()
    found["versions"] = await serious_accessibility_violations(page, axe_source)
    await page.screenshot(path=screenshots / f"{width}-rule-versions.png", full_page=True)
    await page.get_by_label("side by side").check()
    await page.locator("table.line-diff.side-by-side").wait_for()
    found["versions-side-by-side"] = await serious_accessibility_violations(page, axe_source)
    await page.screenshot(path=screenshots / f"{width}-rule-versions-side-by-side.png", full_page=True)
    await page.get_by_role("button", name="Roll back to version 1").click()
    await page.get_by_role("dialog").wait_for()
    found["rollback-dialog"] = await serious_accessibility_violations(page, axe_source)
    await page.screenshot(path=screenshots / f"{width}-rule-rollback-dialog.png")
    await page.get_by_role("dialog").get_by_role("button", name="Cancel").click()

    await page.locator(".bell-button").click()
    await page.locator(".inbox-list li").first.wait_for()
    found["bell"] = await serious_accessibility_violations(page, axe_source)
    await page.screenshot(path=screenshots / f"{width}-bell.png")

    report = [f"{name}: {problem}" for name, problems in found.items() for problem in problems]
    assert report == [], "\n".join(report)
    assert page.errors == []
    await page.context.close()
