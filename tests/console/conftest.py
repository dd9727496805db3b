import os

import pytest
from playwright.async_api import async_playwright

from libs.scratch_db import create_database, drop_database, server_url
from libs.settings import SERVICE_NAMES
from tests.console.support import CHROMIUM, CHROMIUM_ARGS, live_suite


@pytest.fixture(scope="session")
async def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (make test installs it)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


@pytest.fixture(scope="module")
def services() -> tuple[str, ...]:
    """The services a test module's pages need (override in the module)."""
    return SERVICE_NAMES


@pytest.fixture(scope="module")
async def suite(services):
    """A database of the module's own (engagement figures are global) and the services on it."""
    admin_url = server_url()
    url = create_database(admin_url, prefix="loom_console")
    async with live_suite(url, services) as running:
        yield running
    drop_database(admin_url, url)


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory):
    """Where page screenshots go; pytest keeps the last runs' temp dirs for a look afterwards."""
    return tmp_path_factory.mktemp("console-screenshots")
