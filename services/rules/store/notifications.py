"""Notifications: e-mail ones (sent over SMTP) and inbox ones, with read state per reader."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    and_,
    false,
    func,
    literal,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from libs.errors import NotFound
from services.rules.records import NotificationRecord
from services.rules.store.schema import (
    before,
    is_uuid,
    notification_reads,
    notifications,
    record,
)

# --- notifications ------------------------------------------------------------------------


async def claim_notification(conn: AsyncConnection, values: dict[str, Any]) -> NotificationRecord:
    """The notification of (execution, action): created once, found again on a resumed run."""
    created = await conn.execute(
        insert(notifications)
        .values(notification_id=str(uuid.uuid4()), **values)
        .on_conflict_do_nothing(constraint="notifications_one_per_action")
        .returning(*notifications.c)
    )
    row = created.mappings().first()
    if row is None:
        row = (
            await conn.execute(
                select(notifications).where(
                    notifications.c.execution_id == values["execution_id"],
                    notifications.c.action_index == values["action_index"],
                )
            )
        ).mappings().one()
    return record(NotificationRecord, row)


async def update_notification(conn: AsyncConnection, notification_id: str, **values: Any) -> None:
    await conn.execute(update(notifications).where(notifications.c.notification_id == notification_id).values(**values))


async def get_notification(conn: AsyncConnection, notification_id: str) -> NotificationRecord:
    row = None
    if is_uuid(notification_id):
        query = select(notifications).where(notifications.c.notification_id == notification_id)
        row = (await conn.execute(query)).mappings().first()
    if row is None:
        raise NotFound("notification", notification_id)
    return record(NotificationRecord, row)


async def list_notifications(
    conn: AsyncConnection, *, status: str | None, rule_id: str, limit: int, after: list | None
) -> list[NotificationRecord]:
    query = select(notifications)
    if status:
        query = query.where(notifications.c.status == status)
    if rule_id:
        if not is_uuid(rule_id):
            return []
        query = query.where(notifications.c.rule_id == rule_id)
    if after:
        query = query.where(before(notifications.c.create_time, notifications.c.notification_id, after))
    query = query.order_by(notifications.c.create_time.desc(), notifications.c.notification_id.desc()).limit(limit)
    return [record(NotificationRecord, r) for r in (await conn.execute(query)).mappings()]


# --- inbox ---------------------------------------------------------------------------------


def _visible_to(user: str, role: str) -> ColumnElement[bool]:
    return and_(
        notifications.c.channel == "inbox",
        or_(
            notifications.c.recipient_user == user,
            and_(notifications.c.recipient_role == role, true() if role != "" else false()),
        ),
    )


def _read_by(user: str):
    return (
        select(notification_reads.c.read_time)
        .where(notification_reads.c.notification_id == notifications.c.notification_id, notification_reads.c.reader == user)
        .scalar_subquery()
    )


async def inbox(
    conn: AsyncConnection,
    *,
    user: str,
    role: str,
    unread_only: bool,
    limit: int,
    after: list | None,
    newer_than: datetime | None = None,
) -> list[NotificationRecord]:
    """The caller's notifications, newest first, each with its `read_time` for this caller."""
    read_time = _read_by(user)
    query = select(*notifications.c, read_time.label("read_time")).where(_visible_to(user, role))
    if unread_only:
        query = query.where(read_time.is_(None))
    if after:
        query = query.where(before(notifications.c.create_time, notifications.c.notification_id, after))
    if newer_than is not None:
        query = query.where(notifications.c.create_time > newer_than)
    query = query.order_by(notifications.c.create_time.desc(), notifications.c.notification_id.desc()).limit(limit)
    return [record(NotificationRecord, r) for r in (await conn.execute(query)).mappings()]


async def unread_count(conn: AsyncConnection, *, user: str, role: str) -> int:
    query = select(func.count()).where(_visible_to(user, role), _read_by(user).is_(None))
    return (await conn.execute(query)).scalar_one()


async def mark_read(conn: AsyncConnection, *, user: str, role: str, notification_id: str | None) -> int:
    """Marks one notification (or, with None, every one) the caller can see as read by them; how many changed."""
    visible = select(notifications.c.notification_id, literal(user)).where(_visible_to(user, role))
    if notification_id is not None:
        if (
            not is_uuid(notification_id)
            or not (await conn.execute(visible.where(notifications.c.notification_id == notification_id))).first()
        ):
            raise NotFound("notification", str(notification_id))
        visible = visible.where(notifications.c.notification_id == notification_id)
    marked = await conn.execute(
        insert(notification_reads).from_select(["notification_id", "reader"], visible).on_conflict_do_nothing()
    )
    return marked.rowcount


async def get_inbox_notification(
    conn: AsyncConnection, *, user: str, role: str, notification_id: str
) -> NotificationRecord:
    query = select(*notifications.c, _read_by(user).label("read_time")).where(
        _visible_to(user, role), notifications.c.notification_id == notification_id
    )
    row = (await conn.execute(query)).mappings().first() if is_uuid(notification_id) else None
    if row is None:
        raise NotFound("notification", notification_id)
    return record(NotificationRecord, row)
