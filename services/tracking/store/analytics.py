"""Analytics reads: engagement summary and trends, funnels, top products.

They combine the aggregation job's rollups (whole hours and days before its last as_of)
with the raw events after it, so answers are current without scanning all history.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.tracking.domain import FUNNEL
from services.tracking.records import EngagementSummary, ProductCount, TrendCount

# The analytics rollups cover events before the last aggregation's as_of: whole hours
# (and days) before it come from them, later events from the raw table.
ROLLUP_BOUNDARY = """SELECT COALESCE(date_trunc('hour', max(aggregated_through), 'UTC'), '-infinity') AS until_hour,
    COALESCE(date_trunc('day', max(aggregated_through), 'UTC'), '-infinity') AS until_day FROM tracking.aggregation_state"""
# The whole hours of [:start, :end) (either may be NULL: unbounded).
HOUR_SPAN = """SELECT date_trunc('hour', COALESCE(CAST(:start AS timestamptz), '-infinity'), 'UTC') AS first_hour,
    COALESCE(CAST(:end AS timestamptz), 'infinity') AS stop"""
# Bit n of a session's funnel steps: it reached domain.FUNNEL[n] (over raw events aliased i).
FUNNEL_STEP_BIT = "CASE i.type " + " ".join(f"WHEN {t} THEN {1 << n}" for n, t in enumerate(FUNNEL)) + " ELSE 0 END"


async def engagement_summary(conn: AsyncConnection, start: datetime | None, end: datetime | None) -> EngagementSummary:
    """Events by type, authenticated events and unique sessions, from the hourly counters (whole hours)."""
    rows = (
        await conn.execute(
            text(
                """SELECT type, sum(events), sum(authenticated) FROM tracking.engagement_hourly
                WHERE hour >= date_trunc('hour', COALESCE(CAST(:start AS timestamptz), '-infinity'), 'UTC')
                  AND hour < COALESCE(CAST(:end AS timestamptz), 'infinity')
                GROUP BY type ORDER BY type"""
            ),
            {"start": start, "end": end},
        )
    ).all()
    sessions = (
        await conn.execute(
            text(
                f"""WITH bound AS ({ROLLUP_BOUNDARY}), span AS ({HOUR_SPAN})
                SELECT count(*) FROM (
                    SELECT session_id FROM tracking.session_hours, bound, span
                    WHERE hour >= first_hour AND hour < stop AND hour < until_hour
                    UNION
                    SELECT session_id FROM tracking.interactions, bound, span
                    WHERE occurred_at >= greatest(first_hour, until_hour) AND occurred_at < stop
                ) sessions"""
            ),
            {"start": start, "end": end},
        )
    ).scalar_one()
    return EngagementSummary({t: int(n) for t, n, _ in rows}, sum(int(a) for _, _, a in rows), int(sessions))


async def engagement_trend(
    conn: AsyncConnection, start: datetime | None, end: datetime | None, unit: str, type_: int | None
) -> list[TrendCount]:
    """Events per type by UTC day or ISO week (unit "day" or "week"), oldest first."""
    rows = await conn.execute(
        text(
            """SELECT date_trunc(:unit, hour, 'UTC') AS period, type, sum(events), sum(authenticated)
            FROM tracking.engagement_hourly
            WHERE hour >= date_trunc('hour', COALESCE(CAST(:start AS timestamptz), '-infinity'), 'UTC')
              AND hour < COALESCE(CAST(:end AS timestamptz), 'infinity')
              AND (CAST(:type AS smallint) IS NULL OR type = :type)
            GROUP BY 1, 2 ORDER BY 1, 2"""
        ),
        {"unit": unit, "start": start, "end": end, "type": type_},
    )
    return [TrendCount(period, t, int(n), int(a)) for period, t, n, a in rows]


async def funnel(conn: AsyncConnection, product_id: str, start: datetime | None, end: datetime | None) -> list[int]:
    """Sessions that reached each step of the product's funnel (domain.FUNNEL), having reached
    every earlier step; whole hours, from the hourly funnel rollup plus the newer raw events."""
    reached = ", ".join(f"count(*) FILTER (WHERE steps & {(2 << n) - 1} = {(2 << n) - 1})" for n in range(len(FUNNEL)))
    row = (
        await conn.execute(
            text(
                f"""WITH bound AS ({ROLLUP_BOUNDARY}), span AS ({HOUR_SPAN}), steps AS (
                    SELECT session_id, steps FROM tracking.funnel_steps, bound, span
                    WHERE product_id = :product_id AND hour >= first_hour AND hour < stop AND hour < until_hour
                    UNION ALL
                    SELECT session_id, {FUNNEL_STEP_BIT} FROM tracking.interactions i, bound, span
                    WHERE product_id = :product_id AND type IN ({", ".join(str(t) for t in FUNNEL)})
                      AND occurred_at >= greatest(first_hour, until_hour) AND occurred_at < stop
                ), sessions AS (
                    SELECT bit_or(steps) AS steps FROM steps GROUP BY session_id
                ) SELECT {reached} FROM sessions"""
            ),
            {"product_id": product_id, "start": start, "end": end},
        )
    ).one()
    return [int(n) for n in row]


async def top_products(
    conn: AsyncConnection, user_id: str | None, limit: int, start: datetime | None, end: datetime | None
) -> list[ProductCount]:
    """Most-used products over whole UTC days: overall from the daily product rollup, or one
    user's (their events, else their session's attributed user) from the daily per-person
    rollup plus the raw events after it."""
    if user_id:
        sql = f"""WITH bound AS ({ROLLUP_BOUNDARY}), span AS (
                SELECT COALESCE(CAST(:start AS timestamptz) AT TIME ZONE 'UTC', '-infinity')::date AS first_day,
                       COALESCE(CAST(:end AS timestamptz) AT TIME ZONE 'UTC', 'infinity')::date AS last_day
            )
            SELECT product_id, sum(n) AS n FROM (
                SELECT product_id, events AS n FROM tracking.user_products_daily, bound, span
                WHERE user_id = :user_id AND day >= first_day AND day <= last_day
                  AND day < (until_day AT TIME ZONE 'UTC')::date
                UNION ALL
                SELECT i.product_id, 1 FROM tracking.interactions i
                LEFT JOIN tracking.session_users su USING (session_id), bound, span
                WHERE COALESCE(i.user_id, su.user_id) = :user_id AND i.occurred_at >= until_day
                  AND (i.occurred_at AT TIME ZONE 'UTC')::date BETWEEN first_day AND last_day
            ) used GROUP BY product_id ORDER BY n DESC, product_id LIMIT :limit"""
    else:
        sql = """SELECT product_id, sum(events) AS n FROM tracking.product_daily
            WHERE day >= COALESCE(CAST(:start AS timestamptz) AT TIME ZONE 'UTC', '-infinity')::date
              AND day <= COALESCE(CAST(:end AS timestamptz) AT TIME ZONE 'UTC', 'infinity')::date
            GROUP BY product_id ORDER BY n DESC, product_id LIMIT :limit"""
    rows = await conn.execute(text(sql), {"user_id": user_id, "limit": limit, "start": start, "end": end})
    return [ProductCount(p, int(n)) for p, n in rows]
