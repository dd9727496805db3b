"""The facts a rule may name: the event contract's entities, the event itself, and fetched facts.

Entity fields follow the cross-service event contract (`order`, `batch`, `supplier`
keyed objects in the event's data). `best_supplier_id` / `best_supplier.*` and a
`batch` the event only references are fetched from the batch service when a rule needs them;
`window.*` facts are counts over a recent window that batch or tracking compute
(declared in WINDOWED_FACTS), fetched once per evaluation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

SUPPLIER_FIELDS = frozenset({"id", "name", "capacity", "moq", "rating", "lead_time_days"})

ENTITY_FIELDS: dict[str, frozenset[str]] = {
    "order": frozenset(
        {"id", "buyer_id", "status", "category", "quantity", "batch_id", "supplier_id", "unit_price", "total_price"}
    ),
    "batch": frozenset(
        {
            "id",
            "status",
            "category",
            "current_quantity",
            "target_quantity",
            "capacity",
            "fill_percentage",
            "window_closes_at",
            "supplier_id",
        }
    ),
    "supplier": SUPPLIER_FIELDS,
    "best_supplier": SUPPLIER_FIELDS,
    "event": frozenset({"id", "type", "source", "occurred_time"}),
    "product": frozenset({"id"}),
}


@dataclass(frozen=True)
class WindowedFact:
    """An aggregate the owning service computes over a recent window, keyed by a fact of the event."""

    # Which count to ask for (the evaluator maps it to the owning service's RPC).
    source: str
    # The event facts that key it, first present wins.
    keys: tuple[str, ...]
    # The window: the last `hours`, or since midnight UTC today.
    hours: int = 0
    # What it counts, for people choosing it.
    description: str = ""

    def start(self, now: datetime) -> datetime:
        if self.hours:
            return now - timedelta(hours=self.hours)
        return now.replace(hour=0, minute=0, second=0, microsecond=0)


WINDOW_ROOT = "window"
WINDOWED_FACTS: dict[str, WindowedFact] = {
    "buyer_orders_24h": WindowedFact(
        "batch.recent_orders", ("order.buyer_id",), hours=24, description="orders by this buyer in the last 24 hours"
    ),
    "category_batches_confirmed_7d": WindowedFact(
        "batch.confirmed_batches",
        ("batch.category", "order.category"),
        hours=24 * 7,
        description="batches of this category confirmed in the last 7 days",
    ),
    "product_interactions_today": WindowedFact(
        "tracking.product_interactions", ("product.id",), description="interactions with this product since midnight UTC"
    ),
}
ENTITY_FIELDS[WINDOW_ROOT] = frozenset(WINDOWED_FACTS)

# A decision table's outputs, for the actions' templates: `decision.<output name>`.
DECISION_ROOT = "decision"

# Facts that are a value rather than an entity.
SCALAR_FACTS = frozenset({"best_supplier_id"})

# Facts the batch service can supply when the event lacks them.
FETCHED_ROOTS = frozenset({"best_supplier_id", "best_supplier", "batch", WINDOW_ROOT})

# Names users already write in the compact form, and the fact each one means.
COMPACT_ALIASES: dict[str, str] = {
    "completion_percentage": "batch.fill_percentage",
    "fill_percentage": "batch.fill_percentage",
    "delivery_time": "supplier.lead_time_days",
    "lead_time": "supplier.lead_time_days",
}

# How each field's values compare, for builders offering operators and inputs:
# number: ints, floats and decimal strings ("4.75") compare as numbers; date: RFC 3339
# text ("2026-12-03T10:00:00Z"); enum: text from a closed set; text: anything else.
FIELD_TYPES: dict[str, str] = {
    "id": "text",
    "buyer_id": "text",
    "category": "text",
    "batch_id": "text",
    "supplier_id": "text",
    "name": "text",
    "source": "text",
    "status": "enum",
    "type": "enum",
    "quantity": "number",
    "unit_price": "number",
    "total_price": "number",
    "current_quantity": "number",
    "target_quantity": "number",
    "capacity": "number",
    "fill_percentage": "number",
    "moq": "number",
    "rating": "number",
    "lead_time_days": "number",
    "window_closes_at": "date",
    "occurred_time": "date",
    **{name: "number" for name in WINDOWED_FACTS},
}
SCALAR_TYPES: dict[str, str] = {"best_supplier_id": "text"}

# The entities each source's events carry in their data (the cross-service event
# contract: `batch.*_json` in the batch migrations); the rest is fetched or absent.
EVENT_ENTITIES: dict[str, tuple[str, ...]] = {"order": ("order", "batch"), "batch": ("batch", "supplier")}

OPERATORS_BY_TYPE: dict[str, tuple[str, ...]] = {
    "number": (
        "equal",
        "not_equal",
        "greater_than",
        "greater_than_inclusive",
        "less_than",
        "less_than_inclusive",
        "between",
        "in",
        "not_in",
        "exists",
    ),
    "text": ("equal", "not_equal", "in", "not_in", "contains", "starts_with", "matches", "exists"),
    "enum": ("equal", "not_equal", "in", "not_in", "exists"),
    "date": ("starts_with", "equal", "not_equal", "matches", "exists"),
}


def fact_type(root: str, field: str) -> str:
    """The type of `root.field` (or of the scalar fact `root` when field is '')."""
    return FIELD_TYPES[field] if field else SCALAR_TYPES[root]


_PATH = re.compile(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*")


def path_problem(path: object) -> str | None:
    """Why `path` is not a fact a rule may name, or None when it is."""
    if not isinstance(path, str) or not _PATH.fullmatch(path):
        return "malformed fact path: lowercase dotted names like 'order.status'"
    root, _, field = path.partition(".")
    if root == DECISION_ROOT:
        return None if field and "." not in field else "name a decision table output, e.g. 'decision.discount'"
    if root in SCALAR_FACTS:
        return None if not field else f"{root!r} is a value and has no fields"
    if root not in ENTITY_FIELDS:
        known = ", ".join(sorted([*ENTITY_FIELDS, *SCALAR_FACTS]))
        return f"unknown fact {root!r}; known: {known}"
    if not field:
        return f"name a field of {root!r}, e.g. '{root}.id'"
    if field not in ENTITY_FIELDS[root]:
        return f"unknown field {field!r} of {root!r}; known: {', '.join(sorted(ENTITY_FIELDS[root]))}"
    return None


def compact_key_to_path(key: str) -> str:
    """'order_status' -> 'order.status', 'completion_percentage' -> 'batch.fill_percentage'.

    Keys that are already dotted paths pass through; unknown keys come back as given
    so that validation reports them.
    """
    if key in COMPACT_ALIASES:
        return COMPACT_ALIASES[key]
    if "." in key or key in SCALAR_FACTS:
        return key
    for root in sorted(ENTITY_FIELDS, key=len, reverse=True):
        if key.startswith(root + "_"):
            return f"{root}.{key[len(root) + 1:]}"
    return key
