"""Shares: storing them, the reads and writes of the per-IP rate limit, share statistics.

The decision (is the post shareable, is the IP over its limit) is made by
`services.tracking.usecases.shares`; these functions only speak SQL.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from libs.db import is_transient
from services.tracking.records import DailyRejections, DailyShareCount, PlatformCount, ShareStats
from services.tracking.store.posts import get_post

log = structlog.get_logger("loom.tracking.store")
# Advisory-lock class of per-IP share limits (the other int is 32 bits of an IP hash).
SHARE_LIMIT_LOCK_CLASS = 0x53484152  # "SHAR"


async def lock_share_keys(conn: AsyncConnection, keys: list[int]) -> None:
    """Holds, until the transaction ends, the per-IP share locks (domain.share_lock_keys), in order."""
    for key in keys:
        await conn.execute(
            text("SELECT pg_advisory_xact_lock(:class, :key)"), {"class": SHARE_LIMIT_LOCK_CLASS, "key": key}
        )


async def recent_shares(conn: AsyncConnection, ip_hashes: tuple[bytes, bytes], since: datetime) -> tuple[int, datetime | None]:
    """(how many, the oldest's time) of the shares made from either hash of an address since `since`."""
    today_hash, yesterday_hash = ip_hashes
    recent, oldest = (
        await conn.execute(
            text(
                """SELECT count(*), min(created_at) FROM tracking.shares
                WHERE ip_hash IN (:today, :yesterday) AND created_at > :since"""
            ),
            {"today": today_hash, "yesterday": yesterday_hash, "since": since},
        )
    ).one()
    return recent, oldest


async def record_rejection(conn: AsyncConnection, day: date, ip_hash: bytes) -> None:
    """Counts a share refused by the rate limit (for the statistics)."""
    await conn.execute(
        text(
            """INSERT INTO tracking.share_rejections AS r (day, ip_hash, rejected) VALUES (:day, :ip_hash, 1)
            ON CONFLICT (day, ip_hash) DO UPDATE SET rejected = r.rejected + 1"""
        ),
        {"day": day, "ip_hash": ip_hash},
    )


async def insert_share(
    conn: AsyncConnection, *, post_id: str, platform: int, session_id: str | None, user_id: str | None,
    ip_hash: bytes, now: datetime,
) -> str:
    """Stores the share; its id."""
    share_id = str(uuid.uuid4())
    await conn.execute(
        text(
            """INSERT INTO tracking.shares (id, post_id, platform, session_id, user_id, ip_hash, created_at)
            VALUES (:id, :post_id, :platform, :session_id, :user_id, :ip_hash, :now)"""
        ),
        {"id": share_id, "post_id": post_id, "platform": platform, "session_id": session_id,
         "user_id": user_id, "ip_hash": ip_hash, "now": now},
    )
    return share_id


async def raise_share_count(conn: AsyncConnection, post_id: str) -> int:
    """Adds one to the post's counter; if that fails the share stands and the aggregation repairs the count."""
    try:
        async with conn.begin_nested():
            await conn.execute(text("SET LOCAL lock_timeout = '2s'"))
            return (
                await conn.execute(
                    text("UPDATE tracking.posts SET share_count = share_count + 1 WHERE post_id = :p RETURNING share_count"),
                    {"p": post_id},
                )
            ).scalar_one()
    except Exception as error:  # noqa: BLE001 - the share is kept; AggregatePopularity repairs the counter
        if is_transient(error):
            raise  # the connection, and the share with it, is gone: the whole transaction is retried
        log.warning("share counter not raised; the aggregation job will repair it", post_id=post_id)
        return (
            await conn.execute(text("SELECT share_count FROM tracking.posts WHERE post_id = :p"), {"p": post_id})
        ).scalar_one()


async def share_stats(conn: AsyncConnection, post_id: str, start: datetime | None, end: datetime | None) -> ShareStats:
    """The post's stored shares in the range: in total, per platform, per UTC day and platform."""
    await get_post(conn, post_id)
    rows = (
        await conn.execute(
            text(
                """SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, platform, count(*)
                FROM tracking.shares WHERE post_id = :post_id
                AND created_at >= COALESCE(CAST(:start AS timestamptz), '-infinity')
                AND created_at < COALESCE(CAST(:end AS timestamptz), 'infinity')
                GROUP BY 1, 2 ORDER BY 1, 2"""
            ),
            {"post_id": post_id, "start": start, "end": end},
        )
    ).all()
    by_platform: dict[int, int] = {}
    for _, platform, count in rows:
        by_platform[platform] = by_platform.get(platform, 0) + count
    return ShareStats(
        total=sum(by_platform.values()),
        by_platform=[PlatformCount(platform, count) for platform, count in sorted(by_platform.items())],
        by_day=[DailyShareCount(day, platform, count) for day, platform, count in rows],
    )


async def rate_limit_stats(conn: AsyncConnection, start: datetime | None, end: datetime | None) -> list[DailyRejections]:
    """Share attempts rejected and accepted per UTC day."""
    rows = await conn.execute(
        text(
            """WITH rejected AS (
                SELECT day, sum(rejected) AS n FROM tracking.share_rejections
                WHERE day >= COALESCE(CAST(:start AS timestamptz) AT TIME ZONE 'UTC', '-infinity')::date
                  AND day <= COALESCE(CAST(:end AS timestamptz) AT TIME ZONE 'UTC', 'infinity')::date
                GROUP BY day
            ), accepted AS (
                SELECT (created_at AT TIME ZONE 'UTC')::date AS day, count(*) AS n FROM tracking.shares
                WHERE created_at >= COALESCE(CAST(:start AS timestamptz), '-infinity')
                  AND created_at < COALESCE(CAST(:end AS timestamptz), 'infinity')
                GROUP BY 1
            )
            SELECT to_char(day, 'YYYY-MM-DD'), COALESCE(rejected.n, 0), COALESCE(accepted.n, 0)
            FROM rejected FULL JOIN accepted USING (day) ORDER BY day"""
        ),
        {"start": start, "end": end},
    )
    return [DailyRejections(day, int(rejected), int(accepted)) for day, rejected, accepted in rows]
