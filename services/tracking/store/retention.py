"""Retention: raw events, shares and rejection records after their time; closed windows."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.tracking.records import PurgeCounts


async def purge(conn: AsyncConnection, cutoff: datetime, dedup_window: timedelta, now: datetime) -> PurgeCounts:
    """Deletes raw interactions, shares (folded into purged_shares) and rejection records before cutoff."""
    interactions = (
        await conn.execute(text("DELETE FROM tracking.interactions WHERE occurred_at < :cutoff"), {"cutoff": cutoff})
    ).rowcount
    shares = (
        await conn.execute(
            text(
                """WITH gone AS (DELETE FROM tracking.shares WHERE created_at < :cutoff RETURNING post_id),
                per_post AS (SELECT post_id, count(*) AS n FROM gone GROUP BY post_id),
                folded AS (UPDATE tracking.posts p SET purged_shares = p.purged_shares + per_post.n
                           FROM per_post WHERE p.post_id = per_post.post_id)
                SELECT COALESCE(sum(n), 0) FROM per_post"""
            ),
            {"cutoff": cutoff},
        )
    ).scalar_one()
    rejections = (
        await conn.execute(
            text("DELETE FROM tracking.share_rejections WHERE day < CAST(:cutoff AS timestamptz)::date"), {"cutoff": cutoff}
        )
    ).rowcount
    # Closed de-duplication windows decide nothing any more.
    await conn.execute(
        text("DELETE FROM tracking.dedup_windows WHERE window_start < :closed"), {"closed": now - dedup_window}
    )
    return PurgeCounts(int(interactions), int(shares), int(rejections))
