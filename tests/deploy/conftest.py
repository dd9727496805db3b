"""Fixtures the deploy tests borrow from the service tests: a module's own migrated database
(batch's) and a real SMTP server (rules')."""

from tests.batch.conftest import own_database  # noqa: F401
from tests.rules.conftest import smtp  # noqa: F401
