"""Signing in with a token, and pages that follow the role the protos allow."""

from __future__ import annotations

import jwt
import pytest

from tests.console.support import signed_in
from tests.support import token


@pytest.fixture(scope="module")
def services():
    return ("tracking",)


pytestmark = pytest.mark.timeout(120)


async def visible_sections(page) -> list[str]:
    return [text.strip() for text in await page.locator("#nav a:visible").all_inner_texts()]


async def test_an_admin_token_signs_in_and_shows_every_section(browser, suite):
    page = await signed_in(browser, suite, "admin")
    assert await visible_sections(page) == ["Batches", "Rules", "Jobs", "Engagement", "Audit"]
    assert await page.locator("#who-label").inner_text() == "admin-tester · admin"
    assert page.url.endswith("#/batches")
    assert page.errors == []
    await page.context.close()


async def test_a_supplier_sees_only_batches_and_is_told_why_elsewhere(browser, suite):
    page = await signed_in(browser, suite, "supplier")
    assert await visible_sections(page) == ["Batches"]
    await page.goto(f"{suite.console}#/rules")
    await page.get_by_text("The supplier role cannot see this page").wait_for()
    await page.context.close()


async def test_a_malformed_token_is_refused_on_the_form(browser, suite):
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(suite.console)
    await page.get_by_label("Token").fill("not-a-token")
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("alert").filter(has_text="This is not a Loom token").wait_for()
    assert await page.get_by_label("Token").get_attribute("aria-invalid") == "true"
    assert await page.locator("#nav").is_hidden()
    await context.close()


async def test_an_expired_token_is_refused_on_the_form(browser, suite):
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(suite.console)
    await page.get_by_label("Token").fill(token("admin", ttl_seconds=-10))
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("alert").filter(has_text="expired").wait_for()
    await context.close()


async def test_a_token_the_services_reject_sends_the_viewer_back_to_sign_in(browser, suite):
    forged = jwt.encode({"sub": "mallory", "role": "admin", "iss": "loom", "exp": 4102444800}, "not-the-secret-" * 3)
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(f"{suite.console}#/engagement")
    await page.get_by_label("Token").fill(forged)
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("alert").filter(has_text="refused the token").wait_for()
    assert "#/signin" in page.url
    await context.close()
