"""What a rule may say, for the console's rule builder: `/console/vocabulary.json`.

The rules service has no vocabulary RPC yet, so this reads the same tables the rules
service validates with (its pure domain modules: facts, operators, event types, action
parameters, statuses) and the batch service's status lifecycle, and adds only what
those tables do not say — each fact's type and which entities each event carries,
taken from the cross-service event contract (`batch.*_json` in the batch migrations).
A test checks that every fact the rules service knows has a type here, so the two
cannot drift apart silently. A future `GetVocabulary` RPC would replace this module.
"""

from __future__ import annotations

import functools

from loom.batch.v1 import batch_pb2

from services.batch.domain import BATCH_TRANSITIONS, ORDER_TRANSITIONS
from services.rules.domain import rules, vocabulary
from services.rules.domain.operators import OPERATORS

# number: ints, floats and decimal strings ("4.75") compare as numbers in the rules engine;
# date: RFC 3339 text ("2026-12-03T10:00:00Z"); enum: text from a closed set.
FIELD_TYPES: dict[str, str] = {
    "id": "text", "buyer_id": "text", "category": "text", "batch_id": "text", "supplier_id": "text",
    "name": "text", "source": "text",
    "status": "enum", "type": "enum",
    "quantity": "number", "unit_price": "number", "total_price": "number", "current_quantity": "number",
    "target_quantity": "number", "capacity": "number", "fill_percentage": "number", "moq": "number",
    "rating": "number", "lead_time_days": "number",
    "window_closes_at": "date", "occurred_time": "date",
    # windowed facts: counts the owning service computes over a recent window
    "buyer_orders_24h": "number", "category_batches_confirmed_7d": "number", "product_interactions_today": "number",
}
SCALAR_TYPES = {"best_supplier_id": "text"}

# The entities each event carries in its data (the rest is fetched or absent).
EVENT_ENTITIES = {"order": ("order", "batch"), "batch": ("batch", "supplier")}

OPERATORS_BY_TYPE: dict[str, tuple[str, ...]] = {
    "number": ("equal", "not_equal", "greater_than", "greater_than_inclusive", "less_than", "less_than_inclusive",
               "between", "in", "not_in", "exists"),
    "text": ("equal", "not_equal", "in", "not_in", "contains", "starts_with", "matches", "exists"),
    "enum": ("equal", "not_equal", "in", "not_in", "exists"),
    "date": ("starts_with", "equal", "not_equal", "matches", "exists"),
}


def _enum_values(enum, prefix: str) -> list[str]:
    return [name.removeprefix(prefix).lower() for name in enum.keys() if not name.endswith("_UNSPECIFIED")]


def _options(root: str, field: str) -> list[str] | None:
    if field == "status" and root == "order":
        return _enum_values(batch_pb2.OrderStatus, "ORDER_STATUS_")
    if field == "status" and root == "batch":
        return _enum_values(batch_pb2.BatchStatus, "BATCH_STATUS_")
    if root == "event" and field == "type":
        return sorted(rules.EVENT_TYPES)
    return None


def _fact(root: str, field: str) -> dict:
    path = f"{root}.{field}" if field else root
    kind = FIELD_TYPES[field] if field else SCALAR_TYPES[root]
    fact: dict[str, str | list[str]] = {"path": path, "type": kind}
    options = _options(root, field)
    if options:
        fact["options"] = options
    return fact


def _transitions(table) -> dict[str, list[str]]:
    """target status -> the statuses it can be reached from."""
    sources: dict[str, list[str]] = {}
    for current, targets in table.items():
        for target in targets:
            sources.setdefault(target.value, []).append(current.value)
    return {target: sorted(found) for target, found in sorted(sources.items())}


@functools.cache
def vocabulary_document() -> dict:
    groups = [
        {"root": root, "fetched": root in vocabulary.FETCHED_ROOTS,
         "facts": [_fact(root, field) for field in sorted(fields)]}
        for root, fields in vocabulary.ENTITY_FIELDS.items()
    ]
    groups += [
        {"root": root, "fetched": root in vocabulary.FETCHED_ROOTS, "facts": [_fact(root, "")]}
        for root in sorted(vocabulary.SCALAR_FACTS)
    ]
    reachable = {"order": _transitions(ORDER_TRANSITIONS), "batch": _transitions(BATCH_TRANSITIONS)}
    accepted = {"order": rules.ORDER_STATUSES, "batch": rules.BATCH_STATUSES}
    return {
        "eventTypes": sorted(rules.EVENT_TYPES),
        "eventEntities": {source: list(entities) for source, entities in EVENT_ENTITIES.items()},
        "groups": groups,
        "operators": list(OPERATORS),
        "operatorsByType": {kind: [op for op in ops if op in OPERATORS] for kind, ops in OPERATORS_BY_TYPE.items()},
        "compactAliases": dict(vocabulary.COMPACT_ALIASES),
        "actions": {
            name: {"required": sorted(spec.required), "optional": sorted(spec.optional)}
            for name, spec in rules.ACTIONS.items()
        },
        "entities": list(rules.ENTITIES),
        # Statuses update_status may set, each with the statuses the batch service moves it from.
        "statusTargets": {
            entity: [{"status": s, "from": reachable[entity].get(s, [])} for s in sorted(accepted[entity])]
            for entity in rules.ENTITIES
        },
    }
