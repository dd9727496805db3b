"""The connection budget (libs/connection_budget.py): the formula, `loom up`'s pool sizing
against a real server's max_connections, and the compose file against PostgreSQL's default."""

from __future__ import annotations

import re

import pytest

from libs import connection_budget as cb
from libs.cli import sized_pools
from libs.settings import Settings, settings_classes
from tests.deploy.compose import environment, replicas, services
from tests.deploy.test_compose import NO_SHELL_ENV, settings_class_of

POSTGRES_DEFAULT_MAX_CONNECTIONS = 100
POSTGRES_DEFAULT_SUPERUSER_RESERVED = 3
CLASSES = dict(settings_classes())


def settings_of(**values) -> dict[str, Settings]:
    """Every process's settings read from one environment, as `loom up` gives its children."""
    return {name: CLASSES.get(name, Settings)(**values) for name in cb.suite_topology(1)}


def test_a_process_holds_its_pool_its_overflow_and_its_dedicated_connections():
    settings = settings_of(db_pool_size=7, db_max_overflow=3, ingest_writers=4)
    assert cb.per_process("batch", settings["batch"]) == 10
    assert cb.per_process("rules", settings["rules"]) == 10
    assert cb.per_process("tracking", settings["tracking"]) == 10 + 4, "one connection per ingest writer"
    assert cb.per_process("scheduler", settings["scheduler"]) == 10 + 1 + 1 + 2, "lock, LISTEN, job store 1+1"
    assert cb.per_process("gateway", settings["gateway"]) == 0


def test_the_default_suite_on_the_default_server_fits_with_room_for_operators():
    budget = cb.budget(cb.suite_topology(1), settings_of(), max_connections=POSTGRES_DEFAULT_MAX_CONNECTIONS)
    assert budget.total == 4 * 20 + 2 + 4 + cb.MIGRATION_CONNECTIONS
    assert budget.fits, budget.explain()


def test_the_issue_topology_of_replicas_with_default_pools_does_not_fit_and_says_why():
    budget = cb.budget(cb.suite_topology(2), settings_of(), max_connections=POSTGRES_DEFAULT_MAX_CONNECTIONS)
    assert not budget.fits
    with pytest.raises(cb.BudgetExceeded, match=r"= 173 connections.*= 92"):
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
