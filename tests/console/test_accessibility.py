"""Every page of the console checked by axe-core (no serious or critical violation), at desktop
and phone width, with a screenshot of each; and the rule builder driven by the keyboard alone."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.console.support import serious_accessibility_violations, signed_in

pytestmark = pytest.mark.timeout(300)

VIEWPORTS = {
    "desktop": {"viewport": {"width": 1280, "height": 900}},
    "phone": {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True},
}


@pytest.fixture(scope="module")
async def content(suite) -> dict:
    """A batch with an order and a rule, so the pages show what they show in use."""
    category = f"a11y_{uuid.uuid4().hex[:8]}"
    async with suite.http("admin") as admin:
        reply = await admin.post("/v1/suppliers", params={"requestId": str(uuid.uuid4())}, json={
            "name": "Mill for the accessibility check", "categories": [category], "moq": "100", "capacity": "300",
            "priceTiers": [{"minQuantity": "1", "unitPrice": "5.00"}], "leadTimeDays": 10, "rating": 4.2, "active": True,
            "maxStylesPerBatch": 5, "contactEmail": "mill@loom.example",
        })
        assert reply.status_code == 200, reply.text
        rule = (await admin.post("/v1/rules", json={"requestId": str(uuid.uuid4()), "rule": {
            "name": "Tell ops about confirmed batches", "type": "RULE_TYPE_NOTIFICATION", "active": True,
            "eventTypes": ["batch.confirmed"],
            "conditions": {"any": [{"fact": "batch.fill_percentage", "operator": "greater_than_inclusive", "value": 75},
                                   {"not": {"fact": "batch.category", "operator": "starts_with", "value": "test_"}}]},
            "actions": [{"type": "ACTION_TYPE_SEND_EMAIL", "params": {
                "recipient": "ops@loom.example", "subject": "Batch {{batch.id}}", "body": "{{batch.category}} is confirmed."}}],
        }})).json()["rule"]
    async with suite.http("buyer", "buyer-a11y") as buyer:
        placed = await buyer.post("/v1/orders", json={
            "requestId": str(uuid.uuid4()), "category": category, "quantity": "40", "style": {"styleCount": 1}})
        assert placed.status_code == 200, placed.text
    return {"batch": placed.json()["batch"]["batchId"], "rule": rule["ruleId"]}


def pages(content: dict) -> dict[str, str]:
    return {
        "batches": "#/batches",
        "batch": f"#/batches/{content['batch']}",
        "rules": "#/rules",
        "rule-new": "#/rules/new",
        "rule-edit": f"#/rules/{content['rule']}",
        "jobs": "#/jobs",
        "engagement": "#/engagement",
        "audit": "#/audit",
    }


async def settled(page) -> None:
    await page.locator("main h1").first.wait_for()
    await page.wait_for_function("() => !document.querySelector('main').textContent.includes('Loading…')")
    await page.wait_for_timeout(300)


@pytest.mark.parametrize("width", VIEWPORTS)
async def test_every_page_has_no_serious_accessibility_violation(browser, suite, content, axe_source, screenshots, width):
    signin = await browser.new_context(**VIEWPORTS[width])
    page = await signin.new_page()
    await page.goto(suite.console)
    await page.get_by_label("Token").wait_for()
    found = {"signin": await serious_accessibility_violations(page, axe_source)}
    await page.screenshot(path=screenshots / f"{width}-signin.png", full_page=True)
    await signin.close()

    page = await signed_in(browser, suite, **VIEWPORTS[width])
    for name, where in pages(content).items():
        await page.goto(f"{suite.console}{where}")
        await settled(page)
        if name == "rule-edit":  # the advanced view and a dry run are part of the page too
            await page.locator("details.advanced summary").click()
            await page.get_by_role("button", name="Dry run this rule").click()
            await page.locator(".sample .rule-trace").wait_for()
        found[name] = await serious_accessibility_violations(page, axe_source)
        await page.screenshot(path=screenshots / f"{width}-{name}.png", full_page=True)
    report = [f"{name}: {problem}" for name, problems in found.items() for problem in problems]
    assert report == [], "\n".join(report)
    assert page.errors == []
    await page.context.close()


async def focused(page) -> str:
    """The accessible name (aria-label or text) of the focused control."""
    return await page.evaluate("(document.activeElement.getAttribute('aria-label') || document.activeElement.textContent).trim()")


async def test_a_condition_is_added_negated_and_removed_with_the_keyboard_alone(browser, suite):
    page = await signed_in(browser, suite)
    await page.goto(f"{suite.console}#/rules/new")
    await page.get_by_role("button", name="Add condition to Conditions", exact=True).focus()
    await page.keyboard.press("Enter")
    assert await focused(page) == "Conditions, condition 2: fact"  # focus lands in the new row
    await page.keyboard.press("ArrowDown")  # the next fact in the picker
    assert await focused(page) == "Conditions, condition 2: fact"
    # The new row starts on the batch's first fact (capacity); one step down is its category, a text.
    assert await page.get_by_label("Conditions, condition 2: fact", exact=True).input_value() == "batch.category"
    await page.keyboard.press("Tab")
    await page.keyboard.press("Tab")
    assert await focused(page) == "Conditions, condition 2: value"
    await page.keyboard.type("12")
    await page.keyboard.press("Tab")
    assert await focused(page) == "Negate Conditions, condition 2"
    await page.keyboard.press("Enter")
    assert await focused(page) == "Remove “not” from Conditions, condition 2"
    await page.get_by_label("Conditions, condition 2, negated: value", exact=True).wait_for()
    await page.locator("details.advanced summary").focus()
    await page.keyboard.press("Enter")
    tree = json.loads(await page.get_by_label("Conditions (JSON)").input_value())
    assert tree["all"][1] == {"not": {"fact": "batch.category", "operator": "equal", "value": "12"}}

    await page.get_by_role("button", name="Remove Conditions, condition 2", exact=True).focus()
    await page.keyboard.press("Enter")
    # The row is gone; focus goes to its group's "Add condition", not to the top of the page.
    assert await focused(page) == "Add condition to Conditions"
    assert len(json.loads(await page.get_by_label("Conditions (JSON)").input_value())["all"]) == 1
    await page.context.close()
