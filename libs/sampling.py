"""Business gauges read from the database on a timer, for Prometheus.

What the business watches as *state* (batches by status, the outbox backlog, when a job
last succeeded) lives in PostgreSQL, not in one process: a replica that just started
knows it as well as one that has run for a week. So each service samples it with a few
aggregate queries every `metrics_sample_seconds` and scrapes read the last sample.
Every replica reports the same values; dashboards and alerts aggregate them with
`max()`, never `sum()`. Events (orders placed, actions failed) stay in-process counters
incremented where they happen.

The sampler runs only where metrics are served (a metrics port is set), so tests and
benchmarks that turn metrics off pay nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from libs.bootstrap import ServiceContext
from libs.tasks import cancel_and_wait

Sample = Callable[[AsyncConnection], Awaitable[None]]
log = structlog.get_logger("loom.sampling")


async def _sample_forever(engine: AsyncEngine, sample: Sample, interval_seconds: float) -> None:
    while True:
        try:
            async with engine.connect() as conn:
                await sample(conn)
        except Exception as error:  # noqa: BLE001 - a failed sample must not stop the next one
            log.warning("metrics sample failed", error=type(error).__name__)
        await asyncio.sleep(interval_seconds)


def start_sampler(context: ServiceContext, sample: Sample) -> None:
    """Samples in the background for the service's lifetime, when it serves metrics."""
    settings = context.settings
    if not settings.metrics_port_of(context.name) or context.engine is None:
        return
    task = asyncio.create_task(
        _sample_forever(context.engine, sample, settings.metrics_sample_seconds), name=f"{context.name}-metrics"
    )

    context.exit_stack.push_async_callback(cancel_and_wait, task)
