"""scheduler.blackout_calendars: named wall-clock ranges in a zone each."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Row, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.scheduler.domain.blackouts import BlackoutRange, Calendar
from services.scheduler.store.tables import blackout_calendars


def _record(row: Row) -> Calendar:
    ranges = tuple(BlackoutRange(datetime.fromisoformat(a), datetime.fromisoformat(b)) for a, b in row.ranges)
    return Calendar(row.name, row.time_zone, ranges, row.description)


def _values(calendar: Calendar) -> dict:
    return {
        "description": calendar.description,
        "time_zone": calendar.time_zone,
        "ranges": [[r.start.isoformat(), r.end.isoformat()] for r in calendar.ranges],
    }


async def insert_calendar(conn: AsyncConnection, calendar: Calendar) -> bool:
    """False when a calendar of that name exists."""
    result = await conn.execute(
        insert(blackout_calendars)
        .values(name=calendar.name, update_time=func.now(), **_values(calendar))
        .on_conflict_do_nothing(index_elements=["name"])
        .returning(blackout_calendars.c.name)
    )
    return result.first() is not None


async def replace_calendar(conn: AsyncConnection, calendar: Calendar) -> bool:
    result = await conn.execute(
        update(blackout_calendars)
        .where(blackout_calendars.c.name == calendar.name)
        .values(update_time=func.now(), **_values(calendar))
    )
    return bool(result.rowcount)


async def delete_calendar(conn: AsyncConnection, name: str) -> bool:
    result = await conn.execute(delete(blackout_calendars).where(blackout_calendars.c.name == name))
    return bool(result.rowcount)


async def calendars(conn: AsyncConnection, names: Iterable[str] | None = None) -> list[Calendar]:
    query = select(blackout_calendars).order_by(blackout_calendars.c.name)
    if names is not None:
        query = query.where(blackout_calendars.c.name.in_(list(names)))
    return [_record(row) for row in await conn.execute(query)]
