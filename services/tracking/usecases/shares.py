"""Sharing a post: at most `limit` shares per address in a sliding hour, counted exactly
across replicas (advisory locks per address hash, see domain.share_lock_keys)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from libs.db import after_commit
from libs.domain_errors import FailedPrecondition, NotFound
from services.tracking import domain, metrics
from services.tracking.records import ShareOutcome
from services.tracking.store import posts, shares


async def share_post(
    conn: AsyncConnection,
    *,
    post_id: str,
    platform: int,
    session_id: str | None,
    user_id: str | None,
    ip_hashes: tuple[bytes, bytes],
    limit: int,
    now: datetime,
) -> ShareOutcome:
    """Checks the post (known and published) and the address's sliding hour, then stores the
    share and raises the post's count, in the caller's transaction.

    ip_hashes is (today's hash, yesterday's hash) of the caller's address: the hour may
    span midnight. A rejection is recorded (for the stats) and returned, not raised, so
    that it commits.
    """
    try:
        post = await posts.get_post(conn, post_id)
    except NotFound:
        metrics.SHARE_REJECTIONS.labels("unknown_post").inc()
        raise
    if not post.published:
        metrics.SHARE_REJECTIONS.labels("unpublished_post").inc()
        raise FailedPrecondition(f"post {post_id!r} is not published", reason="POST_NOT_PUBLISHED", subject=f"posts/{post_id}")
    today_hash, yesterday_hash = ip_hashes
    await shares.lock_share_keys(conn, domain.share_lock_keys(today_hash, yesterday_hash))
    recent, oldest = await shares.recent_shares(conn, ip_hashes, now - timedelta(hours=1))
    retry_after = domain.share_decision(recent, oldest, now, limit)
    if retry_after is not None:
        await shares.record_rejection(conn, now.date(), today_hash)
        after_commit(metrics.SHARE_REJECTIONS.labels("rate_limited").inc)
        return ShareOutcome(retry_after_seconds=retry_after)
    share_id = await shares.insert_share(
        conn, post_id=post_id, platform=platform, session_id=session_id, user_id=user_id, ip_hash=today_hash, now=now
    )
    share_count = await shares.raise_share_count(conn, post_id)
    return ShareOutcome(share_id=share_id, share_count=share_count, remaining=limit - recent - 1)
