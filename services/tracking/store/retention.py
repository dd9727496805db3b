"""Retention: raw events, shares and rejection records after their time; closed windows.

Raw interactions and shares are partitioned by month (store/partitions.py): a month wholly
older than the cutoff is dropped as a table, and only the rows before the cutoff in the
boundary month (when the cutoff is not a month's first instant) and in the default
partition are deleted row by row. Row deletes run first and the drops last, since a drop
holds its parent's ACCESS EXCLUSIVE lock (which ingestion queues behind) until commit.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.tracking.records import PurgeCounts
from services.tracking.store import partitions
from services.tracking.store.partitions import INTERACTIONS, SHARES, Partitioned

# Shares leave with their post's count folded into posts.purged_shares, so a repaired
# share_count keeps counting them; {gone} yields the post_id of every share removed.
FOLD_SHARES = """WITH gone AS ({gone}),
per_post AS (SELECT post_id, count(*) AS n FROM gone GROUP BY post_id),
folded AS (UPDATE tracking.posts p SET purged_shares = p.purged_shares + per_post.n
           FROM per_post WHERE p.post_id = per_post.post_id)
SELECT COALESCE(sum(n), 0) FROM per_post"""
COUNT = "WITH gone AS ({gone}) SELECT count(*) FROM gone"


async def purge(
    conn: AsyncConnection, cutoff: datetime, dedup_window: timedelta, now: datetime, *, whole_months: bool = False
) -> PurgeCounts:
    """Removes raw interactions, shares (folded into purged_shares) and rejection records
    before cutoff (before the start of cutoff's month if whole_months), then creates the
    partitions of the current and next months."""
    await partitions.lock(conn)
    boundary = partitions.month_of(cutoff)
    if whole_months:
        cutoff = partitions.month_start(boundary)
    interactions = await _delete_rows(conn, INTERACTIONS, boundary, cutoff, COUNT.format(gone="DELETE FROM {rows} RETURNING 1"))
    shares = await _delete_rows(conn, SHARES, boundary, cutoff, FOLD_SHARES.format(gone="DELETE FROM {rows} RETURNING post_id"))
    rejections = (
        await conn.execute(
            text("DELETE FROM tracking.share_rejections WHERE day < CAST(:cutoff AS timestamptz)::date"), {"cutoff": cutoff}
        )
    ).rowcount
    # Closed de-duplication windows decide nothing any more.
    await conn.execute(
        text("DELETE FROM tracking.dedup_windows WHERE window_start < :closed"), {"closed": now - dedup_window}
    )
    interactions += await _drop_months(conn, INTERACTIONS, boundary, COUNT.format(gone="SELECT FROM {rows}"))
    shares += await _drop_months(conn, SHARES, boundary, FOLD_SHARES.format(gone="SELECT post_id FROM {rows}"))
    await partitions.ensure(conn, now)
    return PurgeCounts(int(interactions), int(shares), int(rejections))


async def _delete_rows(
    conn: AsyncConnection, table: Partitioned, boundary: date, cutoff: datetime, statement: str
) -> int:
    """Deletes the rows before cutoff of the boundary month's partition and of the default partition."""
    removed = 0
    bounds = {"low": partitions.month_start(boundary), "cutoff": cutoff}
    for rows in (
        # Constrained to the boundary month: pruning leaves its partition and the default one.
        f"tracking.{table.table} WHERE {table.column} >= :low AND {table.column} < :cutoff",
        f"tracking.{table.table}_default WHERE {table.column} < :low",
    ):
        removed += (await conn.execute(text(statement.format(rows=rows)), bounds)).scalar_one()
    return removed


async def _drop_months(conn: AsyncConnection, table: Partitioned, boundary: date, count: str) -> int:
    """Drops the partitions of months before the boundary month; the rows they held (counted by `count`)."""
    expired = [partitions.partition_name(table, m) for m in await partitions.months(conn, table) if m < boundary]
    removed = 0
    for name in expired:
        # No row may arrive between the count and the drop.
        await partitions.ddl(conn, f"LOCK TABLE tracking.{name} IN SHARE MODE")
        removed += (await conn.execute(text(count.format(rows=f"tracking.{name}")))).scalar_one()
    if expired:
        await partitions.ddl(conn, "DROP TABLE " + ", ".join(f"tracking.{name}" for name in expired))
    return removed
