"""Renewing the leases one process holds on events, executions and waits (its heartbeat)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Table, and_, func, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from services.rules.store.schema import events, executions, waits

# kind -> (table, its id column, the state in which a lease means something)
LEASED: dict[str, tuple[Table, str, ColumnElement[bool]]] = {
    "events": (events, "event_id", events.c.evaluated_time.is_(None)),
    "executions": (executions, "execution_id", executions.c.status == "running"),
    "waits": (waits, "wait_id", waits.c.status == "waiting"),
}


async def renew_leases(
    conn: AsyncConnection, kind: str, ids: list[str], *, owner: str, lease_seconds: float
) -> list[str]:
    """Extends the leases of `ids` that `owner` still holds; returns those renewed.

    Only rows whose lease_owner is still `owner` are touched: once another replica has
    taken a row over (its lease lapsed), this renewal leaves it alone and the id is
    missing from the answer. A lapsed lease nobody took yet is still ours, and renewed.
    """
    table, id_name, active = LEASED[kind]
    id_column = table.c[id_name]
    renewed = await conn.execute(
        update(table)
        .where(and_(id_column.in_(ids), table.c.lease_owner == owner, active))
        .values(lease_until=func.now() + timedelta(seconds=lease_seconds))
        .returning(id_column)
    )
    return [str(i) for i in renewed.scalars()]


async def release_leases(conn: AsyncConnection, *, owner: str) -> int:
    """Hands back what `owner` still holds (it is shutting down): other replicas take it at their next poll.

    Pending events and due waits become free; running executions lapse now, for the
    stalled-execution sweep to resume from their first unfinished action.
    """
    released = 0
    for kind, (table, _, active) in LEASED.items():
        lapse = func.now() - timedelta(seconds=1) if kind == "executions" else None
        done = await conn.execute(
            update(table).where(and_(table.c.lease_owner == owner, active)).values(lease_until=lapse, lease_owner=None)
        )
        released += done.rowcount
    return released
