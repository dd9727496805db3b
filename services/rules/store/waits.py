"""Durable waits: executions paused at a wait action until their due time."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import (
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from libs.errors import NotFound
from libs.leases import LeaseLost
from services.rules.records import ExecutionRecord, WaitRecord
from services.rules.store.executions import held_by
from services.rules.store.schema import before, executions, is_uuid, record, waits

# --- waits ---------------------------------------------------------------------------------


async def start_wait(
    conn: AsyncConnection,
    execution: ExecutionRecord,
    action_index: int,
    seconds: float,
    conditions: dict,
    actions: list[dict[str, Any]],
    *,
    owner: str,
) -> None:
    """Pauses a running execution at a wait action: the wait row and the paused execution, together.

    Raises LeaseLost (rolling both back) when `owner` no longer holds the execution's lease."""
    await conn.execute(
        insert(waits)
        .values(
            wait_id=str(uuid.uuid4()),
            execution_id=execution.execution_id,
            action_index=action_index,
            rule_id=execution.rule_id,
            rule_version=execution.rule_version,
            event_id=execution.event_id,
            conditions=conditions,
            due_time=func.now() + timedelta(seconds=seconds),
            status="waiting",
        )
        .on_conflict_do_nothing(constraint="waits_one_per_action")
    )
    paused = await conn.execute(
        update(executions)
        .where(held_by(execution.execution_id, owner))
        .values(status="waiting", actions=actions, lease_until=None, lease_owner=None)
        .returning(executions.c.execution_id)
    )
    if paused.first() is None:
        raise LeaseLost("executions", execution.execution_id)


async def lease_due_waits(conn: AsyncConnection, *, limit: int, lease_seconds: float, owner: str) -> list[WaitRecord]:
    """Due waits no live replica holds, taken by `owner` for `lease_seconds` (SKIP LOCKED: one runner each)."""
    due = (
        select(waits.c.wait_id)
        .where(
            waits.c.status == "waiting",
            waits.c.due_time <= func.now(),
            or_(waits.c.lease_until.is_(None), waits.c.lease_until < func.now()),
        )
        .order_by(waits.c.due_time)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    leased = await conn.execute(
        update(waits)
        .where(waits.c.wait_id.in_(due.scalar_subquery()))
        .values(lease_until=func.now() + timedelta(seconds=lease_seconds), lease_owner=owner)
        .returning(*waits.c)
    )
    return [record(WaitRecord, r) for r in leased.mappings()]


async def end_wait(
    conn: AsyncConnection,
    wait_id: str,
    status: str,
    actions: list[dict[str, Any]],
    *,
    execution_status: str,
    lease_seconds: float,
    owner: str | None = None,
) -> ExecutionRecord | None:
    """Ends a wait still waiting (resumed or cancelled) and moves its execution on; None when it already ended.

    The execution goes back to running (leased by `owner`, so a crash before it finishes is
    resumed by the stalled-execution sweep) or, with nothing left to run, to its final status.
    """
    ended = await conn.execute(
        update(waits)
        .where(waits.c.wait_id == wait_id, waits.c.status == "waiting")
        .values(status=status, finish_time=func.now(), lease_until=None, lease_owner=None)
        .returning(waits.c.execution_id)
    )
    execution_id = ended.scalar_one_or_none()
    if execution_id is None:
        return None
    state: dict[str, Any] = (
        {"lease_until": func.now() + timedelta(seconds=lease_seconds), "lease_owner": owner}
        if execution_status == "running"
        else {"finish_time": func.now(), "lease_until": None, "lease_owner": None}
    )
    moved = await conn.execute(
        update(executions)
        .where(executions.c.execution_id == execution_id)
        .values(status=execution_status, actions=actions, **state)
        .returning(*executions.c)
    )
    return record(ExecutionRecord, moved.mappings().one())


async def get_wait(conn: AsyncConnection, wait_id: str, *, for_update: bool = False) -> WaitRecord:
    row = None
    if is_uuid(wait_id):
        query = select(waits).where(waits.c.wait_id == wait_id)
        row = (await conn.execute(query.with_for_update() if for_update else query)).mappings().first()
    if row is None:
        raise NotFound("wait", wait_id)
    return record(WaitRecord, row)


async def list_waits(
    conn: AsyncConnection, *, rule_id: str, status: str | None, limit: int, after: list | None
) -> list[WaitRecord]:
    query = select(waits)
    if rule_id:
        if not is_uuid(rule_id):
            return []
        query = query.where(waits.c.rule_id == rule_id)
    if status:
        query = query.where(waits.c.status == status)
    if after:
        query = query.where(before(waits.c.create_time, waits.c.wait_id, after))
    query = query.order_by(waits.c.create_time.desc(), waits.c.wait_id.desc()).limit(limit)
    return [record(WaitRecord, r) for r in (await conn.execute(query)).mappings()]
