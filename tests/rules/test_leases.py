"""Leases are renewed only by the process holding them: once another replica took a lapsed
lease over, the former holder's renewals and progress are refused, and its heartbeat
reports the lease lost (real PostgreSQL, the store's own queries)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import delete, select, text

from libs.clients import ServiceClients
from libs.db import make_engine, run_in_transaction
from services.rules import store
from services.rules.actions import ActionRunner
from services.rules.leases import lease_keeper
from services.rules.records import StoredEvent
from tests.support import settings_for

A, B = str(uuid.uuid4()), str(uuid.uuid4())  # two replicas' owner tokens


@pytest.fixture
async def engine(database_url):
    engine = make_engine(database_url, application_name="rules-lease-test")
    yield engine
    await engine.dispose()


@pytest.fixture
async def taken_over(engine):
    """An event and a running execution leased by A, lapsed, and taken over by B."""
    event_id = f"lease-{uuid.uuid4()}"
    record = StoredEvent(event_id=event_id, type="lease.test", source="test", occurred_time=datetime.now(UTC), data={})

    async def lease_as_a(conn):
        await store.insert_events(conn, [record], lease_seconds=60, owner=A)
        return await store.claim_execution(
            conn, rule_id=str(uuid.uuid4()), rule_version=1, event_id=event_id, event_type="lease.test",
            actions=[], lease_seconds=60, owner=A,
        )

    execution = await run_in_transaction(engine, lease_as_a)

    async def lapse_and_take_as_b(conn):
        for table, key, value in (("events", "event_id", event_id), ("executions", "execution_id", execution.execution_id)):
            await conn.execute(
                text(f"UPDATE rules.{table} SET lease_until = now() - interval '1 second' WHERE {key} = :id"), {"id": value}
            )
        events = await store.lease_events(conn, limit=1000, lease_seconds=60, owner=B)
        stalled = await store.lease_stalled_executions(conn, limit=1000, lease_seconds=60, owner=B)
        assert event_id in {e.event_id for e in events}
        assert execution.execution_id in {e.execution_id for e in stalled}

    await run_in_transaction(engine, lapse_and_take_as_b)
    yield event_id, execution
    async with engine.begin() as conn:  # no later worker of the shared database should meet these rows
        await conn.execute(delete(store.executions).where(store.executions.c.execution_id == execution.execution_id))
        await conn.execute(delete(store.events).where(store.events.c.event_id == event_id))


async def owners(engine, event_id: str, execution_id: str) -> tuple:
    """The lease columns as stored (the store's records leave them out: only the store reads them)."""
    events, executions = store.events, store.executions
    async with engine.connect() as conn:
        event = (await conn.execute(
            select(events.c.lease_owner, events.c.lease_until).where(events.c.event_id == event_id)
        )).one()
        execution = (await conn.execute(
            select(executions.c.lease_owner, executions.c.lease_until, executions.c.status)
            .where(executions.c.execution_id == execution_id)
        )).one()
    return tuple(event), tuple(execution)


async def test_a_renewal_after_the_lease_was_taken_over_renews_nothing(engine, taken_over):
    event_id, execution = taken_over
    before = await owners(engine, event_id, execution.execution_id)

    async def renew_as_a(conn):
        return (
            await store.renew_leases(conn, "events", [event_id], owner=A, lease_seconds=600),
            await store.renew_leases(conn, "executions", [execution.execution_id], owner=A, lease_seconds=600),
        )

    assert await run_in_transaction(engine, renew_as_a) == ([], [])
    assert await owners(engine, event_id, execution.execution_id) == before
    assert before[0][0] == before[1][0] == B


async def test_the_heartbeat_reports_a_lease_taken_over_as_lost(engine, taken_over, database_url):
    event_id, execution = taken_over
    keeper = lease_keeper(engine, settings_for("rules", database_url))
    keeper.owner = A
    async with keeper.holding("executions", [execution.execution_id]), keeper.holding("events", [event_id]):
        await keeper.renew_once()
        assert keeper.lost("executions", execution.execution_id) and keeper.lost("events", event_id)
    assert not keeper.lost("executions", execution.execution_id)  # forgotten once no work holds it


async def test_the_former_holder_cannot_record_progress_or_finish_an_execution_taken_over(engine, taken_over, database_url):
    event_id, execution = taken_over
    settings = settings_for("rules", database_url)
    keeper = lease_keeper(engine, settings)
    keeper.owner = A
    clients = ServiceClients(settings, caller="rules")
    try:
        # Nothing pending: it would finish the execution, were the lease still A's.
        left = await ActionRunner(engine, clients, settings, keeper).run(execution)
    finally:
        await clients.close()

    assert left == execution
    assert (await owners(engine, event_id, execution.execution_id))[1][::2] == (B, "running")
    recorded = await run_in_transaction(
        engine, lambda conn: store.record_actions(conn, execution.execution_id, [], lease_seconds=60, owner=A)
    )
    assert recorded is False


async def test_a_due_wait_taken_over_is_not_renewed_by_its_former_holder(engine, taken_over):
    _, execution = taken_over  # B holds the running execution: it pauses at a wait due now

    async def wait_leased_by_a_then_taken_by_b(conn):
        await store.start_wait(conn, execution, 0, 0, {}, [], owner=B)
        (wait,) = [w for w in await store.lease_due_waits(conn, limit=1000, lease_seconds=60, owner=A)
                   if w.execution_id == execution.execution_id]
        await conn.execute(
            text("UPDATE rules.waits SET lease_until = now() - interval '1 second' WHERE wait_id = :id"),
            {"id": wait.wait_id},
        )
        taken = await store.lease_due_waits(conn, limit=1000, lease_seconds=60, owner=B)
        assert wait.wait_id in {w.wait_id for w in taken}
        return wait.wait_id

    wait_id = await run_in_transaction(engine, wait_leased_by_a_then_taken_by_b)
    try:
        renewed = await run_in_transaction(
            engine, lambda conn: store.renew_leases(conn, "waits", [wait_id], owner=A, lease_seconds=600)
        )
        async with engine.connect() as conn:
            holder = (await conn.execute(select(store.waits.c.lease_owner).where(store.waits.c.wait_id == wait_id))).scalar()
        assert (renewed, holder) == ([], B)
    finally:
        async with engine.begin() as conn:
            await conn.execute(delete(store.waits).where(store.waits.c.wait_id == wait_id))
