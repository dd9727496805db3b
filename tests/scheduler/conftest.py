"""Scheduler tests: each test gets its own database with the scheduler's migrations.

The job table, the leader lock and the run log are global to a database, so
sharing one between tests would let one test's pauses and runs leak into another.
"""

import uuid

import psycopg
import pytest

from libs import migrations
from libs.db import with_database
from libs.scratch_db import drop_database, plain_url, server_url
from tests.scheduler.helpers import scheduler
from tests.scheduler.peers import Behaviour, peers


@pytest.fixture
def scheduler_db():
    admin_url = server_url()
    name = f"loom_sched_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(plain_url(admin_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = with_database(admin_url, name)
    migrations.upgrade(url, "scheduler")
    yield url
    drop_database(admin_url, url)


@pytest.fixture
def behaviour():
    return Behaviour()


@pytest.fixture
async def peer(behaviour):
    async with peers(behaviour) as address:
        yield address


@pytest.fixture
async def stub(scheduler_db, peer):
    async with scheduler(scheduler_db, peer) as stub:
        yield stub
