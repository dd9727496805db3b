"""ReplayRule: a rule (live, a stored version, or a draft) over stored events, compared with what ran."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import json_format
from loom.rules.v1 import rules_pb2

from tests.rules.conftest import ADMIN, action, create, event, rule_message

RUN_JOB = action("trigger_workflow", job="replay-job", params={"order": "{{order.id}}"})


def window() -> tuple[datetime, datetime]:
    """A window of its own in the past, so no other test's events fall in it."""
    start = datetime(2020, 1, 1, tzinfo=UTC) + timedelta(days=random.randrange(3000))
    return start, start + timedelta(hours=1)


def placed(start: datetime, minute: int, quantity: int):
    sample = event("order.placed", order={"id": f"o-{uuid.uuid4().hex[:8]}", "quantity": quantity})
    sample.occurred_time.FromDatetime(start + timedelta(minutes=minute))
    return sample


async def replay(rules, start: datetime, end: datetime, **fields) -> tuple[list[rules_pb2.ReplayResult], rules_pb2.ReplaySummary]:
    request = rules_pb2.ReplayRuleRequest(**fields)
    request.start_time.FromDatetime(start)
    request.end_time.FromDatetime(end)
    results, summaries = [], []
    async for message in rules.ReplayRule(request, metadata=ADMIN):
        results.extend(message.results)
        if message.HasField("summary"):
            summaries.append(message.summary)
    (summary,) = summaries
    return results, summary


async def live_history(rules, start: datetime, quantities: list[int]) -> list:
    events = [placed(start, i, q) for i, q in enumerate(quantities)]
    await rules.ExecuteRules(rules_pb2.ExecuteRulesRequest(request_id=str(uuid.uuid4()), events=events), metadata=ADMIN)
    return events


async def test_a_replay_of_an_unchanged_rule_equals_its_live_executions(rules, peers):
    rule = await create(rules, rule_message(conditions={"order_quantity": "> 10"}, actions=[RUN_JOB]))
    start, end = window()
    events = await live_history(rules, start, [5, 20, 30, 8, 50])
    runs_before = len(peers.scheduler.runs)
    results, summary = await replay(rules, start, end, rule_id=rule.rule_id)
    assert len(peers.scheduler.runs) == runs_before  # a replay runs no action
    assert (summary.events_scanned, summary.would_fire, summary.live_fired, summary.same) == (5, 3, 3, 3)
    assert (summary.added, summary.removed, summary.changed) == (0, 0, 0)
    assert [r.event_id for r in results] == [events[i].event_id for i in (1, 2, 4)]
    for result, sample in zip(results, [events[i] for i in (1, 2, 4)], strict=True):
        assert result.diff == rules_pb2.REPLAY_DIFF_SAME and result.live_execution_id
        rendered = {"job": "replay-job", "params": {"order": sample.data["order"]["id"]}}
        assert json_format.MessageToDict(result.actions[0].params) == rendered


async def test_a_draft_reports_the_events_it_adds_and_removes(rules):
    rule = await create(rules, rule_message(conditions={"order_quantity": "> 10"}, actions=[RUN_JOB]))
    start, end = window()
    events = await live_history(rules, start, [5, 20, 30, 8, 50])
    draft = rule_message(conditions={"order_quantity": "< 25"}, actions=[RUN_JOB])
    results, summary = await replay(rules, start, end, rule_id=rule.rule_id, draft=draft, only_differences=True)
    assert (summary.would_fire, summary.live_fired) == (3, 3)
    assert (summary.same, summary.added, summary.removed, summary.changed) == (1, 2, 2, 0)
    diffs = {r.event_id: r.diff for r in results}
    assert diffs == {
        events[0].event_id: rules_pb2.REPLAY_DIFF_ADDED,
        events[2].event_id: rules_pb2.REPLAY_DIFF_REMOVED,
        events[3].event_id: rules_pb2.REPLAY_DIFF_ADDED,
        events[4].event_id: rules_pb2.REPLAY_DIFF_REMOVED,
    }


async def test_changed_parameters_show_as_changed_and_an_old_version_as_same(rules):
    rule = await create(rules, rule_message(actions=[RUN_JOB]))
    start, end = window()
    await live_history(rules, start, [1, 2])
    rule.actions[0].params["job"] = "another-job"
    await rules.UpdateRule(rules_pb2.UpdateRuleRequest(request_id=str(uuid.uuid4()), rule=rule), metadata=ADMIN)
    results, current = await replay(rules, start, end, rule_id=rule.rule_id)
    assert [(r.actions[0].params["job"], r.live_actions[0].params["job"]) for r in results] == [("another-job", "replay-job")] * 2
    _, first = await replay(rules, start, end, rule_id=rule.rule_id, version=1)
    assert (current.changed, current.same) == (2, 0)
    assert (first.changed, first.same) == (0, 2)


async def test_a_replay_with_current_facts_fetches_each_distinct_fact_once(rules, peers):
    draft = rule_message(conditions={"best_supplier_id": "sup-best"}, actions=[RUN_JOB])
    start, end = window()
    events = [placed(start, i, 10) for i in range(4)]
    for sample in events:
        json_format.ParseDict({"order": {"id": "o", "quantity": 10, "category": "caps"}}, sample.data)
    await rules.ExecuteRules(rules_pb2.ExecuteRulesRequest(request_id=str(uuid.uuid4()), events=events), metadata=ADMIN)
    peers.batch.fetches.clear()
    _, recorded = await replay(rules, start, end, draft=draft)
    _, current = await replay(rules, start, end, draft=draft, facts=rules_pb2.REPLAY_FACTS_CURRENT)
    assert (recorded.would_fire, current.would_fire) == (0, 4)
    assert peers.batch.fetches["RecommendSupplier"] == 1


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"rule_id": str(uuid.uuid4())}, grpc.StatusCode.NOT_FOUND),
        ({"draft": rules_pb2.Rule(name="")}, grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
async def test_a_replay_without_a_usable_rule_is_refused(rules, fields, code):
    start, end = window()
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await replay(rules, start, end, **fields)
    assert failure.value.code() == code


async def test_a_replay_of_a_missing_version_is_not_found(rules):
    rule = await create(rules, rule_message(actions=[RUN_JOB]))
    start, end = window()
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await replay(rules, start, end, rule_id=rule.rule_id, version=7)
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND
