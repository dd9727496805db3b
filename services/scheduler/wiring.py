"""Wires the scheduler service into the shared server bootstrap."""

import asyncio

from loom.scheduler.v1 import scheduler_pb2_grpc

from libs import db
from libs.bootstrap import ServiceContext, ServiceSpec
from libs.sampling import start_sampler
from libs.scratch_db import plain_url
from libs.tasks import cancel_and_wait
from services.scheduler import metrics
from services.scheduler.api.servicer import SchedulerServicer
from services.scheduler.domain.catalogue import JOBS
from services.scheduler.domain.schedules import parse_schedule_spec, validate_schedule, zone
from services.scheduler.leader import Replica, replica_identity
from services.scheduler.runner import Runner
from services.scheduler.settings import SchedulerSettings
from services.scheduler.store import jobs as job_store
from services.scheduler.watch import RunWatch


def configured_schedules(settings: SchedulerSettings) -> dict:
    """Every job's schedule from configuration, validated (a bad one stops start-up)."""
    zone(settings.scheduler_time_zone)
    unknown = set(settings.scheduler_job_schedules) - set(JOBS)
    if unknown:
        raise ValueError(f"LOOM_SCHEDULER_JOB_SCHEDULES names unknown jobs: {sorted(unknown)}")
    schedules = {}
    for name, job in JOBS.items():
        schedule = parse_schedule_spec(settings.scheduler_job_schedules.get(name, job.default_schedule))
        validate_schedule(schedule, field=f"scheduler_job_schedules.{name}")
        schedules[name] = schedule
    return schedules


async def setup(context: ServiceContext) -> None:
    settings: SchedulerSettings = context.settings  # type: ignore[assignment]
    engine = context.engine
    assert engine is not None and settings.database_url is not None  # the scheduler declares a database
    schedules = configured_schedules(settings)
    await db.run_in_transaction(engine, lambda conn: job_store.seed_builtin(conn, JOBS, schedules))

    runner = Runner(engine, context.clients, settings, replica_identity())
    replica = Replica(engine, runner, settings)
    watch = RunWatch(engine, plain_url(db.async_url(settings.database_url)))
    replica_task = asyncio.get_running_loop().create_task(replica.run(), name="scheduler-replica")

    async def stop() -> None:
        await cancel_and_wait(replica_task)
        replica.close()
        await runner.close()
        await watch.close()

    context.exit_stack.push_async_callback(stop)
    # Serve once this replica holds its liveness lock and has marked orphaned runs
    # interrupted, so the API never shows a dead replica's run as running.
    async with asyncio.timeout(30):
        await replica.lock_held.wait()
    servicer = SchedulerServicer(engine, runner, watch, settings)
    servicer.serve_audit(context.auditor)
    scheduler_pb2_grpc.add_SchedulerServiceServicer_to_server(servicer, context.server)
    start_sampler(context, metrics.sampler(settings.scheduler_time_zone))


SPEC = ServiceSpec(
    name="scheduler",
    settings_class=SchedulerSettings,
    grpc_services=("loom.scheduler.v1.SchedulerService",),
    setup=setup,
)
