"""The editor's dry run starts right: the rule's own event type, with the data of the latest
event of that type the rules service received, and the rule dry-run before it is saved."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest

from tests.console.support import signed_in


@pytest.fixture(scope="module")
def services():
    return ("rules",)


pytestmark = pytest.mark.timeout(180)


async def test_the_sample_is_the_latest_stored_event_of_the_rules_type_and_an_unsaved_rule_dry_runs(
    browser, suite, screenshots
):
    batch_id = f"b-{uuid.uuid4().hex[:8]}"
    latest = {"batch": {"id": batch_id, "status": "filling", "category": "hoodies", "fill_percentage": 88}}
    events = [
        {"eventId": str(uuid.uuid4()), "type": "batch.nearing_target", "source": "batch",
         "occurredTime": datetime.now(UTC).isoformat(), "data": data}
        for data in ({"batch": {"id": "older", "fill_percentage": 10}}, latest)
    ]
    async with suite.http("service", "service:batch") as batch:
        for sample in events:  # one by one: "latest" is the one received last
            reply = await batch.post("/v1/events:deliver", json={"events": [sample]})
            assert reply.status_code == 200, reply.text

    page = await signed_in(browser, suite)
    await page.goto(f"{suite.console}#/rules/new")
    await page.get_by_label("Name").fill("Not saved yet")
    await page.get_by_label("batch.confirmed", exact=True).uncheck()
    await page.get_by_label("batch.nearing_target", exact=True).check()
    assert await page.get_by_label("Event type", exact=True).input_value() == "batch.nearing_target"
    area = page.get_by_label("Sample event data (JSON)")
    await page.get_by_text("data of the latest batch.nearing_target event received").wait_for()
    assert json.loads(await area.input_value()) == latest

    await page.get_by_label("Action 1 body").fill("{{batch.category}} at {{batch.fill_percentage}}%")
    await page.get_by_role("button", name="Dry run this rule").click()
    trace = page.locator('.sample .rule-trace[data-rule-id="draft"]')
    await trace.wait_for()
    await page.screenshot(path=screenshots / "rule-draft-dry-run.png", full_page=True)
    assert "matched" in (await trace.get_attribute("class")).split()  # the new rule's fill >= 75 holds at 88
    assert await trace.locator(".rendered-actions [data-param='body']").inner_text() == "hoodies at 88%"
    async with suite.http("admin") as admin:
        listed = (await admin.get("/v1/rules")).json().get("rules", [])
    assert "Not saved yet" not in [r["name"] for r in listed]
    assert page.errors == []
    await page.context.close()
