"""A rule's past in the console: replaying it (or the draft in the editor) over stored events,
its version history with a readable diff, and rollback."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.console.history_support import (
    big_orders,
    dry_run_matches,
    replay_over_api,
    run_live,
    tagged_rule,
    update_rule,
)
from tests.console.support import signed_in

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def services():
    return ("rules",)


async def stat(page, key: str) -> int:
    return int((await page.locator(f'.replay-summary [data-stat="{key}"] .stat-value').inner_text()).replace(",", ""))


async def test_replaying_a_rule_shows_the_counts_the_api_returns(browser, suite, screenshots):
    tag, rule = await tagged_rule(suite, "replay")
    await run_live(suite, tag, [5, 20, 30, 8, 50])
    page = await signed_in(browser, suite)
    await page.goto(f"{suite.console}#/rules/{rule['ruleId']}")
    await page.get_by_label("Period: the last N days").fill("7")
    await page.get_by_role("button", name="Replay", exact=True).click()
    sentence = page.locator(".replay-sentence")
    await sentence.wait_for()
    results, summary = await replay_over_api(suite, {"ruleId": rule["ruleId"]})

    assert await sentence.inner_text() == "Version 1 would have fired 3 times in the last week, as many as the live rule (3)."
    shown = {key: await stat(page, key) for key in ("scanned", "would", "live", "same", "added", "removed", "changed")}
    assert shown == {
        "scanned": summary["eventsScanned"], "would": summary["wouldFire"], "live": summary["liveFired"],
        "same": summary["same"], "added": summary.get("added", 0), "removed": summary.get("removed", 0),
        "changed": summary.get("changed", 0),
    }
    rows = page.locator("table.replay-results tbody tr")
    assert await rows.count() == len(results) == 3
    first = rows.first
    assert await first.get_attribute("data-diff") == "same as live"
    assert await first.locator("td.would").inner_text() == "yes"
    assert "Order o-" in await first.locator('dd[data-param="subject"]').inner_text()  # rendered, not the template
    await page.screenshot(path=screenshots / "rule-replay.png", full_page=True)
    assert page.errors == []
    await page.context.close()


async def test_replaying_the_draft_in_the_editor_compares_it_with_the_live_rule(browser, suite):
    tag, rule = await tagged_rule(suite, "draft")
    await run_live(suite, tag, [5, 20, 30, 8, 50])
    page = await signed_in(browser, suite)
    await page.goto(f"{suite.console}#/rules/{rule['ruleId']}")
    await page.locator("details.advanced summary").click()
    await page.get_by_label("Conditions (JSON)").fill(json.dumps(big_orders(tag, 25)))
    await page.get_by_label("the form as it stands (a draft)").check()
    await page.get_by_role("button", name="Replay", exact=True).click()
    await page.locator(".replay-sentence").wait_for()
    draft = {**{k: rule[k] for k in ("name", "type", "eventTypes", "actions")}, "conditions": big_orders(tag, 25)}
    _, summary = await replay_over_api(suite, {"ruleId": rule["ruleId"], "draft": draft})

    assert (summary["wouldFire"], summary["liveFired"], summary["removed"]) == (2, 3, 1)
    assert await page.locator(".replay-sentence").inner_text() == (
        "This draft would have fired 2 times in the last week, 1 fewer than the live rule (3)."
    )
    removed = page.locator('table.replay-results tbody tr[data-diff="removed"]')
    assert await removed.count() == 1
    assert await removed.locator("td.would").inner_text() == "no"
    assert "The live rule ran:" in await removed.inner_text()
    assert page.errors == []
    await page.context.close()


async def test_an_earlier_version_opened_from_the_history_replays_against_the_live_rule(browser, suite):
    tag, rule = await tagged_rule(suite, "earlier")
    await run_live(suite, tag, [5, 20, 30, 8, 50])  # live: version 1, more than 10
    await update_rule(suite, rule["ruleId"], conditions=big_orders(tag, 40))  # now only the 50
    await run_live(suite, tag, [45, 12])
    page = await signed_in(browser, suite)
    await page.goto(f"{suite.console}#/rules/{rule['ruleId']}/versions")
    await page.get_by_role("link", name="Replay version 1 over stored events").click()
    assert await page.get_by_label("an earlier version:").is_checked()
    assert await page.get_by_label("Earlier version number").input_value() == "1"
    await page.get_by_role("button", name="Replay", exact=True).click()
    await page.locator(".replay-sentence").wait_for()
    _, summary = await replay_over_api(suite, {"ruleId": rule["ruleId"], "version": 1})

    # Version 1 fires on 20, 30, 50, 45 and 12; the live rule ran 20, 30, 50 (as version 1) and 45 (as version 2).
    assert (summary["wouldFire"], summary["liveFired"], summary["added"]) == (5, 4, 1)
    assert await page.locator(".replay-sentence").inner_text() == (
        "Version 1 would have fired 5 times in the last week, 1 more than the live rule (4)."
    )
    assert await page.locator('table.replay-results tbody tr[data-diff="added"]').count() == 1
    await page.context.close()


async def test_a_new_rule_replays_as_a_draft_with_no_live_rule_to_compare(browser, suite):
    tag = f"new_{uuid.uuid4().hex[:8]}"
    await run_live(suite, tag, [5, 20, 30])
    page = await signed_in(browser, suite)
    await page.goto(f"{suite.console}#/rules/new")
    await page.get_by_label("Name").fill(f"Not saved {tag}")
    await page.get_by_label("batch.confirmed").uncheck()
    await page.get_by_label("order.placed", exact=True).check()
    await page.locator("details.advanced summary").click()
    await page.get_by_label("Conditions (JSON)").fill(json.dumps(big_orders(tag, 10)))
    await page.get_by_role("button", name="Replay", exact=True).click()
    await page.locator(".replay-sentence").wait_for()

    assert await page.locator(".replay-sentence").inner_text() == "This draft would have fired 2 times in the last week."
    columns = await page.locator("table.replay-results thead th").all_text_contents()
    assert columns == ["Event", "Would match", "Actions it would run"]  # no live rule to compare with
    assert await page.locator("table.replay-results tbody tr").count() == 2
    async with suite.http("admin") as admin:
        assert not [r for r in (await admin.get("/v1/rules")).json().get("rules", []) if tag in r["name"]]  # nothing saved
    assert page.errors == []
    await page.context.close()


async def test_a_draft_the_service_refuses_shows_the_violation_next_to_its_field(browser, suite):
    _, rule = await tagged_rule(suite, "refused")
    page = await signed_in(browser, suite)
    await page.goto(f"{suite.console}#/rules/{rule['ruleId']}")
    await page.get_by_label("Name").fill("   ")
    await page.get_by_label("the form as it stands (a draft)").check()
    await page.get_by_role("button", name="Replay", exact=True).click()
    await page.locator(".replay .error").wait_for()
    name = page.get_by_label("Name")
    assert await name.get_attribute("aria-invalid") == "true"
    assert await page.locator('[data-field="name"] .violation').inner_text() != ""
    assert await name.evaluate("el => el === document.activeElement")
    await page.context.close()


async def test_the_diff_of_two_versions_shows_the_changed_condition(browser, suite, screenshots):
    tag, rule = await tagged_rule(suite, "diff")
    await update_rule(suite, rule["ruleId"], conditions=big_orders(tag, 40))
    await update_rule(suite, rule["ruleId"], priority=99)
    page = await signed_in(browser, suite)
    await page.goto(f"{suite.console}#/rules/{rule['ruleId']}/versions")
    await page.get_by_label("From").select_option("1")
    await page.get_by_label("to", exact=True).select_option("2")
    await page.locator(".changes").filter(has_text="Version 1 → version 2: 1 change, in conditions.").wait_for()
    change = page.locator('.change-list li[data-path="conditions.all[1].value"]')
    assert await change.get_attribute("data-kind") == "changed"
    assert (await change.locator("del").text_content(), await change.locator("ins").text_content()) == ("was 10", "now 40")
    assert await page.locator(".change-group").evaluate_all("gs => gs.map(g => g.dataset.section)") == ["conditions"]
    removed = page.locator("table.line-diff tr.removed")
    added = page.locator("table.line-diff tr.added")
    assert [await removed.count(), await added.count()] == [1, 1]
    assert (await removed.inner_text()).endswith("order.quantity greater than 10")
    assert await added.get_attribute("data-section") == "conditions"
    await page.screenshot(path=screenshots / "rule-versions-unified.png", full_page=True)

    await page.get_by_label("side by side").check()
    changed = page.locator("table.line-diff.side-by-side tr.changed")
    await changed.wait_for()
    cells = await changed.locator("td.text").all_inner_texts()
    assert [c.strip() for c in cells] == ["order.quantity greater than 10", "order.quantity greater than 40"]
    await page.screenshot(path=screenshots / "rule-versions-side-by-side.png", full_page=True)
    assert page.errors == []
    await page.context.close()


async def test_rollback_makes_a_new_version_that_behaves_as_the_old_one(browser, suite, screenshots):
    tag, rule = await tagged_rule(suite, "rollback")
    await update_rule(suite, rule["ruleId"], conditions=big_orders(tag, 100))
    order = {"order": {"id": "o-1", "category": tag, "quantity": 50}}
    assert not await dry_run_matches(suite, rule["ruleId"], order)  # version 2 wants more than 100

    page = await signed_in(browser, suite)
    await page.goto(f"{suite.console}#/rules/{rule['ruleId']}/versions")
    await page.get_by_role("button", name="Roll back to version 1").click()
    dialog = page.get_by_role("dialog", name="Roll back to version 1?")
    await dialog.wait_for()
    await page.screenshot(path=screenshots / "rule-rollback-confirm.png")
    await dialog.get_by_role("button", name="Roll back").click()
    await page.locator(".notice").filter(has_text="Version 3 saved: the definition of version 1.").wait_for()
    assert await page.locator("table.versions tr.new").get_attribute("data-version") == "3"

    async with suite.http("admin") as admin:
        now = (await admin.get(f"/v1/rules/{rule['ruleId']}")).json()["rule"]
        same = (await admin.get(f"/v1/rules/{rule['ruleId']}/versions:diff", params={"fromVersion": 1, "toVersion": 3})).json()
    assert now["version"] == 3 and now["conditions"] == rule["conditions"]
    assert same.get("changes", []) == []
    assert await dry_run_matches(suite, rule["ruleId"], order)  # behaves as version 1 again
    # The page shows what the rollback changed: version 2 -> 3 puts the old value back.
    change = page.locator('.change-list li[data-path="conditions.all[1].value"]')
    assert (await change.locator("del").text_content(), await change.locator("ins").text_content()) == ("was 100", "now 10")
    await page.screenshot(path=screenshots / "rule-rolled-back.png", full_page=True)
    assert page.errors == []
    await page.context.close()


async def test_cancelling_the_rollback_dialog_changes_nothing(browser, suite):
    tag, rule = await tagged_rule(suite, "kept")
    await update_rule(suite, rule["ruleId"], priority=5)
    page = await signed_in(browser, suite)
    await page.goto(f"{suite.console}#/rules/{rule['ruleId']}/versions")
    opener = page.get_by_role("button", name="Roll back to version 1")
    await opener.click()
    await page.get_by_role("dialog").get_by_role("button", name="Cancel").click()
    await page.get_by_role("dialog").wait_for(state="hidden")
    assert await opener.evaluate("el => el === document.activeElement")
    async with suite.http("admin") as admin:
        assert (await admin.get(f"/v1/rules/{rule['ruleId']}")).json()["rule"]["version"] == 2
    await page.context.close()
