"""/console/vocabulary.json: what the rule builder offers is what the rules service accepts."""

from __future__ import annotations

import httpx
import pytest

from services.gateway.console.vocabulary import OPERATORS_BY_TYPE, vocabulary_document
from services.rules.domain import rules, vocabulary
from services.rules.domain.operators import OPERATORS


@pytest.fixture(scope="module")
def services():
    return ()


def test_every_fact_the_rules_service_knows_is_offered_with_a_type():
    offered = {fact["path"]: fact["type"] for group in vocabulary_document()["groups"] for fact in group["facts"]}
    known = {f"{root}.{field}" for root, fields in vocabulary.ENTITY_FIELDS.items() for field in fields} | vocabulary.SCALAR_FACTS
    assert set(offered) == known
    assert set(offered.values()) <= set(OPERATORS_BY_TYPE)


def test_every_operator_offered_exists_and_every_operator_is_offered_for_some_type():
    offered = {op for ops in vocabulary_document()["operatorsByType"].values() for op in ops}
    assert offered == set(OPERATORS)


def test_update_status_offers_exactly_the_statuses_the_rules_service_accepts():
    targets = vocabulary_document()["statusTargets"]
    assert {t["status"] for t in targets["order"]} == rules.ORDER_STATUSES
    assert {t["status"] for t in targets["batch"]} == rules.BATCH_STATUSES
    assert next(t for t in targets["batch"] if t["status"] == "in_production")["from"] == ["confirmed"]


def test_enum_facts_offer_the_statuses_of_the_batch_protos():
    facts = {fact["path"]: fact for group in vocabulary_document()["groups"] for fact in group["facts"]}
    assert facts["batch.status"]["options"] == ["filling", "confirmed", "in_production", "completed", "cancelled"]
    assert set(facts["event.type"]["options"]) == rules.EVENT_TYPES


async def test_the_console_serves_the_vocabulary_without_sign_in(suite):
    async with httpx.AsyncClient(base_url=suite.gateway.url) as http:
        reply = await http.get("/console/vocabulary.json")
    assert reply.status_code == 200
    assert reply.json() == vocabulary_document()
