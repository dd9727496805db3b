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

    def start(self, now: datetime) -> datetime:
        if self.hours:
            return now - timedelta(hours=self.hours)
        return now.replace(hour=0, minute=0, second=0, microsecond=0)


WINDOW_ROOT = "window"
WINDOWED_FACTS: dict[str, WindowedFact] = {
    "buyer_orders_24h": WindowedFact("batch.recent_orders", ("order.buyer_id",), hours=24),
    "category_batches_confirmed_7d": WindowedFact("batch.confirmed_batches", ("batch.category", "order.category"), hours=24 * 7),
    "product_interactions_today": WindowedFact("tracking.product_interactions", ("product.id",)),
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
