"""The audit page against the live suite: the four services' records merged newest first,
filtered by subject and status, paged back without reordering, and closed to non-admins."""

from __future__ import annotations

import uuid
from datetime import datetime

import pytest

from tests.console.support import eventually, signed_in

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
async def activity(suite) -> dict:
    """One change or refusal in each service, by subjects of this module alone."""
    admin, buyer = f"admin-{uuid.uuid4().hex[:6]}", f"buyer-{uuid.uuid4().hex[:6]}"
    async with suite.http("admin", admin) as http:
        created = await http.post("/v1/posts", params={"requestId": str(uuid.uuid4())},
                                  json={"title": "Audit launch", "url": "https://loom.example/audit"})
        assert created.status_code == 200, created.text
        paused = await http.post("/v1/jobs/aggregate-popularity:pause", json={"requestId": str(uuid.uuid4())})
        assert paused.status_code == 200, paused.text
        await http.post("/v1/jobs/aggregate-popularity:resume", json={"requestId": str(uuid.uuid4())})
    async with suite.http("buyer", buyer) as http:
        assert (await http.post("/v1/rules", json={"requestId": str(uuid.uuid4()), "rule": {}})).status_code == 403
        assert (await http.post("/v1/suppliers", params={"requestId": str(uuid.uuid4())}, json={})).status_code == 403
    await recorded(suite, buyer, 2)
    return {"admin": admin, "buyer": buyer}


async def recorded(suite, subject: str, count: int) -> None:
    """Waits until the services hold count records of subject (refusals are written just after they are answered)."""
    async def held() -> bool:
        async with suite.http("admin") as http:
            replies = [await http.get(f"/v1/{s}/auditEvents", params={"subject": subject, "pageSize": 1000})
                       for s in ("batch", "rules", "tracking", "scheduler")]
        return sum(len(r.json().get("auditEvents", [])) for r in replies) >= count

    await eventually(held, what=f"{count} audit records of {subject}")


async def shown(page) -> list[dict]:
    return await page.locator("table.audit tbody tr").evaluate_all(
        """rows => rows.map(r => ({service: r.dataset.service, code: r.dataset.code,
             time: r.querySelector('time').getAttribute('datetime'), text: r.innerText}))"""
    )


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_the_audit_page_merges_every_services_records_newest_first(browser, suite, activity, screenshots):
    page = await signed_in(browser, suite)
    await page.goto(f"{suite.console}#/audit")
    await page.locator("table.audit tbody tr").first.wait_for()
    rows = await shown(page)
    assert {"batch", "rules", "tracking", "scheduler"} <= {r["service"] for r in rows}
    times = [instant(r["time"]) for r in rows]
    assert times == sorted(times, reverse=True)
    await page.screenshot(path=screenshots / "audit.png", full_page=True)
    assert page.errors == []
    await page.context.close()


async def test_filters_narrow_the_merged_list_to_a_subject_and_a_status(browser, suite, activity, screenshots):
    page = await signed_in(browser, suite)
    await page.goto(f"{suite.console}#/audit")
    await page.get_by_label("Subject").fill(activity["buyer"])
    await page.get_by_label("Status").select_option("PERMISSION_DENIED")
    await page.get_by_role("button", name="Apply").click()
    await page.locator("[role=status]", has_text="2 records").wait_for()
    rows = await shown(page)
    assert sorted(r["service"] for r in rows) == ["batch", "rules"]
    assert all(r["code"] == "PERMISSION_DENIED" and activity["buyer"] in r["text"] for r in rows)
    assert "subject=" in page.url and "code=PERMISSION_DENIED" in page.url
    await page.screenshot(path=screenshots / "audit-filtered.png", full_page=True)

    await page.goto(f"{suite.console}#/audit?subject={activity['admin']}&method=PauseJob")
    await page.locator("[role=status]", has_text="1 records").wait_for()
    (only,) = await shown(page)
    assert only["service"] == "scheduler" and "aggregate-popularity" in only["text"]
    await page.context.close()


async def test_show_older_pages_back_every_service_without_reordering(browser, suite, activity):
    page = await signed_in(browser, suite)
    await page.goto(f"{suite.console}#/audit")
    await page.locator("table.audit tbody tr").first.wait_for()
    # A page size of 50 per service: make one service's trail longer than a page.
    async with suite.http("buyer", activity["buyer"]) as http:
        for _ in range(55):
            await http.post("/v1/batches/00000000-0000-4000-8000-000000000000:resolveReview", json={})
    await recorded(suite, activity["buyer"], 57)
    await page.goto(f"{suite.console}#/audit?subject={activity['buyer']}")
    await page.get_by_role("button", name="Show older").wait_for()
    first = await shown(page)
    await page.get_by_role("button", name="Show older").click()
    await page.locator("[role=status]", has_text="57 records").wait_for()
    everything = await shown(page)
    assert everything[: len(first)] == first
    times = [instant(r["time"]) for r in everything]
    assert times == sorted(times, reverse=True)
    assert await page.get_by_role("button", name="Show older").is_hidden()
    await page.context.close()


async def test_the_audit_page_is_for_admins_only(browser, suite):
    page = await signed_in(browser, suite, "buyer")
    assert await page.locator("#nav a[data-page=audit]").is_hidden()
    await page.goto(f"{suite.console}#/audit")
    await page.get_by_text("The buyer role cannot see this page").wait_for()
    await page.context.close()
