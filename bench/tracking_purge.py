"""Tracking retention: dropping an expired month of raw interactions against deleting it.

- tracking.purge.month: seconds of PurgeOldData's store work (retention.purge, one
  transaction, commit included) when one month of 1M interactions has expired: it counts
  the month's rows, drops its partition and makes the months ahead. Baseline: a DELETE of
  the same rows (the same month filled the same way), committed, in the same run.
- tracking.purge.month.vacuumed: the same seconds against that DELETE plus the VACUUM
  its dead rows and index entries need before the space is reused (a drop leaves none).
- tracking.purge.month.wal: megabytes of WAL the purge writes (what replicas and backups
  receive) against the WAL of that DELETE and VACUUM.

Each measurement starts from a freshly created, filled (generate_series) and vacuumed
partition, so neither side pays for the other's dead rows. The month is long past, so
nothing else the service does touches it.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta

import psycopg

from bench.harness import BenchContext, Figure, benchmark, median
from libs.db import make_engine, run_in_transaction
from libs.scratch_db import plain_url
from services.tracking.store import retention
from services.tracking.store.partitions import INTERACTIONS, create_partition_sql, month_start, next_month, partition_name

MONTH = date(2020, 1, 1)
DEDUP_WINDOW = timedelta(minutes=30)


def _fill_sql(total: int) -> str:
    """total enriched interactions spread over MONTH: 5,000 products, sessions of 10 events, one in five signed in."""
    span = (month_start(next_month(MONTH)) - month_start(MONTH)).total_seconds()
    return f"""INSERT INTO tracking.interactions (id, occurred_at, type, product_id, session_id, user_id, client_event_id,
        page, referrer_host, country, browser, os, device, ip_hash)
    SELECT gen_random_uuid(), '{month_start(MONTH).isoformat()}'::timestamptz + n * interval '{span / total} seconds',
        1 + n % 8, 'prod-' || n % 5000, 'sess-' || n / 10, CASE WHEN n % 50 < 10 THEN 'user-' || n / 50 END, 'ev-' || n,
        '/products/prod-' || n % 5000, 'www.google.com', 'US', 'Chrome', 'Windows', 'desktop', '\\x0102030405060708'
    FROM generate_series(0, {total - 1}) n"""


def _fresh_month(url: str, total: int) -> None:
    """MONTH's partition, created anew and filled with total rows, vacuumed and analyzed."""
    with psycopg.connect(plain_url(url), autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS tracking.{partition_name(INTERACTIONS, MONTH)}")
        conn.execute(create_partition_sql(INTERACTIONS, MONTH))
        conn.execute(_fill_sql(total))
        conn.execute(f"VACUUM ANALYZE tracking.{partition_name(INTERACTIONS, MONTH)}")


def _wal_position(url: str) -> str:
    with psycopg.connect(plain_url(url)) as conn:
        return conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]


def _wal_since(url: str, position: str) -> int:
    """Bytes of WAL written since position (by anything: nothing else writes during a measurement)."""
    with psycopg.connect(plain_url(url)) as conn:
        return int(conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), %s)", (position,)).fetchone()[0])


def _delete_month(url: str) -> tuple[float, float, int, int]:
    """Seconds of the DELETE (committed), seconds of the VACUUM its dead rows need, rows deleted, WAL bytes of both."""
    position = _wal_position(url)
    with psycopg.connect(plain_url(url)) as conn:
        started = time.perf_counter()
        deleted = conn.execute(
            "DELETE FROM tracking.interactions WHERE occurred_at >= %s AND occurred_at < %s",
            (month_start(MONTH), month_start(next_month(MONTH))),
        ).rowcount
        conn.commit()
        deleting = time.perf_counter() - started
        conn.autocommit = True
        started = time.perf_counter()
        conn.execute(f"VACUUM tracking.{partition_name(INTERACTIONS, MONTH)}")
        vacuuming = time.perf_counter() - started
    return deleting, vacuuming, deleted, _wal_since(url, position)


@benchmark(
    "tracking.purge.month",
    figures=("tracking.purge.month", "tracking.purge.month.vacuumed", "tracking.purge.month.wal"),
)
async def purge_month(ctx: BenchContext) -> list[Figure]:
    total = ctx.size("BENCH_TRACKING_PURGE_EVENTS", full=1_000_000, quick=100_000)
    url = ctx.database_url
    engine = make_engine(url, application_name="bench-purge", pool_size=1, max_overflow=0)
    cutoff = month_start(next_month(MONTH))  # MONTH, and only it, has wholly expired
    drops, deletes, vacuums, drop_wal, delete_wal = [], [], [], [], []
    try:
        for _ in range(ctx.runs):
            _fresh_month(url, total)
            deleting, vacuuming, deleted, wal = _delete_month(url)
            assert deleted == total, deleted
            deletes.append(deleting)
            vacuums.append(deleting + vacuuming)
            delete_wal.append(wal)
            _fresh_month(url, total)
            position = _wal_position(url)
            started = time.perf_counter()
            purged = await run_in_transaction(
                engine, lambda conn: retention.purge(conn, cutoff, DEDUP_WINDOW, datetime.now(UTC))
            )
            drops.append(time.perf_counter() - started)
            drop_wal.append(_wal_since(url, position))
            assert purged.interactions == total, purged
    finally:
        await engine.dispose()
    value = median(drops)
    return [
        Figure("tracking.purge.month", value, "s", value / median(deletes), "DELETE of the same rows"),
        Figure("tracking.purge.month.vacuumed", value, "s", value / median(vacuums), "DELETE of the same rows + its VACUUM"),
        Figure(
            "tracking.purge.month.wal", median(drop_wal) / 1e6, "MB", median(drop_wal) / median(delete_wal),
            "WAL of the DELETE + its VACUUM",
        ),
    ]
