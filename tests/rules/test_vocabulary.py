"""GetVocabulary: what the rule builder is offered is exactly what the service accepts."""

from __future__ import annotations

from google.protobuf import json_format
from loom.rules.v1 import rules_pb2

from services.batch.domain import BATCH_TRANSITIONS, ORDER_TRANSITIONS
from services.rules.domain import rules as definitions
from services.rules.domain import vocabulary
from tests.rules.conftest import ADMIN, action, create, rule_message

SAMPLE = {"number": 1, "text": "x", "date": "2026-12-03T10:00:00Z"}


def sample_value(fact: rules_pb2.VocabularyFact, operator: str):
    one = fact.options[0] if fact.options else SAMPLE[fact.type]
    return {
        "in": [one],
        "not_in": [one],
        "between": [1, 2],
        "exists": True,
        "matches": "^x",
        "starts_with": str(one)[:4],
    }.get(operator, 1 if operator.startswith(("greater", "less")) else one)


async def vocabulary_of(stub) -> rules_pb2.GetVocabularyResponse:
    return await stub.GetVocabulary(rules_pb2.GetVocabularyRequest(), metadata=ADMIN)


def facts_of(answer: rules_pb2.GetVocabularyResponse) -> list[rules_pb2.VocabularyFact]:
    return [fact for group in answer.fact_groups for fact in group.facts]


async def test_every_fact_the_service_knows_is_listed_and_no_other(rules):
    listed = {fact.path for fact in facts_of(await vocabulary_of(rules))}
    known = {f"{root}.{field}" for root, fields in vocabulary.ENTITY_FIELDS.items() for field in fields}
    assert listed == known | vocabulary.SCALAR_FACTS


async def test_every_fact_with_every_operator_offered_for_its_type_is_accepted_on_save(rules):
    answer = await vocabulary_of(rules)
    offered = {entry.type: list(entry.operators) for entry in answer.operators_by_type}
    leaves = [
        {"fact": fact.path, "operator": op, "value": sample_value(fact, op)}
        for fact in facts_of(answer)
        for op in offered[fact.type]
    ]
    assert {op for ops in offered.values() for op in ops} == set(answer.operators)
    notify = action("notify", role="admin", subject="s", body="b")
    saved = await create(rules, rule_message(conditions={"any": leaves}, actions=[notify]))
    assert len(json_format.MessageToDict(saved.conditions)["any"]) == len(leaves)


async def test_every_action_type_listed_with_its_allowed_values_is_accepted_on_save(rules):
    answer = await vocabulary_of(rules)
    fill = {"entity": "batch", "id": "{{batch.id}}", "supplier_id": "s-1", "recipient": "ops@loom.example", "subject": "s",
            "body": "b", "seconds": 60, "job": "orchestrate-batches", "status": "completed", "role": "admin"}
    listed = []
    for entry in answer.actions:
        params = {name: fill[name] for name in entry.required_parameters}
        for allowed in entry.allowed_values:
            values = [v.value for v in allowed.values]
            if allowed.parameter in params and (not allowed.entity or allowed.entity == params.get("entity")):
                assert params[allowed.parameter] in values, (entry.type, allowed.parameter)
        if entry.type == rules_pb2.ACTION_TYPE_NOTIFY:
            params["role"] = "admin"
        listed.append(rules_pb2.Action(type=entry.type, params=json_format.ParseDict(params, rules_pb2.Action().params)))
    assert {rules_pb2.ActionType.Name(a.type).removeprefix("ACTION_TYPE_").lower() for a in listed} == set(definitions.ACTIONS)
    saved = await create(rules, rule_message(actions=listed))
    assert len(saved.actions) == len(definitions.ACTIONS)


async def test_trigger_workflow_offers_the_schedulers_jobs(rules, peers):
    answer = await vocabulary_of(rules)
    (trigger,) = [a for a in answer.actions if a.type == rules_pb2.ACTION_TYPE_TRIGGER_WORKFLOW]
    (jobs,) = [v for v in trigger.allowed_values if v.parameter == "job"]
    assert [v.value for v in jobs.values] == sorted(peers.scheduler.jobs)
    assert list(answer.unavailable) == []


async def test_status_targets_are_the_batch_services_lifecycle():
    """The lifecycle the rules service offers equals the tables the batch service enforces."""
    for entity, table in (("order", ORDER_TRANSITIONS), ("batch", BATCH_TRANSITIONS)):
        reached: dict[str, set[str]] = {}
        for current, targets in table.items():
            for target in targets:
                reached.setdefault(target.value, set()).add(current.value)
        offered = {status: set(sources) for status, sources in definitions.REACHED_FROM[entity].items()}
        assert {s: reached.get(s, set()) for s in offered} == offered
    assert set(definitions.REACHED_FROM["order"]) == definitions.ORDER_STATUSES
    assert set(definitions.REACHED_FROM["batch"]) == definitions.BATCH_STATUSES


async def test_enum_facts_offer_the_statuses_of_the_batch_protos(rules):
    facts = {fact.path: fact for fact in facts_of(await vocabulary_of(rules))}
    assert list(facts["batch.status"].options) == ["filling", "confirmed", "in_production", "completed", "cancelled"]
    assert set(facts["event.type"].options) == definitions.EVENT_TYPES
    assert facts["window.buyer_orders_24h"].description == "orders by this buyer in the last 24 hours"


async def test_every_parameter_but_a_waits_is_offered_as_a_template(rules):
    answer = await vocabulary_of(rules)
    templated = {rules_pb2.ActionType.Name(a.type): list(a.templated_parameters) for a in answer.actions}
    assert templated["ACTION_TYPE_WAIT"] == []
    assert templated["ACTION_TYPE_SEND_EMAIL"] == ["body", "recipient", "subject"]
    placeholders = action(
        "send_email", recipient="{{order.buyer_id}}@loom.example", subject="{{batch.id}}", body="{{event.type}}"
    )
    assert (await create(rules, rule_message(actions=[placeholders]))).actions[0].params["subject"] == "{{batch.id}}"
