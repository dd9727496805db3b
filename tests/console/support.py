"""A live Loom suite for browser tests: every service in-process on loopback ports,
the real gateway (with the console) in front, and a signed-in Chromium page."""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import httpx
from playwright.async_api import Browser, Page

from libs.bootstrap import start
from libs.settings import SERVICE_NAMES
from tests.gateway.support import RunningGateway, gateway_settings, run_gateway
from tests.support import free_port, settings_for, token

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@dataclass
class Suite:
    gateway: RunningGateway
    targets: dict[str, str]

    @property
    def console(self) -> str:
        return f"{self.gateway.url}/console/"

    def http(self, role: str = "admin", subject: str | None = None) -> httpx.AsyncClient:
        """A JSON client of the gateway's public API, signed in with that role."""
        return httpx.AsyncClient(
            base_url=self.gateway.url, timeout=15, headers={"authorization": f"Bearer {token(role, subject)}"}
        )


@asynccontextmanager
async def live_suite(database_url: str, services: tuple[str, ...] = SERVICE_NAMES, **overrides) -> AsyncIterator[Suite]:
    """The services a page needs, each on its own free port and told where the others are, and the gateway."""
    ports = {name: free_port() for name in SERVICE_NAMES}
    targets = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
    async with AsyncExitStack() as stack:
        for name in services:
            spec = importlib.import_module(f"services.{name}.wiring").SPEC
            settings = settings_for(name, database_url, **{f"{n}_port": p for n, p in ports.items()}, **overrides)
            running = await start(spec, settings, port=ports[name])
            stack.push_async_callback(running.stop, 1)
        gateway = await stack.enter_async_context(run_gateway(gateway_settings(targets)))
        yield Suite(gateway, targets)


async def signed_in(
    browser: Browser, suite: Suite, role: str = "admin", *, subject: str | None = None, **context_options
) -> Page:
    """A fresh browser context signed in through the sign-in form."""
    context = await browser.new_context(**{"viewport": {"width": 1280, "height": 900}, **context_options})
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors  # type: ignore[attr-defined]
    await page.goto(suite.console)
    await page.get_by_label("Token").fill(token(role, subject or f"{role}-tester"))
    await page.get_by_role("button", name="Sign in").click()
    await page.locator("#who-label").wait_for()
    return page


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout}s")
        await asyncio.sleep(0.1)



# WCAG 2.1 A/AA plus axe's best practices; "serious" and "critical" findings fail a page.
AXE_OPTIONS = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]}}


async def serious_accessibility_violations(page: Page, axe_source: str) -> list[str]:
    """What axe-core finds serious or critical on the page as it stands, one line per element.

    The script is evaluated through the DevTools protocol, so the console's CSP (no inline
    or third-party scripts) stays as it is in production.
    """
    if not await page.evaluate("typeof window.axe !== 'undefined'"):
        await page.evaluate(axe_source)
    results = await page.evaluate("options => axe.run(document, options)", AXE_OPTIONS)
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {node['target']}"
        for v in results["violations"]
        if v["impact"] in ("serious", "critical")
        for node in v["nodes"]
    ]
