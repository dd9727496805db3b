"""The engagement page draws what the tracking service reports, through the gateway."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.console.pixels import decode, widest_run
from tests.console.support import signed_in
from tests.support import token


@pytest.fixture(scope="module")
def services():
    return ("tracking",)


pytestmark = pytest.mark.timeout(180)

BAR_BLUE = "#1565c0"
SIGNED_IN_PURPLE = "#8e24aa"


def interaction(kind: str, product: str, session: str) -> dict:
    return {"clientEventId": str(uuid.uuid4()), "type": f"INTERACTION_TYPE_{kind}", "productId": product, "sessionId": session}


@pytest.fixture(scope="module")
async def engagement(suite):
    """12 interactions (3 signed in), products paired in three sessions, 10 shares and one rejected."""
    async with httpx.AsyncClient(base_url=suite.gateway.url, timeout=15) as anonymous, suite.http("buyer") as buyer:
        views = [interaction("VIEW_DETAILS", "P-ALPHA", f"s{i}") for i in range(6)]
        carts = [interaction("ADD_TO_CART", "P-BETA", f"s{i}") for i in range(3)]
        hovers = [interaction("HOVER", "P-ALPHA", f"s{i}") for i in range(6, 9)]
        reply = await anonymous.post("/v1/interactions:batchCreate", json={"interactions": views + carts})
        assert reply.status_code == 200 and reply.json()["accepted"] == 9, reply.text
        reply = await buyer.post("/v1/interactions:batchCreate", json={"interactions": hovers})
        assert reply.status_code == 200 and reply.json()["accepted"] == 3, reply.text
    async with suite.http("admin") as admin:
        reply = await admin.post(
            "/v1/posts",
            params={"requestId": str(uuid.uuid4())},
            json={"title": "Autumn drop", "url": "https://loom.example/p/1", "published": True},
        )
        assert reply.status_code == 200, reply.text
        post = reply.json()["post"]
        platforms = ["SHARE_PLATFORM_LINKEDIN"] * 6 + ["SHARE_PLATFORM_WHATSAPP"] * 4
        for platform in platforms:
            reply = await admin.post(f"/v1/posts/{post['postId']}/shares", json={"platform": platform, "sessionId": "s1"})
            assert reply.status_code == 200, reply.text
        rejected = await admin.post(f"/v1/posts/{post['postId']}/shares", json={"platform": "SHARE_PLATFORM_TWITTER"})
        assert rejected.status_code == 429, rejected.text
        reply = await admin.post("/v1/popularity:aggregate", json={"requestId": str(uuid.uuid4())})
        assert reply.status_code == 200, reply.text
        yield await admin.get("/v1/products/P-BETA/popularity")


async def test_engagement_page_draws_counts_trend_products_shares_and_rejections(browser, suite, engagement, screenshots):
    page = await signed_in(browser, suite, "admin")
    await page.goto(f"{suite.console}#/engagement")
    await page.locator('[data-stat="total"]').filter(has_text="12").wait_for()
    assert await page.locator('[data-stat="authenticated-ratio"]').inner_text() == "25.0%"

    by_type = page.get_by_role("img", name="Interactions by type")
    bars = {
        await g.get_attribute("data-label"): int(await g.get_attribute("data-value"))
        for g in await by_type.locator("g.bar").all()
    }
    assert bars == {"view details": 6, "add to cart": 3, "hover": 3}

    trend = page.get_by_role("img", name="Interactions per day")
    await trend.locator("circle.point").first.wait_for()
    daily = [int(await c.get_attribute("data-value")) for c in await trend.locator('circle[data-series="interactions"]').all()]
    signed = [int(await c.get_attribute("data-value")) for c in await trend.locator('circle[data-series="signed in"]').all()]
    assert sum(daily) == 12 and sum(signed) == 3

    products = page.locator("table.top-products tbody tr")
    await products.first.wait_for()
    first = await products.first.locator("td").all_inner_texts()
    assert first[:2] == ["P-ALPHA", "9"]
    paired_with_beta = engagement.json()["popularity"]["paired"][0]
    beta_row = products.nth(1)
    assert (await beta_row.locator("td").first.inner_text()) == "P-BETA"
    assert f"{paired_with_beta['productId']} {paired_with_beta['percentage']:.0f}%" in await beta_row.inner_text()

    shares = page.get_by_role("img", name="Shares by platform")
    await shares.locator("g.bar").first.wait_for()
    by_platform = {
        await g.get_attribute("data-label"): int(await g.get_attribute("data-value"))
        for g in await shares.locator("g.bar").all()
    }
    assert by_platform == {"linkedin": 6, "facebook": 0, "twitter": 0, "whatsapp": 4}
    assert await page.locator('[data-stat="rejected"]').inner_text() == "1"
    assert page.errors == []

    await page.screenshot(path=screenshots / "engagement.png", full_page=True)
    # What was drawn, not only what is in the DOM: bar lengths follow the counts ...
    chart = decode(await by_type.screenshot(path=screenshots / "engagement-by-type.png"))
    chart_box = await by_type.bounding_box()
    lengths = {}
    for g in await by_type.locator("g.bar").all():
        box = await g.locator("rect").bounding_box()
        lengths[await g.get_attribute("data-label")] = widest_run(
            chart, BAR_BLUE, round(box["y"] - chart_box["y"] + box["height"] / 2)
        )
    assert lengths["view details"] == pytest.approx(2 * lengths["add to cart"], rel=0.08)
    assert lengths["hover"] == pytest.approx(lengths["add to cart"], abs=2)
    # ... and the trend chart shows both lines.
    drawn = decode(await trend.screenshot(path=screenshots / "engagement-trend.png"))
    assert any(widest_run(drawn, BAR_BLUE, y, tolerance=40) >= 3 for y in range(drawn.height))
    assert any(widest_run(drawn, SIGNED_IN_PURPLE, y, tolerance=40) >= 3 for y in range(drawn.height))
    await page.context.close()


async def test_the_trend_of_the_last_30_days_has_every_day_with_zero_for_quiet_days(browser, suite, engagement, screenshots):
    page = await signed_in(browser, suite, "admin")
    await page.goto(f"{suite.console}#/engagement?days=30&granularity=day")
    trend = page.get_by_role("img", name="Interactions per day")
    await trend.locator("circle.point").first.wait_for()
    daily = [int(await c.get_attribute("data-value")) for c in await trend.locator('circle[data-series="interactions"]').all()]
    # Every interaction of the fixture is from today: 30 quiet days before it, 31 days in all.
    assert len(daily) == 31 and daily[-1] == 12 and set(daily[:-1]) == {0}
    ends = await trend.locator("text.axis-label").evaluate_all("labels => labels.map((label) => label.textContent)")
    assert ends[-2] != ends[-1]
    await trend.screenshot(path=screenshots / "engagement-trend-30-days.png")
    await page.context.close()


async def test_engagement_page_on_a_phone_keeps_charts_within_the_screen(browser, suite, engagement, screenshots):
    page = await signed_in(browser, suite, "admin", viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    await page.goto(f"{suite.console}#/engagement")
    await page.locator('[data-stat="total"]').filter(has_text="12").wait_for()
    for chart in await page.locator("figure.chart svg").all():
        box = await chart.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    await page.screenshot(path=screenshots / "engagement-phone.png", full_page=True)
    await page.context.close()


async def test_the_engagement_api_refuses_a_buyer_and_the_page_is_not_offered(browser, suite):
    async with httpx.AsyncClient(base_url=suite.gateway.url, headers={"authorization": f"Bearer {token('buyer')}"}) as http:
        assert (await http.get("/v1/engagement/summary")).status_code == 403
    page = await signed_in(browser, suite, "buyer")
    assert await page.locator("#nav a:visible").count() == 0
    await page.goto(f"{suite.console}#/engagement")
    await page.get_by_text("The buyer role cannot see this page").wait_for()
    await page.context.close()
