import pytest

from libs import logs
from libs.scratch_db import create_database, drop_database, server_url
from tests.support import TEST_JWT_SECRET


@pytest.fixture(scope="session", autouse=True)
def quiet_logs():
    """Servers under test log JSON at warning level, as a deployed one would at info."""
    logs.configure(service="test", level="warning", redaction_key=TEST_JWT_SECRET)


@pytest.fixture(scope="session")
def database_url():
    """A fresh database with every service's migrations, for the whole test session."""
    admin_url = server_url()
    url = create_database(admin_url)
    yield url
    drop_database(admin_url, url)
