"""The connection budget: how many PostgreSQL connections a deployment opens, and whether
that fits the server.

One process of a service holds at most

    pool + overflow + dedicated

connections: `LOOM_DB_POOL_SIZE` + `LOOM_DB_MAX_OVERFLOW` for its SQLAlchemy pool (every
request, the outbox dispatcher, the rules worker, the metrics sampler, the WatchBatch poll;
batch's group committer keeps one of the pool's connections for itself), plus the
connections it opens outside the pool (`DEDICATED`):

- scheduler: 1 lock connection (its liveness and the leader advisory locks, session-level),
  1 LISTEN connection (WatchJobRuns, opened with the first watcher) and APScheduler's
  synchronous job store engine (pool 1 + overflow 1, used by the leader);
- tracking: 1 per group-commit writer (`LOOM_INGEST_WRITERS`);
- rules: 1 for the lease heartbeat (its own one-connection engine, so a busy pool cannot
  delay a renewal past the lease; services/rules/wiring.py);
- batch: none; the gateway opens no database connection at all.

A topology (processes x replicas) needs the sum over its replicas, plus one connection for
the migration while it runs (`loom migrate`, the Kubernetes Job during a rolling upgrade).
It fits when that total is at most the server's `max_connections` less the connections it
reserves for superusers (`superuser_reserved_connections`, and `reserved_connections` on
PostgreSQL 16) and less `LOOM_DB_RESERVED_CONNECTIONS` left to operators and monitoring.

`loom up` reads the server's limits and, when the configured pools would not fit, gives
every process the same smaller pool (`size_pools`); docs/deploy.md has the formula and the
compose file's sums, tests/deploy/test_connection_budget.py checks the compose file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from libs.settings import SERVICE_NAMES, Settings

# APScheduler's job store is synchronous, so the scheduler gives it an engine of its own.
SCHEDULER_JOB_STORE_POOL_SIZE = 1
SCHEDULER_JOB_STORE_MAX_OVERFLOW = 1
# The migration (alembic, NullPool) holds one connection at a time.
MIGRATION_CONNECTIONS = 1
# A pool smaller than this starves: batch's group committer keeps one connection, and
# requests, the outbox dispatcher and the sampler need at least one more.
MIN_POOL_SIZE = 2
# Processes that open database connections; the gateway does not.
DATABASE_PROCESSES = SERVICE_NAMES


def _scheduler_dedicated(settings: Settings) -> int:
    lock, listen = 1, 1
    return lock + listen + SCHEDULER_JOB_STORE_POOL_SIZE + SCHEDULER_JOB_STORE_MAX_OVERFLOW


def _tracking_dedicated(settings: Settings) -> int:
    return int(settings.model_dump(include={"ingest_writers"})["ingest_writers"])  # TrackingSettings


# The rules lease heartbeat's engine (pool 1, no overflow).
RULES_HEARTBEAT_CONNECTIONS = 1


def _rules_dedicated(settings: Settings) -> int:
    return RULES_HEARTBEAT_CONNECTIONS


# Connections a process opens outside its pool, by service (none when absent).
DEDICATED: dict[str, Callable[[Settings], int]] = {
    "scheduler": _scheduler_dedicated,
    "tracking": _tracking_dedicated,
    "rules": _rules_dedicated,
}


class BudgetExceeded(ValueError):
    """The topology needs more connections than the server allows."""


def dedicated_connections(service: str, settings: Settings) -> int:
    rule = DEDICATED.get(service)
    return rule(settings) if rule else 0


def per_process(service: str, settings: Settings) -> int:
    """Connections one process of `service` may hold with these settings."""
    if service not in DATABASE_PROCESSES:
        return 0
    return settings.db_pool_size + settings.db_max_overflow + dedicated_connections(service, settings)


@dataclass(frozen=True)
class Budget:
    """What a topology needs against what a server allows."""

    needed: dict[str, int]  # per process name, all its replicas together
    migration: int
    max_connections: int
    server_reserved: int
    reserved: int

    @property
    def total(self) -> int:
        return sum(self.needed.values()) + self.migration

    @property
    def available(self) -> int:
        return self.max_connections - self.server_reserved - self.reserved

    @property
    def fits(self) -> bool:
        return self.total <= self.available

    def explain(self) -> str:
        parts = " + ".join(f"{name} {count}" for name, count in self.needed.items() if count)
        return (
            f"{parts} + migration {self.migration} = {self.total} connections; the server allows "
            f"{self.max_connections} - {self.server_reserved} reserved for superusers - {self.reserved} left to "
            f"operators = {self.available}"
        )

    def check(self) -> Budget:
        if not self.fits:
            raise BudgetExceeded(f"the connection budget does not fit: {self.explain()}")
        return self


def budget(
    replicas: Mapping[str, int],
    settings: Mapping[str, Settings],
    *,
    max_connections: int,
    server_reserved: int = 3,
    reserved: int | None = None,
) -> Budget:
    """The budget of `replicas` (process name -> replica count), each process reading
    `settings[name]`. `reserved` defaults to the settings' `db_reserved_connections`."""
    needed = {name: count * per_process(name, settings[name]) for name, count in replicas.items() if count}
    if reserved is None:
        reserved = max((s.db_reserved_connections for s in settings.values()), default=0)
    return Budget(needed, MIGRATION_CONNECTIONS, max_connections, server_reserved, reserved)


def suite_topology(replicas: int = 1) -> dict[str, int]:
    """What `loom up` runs: `replicas` of each process, and two schedulers once there are replicas."""
    topology = dict.fromkeys((*SERVICE_NAMES, "gateway"), replicas)
    if replicas > 1:
        topology["scheduler"] = 2
    return topology


def size_pools(
    replicas: Mapping[str, int], settings: Mapping[str, Settings], *, max_connections: int, server_reserved: int
) -> tuple[int, int]:
    """The (pool size, max overflow) every process gets so that the topology fits: the
    configured ones when they fit, else the largest equal share of what the server allows,
    split between pool and overflow as configured (one shared environment, as `loom up`
    gives its children, has one pool size)."""
    configured = next(iter(settings.values()))
    pool, overflow = configured.db_pool_size, configured.db_max_overflow
    first = budget(replicas, settings, max_connections=max_connections, server_reserved=server_reserved)
    if first.fits:
        return pool, overflow
    pooled = sum(count for name, count in replicas.items() if name in DATABASE_PROCESSES)
    dedicated = sum(count * dedicated_connections(name, settings[name]) for name, count in replicas.items())
    share = (first.available - first.migration - dedicated) // max(1, pooled)
    if share < MIN_POOL_SIZE:
        raise BudgetExceeded(
            f"even pools of {MIN_POOL_SIZE} do not fit: {first.explain()}; raise max_connections, run fewer "
            "replicas or put PgBouncer in front (docs/deploy.md)"
        )
    sized_pool = max(MIN_POOL_SIZE, share * pool // (pool + overflow))
    return sized_pool, share - sized_pool


def server_limits(conninfo: str) -> tuple[int, int]:
    """The server's max_connections, and how many of them it keeps for superusers."""
    import psycopg

    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute(
            "SELECT current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int"
            " + coalesce(current_setting('reserved_connections', true)::int, 0)"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def suite_pool_env(database_url: str, replicas: int = 1) -> dict[str, str]:
    """The pool settings `loom up` gives its children so the suite fits the server (or
    BudgetExceeded): `replicas` of every process, each reading the environment's settings."""
    from libs.db import async_url
    from libs.scratch_db import plain_url
    from libs.settings import settings_classes

    classes = dict(settings_classes())
    topology = suite_topology(replicas)
    settings = {name: classes.get(name, Settings)() for name in topology}
    max_connections, server_reserved = server_limits(plain_url(async_url(database_url)))
    pool, overflow = size_pools(topology, settings, max_connections=max_connections, server_reserved=server_reserved)
    return {"LOOM_DB_POOL_SIZE": str(pool), "LOOM_DB_MAX_OVERFLOW": str(overflow)}
