"""What the batch store hands back: one frozen record per kind of row.

Servicers, use cases, the watcher and the outbox dispatcher read these, never rows;
the store modules build them (`services/batch/store/*`, each from its own SELECTs).
Ids are strings, money exact decimals, times aware datetimes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from services.batch import domain
from services.batch.domain import BatchStatus, OrderStatus


@dataclass(frozen=True, slots=True)
class Supplier:
    id: str
    name: str
    categories: tuple[str, ...]
    moq: int
    capacity: int
    price_tiers: tuple[domain.PriceTier, ...]
    lead_time_days: int
    rating: Decimal
    active: bool
    max_styles_per_batch: int
    contact_email: str
    create_time: datetime
    update_time: datetime

    @property
    def terms(self) -> domain.SupplierTerms:
        return domain.SupplierTerms(
            supplier_id=self.id,
            categories=self.categories,
            moq=self.moq,
            capacity=self.capacity,
            price_tiers=self.price_tiers,
            lead_time_days=self.lead_time_days,
            rating=self.rating,
            active=self.active,
            max_styles_per_batch=self.max_styles_per_batch,
        )


@dataclass(frozen=True, slots=True)
class Batch:
    id: str
    category: str
    supplier_id: str
    status: BatchStatus
    target_quantity: int
    capacity: int
    current_quantity: int
    style_limit: int
    style_count: int
    order_count: int
    window_open_time: datetime
    window_close_time: datetime
    needs_review: bool
    unit_price: Decimal
    supplier_order_number: str | None
    create_time: datetime
    update_time: datetime

    @property
    def fill_percentage(self) -> float:
        return round(self.current_quantity * 100 / self.target_quantity, 2)

    @property
    def as_open(self) -> domain.OpenBatch:
        """What placement decides on."""
        return domain.OpenBatch(
            batch_id=self.id,
            current_quantity=self.current_quantity,
            target_quantity=self.target_quantity,
            capacity=self.capacity,
            style_count=self.style_count,
            style_limit=self.style_limit,
            window_close_time=self.window_close_time,
            create_time=self.create_time,
            unit_price=self.unit_price,
        )


@dataclass(frozen=True, slots=True)
class Style:
    style_count: int
    colors: tuple[str, ...]
    sizes: tuple[str, ...]
    notes: str


@dataclass(frozen=True, slots=True)
class Order:
    id: str
    buyer_id: str
    category: str
    quantity: int
    style: Style
    status: OrderStatus
    status_reason: str
    batch_id: str
    supplier_id: str
    assignment_priority: int
    price: domain.Price
    create_time: datetime
    update_time: datetime


@dataclass(frozen=True, slots=True)
class PlacedOrder:
    """One PlaceOrder's result: its ids, its batch right after its own join, its price."""

    order_id: str
    contribution_id: str
    batch: Batch
    price: domain.Price
    batch_opened: bool
    now: datetime


@dataclass(frozen=True, slots=True)
class PriceSnapshot:
    capture_time: datetime
    supplier_id: str
    category: str
    unit_price: Decimal
    change_percent: Decimal | None
    market_change: bool


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An outbox row waiting for delivery; `namespace` makes its event id unique to this database."""

    id: int
    namespace: uuid.UUID
    type: str
    occurred_time: datetime
    data: dict
    trace_parent: str  # of the traced call that wrote it; "" when none was
    # The rule executions whose actions led to it (libs/causation.py); [] when none did.
    causation: list[dict[str, str]] = field(default_factory=list)


@dataclass
class OrchestrationCounts:
    examined: int = 0
    confirmed: int = 0
    supplier_orders: int = 0
    nearing_target: int = 0
    closing_soon: int = 0
    flagged_for_review: int = 0
    cancelled: int = 0
    refunded: int = 0


@dataclass(frozen=True, slots=True)
class PurgeCounts:
    outbox_rows: int
    idempotency_rows: int
    snapshots: int
