import pytest

from tests.support import create_database, drop_database, server_url


@pytest.fixture(scope="session")
def database_url():
    """A fresh database with every service's migrations, for the whole test session."""
    admin_url = server_url()
    url = create_database(admin_url)
    yield url
    drop_database(admin_url, url)
