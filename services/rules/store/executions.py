"""Executions, one per (rule, event): claimed, leased, resumed, finished; the guards' counts."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import (
    and_,
    func,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from libs.errors import NotFound
from services.rules.records import ExecutionRecord
from services.rules.store.schema import before, executions, is_uuid, record

# --- executions ---------------------------------------------------------------------------


async def claim_execution(
    conn: AsyncConnection,
    *,
    rule_id: str,
    rule_version: int,
    event_id: str,
    event_type: str,
    actions: list[dict[str, Any]],
    lease_seconds: float,
    owner: str,
    causation: list[dict[str, str]] | None = None,
    refused_reason: str = "",
) -> ExecutionRecord | None:
    """The new running execution of (rule, event), or None when one already exists.

    A refused execution is recorded finished, so the refusal and its chain are visible.
    """
    state = (
        {"status": "refused", "finish_time": func.now()}
        if refused_reason
        else {"status": "running", "lease_until": func.now() + timedelta(seconds=lease_seconds), "lease_owner": owner}
    )
    claimed = await conn.execute(
        insert(executions)
        .values(
            execution_id=str(uuid.uuid4()),
            rule_id=rule_id,
            rule_version=rule_version,
            event_id=event_id,
            event_type=event_type,
            actions=actions,
            causation=causation or [],
            refused_reason=refused_reason,
            **state,
        )
        .on_conflict_do_nothing(constraint="executions_one_per_rule_and_event")
        .returning(*executions.c)
    )
    row = claimed.mappings().first()
    return record(ExecutionRecord, row) if row else None


async def lease_stalled_executions(
    conn: AsyncConnection, *, limit: int, lease_seconds: float, owner: str
) -> list[ExecutionRecord]:
    """Running executions whose worker stopped renewing them (it crashed): taken over by `owner` to finish."""
    stalled = (
        select(executions.c.execution_id)
        .where(executions.c.status == "running", executions.c.lease_until < func.now())
        .order_by(executions.c.start_time)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    leased = await conn.execute(
        update(executions)
        .where(executions.c.execution_id.in_(stalled.scalar_subquery()))
        .values(lease_until=func.now() + timedelta(seconds=lease_seconds), lease_owner=owner)
        .returning(*executions.c)
    )
    return [record(ExecutionRecord, r) for r in leased.mappings()]


def held_by(execution_id: str, owner: str) -> ColumnElement[bool]:
    """The running execution, while `owner` still holds its lease (no other replica took it over)."""
    return and_(
        executions.c.execution_id == execution_id, executions.c.status == "running", executions.c.lease_owner == owner
    )


async def record_actions(
    conn: AsyncConnection, execution_id: str, actions: list[dict[str, Any]], *, lease_seconds: float, owner: str
) -> bool:
    """Saves action progress and renews the lease of a running execution `owner` holds; False when it lost it."""
    recorded = await conn.execute(
        update(executions)
        .where(held_by(execution_id, owner))
        .values(actions=actions, lease_until=func.now() + timedelta(seconds=lease_seconds))
        .returning(executions.c.execution_id)
    )
    return recorded.first() is not None


async def finish_execution(
    conn: AsyncConnection, execution_id: str, status: str, actions: list[dict[str, Any]], *, owner: str
) -> ExecutionRecord | None:
    """Records the outcome of an execution `owner` still holds; None when another replica took it over."""
    finished = await conn.execute(
        update(executions)
        .where(held_by(execution_id, owner))
        .values(status=status, actions=actions, finish_time=func.now(), lease_until=None, lease_owner=None)
        .returning(*executions.c)
    )
    row = finished.mappings().first()
    return record(ExecutionRecord, row) if row else None


async def executions_last_minute(conn: AsyncConnection, rule_id: str) -> int:
    """Executions of the rule started in the last minute, refused ones excepted (the rate limit's count)."""
    query = select(func.count()).where(
        executions.c.rule_id == rule_id,
        executions.c.start_time > func.now() - timedelta(minutes=1),
        executions.c.status != "refused",
    )
    return (await conn.execute(query)).scalar_one()


async def latest_statuses(conn: AsyncConnection, rule_id: str, limit: int) -> list[str]:
    """Statuses of the rule's latest finished executions (refused ones excepted), newest first."""
    query = (
        select(executions.c.status)
        .where(executions.c.rule_id == rule_id, executions.c.status.in_(("success", "partial", "failed")))
        .order_by(executions.c.start_time.desc())
        .limit(limit)
    )
    return list((await conn.execute(query)).scalars())




async def get_execution(conn: AsyncConnection, execution_id: str) -> ExecutionRecord:
    row = None
    if is_uuid(execution_id):
        row = (await conn.execute(select(executions).where(executions.c.execution_id == execution_id))).mappings().first()
    if row is None:
        raise NotFound("execution", execution_id)
    return record(ExecutionRecord, row)


async def executions_of_event(conn: AsyncConnection, event_id: str) -> list[ExecutionRecord]:
    query = select(executions).where(executions.c.event_id == event_id)
    return [record(ExecutionRecord, r) for r in (await conn.execute(query)).mappings()]


async def list_executions(
    conn: AsyncConnection, *, rule_id: str, event_id: str, status: str | None, limit: int, after: list | None
) -> list[ExecutionRecord]:
    query = select(executions)
    if rule_id:
        if not is_uuid(rule_id):
            return []
        query = query.where(executions.c.rule_id == rule_id)
    if event_id:
        query = query.where(executions.c.event_id == event_id)
    if status:
        query = query.where(executions.c.status == status)
    if after:
        query = query.where(before(executions.c.start_time, executions.c.execution_id, after))
    query = query.order_by(executions.c.start_time.desc(), executions.c.execution_id.desc()).limit(limit)
    return [record(ExecutionRecord, r) for r in (await conn.execute(query)).mappings()]
