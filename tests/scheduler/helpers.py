"""Polling with deadlines, an in-process scheduler, and reading the run log, for the scheduler tests."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import grpc
import pytest
from google.protobuf import field_mask_pb2, struct_pb2
from loom.scheduler.v1 import scheduler_pb2 as pb

from libs.errors import field_violations
from tests.support import auth, free_port, serve, stub_for

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


@asynccontextmanager
async def scheduler(database_url: str, peer: str, **overrides) -> AsyncIterator:
    """An in-process scheduler whose batch and tracking targets are `peer`; yields its stub."""
    settings = {**FAST, "batch_target": peer, "tracking_target": peer, "rules_target": f"127.0.0.1:{free_port()}"}
    async with serve("scheduler", database_url, **{**settings, **overrides}) as running:
        async with stub_for("scheduler", running.target) as stub:
            yield stub


def params(**values) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(values)
    return message


async def run_now(stub, job_name, *, wait=True, request_id=None, **values) -> pb.JobRun:
    request = pb.RunJobNowRequest(
        request_id=request_id or str(uuid.uuid4()), job_name=job_name, wait=wait, params=params(**values)
    )
    return (await stub.RunJobNow(request, metadata=ADMIN)).run


async def invalid(call) -> dict[str, str]:
    """The field violations of a call that must fail with INVALID_ARGUMENT."""
    return field_violations(await refused(call, grpc.StatusCode.INVALID_ARGUMENT))


async def refused(call, code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == code, raised.value.details()
    return raised.value


async def update_job(stub, job_name: str, *paths: str, **fields) -> pb.Job:
    request = pb.UpdateJobRequest(request_id=str(uuid.uuid4()), job=pb.Job(job_name=job_name, **fields),
                                  update_mask=field_mask_pb2.FieldMask(paths=list(paths)))
    return (await stub.UpdateJob(request, metadata=ADMIN)).job
