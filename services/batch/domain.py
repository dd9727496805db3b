"""Pure decisions of the batch service: no I/O, exact decimals, unit-tested at the edges.

Supplier choice, batch compatibility, pricing, the orchestration thresholds,
the order and batch workflows, price-change detection and cost estimates.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from libs.domain_errors import Violations

CENT = Decimal("0.01")
PRICE_QUANTUM = Decimal("0.0001")
HUNDRED = Decimal(100)
MAX_UNIT_PRICE = Decimal("1000000")
MAX_PERCENT = Decimal("1000")
CATEGORY_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_PRICE_TIERS = 50
MAX_CATEGORIES = 50
MAX_STYLE_COUNT = 1000
MAX_TEXT = 200
MAX_COST_QUANTITY = 10**9


def money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def parse_decimal(
    violations: Violations, field: str, text: str, *, minimum: Decimal, maximum: Decimal, places: int,
    exclusive_minimum: bool = False,
) -> Decimal:
    """A decimal string within bounds with at most `places` decimals; records a violation otherwise."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        violations.add(field, "must be a decimal string such as '12.50'")
        return Decimal(0)
    if not value.is_finite():
        violations.add(field, "must be a finite decimal")
        return Decimal(0)
    too_low = value <= minimum if exclusive_minimum else value < minimum
    if too_low or value > maximum:
        bound = "greater than" if exclusive_minimum else "at least"
        violations.add(field, f"must be {bound} {minimum} and at most {maximum}")
    elif -value.as_tuple().exponent > places:  # type: ignore[operator]  # finite here, so the exponent is an int
        violations.add(field, f"at most {places} decimal places")
    return value


def check_category(violations: Violations, field: str, category: str) -> None:
    if not CATEGORY_PATTERN.match(category):
        violations.add(field, "a category is 1-64 characters: lowercase letters, digits and _, starting with a letter")


# ---------------------------------------------------------------- suppliers


@dataclass(frozen=True)
class PriceTier:
    min_quantity: int
    unit_price: Decimal


@dataclass(frozen=True)
class SupplierTerms:
    supplier_id: str
    categories: tuple[str, ...]
    moq: int
    capacity: int
    price_tiers: tuple[PriceTier, ...]
    lead_time_days: int
    rating: Decimal
    active: bool
    max_styles_per_batch: int


def tier_price(tiers: Iterable[PriceTier], quantity: int) -> Decimal | None:
    """The unit price of the highest tier whose minimum the quantity reaches."""
    reached = [t for t in tiers if t.min_quantity <= quantity]
    return max(reached, key=lambda t: t.min_quantity).unit_price if reached else None


def validate_supplier(terms: SupplierTerms, name: str, contact_email: str, violations: Violations) -> None:
    """Every rule a stored supplier obeys; field names are those of the Supplier message."""
    violations.check(0 < len(name.strip()) <= MAX_TEXT, "supplier.name", f"required, at most {MAX_TEXT} characters")
    violations.check(
        0 < len(terms.categories) <= MAX_CATEGORIES, "supplier.categories", f"1 to {MAX_CATEGORIES} categories"
    )
    for i, category in enumerate(terms.categories):
        check_category(violations, f"supplier.categories[{i}]", category)
    violations.check(len(set(terms.categories)) == len(terms.categories), "supplier.categories", "must not repeat")
    violations.check(0 < terms.moq <= 10**9, "supplier.moq", "must be between 1 and 1000000000")
    violations.check(
        terms.moq <= terms.capacity <= 10**9, "supplier.capacity", "must be at least the moq and at most 1000000000"
    )
    violations.check(0 <= terms.lead_time_days <= 365, "supplier.lead_time_days", "must be between 0 and 365")
    violations.check(Decimal(0) <= terms.rating <= Decimal(5), "supplier.rating", "must be between 0 and 5")
    violations.check(
        0 < terms.max_styles_per_batch <= MAX_STYLE_COUNT,
        "supplier.max_styles_per_batch",
        f"must be between 1 and {MAX_STYLE_COUNT}",
    )
    violations.check(
        not contact_email
        or (len(contact_email) <= MAX_TEXT and re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", contact_email) is not None),
        "supplier.contact_email",
        "must be an e-mail address",
    )
    tiers = terms.price_tiers
    violations.check(0 < len(tiers) <= MAX_PRICE_TIERS, "supplier.price_tiers", f"1 to {MAX_PRICE_TIERS} tiers")
    for i, tier in enumerate(tiers):
        violations.check(tier.min_quantity > 0, f"supplier.price_tiers[{i}].min_quantity", "must be positive")
    minimums = [t.min_quantity for t in tiers]
    violations.check(len(set(minimums)) == len(minimums), "supplier.price_tiers", "min_quantity must not repeat")
    violations.check(
        not tiers or tier_price(tiers, terms.moq) is not None,
        "supplier.price_tiers",
        "a tier must start at or below the moq, so a batch target always has a price",
    )


def can_take(terms: SupplierTerms, category: str, quantity: int, style_count: int) -> bool:
    return (
        terms.active
        and category in terms.categories
        and quantity <= terms.capacity
        and style_count <= terms.max_styles_per_batch
        and tier_price(terms.price_tiers, terms.moq) is not None
    )


def choose_supplier(
    suppliers: Iterable[SupplierTerms], category: str, quantity: int, style_count: int = 1
) -> SupplierTerms | None:
    """The supplier a new batch goes to: serves the category and fits the order, then the
    lowest tier price at its MOQ (the batch target), the best rating, the shortest lead time."""
    able = [s for s in suppliers if can_take(s, category, quantity, style_count)]
    if not able:
        return None
    return min(
        able,
        key=lambda s: (tier_price(s.price_tiers, s.moq), -s.rating, s.lead_time_days, s.supplier_id),
    )


# ---------------------------------------------------------------- batches and orders


@dataclass(frozen=True)
class OpenBatch:
    """What PlaceOrder needs to know of a filling batch."""

    batch_id: str
    current_quantity: int
    target_quantity: int
    capacity: int
    style_count: int
    style_limit: int
    window_close_time: datetime
    create_time: datetime
    unit_price: Decimal


def fits(batch: OpenBatch, quantity: int, style_count: int, now: datetime) -> bool:
    return (
        batch.window_close_time > now
        and batch.current_quantity + quantity <= batch.capacity
        and batch.style_count + style_count <= batch.style_limit
    )


def choose_batch(batches: Iterable[OpenBatch], quantity: int, style_count: int, now: datetime) -> OpenBatch | None:
    """The compatible batch closest to its target: batches still short of their target first,
    smallest gap first; batches already past their target last; oldest first on ties."""
    compatible = [b for b in batches if fits(b, quantity, style_count, now)]
    if not compatible:
        return None
    return min(
        compatible,
        key=lambda b: (
            b.current_quantity >= b.target_quantity,
            b.target_quantity - b.current_quantity,
            b.create_time,
            b.batch_id,
        ),
    )


@dataclass(frozen=True)
class Price:
    currency: str
    supplier_unit_price: Decimal
    margin_percent: Decimal
    unit_price: Decimal
    quantity: int
    subtotal: Decimal
    margin_amount: Decimal
    total: Decimal


def price_order(supplier_unit_price: Decimal, margin_percent: Decimal, quantity: int, currency: str) -> Price:
    """Supplier tier price at the batch target plus the platform margin, in exact decimals:
    the margin is charged on the subtotal and rounded once, to the cent."""
    subtotal = money(supplier_unit_price * quantity)
    margin_amount = money(subtotal * margin_percent / HUNDRED)
    return Price(
        currency=currency,
        supplier_unit_price=supplier_unit_price,
        margin_percent=margin_percent,
        unit_price=(supplier_unit_price * (1 + margin_percent / HUNDRED)).quantize(PRICE_QUANTUM, ROUND_HALF_UP),
        quantity=quantity,
        subtotal=subtotal,
        margin_amount=margin_amount,
        total=subtotal + margin_amount,
    )


@dataclass(frozen=True)
class OrderRequest:
    buyer_id: str
    category: str
    quantity: int
    style_count: int
    colors: Sequence[str]
    sizes: Sequence[str]
    notes: str


def validate_order(order: OrderRequest, max_quantity: int, violations: Violations) -> None:
    """What the request's proto constraints cannot say: the configured largest order, and the
    buyer, which defaults to the caller's own id (so the proto never saw it)."""
    violations.check(0 < len(order.buyer_id) <= MAX_TEXT, "buyer_id", f"required, at most {MAX_TEXT} characters")
    violations.check(order.quantity <= max_quantity, "quantity", f"must be between 1 and {max_quantity}")


class OrderStatus(enum.StrEnum):
    PLACED = "placed"
    AWAITING_SUPPLIER = "awaiting_supplier"
    CONFIRMED = "confirmed"
    IN_PRODUCTION = "in_production"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"
    REFUNDED = "refunded"


# Statuses whose order still holds a share of a filling batch.
OPEN_ORDER_STATUSES = (OrderStatus.PLACED, OrderStatus.AWAITING_SUPPLIER)

ORDER_TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PLACED: frozenset({OrderStatus.AWAITING_SUPPLIER, OrderStatus.CONFIRMED, OrderStatus.CANCELLED}),
    OrderStatus.AWAITING_SUPPLIER: frozenset({OrderStatus.PLACED, OrderStatus.CONFIRMED, OrderStatus.CANCELLED}),
    OrderStatus.CONFIRMED: frozenset({OrderStatus.IN_PRODUCTION}),
    OrderStatus.IN_PRODUCTION: frozenset({OrderStatus.SHIPPED}),
    OrderStatus.SHIPPED: frozenset({OrderStatus.DELIVERED}),
    OrderStatus.DELIVERED: frozenset(),
    OrderStatus.CANCELLED: frozenset(),
    # Refunds happen only when orchestration or an admin cancels the batch.
    OrderStatus.REFUNDED: frozenset(),
}


def order_transition_allowed(current: OrderStatus, target: OrderStatus) -> bool:
    return target in ORDER_TRANSITIONS[current]


class BatchStatus(enum.StrEnum):
    FILLING = "filling"
    CONFIRMED = "confirmed"
    IN_PRODUCTION = "in_production"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


BATCH_TRANSITIONS: dict[BatchStatus, frozenset[BatchStatus]] = {
    BatchStatus.FILLING: frozenset({BatchStatus.CONFIRMED, BatchStatus.CANCELLED}),
    BatchStatus.CONFIRMED: frozenset({BatchStatus.IN_PRODUCTION}),
    BatchStatus.IN_PRODUCTION: frozenset({BatchStatus.COMPLETED}),
    BatchStatus.COMPLETED: frozenset(),
    BatchStatus.CANCELLED: frozenset(),
}


def batch_transition_allowed(current: BatchStatus, target: BatchStatus) -> bool:
    return target in BATCH_TRANSITIONS[current]


# ---------------------------------------------------------------- orchestration


@dataclass(frozen=True)
class Thresholds:
    confirm_percent: Decimal = Decimal(75)
    review_percent: Decimal = Decimal(50)
    nearing_target_percent: Decimal = Decimal(60)
    closing_soon: timedelta = timedelta(hours=24)


class Action(enum.StrEnum):
    CONFIRM = "confirm"
    FLAG_FOR_REVIEW = "flag_for_review"
    CANCEL = "cancel"
    NEARING_TARGET = "nearing_target"
    CLOSING_SOON = "closing_soon"


@dataclass(frozen=True)
class FillingBatch:
    current_quantity: int
    target_quantity: int
    window_close_time: datetime
    needs_review: bool = False
    nearing_target_notified: bool = False
    closing_soon_notified: bool = False


def reaches(current: int, target: int, percent: Decimal) -> bool:
    """current / target x 100 >= percent, decided on integers and exact decimals."""
    return current * HUNDRED >= target * percent


def decide(batch: FillingBatch, now: datetime, thresholds: Thresholds) -> frozenset[Action]:
    """What orchestration does to one filling batch as of `now` (the store runs the same
    rules as set-based SQL; an integration test holds the two to agreement)."""
    current, target = batch.current_quantity, batch.target_quantity
    if reaches(current, target, thresholds.confirm_percent):
        return frozenset({Action.CONFIRM})
    if batch.window_close_time <= now:
        if batch.needs_review:
            return frozenset()
        if reaches(current, target, thresholds.review_percent):
            return frozenset({Action.FLAG_FOR_REVIEW})
        return frozenset({Action.CANCEL})
    actions = set()
    if not batch.nearing_target_notified and reaches(current, target, thresholds.nearing_target_percent):
        actions.add(Action.NEARING_TARGET)
    if not batch.closing_soon_notified and batch.window_close_time <= now + thresholds.closing_soon:
        actions.add(Action.CLOSING_SOON)
    return frozenset(actions)


# ---------------------------------------------------------------- price snapshots


def price_change(previous: Decimal | None, current: Decimal, market_change_percent: Decimal) -> tuple[Decimal | None, bool]:
    """(change in percent against the previous snapshot, whether it is a market change)."""
    if previous is None or previous == 0:
        return None, False
    change = ((current - previous) * HUNDRED / previous).quantize(PRICE_QUANTUM, ROUND_HALF_UP)
    return change, abs(change) > market_change_percent


# ---------------------------------------------------------------- cost estimates


@dataclass(frozen=True)
class CostLine:
    description: str
    unit_cost: Decimal
    quantity: int


@dataclass(frozen=True)
class CostEstimate:
    lines: tuple[tuple[CostLine, Decimal], ...]
    direct_cost: Decimal
    indirect_cost: Decimal
    overhead: Decimal
    total: Decimal


def estimate_cost(lines: Sequence[CostLine], indirect_percent: Decimal, overhead_percent: Decimal) -> CostEstimate:
    """Direct cost = sum of line totals; indirect = direct x indirect%; overhead is charged on
    direct + indirect. Each figure is rounded once to the cent, so the breakdown adds up."""
    totals = tuple((line, money(line.unit_cost * line.quantity)) for line in lines)
    direct = sum((total for _, total in totals), Decimal("0.00"))
    indirect = money(direct * indirect_percent / HUNDRED)
    overhead = money((direct + indirect) * overhead_percent / HUNDRED)
    return CostEstimate(totals, direct, indirect, overhead, direct + indirect + overhead)


def validate_cost_request(
    lines: Sequence[tuple[str, str, int]], indirect: str, overhead: str, violations: Violations
) -> tuple[list[CostLine], Decimal, Decimal]:
    parsed = []
    for i, (description, unit_cost, quantity) in enumerate(lines):
        cost = parse_decimal(
            violations, f"line_items[{i}].unit_cost", unit_cost, minimum=Decimal(0), maximum=MAX_UNIT_PRICE, places=4
        )
        violations.check(
            0 < quantity <= MAX_COST_QUANTITY, f"line_items[{i}].quantity", f"must be between 1 and {MAX_COST_QUANTITY}"
        )
        parsed.append(CostLine(description, cost, quantity))
    percents = [
        parse_decimal(violations, field, text or "0", minimum=Decimal(0), maximum=MAX_PERCENT, places=4)
        for field, text in (("indirect_cost_percent", indirect), ("overhead_percent", overhead))
    ]
    return parsed, percents[0], percents[1]
