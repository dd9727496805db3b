"""The aggregation job: rollups, popularity scores, co-occurrence pairs, share-count repair."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from libs.db import tune_for_bulk
from services.tracking.records import AggregationResult
from services.tracking.store.analytics import FUNNEL_STEP_BIT

AGGREGATION_LOCK = (0x54524B41, 1)  # "TRKA": one aggregation at a time across replicas


# Co-occurrence works on integer codes of the distinct (person, product) pairs of the last
# 30 days: the self-join, its grouping and the ranking handle small integers, not text.
# Product codes follow the product ids' order, so ranking ties break as by id.
PAIR_STAGING = (
    """CREATE TEMP TABLE product_codes ON COMMIT DROP AS
    SELECT product_id, row_number() OVER (ORDER BY product_id) AS product FROM (
        SELECT DISTINCT product_id FROM tracking.product_daily
        WHERE day > CAST(:as_of_day AS date) - 30 AND day <= :as_of_day
    ) p""",
    """CREATE TEMP TABLE used ON COMMIT DROP AS
    SELECT dense_rank() OVER (ORDER BY u.actor COLLATE "C") AS actor, p.product FROM (
        SELECT DISTINCT actor, product_id FROM tracking.actor_products_daily
        WHERE day > CAST(:as_of_day AS date) - 30 AND day <= :as_of_day
    ) u JOIN product_codes p USING (product_id)""",
    "ANALYZE used",
    "ANALYZE product_codes",
)
RANK_PAIRS = """
WITH half AS (  -- "together" is symmetric: count each unordered pair once, then use it both ways
    SELECT a.product AS low, b.product AS high, count(*) AS n
    FROM used a JOIN used b ON a.actor = b.actor AND a.product < b.product
    GROUP BY 1, 2
), together AS (
    SELECT low AS product, high AS paired, n FROM half
    UNION ALL
    SELECT high, low, n FROM half
), ranked AS (
    SELECT product, paired, n, row_number() OVER (PARTITION BY product ORDER BY n DESC, paired) AS rank FROM together
), people AS (
    SELECT product, count(*) AS n FROM used GROUP BY product
)
INSERT INTO tracking.product_pairs (product_id, paired_product_id, together, percentage)
SELECT named.product_id, paired.product_id, ranked.n, round(100.0 * ranked.n / people.n, 2)
FROM ranked JOIN people USING (product)
JOIN product_codes named ON named.product = ranked.product
JOIN product_codes paired ON paired.product = ranked.paired
WHERE rank <= :k
"""

# The raw events of the hours that can still change, grouped. The bounds are parameters
# compared with occurred_at itself, so the planner reads only the months they reach
# (the partitions of tracking.interactions, and the default one).
RECENT_EVENTS = f"""
SELECT date_trunc('hour', i.occurred_at, 'UTC') AS hour, i.product_id, i.session_id,
       COALESCE('u:' || COALESCE(i.user_id, su.user_id), 's:' || i.session_id) AS actor,
       count(*) AS events, bit_or({FUNNEL_STEP_BIT})::smallint AS steps
FROM tracking.interactions i LEFT JOIN tracking.session_users su USING (session_id)
WHERE i.occurred_at >= :first_instant AND i.occurred_at < :as_of
GROUP BY 1, 2, 3, 4"""


async def _pair_products(conn: AsyncConnection, params: dict, pairs_per_product: int) -> int:
    """Stores each product's top pairings: X->Y with 100 x (people who used X and Y) / (people who used X)."""
    for statement in PAIR_STAGING:
        await conn.execute(text(statement), params)
    return (await conn.execute(text(RANK_PAIRS), {"k": pairs_per_product})).rowcount


async def aggregate(conn: AsyncConnection, as_of: datetime, recompute: timedelta, pairs_per_product: int) -> AggregationResult:
    """Rebuilds the rollups of the days that can still change, then the scores and pairs.

    Incremental: only days from (last run - recompute horizon) on are re-derived from raw
    events; older days keep their rollups even after the raw events are purged. The
    rollups (per day: product events, a signed-in person's product events; per hour:
    sessions, funnel steps) also serve the analytics queries, which add the raw events after
    aggregated_through (see analytics_boundary).
    Idempotent: the same as_of over the same events yields the same tables.

    Score (0-100): w = 2 x count_7d + count_30d, score = 100 x w / max w, rounded to 2 places.
    Pair X->Y: percentage = 100 x (people who used X and Y) / (people who used X) over 30 days,
    a person being the (attributed) user, else the session.
    """
    await conn.execute(text("SELECT pg_advisory_xact_lock(:a, :b)"), {"a": AGGREGATION_LOCK[0], "b": AGGREGATION_LOCK[1]})
    await tune_for_bulk(conn)
    previous = (await conn.execute(text("SELECT aggregated_through FROM tracking.aggregation_state"))).scalar()
    if previous is None:
        oldest = (await conn.execute(text("SELECT min(occurred_at) FROM tracking.interactions"))).scalar()
        first_day = (oldest or as_of).astimezone(UTC).date()
    else:
        first_day = (min(previous, as_of) - recompute).astimezone(UTC).date()
    as_of_day = as_of.astimezone(UTC).date()
    first_instant = datetime(first_day.year, first_day.month, first_day.day, tzinfo=UTC)
    params = {"first_day": first_day, "first_instant": first_instant, "as_of": as_of, "as_of_day": as_of_day}
    for rollup in ("product_daily WHERE day", "actor_products_daily WHERE day", "user_products_daily WHERE day"):
        await conn.execute(text(f"DELETE FROM tracking.{rollup} >= :first_day"), params)
    for rollup in ("session_hours WHERE hour", "funnel_steps WHERE hour"):
        await conn.execute(text(f"DELETE FROM tracking.{rollup} >= :first_instant"), params)
    # One pass over the raw events of the hours that can still change: events and funnel
    # steps per hour, product, session and person, from which every rollup is derived.
    await conn.execute(text(f"CREATE TEMP TABLE recent ON COMMIT DROP AS {RECENT_EVENTS}"), params)
    await conn.execute(text("ANALYZE recent"))  # the planner picks hash aggregation once it knows the size
    scanned = (await conn.execute(text("SELECT COALESCE(sum(events), 0) FROM recent"))).scalar_one()
    for statement in (
        """INSERT INTO tracking.product_daily SELECT (hour AT TIME ZONE 'UTC')::date, product_id, sum(events)
        FROM recent GROUP BY 1, 2""",
        "INSERT INTO tracking.actor_products_daily"
        " SELECT DISTINCT (hour AT TIME ZONE 'UTC')::date, actor, product_id FROM recent",
        """INSERT INTO tracking.user_products_daily SELECT (hour AT TIME ZONE 'UTC')::date, substr(actor, 3), product_id,
        sum(events) FROM recent WHERE actor LIKE 'u:%' GROUP BY 1, 2, 3""",
        "INSERT INTO tracking.session_hours SELECT DISTINCT hour, session_id FROM recent",
        """INSERT INTO tracking.funnel_steps SELECT hour, product_id, session_id, bit_or(steps) FROM recent
        WHERE steps <> 0 GROUP BY 1, 2, 3""",
    ):
        await conn.execute(text(statement))
    await conn.execute(text("DELETE FROM tracking.product_popularity"))
    products = (
        await conn.execute(
            text(
                """INSERT INTO tracking.product_popularity (product_id, count_7d, count_30d, score, compute_time)
                SELECT product_id, c7, c30,
                       CASE WHEN max(2 * c7 + c30) OVER () > 0
                            THEN round(100.0 * (2 * c7 + c30) / max(2 * c7 + c30) OVER (), 2) ELSE 0 END,
                       :as_of
                FROM (
                    SELECT product_id,
                           COALESCE(sum(events) FILTER (WHERE day > CAST(:as_of_day AS date) - 7 AND day <= :as_of_day), 0) AS c7,
                           COALESCE(sum(events) FILTER (
                               WHERE day > CAST(:as_of_day AS date) - 30 AND day <= :as_of_day), 0) AS c30
                    FROM tracking.product_daily GROUP BY product_id
                ) counts"""
            ),
            params,
        )
    ).rowcount
    await conn.execute(text("DELETE FROM tracking.product_pairs"))
    pairs = await _pair_products(conn, params, pairs_per_product)
    await conn.execute(
        text(
            """INSERT INTO tracking.aggregation_state (id, aggregated_through) VALUES (true, :as_of)
            ON CONFLICT (id) DO UPDATE SET aggregated_through = EXCLUDED.aggregated_through"""
        ),
        params,
    )
    repaired = await repair_share_counts(conn)
    return AggregationResult(int(scanned), int(products), int(pairs), repaired)


async def repair_share_counts(conn: AsyncConnection) -> int:
    """Sets every post's share_count to its stored (plus purged) shares.

    The posts are locked first, so each following statement sees every share whose
    counter update had already happened, and later shares add to the repaired value.
    """
    await conn.execute(text("SELECT post_id FROM tracking.posts ORDER BY post_id FOR NO KEY UPDATE"))
    return (
        await conn.execute(
            text(
                """WITH actual AS (
                    SELECT p.post_id, p.purged_shares + COALESCE(s.n, 0) AS n FROM tracking.posts p
                    LEFT JOIN (SELECT post_id, count(*) AS n FROM tracking.shares GROUP BY post_id) s USING (post_id)
                )
                UPDATE tracking.posts p SET share_count = actual.n FROM actual
                WHERE p.post_id = actual.post_id AND p.share_count <> actual.n"""
            )
        )
    ).rowcount
