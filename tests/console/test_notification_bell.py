"""The notification bell: the unread count kept live by WatchNotifications over SSE, the panel
of the caller's inbox, mark read and mark all read, and a reconnect when the stream drops."""

from __future__ import annotations

import pytest

from tests.console.history_support import notify
from tests.console.support import eventually, signed_in

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def services():
    return ("rules",)


async def unread(page) -> int:
    return int(await page.locator(".bell").get_attribute("data-unread") or -1)


async def live_bell(page) -> int:
    await page.locator('.bell[data-state="live"][data-counted="true"]').wait_for()
    return await unread(page)


async def becomes(page, count: int, what: str) -> None:
    async def reached() -> bool:
        return await unread(page) == count

    await eventually(reached, timeout=10, what=what)


async def test_the_count_goes_up_live_when_a_notification_arrives_and_down_when_it_is_read(browser, suite, screenshots):
    page = await signed_in(browser, suite)
    before = await live_bell(page)
    subject = await notify(suite, role="admin")
    await becomes(page, before + 1, "the bell counting the new notification")
    assert await page.get_by_role("button", name=f"Notifications, {before + 1} unread").is_visible()

    await page.locator(".bell-button").click()
    item = page.locator(".inbox-list li", has_text=subject)
    await item.wait_for()
    assert await item.get_attribute("class") == "unread"
    assert "12 pieces" in await item.inner_text()
    await page.screenshot(path=screenshots / "bell-panel.png")
    await item.get_by_role("button", name=f"Mark read: {subject}").click()
    await becomes(page, before, "the bell counting one fewer")
    assert await page.locator(".inbox-list li", has_text=subject).get_attribute("class") == "read"
    assert page.errors == []
    await page.context.close()


async def test_mark_all_read_clears_the_count(browser, suite):
    await notify(suite, role="admin")
    await notify(suite, user="admin-tester")
    page = await signed_in(browser, suite)
    assert await live_bell(page) >= 2
    await page.locator(".bell-button").click()
    await page.locator(".inbox-list li.unread").first.wait_for()
    await page.get_by_role("button", name="Mark all read").click()
    await page.locator(".inbox-list li.unread").first.wait_for(state="detached")
    assert await page.locator(".inbox-list li.read").count() >= 2
    assert await unread(page) == 0
    await page.locator(".bell-count").wait_for(state="hidden")
    async with suite.http("admin", "admin-tester") as admin:
        assert (await admin.get("/v1/inbox/notifications", params={"unreadOnly": "true"})).json()["unreadCount"] == 0
    await page.context.close()


async def test_the_bell_shows_only_what_is_addressed_to_the_caller_or_their_role(browser, suite):
    page = await signed_in(browser, suite)
    before = await live_bell(page)
    for_buyers = await notify(suite, role="buyer")
    for_someone_else = await notify(suite, user="admin-somebody-else")
    mine = await notify(suite, role="admin")  # made last: once it is counted, the others had their chance
    await becomes(page, before + 1, "the bell counting the admin's notification only")
    await page.locator(".bell-button").click()
    await page.locator(".inbox-list li", has_text=mine).wait_for()
    listed = await page.locator(".inbox-list").inner_text()
    assert for_buyers not in listed and for_someone_else not in listed
    await page.context.close()

    buyer = await signed_in(browser, suite, "buyer", subject="buyer-bell")
    await live_bell(buyer)
    await buyer.locator(".bell-button").click()
    await buyer.locator(".inbox-list li", has_text=for_buyers).wait_for()
    assert mine not in await buyer.locator(".inbox-list").inner_text()
    await buyer.context.close()


async def test_the_bell_reconnects_when_its_stream_drops(browser, suite):
    page = await signed_in(browser, suite)
    real = await live_bell(page)
    calls = []

    async def first_drops(route):
        calls.append(route.request.url)
        if len(calls) == 1:  # a stream that says 42 and ends, as a dropped connection does
            await route.fulfill(status=200, headers={"content-type": "text/event-stream"}, body='data: {"unreadCount": 42}\n\n')
        else:
            await route.continue_()

    await page.route("**/v1/inbox/notifications:watch", first_drops)
    await page.reload()
    await becomes(page, 42, "the count of the dropped stream")
    await becomes(page, real, "the count after reconnecting")
    assert len(calls) >= 2
    await page.locator('.bell[data-state="live"]').wait_for()
    subject = await notify(suite, role="admin")
    await becomes(page, real + 1, "a notification arriving on the new stream")
    await page.locator(".bell-button").click()
    await page.locator(".inbox-list li", has_text=subject).wait_for()
    await page.context.close()


async def test_the_panel_opens_and_closes_with_the_keyboard_and_gives_focus_back(browser, suite):
    page = await signed_in(browser, suite)
    await live_bell(page)
    button = page.locator(".bell-button")
    await button.focus()
    await page.keyboard.press("Enter")
    assert await button.get_attribute("aria-expanded") == "true"
    assert await page.evaluate("document.activeElement.id") == "bell-panel"
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.textContent") == "Mark all read"
    await page.keyboard.press("Escape")
    await page.locator("#bell-panel").wait_for(state="hidden")
    assert await button.get_attribute("aria-expanded") == "false"
    assert await button.evaluate("el => el === document.activeElement")
    await page.context.close()
