"""The batches pages against the live batch service: fill bars that move with the
WatchBatch stream, a batch's orders in the viewer's time zone, and review resolution."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.console.pixels import decode, rightmost
from tests.console.support import signed_in

FILL_LOW = "#e57373"
FILL_NEARING = "#7cb342"


@pytest.fixture(scope="module")
def services():
    return ("batch", "rules")


pytestmark = pytest.mark.timeout(180)


@pytest.fixture
async def supplier(suite) -> dict:
    """A category of its own, served by one supplier: MOQ (target) 100, capacity 200."""
    name = f"tees_{uuid.uuid4().hex[:8]}"
    supplier = {
        "name": f"Mill {name}",
        "categories": [name],
        "moq": "100",
        "capacity": "200",
        "priceTiers": [{"minQuantity": "1", "unitPrice": "5.00"}],
        "leadTimeDays": 12,
        "rating": 4.5,
        "active": True,
        "maxStylesPerBatch": 10,
        "contactEmail": "mill@loom.example",
    }
    async with suite.http("admin") as admin:
        reply = await admin.post("/v1/suppliers", params={"requestId": str(uuid.uuid4())}, json=supplier)
        assert reply.status_code == 200, reply.text
        return reply.json()["supplier"]


@pytest.fixture
def category(supplier) -> str:
    return supplier["categories"][0]


async def place_order(suite, category: str, quantity: int, buyer: str = "buyer-1") -> dict:
    async with suite.http("buyer", buyer) as http:
        reply = await http.post(
            "/v1/orders",
            json={"requestId": str(uuid.uuid4()), "category": category, "quantity": str(quantity), "style": {"styleCount": 1}},
        )
        assert reply.status_code == 200, reply.text
        return reply.json()


def filled_fraction(png: bytes, colour: str) -> float:
    """How far along the bar the fill colour reaches (threshold marks cross it), read from the screenshot."""
    image = decode(png)
    return rightmost(image, colour, image.height // 2, tolerance=10) / image.width


async def test_a_fill_bar_moves_live_when_an_order_is_placed(browser, suite, category, screenshots):
    first = await place_order(suite, category, 30)
    batch_id = first["batch"]["batchId"]
    page = await signed_in(browser, suite)
    await page.goto(f"{suite.console}#/batches?status=FILLING&category={category}")
    card = page.locator(f'[data-batch-id="{batch_id}"]')
    bar = card.get_by_role("meter", name=f"Fill of batch {batch_id}")
    await card.locator(".badge.live", has_text="live").wait_for()
    assert await bar.get_attribute("aria-valuenow") == "30"
    assert await bar.get_attribute("aria-valuetext") == "30 of target 100 (30%), capacity 200"
    before = await bar.screenshot(path=screenshots / "batch-bar-before.png")
    assert filled_fraction(before, FILL_LOW) == pytest.approx(30 / 200, abs=0.02)

    second = await place_order(suite, category, 40, buyer="buyer-2")
    assert second["batch"]["batchId"] == batch_id
    # The list re-reads every 30 s; within a few seconds only the stream can have moved the bar.
    await page.wait_for_function(
        "el => el.getAttribute('aria-valuenow') === '70'", arg=await bar.element_handle(), timeout=8000
    )
    assert await bar.get_attribute("data-band") == "nearing"
    await page.wait_for_timeout(500)  # the width eases over 0.4 s
    after = await bar.screenshot(path=screenshots / "batch-bar-after.png")
    assert filled_fraction(after, FILL_NEARING) == pytest.approx(70 / 200, abs=0.02)
    assert "70 / 100" in await card.inner_text()
    await page.screenshot(path=screenshots / "batches.png", full_page=True)
    assert page.errors == []
    await page.context.close()


async def test_a_batch_page_lists_its_orders_with_times_in_the_viewers_zone(browser, suite, category, screenshots):
    placed = await place_order(suite, category, 25, buyer="buyer-tokyo")
    batch = placed["batch"]
    page = await signed_in(browser, suite, timezone_id="Asia/Tokyo", locale="en-US")
    await page.goto(f"{suite.console}#/batches/{batch['batchId']}")
    rows = page.locator("#orders-heading ~ * tbody tr")
    await rows.first.wait_for()
    assert await rows.count() == 1
    assert "buyer-tokyo" in await rows.first.inner_text()
    assert await page.locator("#time-zone").inner_text() == "Asia/Tokyo"
    closes = datetime.fromisoformat(batch["windowCloseTime"].replace("Z", "+00:00")).astimezone(ZoneInfo("Asia/Tokyo"))
    shown = await page.locator(f'time[datetime="{batch["windowCloseTime"]}"]').first.inner_text()
    assert shown.replace("\u202f", " ") == closes.strftime("%b %-d, %Y, %-I:%M %p")
    await page.screenshot(path=screenshots / "batch-detail.png", full_page=True)
    await page.context.close()


async def flagged_batch(suite, category: str) -> dict:
    """A batch at 60% of target whose window has closed: orchestration flags it for review."""
    batch = (await place_order(suite, category, 60))["batch"]
    after_close = datetime.fromisoformat(batch["windowCloseTime"].replace("Z", "+00:00")) + timedelta(hours=1)
    async with suite.http("admin") as admin:
        reply = await admin.post("/v1/batches:orchestrate", json={"requestId": str(uuid.uuid4()), "now": after_close.isoformat()})
        assert reply.status_code == 200 and reply.json()["flaggedForReview"] >= 1, reply.text
    return batch


async def test_an_admin_resolves_a_flagged_batch_from_its_page(browser, suite, category, screenshots):
    batch = await flagged_batch(suite, category)
    page = await signed_in(browser, suite)
    await page.goto(f"{suite.console}#/batches?status=FILLING&category={category}&review=1")
    await page.locator(f'[data-batch-id="{batch["batchId"]}"] .badge', has_text="needs review").wait_for()
    await page.get_by_role("link", name=category).click()
    review = page.get_by_role("region", name="Resolve review")
    await review.get_by_label("Confirm batch").check()
    await review.get_by_label("Note").fill("Supplier agreed to run at 60%.")
    await page.screenshot(path=screenshots / "batch-review.png", full_page=True)
    await review.get_by_role("button", name="Resolve").click()
    await page.get_by_role("status").filter(has_text="Batch confirmed").wait_for()
    assert await review.is_hidden()
    async with suite.http("admin") as admin:
        now = (await admin.get(f"/v1/batches/{batch['batchId']}")).json()["batch"]
    assert now["status"] == "BATCH_STATUS_CONFIRMED" and not now.get("needsReview")
    await page.context.close()


async def test_a_supplier_sees_its_batch_but_is_not_offered_review_resolution(browser, suite, supplier, category):
    batch = await flagged_batch(suite, category)
    page = await signed_in(browser, suite, "supplier", subject=supplier["supplierId"])
    await page.goto(f"{suite.console}#/batches/{batch['batchId']}")
    await page.locator(".facts .badge", has_text="needs review").wait_for()
    assert await page.get_by_role("region", name="Resolve review").is_hidden()
    await page.context.close()


async def test_threshold_labels_never_overlap_when_capacity_dwarfs_the_target(browser, suite, screenshots):
    category = f"bulk_{uuid.uuid4().hex[:8]}"
    async with suite.http("admin") as admin:
        reply = await admin.post("/v1/suppliers", params={"requestId": str(uuid.uuid4())}, json={
            "name": f"Giant mill {category}", "categories": [category], "moq": "100", "capacity": "5000",
            "priceTiers": [{"minQuantity": "1", "unitPrice": "4.00"}], "leadTimeDays": 20, "rating": 4.0, "active": True,
            "maxStylesPerBatch": 10, "contactEmail": "giant@loom.example",
        })
        assert reply.status_code == 200, reply.text
    batch = (await place_order(suite, category, 10))["batch"]
    page = await signed_in(browser, suite)
    for where, view in ((f"#/batches?status=FILLING&category={category}", "batch-bar-crowded.png"),
                        (f"#/batches/{batch['batchId']}", "batch-detail-bar-crowded.png")):
        await page.goto(f"{suite.console}{where}")
        bar = page.get_by_role("meter", name=f"Fill of batch {batch['batchId']}")
        await bar.wait_for()
        await page.wait_for_timeout(100)  # the labels are laid out once the bar has a width
        shown = await bar.evaluate(
            """bar => [...bar.querySelectorAll('.threshold .mark-label')]
                .filter((l) => getComputedStyle(l).visibility === 'visible')
                .map((l) => {
                    const r = l.getBoundingClientRect();
                    return {text: l.textContent, left: r.left, right: r.right};
                })"""
        )
        assert "75" in [label["text"] for label in shown]
        ordered = sorted(shown, key=lambda label: label["left"])
        assert all(a["right"] <= b["left"] for a, b in zip(ordered, ordered[1:], strict=False)), ordered
        await bar.screenshot(path=screenshots / view)
    await page.context.close()
