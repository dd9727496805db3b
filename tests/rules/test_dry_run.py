"""Dry runs that start right: the latest stored event of a type (ListEvents), and drafts evaluated before saving."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.protobuf import json_format
from loom.rules.v1 import rules_pb2

from tests.rules.conftest import ADMIN, SERVICE, action, create, event, rule_message

MAIL = action("send_email", recipient="ops@loom.example", subject="Batch {{batch.id}}", body="{{batch.fill_percentage}}% full")


async def deliver(rules, *events) -> None:
    await rules.DeliverEvents(rules_pb2.DeliverEventsRequest(events=list(events)), metadata=SERVICE)


async def test_list_events_answers_the_latest_event_of_a_type_first(rules):
    kind = f"test.{uuid.uuid4().hex[:8]}"
    older, newer = event(kind, batch={"id": "b-old"}), event(kind, batch={"id": "b-new"})
    await deliver(rules, older)
    await deliver(rules, newer, event("batch.confirmed", batch={"id": "other type"}))
    reply = await rules.ListEvents(rules_pb2.ListEventsRequest(event_type=kind, page_size=1), metadata=ADMIN)
    (latest,) = reply.events
    assert (latest.event_id, latest.type, latest.source) == (newer.event_id, kind, "batch")
    assert json_format.MessageToDict(latest.data) == {"batch": {"id": "b-new"}}
    rest = await rules.ListEvents(
        rules_pb2.ListEventsRequest(event_type=kind, page_size=1, page_token=reply.next_page_token), metadata=ADMIN
    )
    assert [e.event_id for e in rest.events] == [older.event_id] and rest.next_page_token == ""


async def test_list_events_is_for_admins(rules):
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await rules.ListEvents(rules_pb2.ListEventsRequest(), metadata=SERVICE)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_dry_run_evaluates_an_unsaved_draft_with_its_actions_rendered(rules, peers, smtp):
    draft = rule_message("draft", event_types=["batch.confirmed"], conditions={"batch_fill_percentage": ">= 75"}, actions=[MAIL])
    sample = event(batch={"id": "b-7", "fill_percentage": 80})
    reply = await rules.EvaluateEvent(rules_pb2.EvaluateEventRequest(event=sample, dry_run=True, draft=draft), metadata=ADMIN)
    (trace,) = [t for t in reply.rules if t.rule_id == "draft"]
    assert trace.matched and trace.conditions.passed
    assert json_format.MessageToDict(trace.actions[0].params) == {
        "recipient": "ops@loom.example",
        "subject": "Batch b-7",
        "body": "80% full",
    }
    assert list(reply.executions) == [] and smtp.sink.messages == []


async def test_a_draft_takes_the_place_of_its_saved_rule_even_when_inactive(rules):
    saved = await create(rules, rule_message("saved", conditions={"batch_fill_percentage": ">= 90"}, actions=[MAIL]))
    draft = rules_pb2.Rule()
    draft.CopyFrom(saved)
    draft.active = False
    draft.conditions.CopyFrom(json_format.ParseDict({"batch_fill_percentage": ">= 50"}, draft.conditions))
    sample = event(batch={"id": "b-8", "fill_percentage": 60})
    reply = await rules.EvaluateEvent(rules_pb2.EvaluateEventRequest(event=sample, dry_run=True, draft=draft), metadata=ADMIN)
    (trace,) = [t for t in reply.rules if t.rule_id == saved.rule_id]
    assert trace.matched


async def test_a_draft_is_refused_without_dry_run(rules):
    draft = rule_message("draft", actions=[MAIL])
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await rules.EvaluateEvent(rules_pb2.EvaluateEventRequest(event=event(), draft=draft), metadata=ADMIN)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "draft" in refused.value.details()


async def test_an_invalid_draft_names_the_offending_field(rules):
    draft = rule_message("draft", conditions={"order.nope": 1}, actions=[MAIL])
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await rules.EvaluateEvent(rules_pb2.EvaluateEventRequest(event=event(), dry_run=True, draft=draft), metadata=ADMIN)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "draft.conditions" in refused.value.details()
