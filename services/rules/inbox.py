"""The inbox use cases: what a caller may see of the notify actions' notifications, live.

A caller sees the inbox notifications addressed to their subject or to their role;
read state is per reader. WatchNotifications polls (every `notification_poll_seconds`)
rather than LISTENing: a poll sees what any replica wrote and what was marked read
elsewhere with one indexed query, and a watcher costs nothing between polls. Each
poll looks back a little before its cursor (a notification committed late still has
its earlier create_time) and skips ids already sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.auth import Caller
from libs.db import run_in_transaction
from services.rules import store
from services.rules.records import NotificationRecord

LOOK_BACK = timedelta(seconds=5)
WATCH_BATCH = 100


def reader(caller: Caller) -> tuple[str, str]:
    return caller.subject, caller.role_name


async def watch(engine: AsyncEngine, caller: Caller, poll_seconds: float) -> AsyncIterator[tuple[NotificationRecord | None, int]]:
    """(notification or None, unread count): the count first, then each new notification and each count change."""
    user, role = reader(caller)

    async def now(conn) -> datetime:
        return (await conn.execute(select(func.now()))).scalar_one()

    cursor = await run_in_transaction(engine, now)
    sent: set[str] = set()
    count = await run_in_transaction(engine, lambda conn: store.unread_count(conn, user=user, role=role))
    yield None, count
    while True:
        await asyncio.sleep(poll_seconds)
        since = cursor - LOOK_BACK

        async def poll(conn):
            rows = await store.inbox(
                conn, user=user, role=role, unread_only=False, limit=WATCH_BATCH, after=None,
                newer_than=since,  # noqa: B023 - called within this iteration
            )
            return rows, await store.unread_count(conn, user=user, role=role)

        rows, unread = await run_in_transaction(engine, poll)
        fresh = [r for r in reversed(rows) if r.notification_id not in sent]
        for row in fresh:
            sent.add(row.notification_id)
            cursor = max(cursor, row.create_time)
            yield row, unread
        if not fresh and unread != count:
            yield None, unread
        count = unread
