"""The rules pages against the live rules service: toggling, validation shown where it
belongs, the dry-run trace and the execution log."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from tests.console.pixels import count_colour, decode
from tests.console.support import eventually, signed_in

VIOLATION_BACKGROUND = "#fde4e4"


@pytest.fixture(scope="module")
def services():
    return ("rules",)


pytestmark = pytest.mark.timeout(180)


async def create_rule(suite, name: str, **fields) -> dict:
    rule = {
        "name": name,
        "type": "RULE_TYPE_NOTIFICATION",
        "active": True,
        "priority": 50,
        "eventTypes": ["batch.confirmed"],
        "conditions": {"all": [{"fact": "batch.fill_percentage", "operator": "greater_than_inclusive", "value": 75}]},
        "actions": [{
            "type": "ACTION_TYPE_SEND_EMAIL",
            "params": {"recipient": "ops@loom.example", "subject": "Batch {{batch.id}}", "body": "confirmed"},
        }],
        **fields,
    }
    async with suite.http("admin") as admin:
        reply = await admin.post("/v1/rules", json={"requestId": str(uuid.uuid4()), "rule": rule})
        assert reply.status_code == 200, reply.text
        return reply.json()["rule"]


async def rule_now(suite, rule_id: str) -> dict:
    async with suite.http("admin") as admin:
        return (await admin.get(f"/v1/rules/{rule_id}")).json()["rule"]


async def test_the_active_switch_deactivates_a_rule_as_a_new_version(browser, suite, screenshots):
    rule = await create_rule(suite, f"Mail on confirm {uuid.uuid4().hex[:6]}")
    page = await signed_in(browser, suite)
    await page.goto(f"{suite.console}#/rules")
    switch = page.get_by_role("switch", name=f"Active: {rule['name']}")
    assert await switch.is_checked()
    await page.screenshot(path=screenshots / "rules.png", full_page=True)
    await switch.click()
    await page.get_by_role("status").filter(has_text=f"{rule['name']} is now inactive").wait_for()
    after = await rule_now(suite, rule["ruleId"])
    assert after["active"] is False and after["version"] == rule["version"] + 1
    await page.reload()
    assert not await page.get_by_role("switch", name=f"Active: {rule['name']}").is_checked()
    await page.context.close()


async def test_saving_a_bad_rule_shows_each_violation_next_to_its_condition_and_action(browser, suite, screenshots):
    page = await signed_in(browser, suite)
    await page.goto(f"{suite.console}#/rules/new")
    name = f"Broken {uuid.uuid4().hex[:6]}"
    await page.get_by_label("Name").fill(name)
    await page.locator("details.advanced summary").click()
    await page.get_by_label("Conditions (JSON)").fill(
        '{"all": [{"fact": "batch.fill_percentage", "operator": "greater_than", "value": 75},'
        ' {"fact": "batch.category", "operator": "roughly", "value": "t_shirts"}]}'
    )
    await page.get_by_label("Action 1 subject").fill("")
    await page.get_by_role("button", name="Create rule").click()

    bad_condition = page.locator('.builder li[data-field="conditions.all.1"]')
    await bad_condition.locator(":scope > .violation").filter(has_text="unknown operator 'roughly'").wait_for()
    assert await bad_condition.get_by_label("Conditions, condition 2: operator").get_attribute("aria-invalid") == "true"
    assert await page.locator('.builder li[data-field="conditions.all.0"] > .violation').inner_text() == ""
    subject = page.locator('.action-list [data-field="actions.0.params.subject"]')
    assert "required" in await subject.locator(".violation").inner_text()
    assert await page.get_by_label("Action 1 subject").get_attribute("aria-invalid") == "true"
    assert await page.get_by_label("Name").get_attribute("aria-invalid") is None
    async with suite.http("admin") as admin:
        names = [r["name"] for r in (await admin.get("/v1/rules")).json().get("rules", [])]
    assert name not in names
    await page.screenshot(path=screenshots / "rule-violations.png", full_page=True)
    highlighted = decode(await bad_condition.screenshot(path=screenshots / "rule-violation-condition.png"))
    assert count_colour(highlighted, VIOLATION_BACKGROUND, tolerance=6) > highlighted.width * highlighted.height // 3
    await page.context.close()


async def test_a_new_rule_is_created_from_the_form(browser, suite):
    page = await signed_in(browser, suite)
    await page.goto(f"{suite.console}#/rules/new")
    name = f"Created in the console {uuid.uuid4().hex[:6]}"
    await page.get_by_label("Name").fill(name)
    await page.get_by_label("Priority", exact=True).fill("77")
    await page.get_by_role("button", name="Create rule").click()
    await page.get_by_role("heading", name=f"Rule: {name}").wait_for()
    rule_id = page.url.rsplit("/", 1)[-1]
    saved = await rule_now(suite, rule_id)
    assert saved["name"] == name and saved["priority"] == 77 and saved["version"] == 1
    await page.context.close()


async def test_the_dry_run_traces_each_condition_with_its_actual_value(browser, suite, screenshots):
    rule = await create_rule(suite, f"Nearly full {uuid.uuid4().hex[:6]}", priority=900)
    page = await signed_in(browser, suite)
    await page.goto(f"{suite.console}#/rules")
    await page.get_by_label("Event (JSON: type, source, data)").fill(
        '{"type": "batch.confirmed", "source": "batch", "data": {"batch": {"id": "b-1", "fill_percentage": 82.5}}}'
    )
    await page.get_by_role("button", name="Evaluate (dry run)").click()
    trace = page.locator(f'.rule-trace[data-rule-id="{rule["ruleId"]}"]')
    await trace.wait_for()
    assert "matched" in await trace.get_attribute("class")
    leaf = trace.locator(".condition-tree li", has_text="batch.fill_percentage").last
    assert await leaf.get_attribute("data-passed") == "true"
    assert await leaf.locator(".actual").inner_text() == "82.5"
    assert "ops@loom.example" in await trace.inner_text()
    await page.screenshot(path=screenshots / "rules-dry-run.png", full_page=True)
    await page.context.close()


async def test_the_execution_log_shows_a_delivered_event_with_its_action_results(browser, suite, screenshots):
    rule = await create_rule(suite, f"Logged {uuid.uuid4().hex[:6]}", priority=800)
    event = {
        "eventId": str(uuid.uuid4()),
        "type": "batch.confirmed",
        "source": "batch",
        "occurredTime": datetime.now(UTC).isoformat(),
        "data": {"batch": {"id": "b-2", "fill_percentage": 90}},
    }
    async with suite.http("service", "service:batch") as service:
        reply = await service.post("/v1/events:deliver", json={"events": [event]})
        assert reply.status_code == 200, reply.text

    async def executed() -> bool:
        async with suite.http("admin") as admin:
            found = (await admin.get("/v1/executions", params={"ruleId": rule["ruleId"]})).json().get("executions", [])
        return bool(found) and found[0]["status"] not in ("EXECUTION_STATUS_RUNNING", None)

    await eventually(executed, what="the rule's execution")
    page = await signed_in(browser, suite)
    await page.goto(f"{suite.console}#/rules/{rule['ruleId']}")
    row = page.locator("table.executions tbody tr").filter(has_text=event["eventId"][:8])
    await row.wait_for()
    await row.locator("summary").click()
    assert "send email" in await row.inner_text()
    await page.screenshot(path=screenshots / "rule-execution-log.png", full_page=True)
    await page.context.close()


async def test_editing_a_rule_saves_a_new_version(browser, suite):
    rule = await create_rule(suite, f"Edited {uuid.uuid4().hex[:6]}")
    page = await signed_in(browser, suite)
    await page.goto(f"{suite.console}#/rules/{rule['ruleId']}")
    await page.get_by_label("Priority", exact=True).fill("321")
    await page.get_by_role("button", name="Save new version").click()
    await page.get_by_role("status").filter(has_text="version 2").wait_for()
    saved = await rule_now(suite, rule["ruleId"])
    assert saved["priority"] == 321 and saved["version"] == 2 and saved["name"] == rule["name"]
    await page.context.close()


async def test_a_rule_that_never_ran_says_never_in_the_list(browser, suite):
    rule = await create_rule(suite, f"Idle {uuid.uuid4().hex[:6]}", priority=5)
    # What the gateway sends for "no execution yet" is the enum's zero value, not nothing.
    assert rule["lastExecutionStatus"] == "EXECUTION_STATUS_UNSPECIFIED"
    page = await signed_in(browser, suite)
    await page.goto(f"{suite.console}#/rules")
    cell = page.locator(f'table.rules tr[data-rule-id="{rule["ruleId"]}"] td.last-execution')
    assert (await cell.inner_text()).strip() == "never"
    await page.context.close()


async def test_a_toast_goes_away_when_the_viewer_moves_to_another_page(browser, suite):
    rule = await create_rule(suite, f"Toasted {uuid.uuid4().hex[:6]}")
    page = await signed_in(browser, suite)
    await page.goto(f"{suite.console}#/rules")
    await page.get_by_role("switch", name=f"Active: {rule['name']}").click()
    toast = page.locator("#toast")
    await toast.filter(has_text="is now inactive").wait_for(state="visible")
    await page.get_by_role("link", name="New rule").click()
    await page.get_by_role("heading", name="New rule").wait_for()
    await toast.wait_for(state="hidden", timeout=1000)
    await page.context.close()


async def test_a_toast_shown_by_a_save_stays_on_the_page_the_save_leads_to(browser, suite):
    page = await signed_in(browser, suite)
    await page.goto(f"{suite.console}#/rules/new")
    name = f"Kept toast {uuid.uuid4().hex[:6]}"
    await page.get_by_label("Name").fill(name)
    await page.get_by_role("button", name="Create rule").click()
    await page.get_by_role("heading", name=f"Rule: {name}").wait_for()
    await page.locator("#toast").filter(has_text=f"Saved {name}").wait_for(state="visible")
    await page.context.close()
