"""Proto <-> records for the batch service: what the servicer sends and reads.

Conversions on the PlaceOrder hot path (timestamps, a group's answers) are written for
CPU: they showed in profiles of every answer.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from google.protobuf.timestamp_pb2 import Timestamp
from loom.batch.v1 import batch_pb2 as pb

from libs.domain_errors import InvalidArgument, Violations
from libs.pagination import encode_token
from services.batch import domain
from services.batch.domain import BatchStatus, OrderStatus
from services.batch.records import Batch, Order, PlacedOrder, Supplier

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp(value: datetime | None) -> Timestamp | None:
    """Timestamp.FromDatetime's result (a naive value is UTC) at a fraction of its CPU cost,
    which showed in every PlaceOrder answer (seven timestamps each)."""
    if value is None:
        return None
    since = (value if value.tzinfo is not None else value.replace(tzinfo=UTC)) - EPOCH
    return Timestamp(seconds=since.days * 86_400 + since.seconds, nanos=since.microseconds * 1_000)


def decimal_text(value: Decimal | None) -> str:
    """A decimal string without trailing zeros beyond the cents: 5.0000 -> "5.00", 5.1250 -> "5.125"."""
    if value is None:
        return ""
    normal = value.normalize()
    exponent = normal.as_tuple().exponent  # a letter only for NaN and infinities, which are never stored
    return format(normal.quantize(domain.CENT) if isinstance(exponent, int) and exponent > -2 else normal, "f")


def supplier_message(supplier: Supplier) -> pb.Supplier:
    return pb.Supplier(
        supplier_id=supplier.id,
        name=supplier.name,
        categories=supplier.categories,
        moq=supplier.moq,
        capacity=supplier.capacity,
        price_tiers=[pb.PriceTier(min_quantity=t.min_quantity, unit_price=str(t.unit_price)) for t in supplier.price_tiers],
        lead_time_days=supplier.lead_time_days,
        rating=float(supplier.rating),
        active=supplier.active,
        max_styles_per_batch=supplier.max_styles_per_batch,
        contact_email=supplier.contact_email,
        create_time=timestamp(supplier.create_time),
        update_time=timestamp(supplier.update_time),
    )


def batch_message(batch: Batch) -> pb.Batch:
    return pb.Batch(
        batch_id=batch.id,
        category=batch.category,
        supplier_id=batch.supplier_id,
        status=pb.BatchStatus.Value(f"BATCH_STATUS_{batch.status.upper()}"),
        target_quantity=batch.target_quantity,
        capacity=batch.capacity,
        current_quantity=batch.current_quantity,
        fill_percentage=batch.fill_percentage,
        style_limit=batch.style_limit,
        style_count=batch.style_count,
        window_open_time=timestamp(batch.window_open_time),
        window_close_time=timestamp(batch.window_close_time),
        needs_review=batch.needs_review,
        unit_price=decimal_text(batch.unit_price),
        supplier_order_number=batch.supplier_order_number or "",
        order_count=batch.order_count,
        create_time=timestamp(batch.create_time),
        update_time=timestamp(batch.update_time),
    )


def price_message(price: domain.Price) -> pb.PriceBreakdown:
    return pb.PriceBreakdown(
        currency=price.currency,
        supplier_unit_price=decimal_text(price.supplier_unit_price),
        margin_percent=decimal_text(price.margin_percent),
        unit_price=decimal_text(price.unit_price),
        quantity=price.quantity,
        subtotal=str(price.subtotal),
        margin_amount=str(price.margin_amount),
        total=str(price.total),
    )


def order_message(order: Order) -> pb.Order:
    style = order.style
    return pb.Order(
        order_id=order.id,
        buyer_id=order.buyer_id,
        category=order.category,
        quantity=order.quantity,
        style=pb.StyleDetails(style_count=style.style_count, colors=style.colors, sizes=style.sizes, notes=style.notes),
        status=pb.OrderStatus.Value(f"ORDER_STATUS_{order.status.upper()}"),
        batch_id=order.batch_id,
        supplier_id=order.supplier_id,
        price=price_message(order.price),
        create_time=timestamp(order.create_time),
        update_time=timestamp(order.update_time),
    )


def order_status(value: pb.OrderStatus.ValueType, field: str = "status") -> OrderStatus:
    if value == pb.ORDER_STATUS_UNSPECIFIED or value not in pb.OrderStatus.values():
        raise InvalidArgument.field(field, "must be a known order status")
    return OrderStatus(pb.OrderStatus.Name(value).removeprefix("ORDER_STATUS_").lower())


def batch_status(value: pb.BatchStatus.ValueType, field: str = "status") -> BatchStatus:
    if value == pb.BATCH_STATUS_UNSPECIFIED or value not in pb.BatchStatus.values():
        raise InvalidArgument.field(field, "must be a known batch status")
    return BatchStatus(pb.BatchStatus.Name(value).removeprefix("BATCH_STATUS_").lower())


def supplier_terms_of(message: pb.Supplier, supplier_id: str, violations: Violations) -> domain.SupplierTerms:
    """The terms a Supplier message asks for, every violation recorded."""
    tiers = []
    for i, tier in enumerate(message.price_tiers):
        price = domain.parse_decimal(
            violations, f"supplier.price_tiers[{i}].unit_price", tier.unit_price,
            minimum=Decimal(0), maximum=domain.MAX_UNIT_PRICE, places=4, exclusive_minimum=True,
        )
        tiers.append(domain.PriceTier(tier.min_quantity, price))
    rating = Decimal(repr(message.rating)) if message.rating == message.rating else Decimal(-1)
    terms = domain.SupplierTerms(
        supplier_id=supplier_id,
        categories=tuple(message.categories),
        moq=message.moq,
        capacity=message.capacity,
        price_tiers=tuple(tiers),
        lead_time_days=message.lead_time_days,
        rating=rating.quantize(Decimal("0.01")) if rating.is_finite() and abs(rating) <= 5 else Decimal(-1),
        active=message.active,
        max_styles_per_batch=message.max_styles_per_batch,
    )
    domain.validate_supplier(terms, message.name, message.contact_email, violations)
    return terms


# ---------------------------------------------------------------- list pages


def cursor_values(cursor: list | None) -> list | None:
    """The keyset (create_time, id) of a decoded page token."""
    if cursor is None:
        return None
    try:
        return [datetime.fromisoformat(cursor[0]), str(uuid.UUID(cursor[1]))]
    except (ValueError, TypeError, IndexError):
        raise InvalidArgument.field("page_token", "not a token this server issued") from None


def next_token(records: list[Supplier] | list[Order] | list[Batch], limit: int, scope: str) -> str:
    """The token of the page after a full one, keyed on its last record's (create_time, id)."""
    if len(records) < limit:
        return ""
    last = records[-1]
    return encode_token([last.create_time.isoformat(), last.id], scope=scope)


# ---------------------------------------------------------------- PlaceOrder answers


@dataclass(frozen=True)
class OrderItem:
    """A validated PlaceOrder, as the group commit places it."""

    order: domain.OrderRequest
    style: pb.StyleDetails  # as asked, echoed in the answer
    style_json: dict


class PlacedAnswers:
    """The PlaceOrder answers of the orders one statement placed: what they share (the time,
    a price, a batch's other fields) is converted once, not once per order."""

    def __init__(self) -> None:
        self._prices: dict[domain.Price, pb.PriceBreakdown] = {}
        self._times: dict[datetime, Timestamp | None] = {}
        self._batches: dict[str, pb.Batch] = {}

    def __call__(self, item: OrderItem, placed: PlacedOrder) -> pb.PlaceOrderResponse:
        order, joined = item.order, placed.batch
        price = self._prices.get(placed.price) or self._prices.setdefault(placed.price, price_message(placed.price))
        created = self._times.get(placed.now) or self._times.setdefault(placed.now, timestamp(placed.now))
        known = self._batches.get(joined.id)
        if known is None:
            batch = self._batches[joined.id] = batch_message(joined)
        else:  # an earlier order's join of the same batch by the same statement: only the counts moved
            batch = pb.Batch()
            batch.CopyFrom(known)
            batch.current_quantity, batch.fill_percentage = joined.current_quantity, joined.fill_percentage
            batch.style_count, batch.order_count = joined.style_count, joined.order_count
        batch_id = batch.batch_id
        return pb.PlaceOrderResponse(
            order=pb.Order(
                order_id=placed.order_id, buyer_id=order.buyer_id, category=order.category, quantity=order.quantity,
                style=item.style, status=pb.ORDER_STATUS_PLACED, batch_id=batch_id,
                supplier_id=batch.supplier_id, price=price, create_time=created, update_time=created,
            ),
            batch=batch,
            contribution=pb.Contribution(
                contribution_id=placed.contribution_id, batch_id=batch_id, order_id=placed.order_id,
                quantity=order.quantity, style_count=order.style_count, amount=price.subtotal, create_time=created,
            ),
            price=price,
            batch_opened=placed.batch_opened,
        )
