"""Erasure of one person's engagement data (ErasePersonData), in one transaction.

The person is a user id. What is theirs:
- their sessions: attributed to them (`session_users`), or where their signed-in
  interactions or their shares were seen, or where interactions carrying one of their
  browser ids were seen;
- their browser ids: the `anonymous_id`s their signed-in interactions carried.

Every row keyed by the user id, one of those sessions or browser ids, or one of their
interactions or shares goes (but not another signed-in person's interactions, shares or
session attribution in a session they shared, say on one computer): raw interactions (every partition: a DELETE on the parent
reaches them all), client event ids, de-duplication windows, attributions, shares, the
stored answers of their TrackShare calls, and the rollups keyed by a person or session
(`user_products_daily`, `actor_products_daily`, `session_hours`, `funnel_steps`).

Counts that name nobody keep the person's contribution as anonymous counts:
`engagement_hourly`, `product_daily` for days the aggregation no longer recomputes,
`posts.share_count` (the erased shares are folded into `purged_shares`, as retention
does, so the repair keeps the count), `share_rejections` (per salted address hash and
day, unlinkable once the day's salt is deleted). Popularity scores and pairs are
recomputed by the next aggregation from rollups that no longer hold the person.

Holding the aggregation's lock keeps a concurrent aggregation from writing rollups from
a snapshot that still held the person.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.tracking.store.aggregation import AGGREGATION_LOCK

FIND_BROWSERS = (
    "SELECT DISTINCT anonymous_id FROM tracking.interactions WHERE user_id = :user_id AND anonymous_id IS NOT NULL"
)
FIND_SESSIONS = """
SELECT session_id FROM tracking.session_users WHERE user_id = :user_id
UNION SELECT session_id FROM tracking.interactions WHERE user_id = :user_id
UNION SELECT session_id FROM tracking.shares WHERE user_id = :user_id AND session_id IS NOT NULL
UNION SELECT session_id FROM tracking.interactions WHERE anonymous_id = ANY(CAST(:browsers AS text[]))
"""
ANY_SESSION = "session_id = ANY(CAST(:sessions AS text[]))"


@dataclass(frozen=True)
class Erased:
    sessions: int
    interactions: int
    shares: int
    client_events: int
    dedup_windows: int
    attributions: int
    rollup_rows: int
    idempotency_records: int


async def erase_person(conn: AsyncConnection, user_id: str) -> Erased:
    await conn.execute(text("SELECT pg_advisory_xact_lock(:a, :b)"), {"a": AGGREGATION_LOCK[0], "b": AGGREGATION_LOCK[1]})
    person = {"user_id": user_id}
    browsers = list((await conn.execute(text(FIND_BROWSERS), person)).scalars())
    sessions = list((await conn.execute(text(FIND_SESSIONS), {**person, "browsers": browsers})).scalars())
    keys = {**person, "sessions": sessions, "browsers": browsers}

    interaction_ids = list(
        (
            await conn.execute(
                text(
                    f"""DELETE FROM tracking.interactions
                    WHERE user_id = :user_id OR (user_id IS NULL AND (
                        {ANY_SESSION} OR anonymous_id = ANY(CAST(:browsers AS text[]))))
                    RETURNING id"""
                ),
                keys,
            )
        ).scalars()
    )
    ids = {"ids": interaction_ids}
    client_events = await _count(conn, "DELETE FROM tracking.client_events WHERE interaction_id = ANY(CAST(:ids AS uuid[]))", ids)
    dedup_windows = await _count(
        conn,
        f"DELETE FROM tracking.dedup_windows WHERE {ANY_SESSION} OR interaction_id = ANY(CAST(:ids AS uuid[]))",
        {**keys, **ids},
    )
    attributions = await _count(conn, "DELETE FROM tracking.session_users WHERE user_id = :user_id", person)
    share_ids = list(
        (
            await conn.execute(
                text(
                    f"""WITH gone AS (
                        DELETE FROM tracking.shares WHERE user_id = :user_id OR (user_id IS NULL AND {ANY_SESSION})
                        RETURNING id, post_id
                    ), per_post AS (SELECT post_id, count(*) AS n FROM gone GROUP BY post_id),
                    folded AS (UPDATE tracking.posts p SET purged_shares = p.purged_shares + per_post.n
                               FROM per_post WHERE p.post_id = per_post.post_id)
                    SELECT CAST(id AS text) FROM gone"""
                ),
                keys,
            )
        ).scalars()
    )
    idempotency_records = 0
    if share_ids:  # the stored answer of a TrackShare call names the share it made
        idempotency_records = await _count(
            conn,
            """DELETE FROM tracking.idempotency_keys WHERE method = 'TrackShare' AND response IS NOT NULL
            AND EXISTS (SELECT 1 FROM unnest(CAST(:shares AS text[])) AS s(id)
                        WHERE position(convert_to(s.id, 'UTF8') IN response) > 0)""",
            {"shares": share_ids},
        )
    actors = [f"u:{user_id}", *(f"s:{session}" for session in sessions)]
    rollup_rows = sum(
        [
            await _count(conn, "DELETE FROM tracking.user_products_daily WHERE user_id = :user_id", person),
            await _count(
                conn, "DELETE FROM tracking.actor_products_daily WHERE actor = ANY(CAST(:actors AS text[]))", {"actors": actors}
            ),
            await _count(conn, f"DELETE FROM tracking.session_hours WHERE {ANY_SESSION}", keys),
            await _count(conn, f"DELETE FROM tracking.funnel_steps WHERE {ANY_SESSION}", keys),
        ]
    )
    return Erased(
        sessions=len(sessions),
        interactions=len(interaction_ids),
        shares=len(share_ids),
        client_events=client_events,
        dedup_windows=dedup_windows,
        attributions=attributions,
        rollup_rows=rollup_rows,
        idempotency_records=idempotency_records,
    )


async def _count(conn: AsyncConnection, sql: str, params: dict) -> int:
    return int((await conn.execute(text(sql), params)).rowcount)
