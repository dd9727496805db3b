"""Monthly partitions of the unbounded engagement tables (raw interactions, shares).

Each table is PARTITION BY RANGE on its event time, one partition per UTC month named
`<table>_YYYY_MM`, plus `<table>_default` for times no month partition covers (a
backfill of old events, a month the retention job has not created yet): a row is never
refused for its time. Creating a month whose rows already sit in the default partition
moves them into the new partition in the same transaction.

Partitions are made ahead (the current and the next month) by the migration, at startup
and by every PurgeOldData; retention drops whole expired months (store/retention.py).
DDL on a partitioned table takes the parent's ACCESS EXCLUSIVE lock, which ingestion's
next statement then queues behind: every DDL here waits at most LOCK_TIMEOUT for it, and
a purge that cannot get it fails as UNAVAILABLE (the scheduler retries) rather than
holding ingestion back behind a long aggregation's read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from libs.domain_errors import Unavailable

# One partition manager at a time across replicas (same class as the aggregation's lock).
PARTITION_LOCK = (0x54524B41, 2)  # "TRKA", 2
LOCK_TIMEOUT = "2s"
LOCK_NOT_AVAILABLE = "55P03"


@dataclass(frozen=True)
class Partitioned:
    table: str
    column: str  # the partition key: the event's time (timestamptz)


INTERACTIONS = Partitioned("interactions", "occurred_at")
SHARES = Partitioned("shares", "created_at")
PARTITIONED = (INTERACTIONS, SHARES)


def month_of(moment: datetime) -> date:
    """The first day of moment's UTC month."""
    utc = moment.astimezone(UTC)
    return date(utc.year, utc.month, 1)


def next_month(month: date) -> date:
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


def month_start(month: date) -> datetime:
    return datetime(month.year, month.month, 1, tzinfo=UTC)


def partition_name(table: Partitioned, month: date) -> str:
    return f"{table.table}_{month:%Y_%m}"


def create_partition_sql(table: Partitioned, month: date) -> str:
    """The month's partition: [first instant of the month, first instant of the next) in UTC."""
    return (
        f"CREATE TABLE tracking.{partition_name(table, month)} PARTITION OF tracking.{table.table}"
        f" FOR VALUES FROM ('{month.isoformat()} 00:00:00+00') TO ('{next_month(month).isoformat()} 00:00:00+00')"
    )


def create_default_sql(table: Partitioned) -> str:
    return f"CREATE TABLE tracking.{table.table}_default PARTITION OF tracking.{table.table} DEFAULT"


def months_ahead(now: datetime) -> list[date]:
    """The months kept created ahead: the current and the next."""
    current = month_of(now)
    return [current, next_month(current)]


async def lock(conn: AsyncConnection) -> None:
    """Holds the partition manager's lock until the transaction ends."""
    await conn.execute(text("SELECT pg_advisory_xact_lock(:a, :b)"), {"a": PARTITION_LOCK[0], "b": PARTITION_LOCK[1]})


async def months(conn: AsyncConnection, table: Partitioned) -> list[date]:
    """The months that have a partition, oldest first."""
    rows = await conn.execute(
        text(
            """SELECT substr(c.relname, length(:table) + 2) FROM pg_inherits i
            JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
            JOIN pg_namespace n ON n.oid = p.relnamespace
            WHERE n.nspname = 'tracking' AND p.relname = :table AND c.relname ~ ('^' || :table || '_\\d{4}_\\d{2}$')"""
        ),
        {"table": table.table},
    )
    return sorted(date(int(stamp[:4]), int(stamp[5:]), 1) for (stamp,) in rows)


async def ensure(conn: AsyncConnection, now: datetime) -> list[str]:
    """Creates the missing partitions of the current and next months; the names created.

    Rows of such a month already in the default partition move into it.
    """
    await lock(conn)
    created = []
    for table in PARTITIONED:
        existing = set(await months(conn, table))
        for month in months_ahead(now):
            if month not in existing:
                await create_month(conn, table, month)
                created.append(partition_name(table, month))
    return created


async def create_month(conn: AsyncConnection, table: Partitioned, month: date) -> None:
    """Creates the month's partition, moving its rows out of the default partition first."""
    bounds = {"low": month_start(month), "high": month_start(next_month(month))}
    default = f"tracking.{table.table}_default"
    in_range = f"{table.column} >= :low AND {table.column} < :high"
    strays = (await conn.execute(text(f"SELECT EXISTS (SELECT FROM {default} WHERE {in_range})"), bounds)).scalar_one()
    if strays:
        await conn.execute(
            text(f"CREATE TEMP TABLE strays ON COMMIT DROP AS WITH moved AS (DELETE FROM {default} WHERE {in_range}"
                 " RETURNING *) SELECT * FROM moved"),
            bounds,
        )
    await ddl(conn, create_partition_sql(table, month))
    if strays:
        await conn.execute(text(f"INSERT INTO tracking.{table.table} SELECT * FROM strays"))
        await conn.execute(text("DROP TABLE strays"))


async def ddl(conn: AsyncConnection, statement: str) -> None:
    """Runs DDL that locks a partitioned table, waiting at most LOCK_TIMEOUT for the lock (UNAVAILABLE after)."""
    previous = (await conn.execute(text("SELECT current_setting('lock_timeout')"))).scalar_one()
    await conn.execute(text("SELECT set_config('lock_timeout', :t, true)"), {"t": LOCK_TIMEOUT})
    try:
        await conn.execute(text(statement))
    except Exception as error:
        if getattr(getattr(error, "orig", None), "sqlstate", None) == LOCK_NOT_AVAILABLE:
            raise Unavailable("engagement partitions are busy (a long read holds them); retry") from error
        raise
    await conn.execute(text("SELECT set_config('lock_timeout', :t, true)"), {"t": previous})
