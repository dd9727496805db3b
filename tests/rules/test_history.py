"""The execution history: ListExecutions pages and filters, PurgeOldData removes only what is old."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import psycopg
import pytest
from loom.rules.v1 import rules_pb2

from libs.scratch_db import plain_url
from tests.rules.conftest import ADMIN, action, create, event, rule_message

RUN_JOB = action("trigger_workflow", job="history-job", params={"order": "{{order.id}}"})
# FAILED_PRECONDITION is not transient: the action fails at once and the execution is failed.
CONFIRM_ORDER = action("update_status", entity="order", id="{{order.id}}", status="confirmed")


@pytest.fixture
def sql(database_url):
    """Runs a statement off the event loop (the in-process service may hold a lock it waits for)."""
    with psycopg.connect(plain_url(database_url), autocommit=True) as conn:

        def execute(statement: str, params: tuple) -> list[tuple]:
            cursor = conn.execute(statement, params)
            return cursor.fetchall() if cursor.description else []

        async def run(statement: str, params: tuple = ()) -> list[tuple]:
            return await asyncio.to_thread(execute, statement, params)

        yield run


async def execute(rules, events) -> rules_pb2.ExecuteRulesResponse:
    return await rules.ExecuteRules(rules_pb2.ExecuteRulesRequest(request_id=str(uuid.uuid4()), events=events), metadata=ADMIN)


async def all_pages(rules, page_size: int, **filters) -> list[list[rules_pb2.Execution]]:
    pages, token = [], ""
    while True:
        request = rules_pb2.ListExecutionsRequest(page_size=page_size, page_token=token, **filters)
        reply = await rules.ListExecutions(request, metadata=ADMIN)
        pages.append(list(reply.executions))
        token = reply.next_page_token
        if not token:
            return pages


async def test_executions_page_newest_first_without_gaps_or_repeats(rules):
    rule = await create(rules, rule_message(actions=[RUN_JOB]))
    events = [event("order.placed", order={"id": f"page-{i}"}) for i in range(5)]
    for one in events:  # one by one, so start times are ordered
        assert (await execute(rules, [one])).executions_created == 1
    pages = await all_pages(rules, 2, rule_id=rule.rule_id)
    assert [len(page) for page in pages] == [2, 2, 1]
    listed = [e.event_id for page in pages for e in page]
    assert listed == [e.event_id for e in reversed(events)]


async def test_executions_filter_by_rule_event_and_status(rules, peers):
    succeeding = await create(rules, rule_message("runs a job", priority=2, actions=[RUN_JOB]))
    failing = await create(rules, rule_message("confirms", priority=1, actions=[CONFIRM_ORDER]))
    first, second = event("order.placed", order={"id": "f-1"}), event("order.placed", order={"id": "f-2"})
    peers.batch.fail_next["UpdateOrderStatus"] = [grpc.StatusCode.FAILED_PRECONDITION]
    await execute(rules, [first, second])

    by_event = await all_pages(rules, 10, event_id=first.event_id)
    assert {(e.rule_id, e.event_id) for e in by_event[0]} == {
        (succeeding.rule_id, first.event_id),
        (failing.rule_id, first.event_id),
    }
    failed = await all_pages(rules, 10, rule_id=failing.rule_id, status=rules_pb2.EXECUTION_STATUS_FAILED)
    assert [(e.rule_id, e.event_id) for e in failed[0]] == [(failing.rule_id, first.event_id)]
    succeeded = await all_pages(rules, 1, rule_id=failing.rule_id, status=rules_pb2.EXECUTION_STATUS_SUCCESS)
    assert [e.event_id for page in succeeded for e in page] == [second.event_id]
    unknown = await rules.ListExecutions(rules_pb2.ListExecutionsRequest(rule_id="not-a-uuid"), metadata=ADMIN)
    assert list(unknown.executions) == [] and unknown.next_page_token == ""


async def test_a_page_token_is_refused_for_another_query_or_when_forged(rules):
    rule = await create(rules, rule_message(actions=[RUN_JOB]))
    await execute(rules, [event("order.placed", order={"id": f"t-{i}"}) for i in range(2)])
    first = await rules.ListExecutions(rules_pb2.ListExecutionsRequest(rule_id=rule.rule_id, page_size=1), metadata=ADMIN)
    assert first.next_page_token
    for request in (
        rules_pb2.ListExecutionsRequest(page_size=1, page_token=first.next_page_token),
        rules_pb2.ListExecutionsRequest(rule_id=rule.rule_id, page_size=1, page_token=first.next_page_token[:-2] + "xx"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await rules.ListExecutions(request, metadata=ADMIN)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in refused.value.details()


async def test_purge_deletes_only_what_is_older_than_the_retention(rules, smtp, sql):
    mail = action("send_email", recipient="ops@example.com", subject="order {{order.id}}", body="placed")
    rule = await create(rules, rule_message(actions=[mail]))
    old, recent = event("order.placed", order={"id": "old"}), event("order.placed", order={"id": "recent"})
    created = await execute(rules, [old, recent])
    assert created.executions_created == 2 and len(smtp.sink.messages) == 2
    old_execution = next(e for e in created.executions if e.event_id == old.event_id)
    forty_days_ago = "now() - interval '40 days'"
    await sql(f"UPDATE rules.events SET evaluated_time = {forty_days_ago} WHERE event_id = %s", (old.event_id,))
    await sql(f"UPDATE rules.executions SET finish_time = {forty_days_ago} WHERE event_id = %s", (old.event_id,))
    await sql(f"UPDATE rules.notifications SET create_time = {forty_days_ago} WHERE event_id = %s", (old.event_id,))
    old_key = str(uuid.uuid4())
    await rules.SetRuleActive(
        rules_pb2.SetRuleActiveRequest(request_id=old_key, rule_id=rule.rule_id, active=True), metadata=ADMIN
    )
    await sql(f"UPDATE rules.idempotency_keys SET create_time = {forty_days_ago} WHERE request_id = %s", (old_key,))

    purge = rules_pb2.PurgeOldDataRequest(request_id=str(uuid.uuid4()), retention_days=30)
    purged = await rules.PurgeOldData(purge, metadata=ADMIN)
    assert (purged.events_deleted, purged.executions_deleted, purged.notifications_deleted, purged.idempotency_rows_deleted) == (
        1,
        1,
        1,
        1,
    )
    assert await rules.PurgeOldData(purge, metadata=ADMIN) == purged  # a replay answers the same, deletes nothing more

    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await rules.GetExecution(rules_pb2.GetExecutionRequest(execution_id=old_execution.execution_id), metadata=ADMIN)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    (kept,) = (await all_pages(rules, 10, rule_id=rule.rule_id))[0]
    assert kept.event_id == recent.event_id
    notified = await rules.ListNotifications(rules_pb2.ListNotificationsRequest(rule_id=rule.rule_id), metadata=ADMIN)
    assert [n.event_id for n in notified.notifications] == [recent.event_id]
    remaining = await sql("SELECT event_id FROM rules.events WHERE event_id = ANY(%s)", ([old.event_id, recent.event_id],))
    assert [row[0] for row in remaining] == [recent.event_id]


async def test_purge_with_the_default_retention_keeps_recent_rows_and_refuses_absurd_ones(rules):
    await create(rules, rule_message(actions=[RUN_JOB]))
    fresh = event("order.placed", order={"id": "fresh"})
    await execute(rules, [fresh])
    purged = await rules.PurgeOldData(rules_pb2.PurgeOldDataRequest(request_id=str(uuid.uuid4())), metadata=ADMIN)
    assert purged.events_deleted == purged.executions_deleted == 0
    assert (await all_pages(rules, 10, event_id=fresh.event_id))[0]
    for absurd in (-1, 10_000_000):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await rules.PurgeOldData(
                rules_pb2.PurgeOldDataRequest(request_id=str(uuid.uuid4()), retention_days=absurd), metadata=ADMIN
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "retention_days: between 1 and 36500 days" in refused.value.details()


async def test_notifications_page_newest_first(rules, smtp):
    mail = action("send_email", recipient="ops@example.com", subject="order {{order.id}}", body="placed")
    rule = await create(rules, rule_message(actions=[mail]))
    events = [event("order.placed", order={"id": f"n-{i}"}) for i in range(3)]
    for one in events:
        await execute(rules, [one])
    listed, token = [], ""
    while True:
        request = rules_pb2.ListNotificationsRequest(rule_id=rule.rule_id, page_size=2, page_token=token)
        reply = await rules.ListNotifications(request, metadata=ADMIN)
        listed.append([n.event_id for n in reply.notifications])
        token = reply.next_page_token
        if not token:
            break
    assert listed == [[events[2].event_id, events[1].event_id], [events[0].event_id]]
