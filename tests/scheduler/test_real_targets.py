"""Every job against the real batch, rules and tracking services (in-process servers)."""

import uuid
from contextlib import AsyncExitStack

import pytest
from loom.scheduler.v1 import scheduler_pb2 as pb

from services.scheduler.domain.catalogue import JOBS
from tests.scheduler.helpers import ADMIN, FAST, status_name
from tests.support import serve, stub_for

pytestmark = pytest.mark.timeout(120)


async def test_every_job_succeeds_against_the_real_services(database_url, scheduler_db):
    async with AsyncExitStack() as stack:
        targets = {
            f"{name}_target": (await stack.enter_async_context(serve(name, database_url))).target
            for name in ("batch", "rules", "tracking")
        }
        scheduler = await stack.enter_async_context(serve("scheduler", scheduler_db, **FAST, **targets))
        stub = await stack.enter_async_context(stub_for("scheduler", scheduler.target))
        for job_name in JOBS:
            request = pb.RunJobNowRequest(request_id=str(uuid.uuid4()), job_name=job_name, wait=True)
            run = (await stub.RunJobNow(request, metadata=ADMIN)).run
            assert status_name(run) == "succeeded", f"{job_name}: {run.error}"
            assert run.result, f"{job_name} recorded no counts"
