"""The console works under the gateway's Content-Security-Policy: no page breaks a rule of it."""

from __future__ import annotations

import pytest

from tests.console.support import signed_in

pytestmark = pytest.mark.timeout(120)

# Runs before the page's own scripts and is not subject to the policy (injected by the browser).
RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation',
    e => window.__cspViolations.push(`${e.violatedDirective} blocked ${e.blockedURI || 'inline'} in ${e.sourceFile}`));
"""


SECTIONS = (("batches", "Batches"), ("rules", "Rules"), ("jobs", "Jobs"), ("engagement", "Engagement"),
            ("rules/new", "New rule"), ("audit", "Audit"))


async def test_every_section_of_the_console_loads_without_a_policy_violation(browser, suite):
    page = await signed_in(browser, suite, "admin")
    await page.context.add_init_script(RECORD_VIOLATIONS)
    messages: list[str] = []
    page.on("console", lambda message: messages.append(message.text) if "Content Security Policy" in message.text else None)
    answer = await page.reload()  # signed in still; from here on with the recorder in place
    assert answer is not None and "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    await page.locator("#who-label").wait_for()
    violations = []
    # Each section's heading, once it has rendered (the header's live notification stream
    # keeps the network busy, so "network idle" never comes).
    for section, heading in SECTIONS:
        await page.goto(f"{suite.console}#/{section}")
        await page.get_by_role("heading", level=1, name=heading).wait_for()
        await page.wait_for_load_state("load")
        violations += await page.evaluate("window.__cspViolations")
    await page.context.close()
    assert violations == [] and messages == [] and page.errors == []
