"""What operators watch in the scheduler, for Prometheus.

Run counts and durations are counted by the runner as attempts end. When each job last
succeeded, its period and whether it is paused are sampled from the database
(`libs.sampling`), so both replicas report the same values and the "not succeeded within
twice its period" alert holds whichever replica leads (aggregate with max()).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import Gauge
from sqlalchemy.ext.asyncio import AsyncConnection

from services.scheduler.domain.schedules import build_trigger, firings_between
from services.scheduler.store import jobs as job_store
from services.scheduler.store import runs as run_store

LAST_SUCCESS = Gauge(
    "loom_scheduler_job_last_success_timestamp_seconds",
    "When the job's latest successful run finished (Unix time); when it was last defined if it never succeeded.",
    ["job_name"],
)
PERIOD = Gauge("loom_scheduler_job_period_seconds", "Time between two firings of the job's schedule.", ["job_name"])
PAUSED = Gauge("loom_scheduler_job_paused", "1 while the job is paused, else 0.", ["job_name"])
# Long enough to find two firings of any cron schedule Loom accepts (monthly, yearly-ish).
PERIOD_HORIZON = timedelta(days=400)


def period_seconds(trigger, now: datetime) -> float | None:
    """The gap between the schedule's next two firings; None for a one-shot job."""
    upcoming = firings_between(trigger, now, now + PERIOD_HORIZON, limit=2)
    return (upcoming[1] - upcoming[0]).total_seconds() if len(upcoming) >= 2 else None


def sampler(default_zone: str):
    async def sample(conn: AsyncConnection) -> None:
        now = datetime.now(UTC)
        jobs = await job_store.job_records(conn)
        succeeded = await run_store.last_successes(conn)
        for gauge in (LAST_SUCCESS, PERIOD, PAUSED):
            gauge.clear()
        for job in jobs:
            period = period_seconds(build_trigger(job.schedule, default_zone), now)
            if period is None:
                continue
            since = succeeded.get(job.name) or job.update_time or now
            LAST_SUCCESS.labels(job.name).set(since.timestamp())
            PERIOD.labels(job.name).set(period)
            PAUSED.labels(job.name).set(1 if job.paused else 0)

    return sample
