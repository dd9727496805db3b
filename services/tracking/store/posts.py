"""Posts: the shared content whose shares are tracked."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from libs.domain_errors import NotFound
from services.tracking.records import Post

POST_COLUMNS = "post_id, title, url, published, share_count, publish_time, create_time, update_time"


async def insert_post(
    conn: AsyncConnection, *, post_id: str, title: str, url: str, published: bool, now: datetime
) -> Post | None:
    """The new post, or None when the id is taken."""
    row = (
        await conn.execute(
            text(
                f"""INSERT INTO tracking.posts (post_id, title, url, published, publish_time, create_time, update_time)
                VALUES (:post_id, :title, :url, :published, CASE WHEN :published THEN :now END, :now, :now)
                ON CONFLICT (post_id) DO NOTHING RETURNING {POST_COLUMNS}"""
            ),
            {"post_id": post_id, "title": title, "url": url, "published": published, "now": now},
        )
    ).first()
    return Post(*row) if row else None


async def update_post(conn: AsyncConnection, post_id: str, changes: dict[str, object], now: datetime) -> Post:
    current = await get_post(conn, post_id, lock=True)
    values = {"title": current.title, "url": current.url, "published": current.published, **changes}
    publish_time = current.publish_time
    if values["published"] and not current.published:
        publish_time = now
    elif not values["published"]:
        publish_time = None
    row = (
        await conn.execute(
            text(
                f"""UPDATE tracking.posts SET title = :title, url = :url, published = :published,
                publish_time = :publish_time, update_time = :now WHERE post_id = :post_id RETURNING {POST_COLUMNS}"""
            ),
            {**values, "publish_time": publish_time, "now": now, "post_id": post_id},
        )
    ).one()
    return Post(*row)


async def get_post(conn: AsyncConnection, post_id: str, *, lock: bool = False) -> Post:
    row = (
        await conn.execute(
            text(f"SELECT {POST_COLUMNS} FROM tracking.posts WHERE post_id = :post_id{' FOR UPDATE' if lock else ''}"),
            {"post_id": post_id},
        )
    ).first()
    if row is None:
        raise NotFound("post", post_id)
    return Post(*row)


async def list_posts(conn: AsyncConnection, after: tuple[datetime, str] | None, limit: int) -> list[Post]:
    rows = await conn.execute(
        text(
            f"""SELECT {POST_COLUMNS} FROM tracking.posts
            WHERE CAST(:after_time AS timestamptz) IS NULL OR (create_time, post_id) > (:after_time, :after_id)
            ORDER BY create_time, post_id LIMIT :limit"""
        ),
        {"after_time": after[0] if after else None, "after_id": after[1] if after else None, "limit": limit},
    )
    return [Post(*row) for row in rows]
