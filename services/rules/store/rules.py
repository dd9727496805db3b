"""Rules and their versions: every change is a new version, and a snapshot of it is kept."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

from sqlalchemy import (
    and_,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from libs.errors import NotFound
from services.rules.domain.rules import RuleDefinition
from services.rules.records import RuleRecord
from services.rules.store.schema import (
    DEFINITION_FIELDS,
    definition_snapshot,
    is_uuid,
    record,
    rule_versions,
    rules,
    rules_query,
)

# --- rules ----------------------------------------------------------------------------


async def create_rule(conn: AsyncConnection, definition: dict[str, Any], actor: str) -> RuleRecord:
    rule_id = str(uuid.uuid4())
    values = {
        **{k: definition[k] for k in DEFINITION_FIELDS},
        "rule_id": rule_id,
        "version": 1,
        "created_by": actor,
        "updated_by": actor,
    }
    await conn.execute(rules.insert().values(**values))
    await conn.execute(
        rule_versions.insert().values(rule_id=rule_id, version=1, snapshot=definition_snapshot(values), changed_by=actor)
    )
    return await get_rule(conn, rule_id)


async def get_rule(conn: AsyncConnection, rule_id: str, *, for_update: bool = False) -> RuleRecord:
    if not is_uuid(rule_id):
        raise NotFound("rule", rule_id)
    if for_update:
        # Serialises edits of one rule so versions stay consecutive.
        await conn.execute(select(rules.c.rule_id).where(rules.c.rule_id == rule_id).with_for_update())
    row = (
        await conn.execute(rules_query().where(rules.c.rule_id == rule_id, rules.c.delete_time.is_(None)))
    ).mappings().first()
    if row is None:
        raise NotFound("rule", rule_id)
    return record(RuleRecord, row)


async def change_rule(conn: AsyncConnection, rule_id: str, changes: dict[str, Any], actor: str) -> RuleRecord:
    """Applies changes to a live rule as a new version (and records the version)."""
    current = await get_rule(conn, rule_id, for_update=True)
    version = current.version + 1
    values = {**changes, "version": version, "updated_by": actor, "update_time": func.now()}
    if changes.get("active"):
        values["deactivated_reason"] = ""
    await conn.execute(update(rules).where(rules.c.rule_id == rule_id).values(**values))
    snapshot = definition_snapshot({**current.definition().as_dict(), **changes})
    await conn.execute(rule_versions.insert().values(rule_id=rule_id, version=version, snapshot=snapshot, changed_by=actor))
    return await get_rule(conn, rule_id)


async def delete_rule(conn: AsyncConnection, rule_id: str, actor: str) -> RuleRecord:
    deleted = await change_rule(conn, rule_id, {"active": False}, actor)
    await conn.execute(update(rules).where(rules.c.rule_id == rule_id).values(delete_time=func.now()))
    return deleted


async def list_rules(
    conn: AsyncConnection, *, rule_type: str | None, active: bool | None, limit: int, after: list | None
) -> list[RuleRecord]:
    query = rules_query().where(rules.c.delete_time.is_(None))
    if rule_type:
        query = query.where(rules.c.type == rule_type)
    if active is not None:
        query = query.where(rules.c.active.is_(active))
    if after:
        priority, rule_id = after
        query = query.where(or_(rules.c.priority < priority, and_(rules.c.priority == priority, rules.c.rule_id > rule_id)))
    query = query.order_by(rules.c.priority.desc(), rules.c.rule_id).limit(limit)
    return [record(RuleRecord, r) for r in (await conn.execute(query)).mappings()]


async def list_versions(conn: AsyncConnection, rule_id: str, *, limit: int, before: int | None) -> list[RuleRecord]:
    """Each version as the rule was then: its snapshot over the current rule's identity and audit."""
    current = await get_rule(conn, rule_id)
    query = select(rule_versions).where(rule_versions.c.rule_id == rule_id)
    if before is not None:
        query = query.where(rule_versions.c.version < before)
    rows = (await conn.execute(query.order_by(rule_versions.c.version.desc()).limit(limit))).mappings()
    return [
        replace(
            current,
            **{name: value for name, value in row["snapshot"].items() if name in DEFINITION_FIELDS},
            version=row["version"],
            updated_by=row["changed_by"],
            update_time=row["change_time"],
            last_execution_status=None,
            last_execution_time=None,
        )
        for row in rows
    ]


async def get_version(conn: AsyncConnection, rule_id: str, version: int) -> RuleDefinition:
    """The rule's definition as it was at `version` (NotFound when there is no such version).

    Versions saved before a field existed take its default."""
    await get_rule(conn, rule_id)
    row = (
        await conn.execute(
            select(rule_versions.c.snapshot).where(rule_versions.c.rule_id == rule_id, rule_versions.c.version == version)
        )
    ).first()
    if row is None:
        raise NotFound("rule version", f"{rule_id}@{version}")
    return RuleDefinition(**{name: value for name, value in row.snapshot.items() if name in DEFINITION_FIELDS})


async def active_rules(conn: AsyncConnection) -> list[RuleRecord]:
    query = (
        select(rules)
        .where(rules.c.active.is_(True), rules.c.delete_time.is_(None))
        .order_by(rules.c.priority.desc(), rules.c.rule_id)
    )
    return [record(RuleRecord, r) for r in (await conn.execute(query)).mappings()]




async def deactivate(conn: AsyncConnection, rule_id: str, reason: str, actor: str) -> None:
    """Deactivates a live rule (a new version) and says why; nothing when it is already inactive."""
    current = await get_rule(conn, rule_id, for_update=True)
    if current.active:
        await change_rule(conn, rule_id, {"active": False}, actor)
        await conn.execute(update(rules).where(rules.c.rule_id == rule_id).values(deactivated_reason=reason))
