"""The batch service's pure decisions, at their boundaries."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from libs.errors import InvalidArgument, Violations
from services.batch import domain
from services.batch.domain import Action, BatchStatus, OrderStatus


def fields_of(violations: Violations) -> set[str]:
    with pytest.raises(InvalidArgument) as raised:
        violations.raise_if_any()
    return {v.field for v in raised.value.violations}


NOW = datetime(2026, 1, 15, 12, tzinfo=UTC)
TH = domain.Thresholds()


def filling(current: int, target: int = 10_000, closes_in: timedelta = timedelta(days=5), **flags) -> domain.FillingBatch:
    return domain.FillingBatch(current, target, NOW + closes_in, **flags)


@pytest.mark.parametrize(
    ("current", "expected"),
    [
        (7_500, {Action.CONFIRM}),  # 75%
        (7_499, {Action.NEARING_TARGET}),  # 74.99%
        (6_000, {Action.NEARING_TARGET}),  # 60%
        (5_999, set()),  # 59.99%
        (0, set()),
    ],
)
def test_open_window_thresholds(current, expected):
    assert domain.decide(filling(current), NOW, TH) == expected


@pytest.mark.parametrize(
    ("current", "expected"),
    [
        (7_500, {Action.CONFIRM}),
        (7_499, {Action.FLAG_FOR_REVIEW}),
        (5_000, {Action.FLAG_FOR_REVIEW}),  # 50%
        (4_999, {Action.CANCEL}),  # 49.99%
        (0, {Action.CANCEL}),
    ],
)
def test_closed_window_thresholds(current, expected):
    assert domain.decide(filling(current, closes_in=timedelta(0)), NOW, TH) == expected


def test_a_batch_already_in_review_waits_for_the_admin():
    assert domain.decide(filling(6_000, closes_in=-timedelta(hours=1), needs_review=True), NOW, TH) == set()


def test_closing_soon_within_the_window_and_only_once():
    assert domain.decide(filling(1_000, closes_in=timedelta(hours=24)), NOW, TH) == {Action.CLOSING_SOON}
    assert domain.decide(filling(1_000, closes_in=timedelta(hours=24, seconds=1)), NOW, TH) == set()
    assert domain.decide(filling(1_000, closes_in=timedelta(hours=1), closing_soon_notified=True), NOW, TH) == set()


def test_nearing_target_is_raised_once_and_can_coincide_with_closing_soon():
    assert domain.decide(filling(6_500, closes_in=timedelta(hours=2)), NOW, TH) == {
        Action.NEARING_TARGET,
        Action.CLOSING_SOON,
    }
    assert domain.decide(filling(6_500, nearing_target_notified=True), NOW, TH) == set()


def test_thresholds_are_configuration():
    strict = domain.Thresholds(confirm_percent=Decimal(90), review_percent=Decimal(40), nearing_target_percent=Decimal(80))
    assert domain.decide(filling(8_999), NOW, strict) == {Action.NEARING_TARGET}
    assert domain.decide(filling(4_000, closes_in=timedelta(0)), NOW, strict) == {Action.FLAG_FOR_REVIEW}


def tier(q: int, price: str) -> domain.PriceTier:
    return domain.PriceTier(q, Decimal(price))


def supplier(sid: str, price: str, *, rating="4.0", lead=10, capacity=500, moq=100, active=True, styles=5, cats=("tees",)):
    return domain.SupplierTerms(
        sid, cats, moq, capacity, (tier(1, "99"), tier(moq, price)), lead, Decimal(rating), active, styles
    )


def test_tier_price_is_the_highest_tier_reached():
    tiers = (tier(1, "6.00"), tier(100, "5.00"), tier(500, "4.50"))
    assert domain.tier_price(tiers, 99) == Decimal("6.00")
    assert domain.tier_price(tiers, 100) == Decimal("5.00")
    assert domain.tier_price(tiers, 10_000) == Decimal("4.50")
    assert domain.tier_price((tier(10, "1"),), 9) is None


def test_supplier_choice_prefers_price_then_rating_then_lead_time():
    cheap = supplier("a", "4.00", rating="3.0")
    rated = supplier("b", "5.00", rating="5.0")
    assert domain.choose_supplier([rated, cheap], "tees", 10) == cheap
    fast = supplier("c", "5.00", rating="5.0", lead=3)
    assert domain.choose_supplier([rated, fast], "tees", 10) == fast
    better = supplier("d", "5.00", rating="4.9")
    assert domain.choose_supplier([better, rated], "tees", 10) == rated


def test_supplier_choice_skips_those_that_cannot_take_the_order():
    assert domain.choose_supplier([supplier("a", "1", capacity=100)], "tees", 101) is None
    assert domain.choose_supplier([supplier("a", "1", active=False)], "tees", 1) is None
    assert domain.choose_supplier([supplier("a", "1", cats=("hoodies",))], "tees", 1) is None
    assert domain.choose_supplier([supplier("a", "1", styles=2)], "tees", 1, style_count=3) is None
    assert domain.choose_supplier([supplier("a", "1", capacity=100)], "tees", 100).supplier_id == "a"


def open_batch(bid: str, current: int, *, target=100, capacity=200, styles=0, limit=5, closes=timedelta(days=1), age=0):
    return domain.OpenBatch(
        bid, current, target, capacity, styles, limit, NOW + closes, NOW - timedelta(minutes=age), Decimal("5")
    )


def test_compatible_batch_must_have_room_styles_and_an_open_window():
    assert domain.fits(open_batch("a", 150), 50, 1, NOW)
    assert not domain.fits(open_batch("a", 151), 50, 1, NOW)
    assert not domain.fits(open_batch("a", 0, styles=5), 1, 1, NOW)
    assert domain.fits(open_batch("a", 0, styles=4), 1, 1, NOW)
    assert not domain.fits(open_batch("a", 0, closes=timedelta(0)), 1, 1, NOW)


def test_the_batch_closest_to_its_target_is_preferred():
    far, near, past = open_batch("far", 10), open_batch("near", 90), open_batch("past", 150)
    assert domain.choose_batch([far, past, near], 5, 1, NOW) == near
    assert domain.choose_batch([past, far], 5, 1, NOW) == far
    assert domain.choose_batch([past], 5, 1, NOW) == past
    assert domain.choose_batch([open_batch("x", 10, age=1), open_batch("y", 10, age=5)], 5, 1, NOW).batch_id == "y"
    assert domain.choose_batch([open_batch("full", 199)], 5, 1, NOW) is None


def test_price_is_tier_price_plus_margin_in_exact_decimals():
    price = domain.price_order(Decimal("4.3333"), Decimal("15"), 3, "USD")
    assert price.subtotal == Decimal("13.00")  # 12.9999 rounds half up to the cent
    assert price.margin_amount == Decimal("1.95")
    assert price.total == Decimal("14.95")
    assert price.unit_price == Decimal("4.9833")
    assert isinstance(price.total, Decimal)


def test_price_of_a_large_order_stays_exact():
    price = domain.price_order(Decimal("0.1"), Decimal("12.5"), 1_000_000, "USD")
    assert (price.subtotal, price.margin_amount, price.total) == (Decimal("100000.00"), Decimal("12500.00"), Decimal("112500.00"))


def test_order_workflow_transitions():
    assert domain.order_transition_allowed(OrderStatus.PLACED, OrderStatus.CONFIRMED)
    assert domain.order_transition_allowed(OrderStatus.AWAITING_SUPPLIER, OrderStatus.PLACED)
    assert domain.order_transition_allowed(OrderStatus.SHIPPED, OrderStatus.DELIVERED)
    assert not domain.order_transition_allowed(OrderStatus.DELIVERED, OrderStatus.PLACED)
    assert not domain.order_transition_allowed(OrderStatus.PLACED, OrderStatus.REFUNDED)
    assert not domain.order_transition_allowed(OrderStatus.REFUNDED, OrderStatus.REFUNDED)
    assert not domain.order_transition_allowed(OrderStatus.CONFIRMED, OrderStatus.CANCELLED)


def test_batch_lifecycle_transitions():
    assert domain.batch_transition_allowed(BatchStatus.FILLING, BatchStatus.CONFIRMED)
    assert domain.batch_transition_allowed(BatchStatus.CONFIRMED, BatchStatus.IN_PRODUCTION)
    assert domain.batch_transition_allowed(BatchStatus.IN_PRODUCTION, BatchStatus.COMPLETED)
    assert not domain.batch_transition_allowed(BatchStatus.FILLING, BatchStatus.IN_PRODUCTION)
    assert not domain.batch_transition_allowed(BatchStatus.CANCELLED, BatchStatus.FILLING)
    assert not domain.batch_transition_allowed(BatchStatus.COMPLETED, BatchStatus.CANCELLED)


def test_price_change_flags_moves_beyond_the_market_threshold():
    assert domain.price_change(None, Decimal("5"), Decimal(10)) == (None, False)
    assert domain.price_change(Decimal("5"), Decimal("5.50"), Decimal(10)) == (Decimal("10.0000"), False)
    assert domain.price_change(Decimal("5"), Decimal("5.51"), Decimal(10)) == (Decimal("10.2000"), True)
    assert domain.price_change(Decimal("5"), Decimal("4.40"), Decimal(10)) == (Decimal("-12.0000"), True)


def test_cost_estimate_breakdown_adds_up_exactly():
    lines = [domain.CostLine("fabric", Decimal("2.3333"), 3), domain.CostLine("labour", Decimal("1.10"), 10)]
    estimate = domain.estimate_cost(lines, Decimal("12.5"), Decimal("10"))
    assert [total for _, total in estimate.lines] == [Decimal("7.00"), Decimal("11.00")]
    assert estimate.direct_cost == Decimal("18.00")
    assert estimate.indirect_cost == Decimal("2.25")
    assert estimate.overhead == Decimal("2.03")  # 10% of 20.25, half up
    assert estimate.total == Decimal("22.28")


def test_cost_request_validation_names_each_bad_field():
    violations = Violations()
    domain.validate_cost_request([("x", "abc", 0), ("y", "-1", 5)], "1001", "", violations)
    fields = fields_of(violations)
    assert fields == {"line_items[0].unit_cost", "line_items[0].quantity", "line_items[1].unit_cost", "indirect_cost_percent"}


@pytest.mark.parametrize(
    ("text", "ok"), [("4.75", True), ("0", False), ("1e3", True), ("NaN", False), ("1.00001", False), ("", False)]
)
def test_tier_prices_are_positive_decimals_with_at_most_four_places(text, ok):
    violations = Violations()
    domain.parse_decimal(violations, "p", text, minimum=Decimal(0), maximum=Decimal(10**6), places=4, exclusive_minimum=True)
    assert (not violations) is ok


def test_supplier_validation_requires_a_price_at_the_moq():
    violations = Violations()
    terms = domain.SupplierTerms("s", ("tees",), 100, 200, (tier(150, "4"),), 5, Decimal(4), True, 5)
    domain.validate_supplier(terms, "Acme", "", violations)
    assert fields_of(violations) == {"supplier.price_tiers"}


def test_supplier_validation_rejects_capacity_below_moq_and_bad_categories():
    violations = Violations()
    terms = domain.SupplierTerms("s", ("Tees!",), 100, 50, (tier(1, "4"),), 5, Decimal(4), True, 5)
    domain.validate_supplier(terms, "Acme", "not-an-email", violations)
    assert fields_of(violations) == {
        "supplier.categories[0]",
        "supplier.capacity",
        "supplier.contact_email",
    }
