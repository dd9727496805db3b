import os
import subprocess
from pathlib import Path

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


SCREENSHOTS_DIR = Path(__file__).resolve().parents[2] / "test-output" / "console-screenshots"


@pytest.fixture(scope="session")
def screenshots():
    """Where page screenshots go: test-output/console-screenshots (git-ignored), the last run's, for a look afterwards.

    Not pytest's temp dirs: those keep only the last three runs of anyone on the machine.
    """
    SCREENSHOTS_DIR.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS_DIR


AXE_VERSION = "4.10.3"
VENDOR_DIR = Path(__file__).resolve().parents[2] / ".loom" / "vendor" / f"axe-core-{AXE_VERSION}"


@pytest.fixture(scope="session")
def axe_source() -> str:
    """axe-core's built axe.min.js, vendored from npm on first use (kept under .loom/, not in git)."""
    script = VENDOR_DIR / "node_modules" / "axe-core" / "axe.min.js"
    if not script.exists():
        command = [
            "npm", "install", "--no-save", "--no-audit", "--no-fund", "--prefix", str(VENDOR_DIR), f"axe-core@{AXE_VERSION}",
        ]
        try:
            subprocess.run(command, check=True, capture_output=True, timeout=300)
        except (OSError, subprocess.SubprocessError) as error:
            pytest.fail(f"could not vendor axe-core from npm ({' '.join(command)}): {error}")
    return script.read_text()
