"""Popularity reads: a product's score and pairings, and recommendations from them."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.tracking.records import PairedProduct, Popularity, Recommendation


async def popularity(conn: AsyncConnection, product_id: str, paired_limit: int) -> Popularity | None:
    """The product's score and its top pairings; None before the aggregation scored it."""
    row = (
        await conn.execute(
            text("SELECT count_7d, count_30d, score, compute_time FROM tracking.product_popularity WHERE product_id = :p"),
            {"p": product_id},
        )
    ).first()
    if row is None:
        return None
    paired = await conn.execute(
        text(
            """SELECT paired_product_id, percentage, together FROM tracking.product_pairs WHERE product_id = :p
            ORDER BY together DESC, paired_product_id LIMIT :limit"""
        ),
        {"p": product_id, "limit": paired_limit},
    )
    return Popularity(product_id, row[0], row[1], row[2], row[3], [PairedProduct(*r) for r in paired])


async def recommendations(
    conn: AsyncConnection, user_id: str | None, session_id: str | None, limit: int
) -> list[Recommendation]:
    """Products paired with the actor's own products (a user's
    include their attributed sessions) that they have not used yet, best pairing first;
    popular products (because None) fill up the list."""
    own: dict[str, int] = dict(
        (
            await conn.execute(
                text(
                    """SELECT product_id, count(*) FROM tracking.interactions
                    WHERE (CAST(:user_id AS text) IS NOT NULL AND (user_id = :user_id OR session_id IN
                              (SELECT session_id FROM tracking.session_users WHERE user_id = :user_id)))
                       OR (CAST(:session_id AS text) IS NOT NULL AND session_id = :session_id)
                    GROUP BY product_id"""
                ),
                {"user_id": user_id, "session_id": session_id},
            )
        ).all()
    )
    rows = await conn.execute(
        text(
            """SELECT product_id, percentage, because FROM (
                SELECT DISTINCT ON (p.paired_product_id) p.paired_product_id AS product_id, p.percentage,
                       p.product_id AS because
                FROM tracking.product_pairs p
                JOIN unnest(CAST(:own AS text[]), CAST(:uses AS bigint[])) AS own(product_id, uses)
                  ON p.product_id = own.product_id
                WHERE p.paired_product_id <> ALL(:own)
                ORDER BY p.paired_product_id, p.percentage DESC, own.uses DESC, p.product_id
            ) candidates ORDER BY percentage DESC, product_id LIMIT :limit"""
        ),
        {"own": list(own), "uses": list(own.values()), "limit": limit},
    )
    picked = [Recommendation(p, pct, because) for p, pct, because in rows]
    if len(picked) < limit:
        taken = list(own) + [r.product_id for r in picked]
        popular = await conn.execute(
            text(
                """SELECT product_id, score FROM tracking.product_popularity
                WHERE product_id <> ALL(:taken) AND score > 0 ORDER BY score DESC, product_id LIMIT :limit"""
            ),
            {"taken": taken, "limit": limit - len(picked)},
        )
        picked += [Recommendation(p, score, None) for p, score in popular]
    return picked
