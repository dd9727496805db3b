"""Polling with deadlines and reading the run log, for the scheduler tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from loom.scheduler.v1 import scheduler_pb2 as pb

from tests.support import auth

T = TypeVar("T")
ADMIN = auth("admin")

# Fast settings: the leader checks its lock and due retries every 0.1 s, retries wait
# 0.2 s, 0.4 s..., three attempts per firing.
FAST = {
    "scheduler_leader_poll_seconds": 0.1,
    "scheduler_retry_base_seconds": 0.2,
    "scheduler_retry_max_seconds": 5.0,
    "scheduler_max_attempts": 3,
}


async def eventually(probe: Callable[[], Awaitable[T]], *, timeout: float = 15.0, every: float = 0.1) -> T:
    """probe()'s first truthy answer; fails after the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        answer = await probe()
        if answer:
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s: last answer {answer!r}")
        await asyncio.sleep(every)


async def all_runs(stub, job_name: str = "", **filters) -> list[pb.JobRun]:
    """Every run (oldest first), following pages."""
    runs, token = [], ""
    while True:
        page = await stub.ListJobRuns(
            pb.ListJobRunsRequest(job_name=job_name, page_size=200, page_token=token, **filters), metadata=ADMIN
        )
        runs.extend(page.runs)
        token = page.next_page_token
        if not token:
            return list(reversed(runs))


def status_name(run: pb.JobRun) -> str:
    return pb.JobRunStatus.Name(run.status).removeprefix("JOB_RUN_STATUS_").lower()


def trigger_name(run: pb.JobRun) -> str:
    return pb.TriggerKind.Name(run.trigger).removeprefix("TRIGGER_KIND_").lower()
