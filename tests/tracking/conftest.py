import uuid

import pytest

from libs.scratch_db import create_database, drop_database, server_url
from tests.support import serve, stub_for


@pytest.fixture(scope="module")
async def tracking_db():
    """A database of the module's own: aggregates are global, so tests of them need isolation."""
    admin_url = server_url()
    url = create_database(admin_url, prefix="loom_tracking")
    yield url
    drop_database(admin_url, url)


@pytest.fixture(scope="module")
async def tracking(tracking_db):
    async with serve("tracking", tracking_db) as running:
        yield running


@pytest.fixture(scope="module")
async def stub(tracking):
    async with stub_for("tracking", tracking.target) as stub:
        yield stub


@pytest.fixture
def unique():
    """A fresh suffix so each test's ids never meet another's."""
    return uuid.uuid4().hex[:10]
