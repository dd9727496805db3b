"""The connection budget (libs/connection_budget.py): the formula, `loom up`'s pool sizing
against a real server's max_connections, the compose file against PostgreSQL's default, and
busy processes that never hold more than their budget (each alone on its own database)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid

import psycopg
import pytest
from loom.rules.v1 import rules_pb2
from loom.scheduler.v1 import scheduler_pb2
from loom.tracking.v1 import tracking_pb2

from libs import connection_budget as cb
from libs.cli import sized_pools
from libs.scratch_db import plain_url
from libs.settings import Settings, settings_classes
from tests.batch.conftest import create_supplier, place
from tests.deploy.compose import environment, replicas, services
from tests.deploy.test_compose import NO_SHELL_ENV, settings_class_of
from tests.rules.conftest import SERVICE, event
from tests.support import auth, serve, settings_for, stub_for

POSTGRES_DEFAULT_MAX_CONNECTIONS = 100
POSTGRES_DEFAULT_SUPERUSER_RESERVED = 3
CLASSES = dict(settings_classes())


def settings_of(**values) -> dict[str, Settings]:
    """Every process's settings read from one environment, as `loom up` gives its children."""
    return {name: CLASSES.get(name, Settings)(**values) for name in cb.suite_topology(1)}


def test_a_process_holds_its_pool_its_overflow_and_its_dedicated_connections():
    settings = settings_of(db_pool_size=7, db_max_overflow=3, ingest_writers=4)
    assert cb.per_process("batch", settings["batch"]) == 10
    assert cb.per_process("rules", settings["rules"]) == 10 + 1, "the lease heartbeat's connection"
    assert cb.per_process("tracking", settings["tracking"]) == 10 + 4, "one connection per ingest writer"
    assert cb.per_process("scheduler", settings["scheduler"]) == 10 + 1 + 1 + 2, "lock, LISTEN, job store 1+1"
    assert cb.per_process("gateway", settings["gateway"]) == 0


def test_the_default_suite_on_the_default_server_fits_with_room_for_operators():
    budget = cb.budget(cb.suite_topology(1), settings_of(), max_connections=POSTGRES_DEFAULT_MAX_CONNECTIONS)
    assert budget.total == 4 * 20 + 2 + 4 + 1 + cb.MIGRATION_CONNECTIONS
    assert budget.fits, budget.explain()


def test_the_issue_topology_of_replicas_with_default_pools_does_not_fit_and_says_why():
    budget = cb.budget(cb.suite_topology(2), settings_of(), max_connections=POSTGRES_DEFAULT_MAX_CONNECTIONS)
    assert not budget.fits
    with pytest.raises(cb.BudgetExceeded, match=r"= 175 connections.*= 92"):
        budget.check()


def test_sizing_keeps_configured_pools_that_fit():
    assert cb.size_pools(cb.suite_topology(1), settings_of(), max_connections=400, server_reserved=3) == (10, 10)


@pytest.mark.parametrize("replicas", [2, 3, 4])
def test_sizing_shrinks_every_pool_until_the_replicas_fit_the_server(replicas):
    topology = cb.suite_topology(replicas)
    pool, overflow = cb.size_pools(topology, settings_of(), max_connections=100, server_reserved=3)
    sized = settings_of(db_pool_size=pool, db_max_overflow=overflow)
    budget = cb.budget(topology, sized, max_connections=100, server_reserved=3)
    assert budget.fits, budget.explain()
    assert pool >= cb.MIN_POOL_SIZE and abs(pool - overflow) <= 1, "split as configured (10 + 10)"
    bigger = settings_of(db_pool_size=pool + 1, db_max_overflow=overflow)
    assert not cb.budget(topology, bigger, max_connections=100, server_reserved=3).fits, "the largest share that fits"


def test_sizing_refuses_a_server_too_small_for_the_minimum_pools():
    with pytest.raises(cb.BudgetExceeded, match="even pools of 2"):
        cb.size_pools(cb.suite_topology(8), settings_of(), max_connections=40, server_reserved=3)


def test_loom_up_reads_the_servers_limits(database_url):
    max_connections, reserved = cb.server_limits(database_url.replace("postgresql+psycopg://", "postgresql://"))
    assert max_connections >= 100 and reserved >= 3
    env = sized_pools(Settings(), database_url, replicas=1)
    pool, overflow = int(env["LOOM_DB_POOL_SIZE"]), int(env["LOOM_DB_MAX_OVERFLOW"])
    sized = settings_of(db_pool_size=pool, db_max_overflow=overflow)
    assert cb.budget(cb.suite_topology(1), sized, max_connections=max_connections, server_reserved=reserved).fits


def compose_budget(max_connections: int) -> cb.Budget:
    """The compose topology's budget, each process reading its compose environment."""
    topology = {process: replicas(process) for process in cb.suite_topology(1) if replicas(process)}
    settings = {}
    for process in topology:
        env = environment(process, NO_SHELL_ENV)
        if process in cb.DATABASE_PROCESSES:
            assert {"LOOM_DB_POOL_SIZE", "LOOM_DB_MAX_OVERFLOW"} <= set(env), f"{process}: pools set explicitly"
        with pytest.MonkeyPatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            settings[process] = settings_class_of(process)()
    return cb.budget(
        topology, settings, max_connections=max_connections, server_reserved=POSTGRES_DEFAULT_SUPERUSER_RESERVED
    )


def test_the_compose_topology_fits_postgres_default_max_connections():
    command = services()["postgres"].get("command") or []
    configured = [int(m[1]) for word in command if (m := re.match(r"max_connections=(\d+)", str(word)))]
    assert not configured, "the compose file must fit PostgreSQL's default, not raise it"
    budget = compose_budget(POSTGRES_DEFAULT_MAX_CONNECTIONS)
    assert {name for name, count in budget.needed.items() if count} == set(cb.DATABASE_PROCESSES)
    assert budget.fits, budget.explain()


class PeakConnections:
    """The most connections to a database seen while the block runs (sampled every 20 ms),
    from anyone but the sampler."""

    def __init__(self, database_url: str) -> None:
        self._url = plain_url(database_url)
        self.peak = 0
        self._task: asyncio.Task | None = None

    def count(self) -> int:
        with psycopg.connect(self._url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()
        return int(row[0]) if row else 0

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, await asyncio.to_thread(self.count))
            await asyncio.sleep(0.02)

    async def __aenter__(self) -> PeakConnections:
        for _ in range(100):  # the previous test's service closes its connections as it stops
            if await asyncio.to_thread(self.count) == 0:
                break
            await asyncio.sleep(0.05)
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.peak = max(self.peak, await asyncio.to_thread(self.count))


SMALL_POOL = {"db_pool_size": 2, "db_max_overflow": 0}


async def test_a_busy_scheduler_leading_and_watched_stays_within_its_budget(own_database):
    async with PeakConnections(own_database) as seen, serve(
        "scheduler", own_database, scheduler_leader_poll_seconds=0.1, **SMALL_POOL
    ) as running, stub_for("scheduler", running.target) as stub:
        watch = stub.WatchJobRuns(scheduler_pb2.WatchJobRunsRequest(), metadata=auth("admin"))
        reads = [stub.ListJobs(scheduler_pb2.ListJobsRequest(), metadata=auth("admin")) for _ in range(30)]
        await asyncio.gather(*reads)
        await asyncio.sleep(1.0)  # a few leader ticks (the job store engine), the watch's LISTEN open
        watch.cancel()
    budget = cb.per_process("scheduler", settings_for("scheduler", own_database, **SMALL_POOL))
    assert 2 + 1 + 1 <= seen.peak <= budget, "pool, lock and LISTEN at least; never more than the budget"


async def test_a_busy_tracking_process_stays_within_its_budget(own_database):
    unique = uuid.uuid4().hex[:8]
    async with PeakConnections(own_database) as seen, serve("tracking", own_database, **SMALL_POOL) as running, stub_for(
        "tracking", running.target
    ) as stub:

        async def ingest(i: int) -> None:
            item = tracking_pb2.Interaction(
                client_event_id=f"{unique}-{i}", type=tracking_pb2.INTERACTION_TYPE_VIEW_DETAILS,
                product_id=f"p-{i % 3}", session_id=f"s-{unique}-{i}",
            )
            await stub.TrackInteraction(tracking_pb2.TrackInteractionRequest(interaction=item))
            await stub.GetEngagementSummary(tracking_pb2.GetEngagementSummaryRequest(), metadata=auth("admin"))

        await asyncio.gather(*(ingest(i) for i in range(60)))
    settings = settings_for("tracking", own_database, **SMALL_POOL)
    assert seen.peak <= cb.per_process("tracking", settings) == 2 + settings.ingest_writers


async def test_a_busy_batch_process_with_its_committer_and_dispatcher_stays_within_its_pool(own_database):
    category = f"budget_{uuid.uuid4().hex[:8]}"
    async with PeakConnections(own_database) as seen, serve(
        "batch", own_database, outbox_poll_seconds=0.05, **SMALL_POOL
    ) as running, stub_for("batch", running.target) as stub:
        await create_supplier(stub, category)
        await asyncio.gather(*(place(stub, category, 1) for _ in range(40)))
    assert seen.peak <= cb.per_process("batch", settings_for("batch", own_database, **SMALL_POOL)) == 2


async def test_a_busy_rules_process_with_its_lease_heartbeat_stays_within_its_budget(own_database):
    # Short leases: the heartbeat renews (over its own connection) while the worker holds events.
    leases = {"event_lease_seconds": 0.3, "execution_lease_seconds": 0.3}
    async with PeakConnections(own_database) as seen, serve("rules", own_database, **leases, **SMALL_POOL) as running, stub_for(
        "rules", running.target
    ) as stub:
        for _ in range(10):
            batch = [event("budget.test", n=i) for i in range(20)]
            await stub.DeliverEvents(rules_pb2.DeliverEventsRequest(events=batch), metadata=SERVICE)
            await asyncio.sleep(0.1)
    assert seen.peak <= cb.per_process("rules", settings_for("rules", own_database, **SMALL_POOL)) == 2 + 1
