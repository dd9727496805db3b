"""The rule builder against the live rules service: a rule built only by clicking and typing,
saved, read back into the builder unchanged and dry-run against the default sample event;
the advanced view reading the compact form exactly as the service does; action previews."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.console.support import signed_in


@pytest.fixture(scope="module")
def services():
    return ("rules",)


pytestmark = pytest.mark.timeout(180)


async def advanced_json(page) -> object:
    details = page.locator("details.advanced")
    if not await details.get_attribute("open"):
        await details.locator("summary").click()
    return json.loads(await page.get_by_label("Conditions (JSON)").input_value())


async def test_a_rule_built_by_clicking_saves_reloads_unchanged_and_matches_its_sample_event(browser, suite, screenshots):
    page = await signed_in(browser, suite)
    await page.goto(f"{suite.console}#/rules/new")
    name = f"Built by hand {uuid.uuid4().hex[:6]}"
    await page.get_by_label("Name").fill(name)
    await page.get_by_label("batch.confirmed", exact=True).check()

    label = page.get_by_label
    # Condition 1 is offered; make it "fill percentage at least 75".
    await label("Conditions, condition 1: fact", exact=True).select_option("batch.fill_percentage")
    await label("Conditions, condition 1: operator", exact=True).select_option(label="at least")
    await label("Conditions, condition 1: value", exact=True).fill("75")
    # Condition 2: the batch is confirmed (an enum: the value is picked from its options).
    await page.get_by_role("button", name="Add condition to Conditions", exact=True).click()
    await label("Conditions, condition 2: fact", exact=True).select_option("batch.status")
    await label("Conditions, condition 2: value", exact=True).select_option("confirmed")
    # Condition 3: a group that matches when any of its two conditions holds.
    await page.get_by_role("button", name="Add group to Conditions", exact=True).click()
    group = "Conditions, condition 3"
    await label(f"{group}, condition 1: fact", exact=True).select_option("batch.target_quantity")
    await label(f"{group}, condition 1: operator", exact=True).select_option(label="greater than")
    await label(f"{group}, condition 1: value", exact=True).fill("0")
    await page.get_by_role("button", name=f"Add condition to {group}", exact=True).click()
    await label(f"{group}, condition 2: fact", exact=True).select_option("event.type")
    await label(f"{group}, condition 2: value", exact=True).select_option("batch.confirmed")
    # "is one of" keeps the value picked and offers the others as boxes to tick.
    await label(f"{group}, condition 2: operator", exact=True).select_option(label="is one of")
    await page.get_by_role("group", name=f"{group}, condition 2: value").get_by_label("batch.nearing_target").check()
    # Condition 4: "not (current quantity less than 1)".
    await page.get_by_role("button", name="Add condition to Conditions", exact=True).click()
    await label("Conditions, condition 4: fact", exact=True).select_option("batch.current_quantity")
    await label("Conditions, condition 4: operator", exact=True).select_option(label="less than")
    await label("Conditions, condition 4: value", exact=True).fill("1")
    await page.get_by_role("button", name="Negate Conditions, condition 4", exact=True).click()

    # The action: an e-mail whose body gets a placeholder from the picker, previewed live.
    await label("Action 1 recipient").fill("ops@loom.example")
    await label("Action 1 subject").fill("Batch confirmed")
    body = label("Action 1 body")
    await body.fill("Category: ")
    await label("Action 1: insert a placeholder into the last field edited").select_option("batch.category")
    assert await body.input_value() == "Category: {{batch.category}}"
    sample = json.loads(await page.get_by_label("Sample event data (JSON)").input_value())
    preview = page.locator(".action-list .preview [data-param='body']")
    assert await preview.inner_text() == f"Category: {sample['batch']['category']}"

    built = await advanced_json(page)
    assert built == {
        "all": [
            {"fact": "batch.fill_percentage", "operator": "greater_than_inclusive", "value": 75},
            {"fact": "batch.status", "operator": "equal", "value": "confirmed"},
            {"any": [
                {"fact": "batch.target_quantity", "operator": "greater_than", "value": 0},
                {"fact": "event.type", "operator": "in", "value": ["batch.confirmed", "batch.nearing_target"]},
            ]},
            {"not": {"fact": "batch.current_quantity", "operator": "less_than", "value": 1}},
        ]
    }
    await page.screenshot(path=screenshots / "rule-builder.png", full_page=True)
    await page.get_by_role("button", name="Create rule").click()
    await page.get_by_role("heading", name=f"Rule: {name}").wait_for()
    rule_id = page.url.rsplit("/", 1)[-1]
    async with suite.http("admin") as admin:
        saved = (await admin.get(f"/v1/rules/{rule_id}")).json()["rule"]
    assert saved["conditions"] == built
    assert saved["actions"] == [{"type": "ACTION_TYPE_SEND_EMAIL", "params": {
        "recipient": "ops@loom.example", "subject": "Batch confirmed", "body": "Category: {{batch.category}}"}}]

    await page.reload()
    await page.get_by_role("heading", name=f"Rule: {name}").wait_for()
    assert await advanced_json(page) == built
    assert await label(f"{group}: match", exact=True).input_value() == "any"
    assert await label("Conditions, condition 4, negated: operator", exact=True).input_value() == "less_than"
    assert await label("Action 1 body").input_value() == "Category: {{batch.category}}"

    # The dry run starts with the rule's own event type and a sample that fits it.
    assert await page.get_by_label("Event type", exact=True).input_value() == "batch.confirmed"
    await page.get_by_role("button", name="Dry run this rule").click()
    trace = page.locator(f'.sample .rule-trace[data-rule-id="{rule_id}"]')
    await trace.wait_for()
    await page.screenshot(path=screenshots / "rule-dry-run.png", full_page=True)
    assert "matched" in (await trace.get_attribute("class")).split()
    sample = json.loads(await page.get_by_label("Sample event data (JSON)").input_value())
    rendered = trace.locator(".rendered-actions [data-param='body']")
    assert await rendered.inner_text() == f"Category: {sample['batch']['category']}"
    assert page.errors == []
    await page.context.close()


async def test_the_compact_form_typed_in_the_advanced_view_reads_as_the_service_reads_it(browser, suite):
    page = await signed_in(browser, suite)
    await page.goto(f"{suite.console}#/rules/new")
    name = f"Compact {uuid.uuid4().hex[:6]}"
    await page.get_by_label("Name").fill(name)
    await advanced_json(page)
    compact = {
        "order_status": "awaiting_supplier",
        "completion_percentage": "> 75%",
        "supplier_capacity": {"min": 100, "max": 1000},
    }
    await page.get_by_label("Conditions (compact form)").fill(json.dumps(compact))
    shown = json.loads(await page.get_by_label("Conditions (JSON)").input_value())
    # The builder shows the rows the compact form means.
    assert await page.get_by_label("Conditions, condition 1: fact", exact=True).input_value() == "batch.fill_percentage"
    async with suite.http("admin") as admin:
        reply = await admin.post("/v1/rules", json={"requestId": str(uuid.uuid4()), "rule": {
            "name": f"{name} via API", "type": "RULE_TYPE_NOTIFICATION", "conditions": compact,
            "actions": [{"type": "ACTION_TYPE_TRIGGER_WORKFLOW", "params": {"job": "orchestrate-batches"}}]}})
        assert reply.status_code == 200, reply.text
    assert shown == reply.json()["rule"]["conditions"]
    # A tree that has a compact form shows it, and it reads back to the very same tree.
    await page.get_by_label("Conditions (JSON)").fill(json.dumps(shown))
    again = json.loads(await page.get_by_label("Conditions (compact form)").input_value())
    await page.get_by_label("Conditions (compact form)").fill(json.dumps(again))
    assert json.loads(await page.get_by_label("Conditions (JSON)").input_value()) == shown
    assert page.errors == []
    await page.context.close()


async def test_an_update_status_action_offers_only_statuses_the_entity_can_reach(browser, suite):
    page = await signed_in(browser, suite)
    await page.goto(f"{suite.console}#/rules/new")
    await page.get_by_label("Action 1 type").select_option(label="update status")
    await page.get_by_label("Action 1 entity").select_option("batch")
    options = await page.get_by_label("Action 1 new status").locator("option").all_inner_texts()
    assert options == ["completed (from in_production)", "in_production (from confirmed)"]
    assert await page.get_by_label("Action 1 id").input_value() == "{{batch.id}}"
    await page.context.close()
