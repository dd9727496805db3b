"""The BatchService servicer: proto <-> domain/store, authorization of ownership, transactions."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from loom.batch.v1 import batch_pb2 as pb
from loom.batch.v1 import batch_pb2_grpc
from loom.common.v1 import access_pb2
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from libs.auth import current_caller, require_self_or
from libs.db import run_in_transaction
from libs.errors import FailedPrecondition, InvalidArgument, NotFound, Violations
from libs.idempotency import run_idempotent
from libs.pagination import decode_token, encode_token, page_size
from libs.retention import retention_days
from services.batch import domain, store
from services.batch.combiner import GroupCommitter
from services.batch.domain import BatchStatus, OrderStatus
from services.batch.settings import BatchSettings
from services.batch.watch import BatchWatcher
from services.batch.facts import WindowedFacts  # CountRecentOrders, CountConfirmedBatches (rules' windowed facts)

M = TypeVar("M", bound=Message)
ADMIN, BUYER, SUPPLIER, SERVICE = (
    access_pb2.ROLE_ADMIN,
    access_pb2.ROLE_BUYER,
    access_pb2.ROLE_SUPPLIER,
    access_pb2.ROLE_SERVICE,
)
MAX_TREND_MONTHS = 120
SUPPLIER_FIELDS = (
    "name", "categories", "moq", "capacity", "price_tiers", "lead_time_days", "rating", "active",
    "max_styles_per_batch", "contact_email",
)


def utc_now() -> datetime:
    return datetime.now(UTC)


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
    return format(normal.quantize(domain.CENT) if normal.as_tuple().exponent > -2 else normal, "f")


def enum_name(value: str) -> str:
    return value.upper()


def supplier_message(row: RowMapping) -> pb.Supplier:
    return pb.Supplier(
        supplier_id=str(row["id"]),
        name=row["name"],
        categories=row["categories"],
        moq=row["moq"],
        capacity=row["capacity"],
        price_tiers=[pb.PriceTier(min_quantity=t["min_quantity"], unit_price=t["unit_price"]) for t in row["price_tiers"]],
        lead_time_days=row["lead_time_days"],
        rating=float(row["rating"]),
        active=row["active"],
        max_styles_per_batch=row["max_styles_per_batch"],
        contact_email=row["contact_email"],
        create_time=timestamp(row["create_time"]),
        update_time=timestamp(row["update_time"]),
    )


def fill_percentage(row: Mapping[str, Any]) -> float:
    return round(row["current_quantity"] * 100 / row["target_quantity"], 2)


def batch_message(row: Mapping[str, Any]) -> pb.Batch:
    return pb.Batch(
        batch_id=str(row["id"]),
        category=row["category"],
        supplier_id=str(row["supplier_id"]),
        status=pb.BatchStatus.Value(f"BATCH_STATUS_{enum_name(row['status'])}"),
        target_quantity=row["target_quantity"],
        capacity=row["capacity"],
        current_quantity=row["current_quantity"],
        fill_percentage=fill_percentage(row),
        style_limit=row["style_limit"],
        style_count=row["style_count"],
        window_open_time=timestamp(row["window_open_time"]),
        window_close_time=timestamp(row["window_close_time"]),
        needs_review=row["needs_review"],
        unit_price=decimal_text(row["unit_price"]),
        supplier_order_number=row["supplier_order_number"] or "",
        order_count=row["order_count"],
        create_time=timestamp(row["create_time"]),
        update_time=timestamp(row["update_time"]),
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


def order_price(row: RowMapping) -> domain.Price:
    return domain.Price(
        currency=row["currency"],
        supplier_unit_price=row["supplier_unit_price"],
        margin_percent=row["margin_percent"],
        unit_price=row["unit_price"],
        quantity=row["quantity"],
        subtotal=row["subtotal"],
        margin_amount=row["margin_amount"],
        total=row["total"],
    )


def order_message(row: RowMapping) -> pb.Order:
    style = row["style"]
    return pb.Order(
        order_id=str(row["id"]),
        buyer_id=row["buyer_id"],
        category=row["category"],
        quantity=row["quantity"],
        style=pb.StyleDetails(
            style_count=style["style_count"], colors=style["colors"], sizes=style["sizes"], notes=style["notes"]
        ),
        status=pb.OrderStatus.Value(f"ORDER_STATUS_{enum_name(row['status'])}"),
        batch_id=str(row["batch_id"]),
        supplier_id=str(row["supplier_id"]),
        price=price_message(order_price(row)),
        create_time=timestamp(row["create_time"]),
        update_time=timestamp(row["update_time"]),
    )


def order_status(value: int, field: str = "status") -> OrderStatus:
    if value == pb.ORDER_STATUS_UNSPECIFIED or value not in pb.OrderStatus.values():
        raise InvalidArgument.field(field, "must be a known order status")
    return OrderStatus(pb.OrderStatus.Name(value).removeprefix("ORDER_STATUS_").lower())


def batch_status(value: int, field: str = "status") -> BatchStatus:
    if value == pb.BATCH_STATUS_UNSPECIFIED or value not in pb.BatchStatus.values():
        raise InvalidArgument.field(field, "must be a known batch status")
    return BatchStatus(pb.BatchStatus.Name(value).removeprefix("BATCH_STATUS_").lower())


def supplier_terms(message: pb.Supplier, supplier_id: str, violations: Violations) -> domain.SupplierTerms:
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


def page_cursor(row: RowMapping) -> list:
    return [row["create_time"].isoformat(), str(row["id"])]


def cursor_values(cursor: list | None) -> list | None:
    if cursor is None:
        return None
    try:
        return [datetime.fromisoformat(cursor[0]), str(uuid.UUID(cursor[1]))]
    except (ValueError, TypeError, IndexError):
        raise InvalidArgument.field("page_token", "not a token this server issued") from None


def next_token(rows: list[RowMapping], limit: int, scope: str) -> str:
    return encode_token(page_cursor(rows[-1]), scope=scope) if len(rows) == limit else ""


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
        self._batches: dict[object, pb.Batch] = {}

    def __call__(self, item: OrderItem, placed: store.PlacedOrder) -> pb.PlaceOrderResponse:
        order, row = item.order, placed.batch
        price = self._prices.get(placed.price) or self._prices.setdefault(placed.price, price_message(placed.price))
        created = self._times.get(placed.now) or self._times.setdefault(placed.now, timestamp(placed.now))
        known = self._batches.get(row["id"])
        if known is None:
            batch = self._batches[row["id"]] = batch_message(row)
        else:  # an earlier order's join of the same batch by the same statement: only the counts moved
            batch = pb.Batch()
            batch.CopyFrom(known)
            batch.current_quantity, batch.fill_percentage = row["current_quantity"], fill_percentage(row)
            batch.style_count, batch.order_count = row["style_count"], row["order_count"]
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


class OrderPlacement:
    """PlaceOrder's work in a group commit: the group's orders with one statement where they
    can be (store.place_orders), the rest one by one (store.place_order)."""

    def __init__(self, settings: BatchSettings) -> None:
        self._settings = settings

    async def together(self, conn: AsyncConnection, shared: dict, items: list[OrderItem]) -> list[Message | None]:
        placed = await store.place_orders(
            conn, [(item.order, item.style_json) for item in items],
            margin_percent=self._settings.margin_percent,
            currency=self._settings.currency,
            now=utc_now(),
            seen=shared.setdefault("open_batches", {}),
        )
        answer = PlacedAnswers()
        return [None if p is None else answer(item, p) for item, p in zip(items, placed, strict=True)]

    async def alone(self, conn: AsyncConnection, shared: dict, item: OrderItem) -> Message:
        placed = await store.place_order(
            conn, item.order, item.style_json,
            margin_percent=self._settings.margin_percent,
            currency=self._settings.currency,
            window=timedelta(days=self._settings.batch_window_days),
            now=utc_now(),
            seen=shared.setdefault("open_batches", {}),
        )
        return PlacedAnswers()(item, placed)


class BatchServicer(WindowedFacts, batch_pb2_grpc.BatchServiceServicer):
    def __init__(
        self, engine: AsyncEngine, settings: BatchSettings, watcher: BatchWatcher, wake_dispatcher: Callable[[], None],
        orders: GroupCommitter[OrderItem],
    ) -> None:
        self._engine = engine
        self._orders = orders
        self._settings = settings
        self._watcher = watcher
        self._wake_dispatcher = wake_dispatcher
        self._thresholds = domain.Thresholds(
            confirm_percent=settings.confirm_percent,
            review_percent=settings.review_percent,
            nearing_target_percent=settings.nearing_target_percent,
            closing_soon=timedelta(hours=settings.closing_soon_hours),
        )

    async def _idempotent(
        self, method: str, request: Message, response_type: type[M], work: Callable[[AsyncConnection], Awaitable[M]]
    ) -> M:
        """A mutation: once per request_id, in one transaction; then the dispatcher is nudged."""
        response = await run_idempotent(
            self._engine, store.IDEMPOTENCY, method, request, response_type, work,
            attempts=self._settings.db_retry_attempts,
        )
        self._wake_dispatcher()
        return response

    async def _read(self, work: Callable[[AsyncConnection], Awaitable[M]]) -> M:
        return await run_in_transaction(self._engine, work, attempts=self._settings.db_retry_attempts)

    # ------------------------------------------------------------ suppliers

    async def CreateSupplier(self, request: pb.CreateSupplierRequest, context) -> pb.CreateSupplierResponse:
        violations = Violations()
        terms = supplier_terms(request.supplier, str(uuid.uuid4()), violations)
        violations.raise_if_any()

        async def work(conn: AsyncConnection) -> pb.CreateSupplierResponse:
            row = await store.save_supplier(conn, terms, request.supplier.name.strip(), request.supplier.contact_email, utc_now())
            return pb.CreateSupplierResponse(supplier=supplier_message(row))

        return await self._idempotent("CreateSupplier", request, pb.CreateSupplierResponse, work)

    async def GetSupplier(self, request: pb.GetSupplierRequest, context) -> pb.GetSupplierResponse:
        require_self_or(current_caller(), request.supplier_id, ADMIN, SERVICE)

        async def work(conn: AsyncConnection) -> pb.GetSupplierResponse:
            return pb.GetSupplierResponse(supplier=supplier_message(await store.get_supplier(conn, request.supplier_id)))

        return await self._read(work)

    async def ListSuppliers(self, request: pb.ListSuppliersRequest, context) -> pb.ListSuppliersResponse:
        limit = page_size(request.page_size)
        scope = f"suppliers:{request.category}:{request.active_only}"
        after = cursor_values(decode_token(request.page_token, scope=scope))

        async def work(conn: AsyncConnection) -> pb.ListSuppliersResponse:
            rows = await store.list_suppliers(conn, request.category, request.active_only, after, limit)
            return pb.ListSuppliersResponse(
                suppliers=[supplier_message(r) for r in rows], next_page_token=next_token(rows, limit, scope)
            )

        return await self._read(work)

    async def UpdateSupplier(self, request: pb.UpdateSupplierRequest, context) -> pb.UpdateSupplierResponse:
        paths = list(request.update_mask.paths) or list(SUPPLIER_FIELDS)
        unknown = [p for p in paths if p not in SUPPLIER_FIELDS]
        if unknown:
            raise InvalidArgument.field("update_mask", f"unknown or read-only fields: {', '.join(unknown)}")
        store.parse_uuid("supplier.supplier_id", request.supplier.supplier_id)

        async def work(conn: AsyncConnection) -> pb.UpdateSupplierResponse:
            merged = supplier_message(await store.get_supplier(conn, request.supplier.supplier_id, for_update=True))
            for path in paths:
                if path in ("categories", "price_tiers"):
                    del getattr(merged, path)[:]
                    getattr(merged, path).extend(getattr(request.supplier, path))
                else:
                    setattr(merged, path, getattr(request.supplier, path))
            violations = Violations()
            terms = supplier_terms(merged, merged.supplier_id, violations)
            violations.raise_if_any()
            row = await store.save_supplier(conn, terms, merged.name.strip(), merged.contact_email, utc_now())
            return pb.UpdateSupplierResponse(supplier=supplier_message(row))

        return await self._idempotent("UpdateSupplier", request, pb.UpdateSupplierResponse, work)

    async def RecommendSupplier(self, request: pb.RecommendSupplierRequest, context) -> pb.RecommendSupplierResponse:
        violations = Violations()
        domain.check_category(violations, "category", request.category)
        violations.check(
            0 < request.quantity <= self._settings.max_order_quantity,
            "quantity",
            f"must be between 1 and {self._settings.max_order_quantity}",
        )
        violations.raise_if_any()

        async def work(conn: AsyncConnection) -> pb.RecommendSupplierResponse:
            try:
                chosen = await store.recommend_supplier(conn, request.category, request.quantity)
            except (InvalidArgument, FailedPrecondition):
                raise NotFound("supplier", f"for {request.category} x {request.quantity}") from None
            row = await store.get_supplier(conn, chosen.supplier_id)
            return pb.RecommendSupplierResponse(
                supplier=supplier_message(row),
                unit_price=decimal_text(domain.tier_price(chosen.price_tiers, chosen.moq)),
            )

        return await self._read(work)

    # ------------------------------------------------------------ orders

    async def PlaceOrder(self, request: pb.PlaceOrderRequest, context) -> pb.PlaceOrderResponse:
        caller = current_caller()
        buyer_id = request.buyer_id or (caller.subject if caller.is_(BUYER) else "")
        require_self_or(caller, buyer_id, ADMIN)
        style = request.style
        order = domain.OrderRequest(
            buyer_id=buyer_id,
            category=request.category,
            quantity=request.quantity,
            style_count=style.style_count,
            colors=list(style.colors),
            sizes=list(style.sizes),
            notes=style.notes,
        )
        violations = Violations()
        domain.validate_order(order, self._settings.max_order_quantity, violations)
        violations.raise_if_any()
        style_json = {
            "style_count": style.style_count, "colors": list(style.colors), "sizes": list(style.sizes), "notes": style.notes
        }
        # Grouped with concurrent PlaceOrders: one commit (one WAL flush under the hot batch's
        # row lock) for the group; answered only once that commit is durable.
        response = await self._orders.submit(
            "PlaceOrder", request, pb.PlaceOrderResponse, OrderItem(order, style, style_json)
        )
        self._wake_dispatcher()
        return response

    def _check_order_access(self, row: RowMapping) -> None:
        require_self_or(current_caller(), row["buyer_id"], ADMIN, SERVICE)

    async def GetOrder(self, request: pb.GetOrderRequest, context) -> pb.GetOrderResponse:
        async def work(conn: AsyncConnection) -> pb.GetOrderResponse:
            row = await store.get_order(conn, request.order_id)
            self._check_order_access(row)
            return pb.GetOrderResponse(order=order_message(row))

        return await self._read(work)

    async def ListOrders(self, request: pb.ListOrdersRequest, context) -> pb.ListOrdersResponse:
        caller = current_caller()
        buyer_id = request.buyer_id
        if caller.is_(BUYER):
            buyer_id = buyer_id or caller.subject
            require_self_or(caller, buyer_id)
        status = order_status(request.status).value if request.status else ""
        limit = page_size(request.page_size)
        scope = f"orders:{buyer_id}:{status}:{request.batch_id}"
        after = cursor_values(decode_token(request.page_token, scope=scope))

        async def work(conn: AsyncConnection) -> pb.ListOrdersResponse:
            rows = await store.list_orders(conn, buyer_id, status, request.batch_id, after, limit)
            return pb.ListOrdersResponse(orders=[order_message(r) for r in rows], next_page_token=next_token(rows, limit, scope))

        return await self._read(work)

    async def UpdateOrderStatus(self, request: pb.UpdateOrderStatusRequest, context) -> pb.UpdateOrderStatusResponse:
        target = order_status(request.status)
        store.parse_uuid("order_id", request.order_id)
        if len(request.reason) > domain.MAX_NOTES:
            raise InvalidArgument.field("reason", f"at most {domain.MAX_NOTES} characters")

        async def work(conn: AsyncConnection) -> pb.UpdateOrderStatusResponse:
            row = await store.update_order_status(conn, request.order_id, target, request.reason, utc_now())
            return pb.UpdateOrderStatusResponse(order=order_message(row))

        return await self._idempotent("UpdateOrderStatus", request, pb.UpdateOrderStatusResponse, work)

    async def AssignSupplier(self, request: pb.AssignSupplierRequest, context) -> pb.AssignSupplierResponse:
        if bool(request.order_id) == bool(request.batch_id):
            raise InvalidArgument.field("order_id", "give exactly one of order_id and batch_id")
        store.parse_uuid("supplier_id", request.supplier_id)
        store.parse_uuid("order_id" if request.order_id else "batch_id", request.order_id or request.batch_id)

        async def work(conn: AsyncConnection) -> pb.AssignSupplierResponse:
            now = utc_now()
            if request.order_id:
                row = await store.assign_order_supplier(conn, request.order_id, request.supplier_id, request.priority, now)
                return pb.AssignSupplierResponse(order=order_message(row))
            row = await store.assign_batch_supplier(conn, request.batch_id, request.supplier_id, request.priority, now)
            return pb.AssignSupplierResponse(batch=batch_message(row))

        return await self._idempotent("AssignSupplier", request, pb.AssignSupplierResponse, work)

    async def CancelOrder(self, request: pb.CancelOrderRequest, context) -> pb.CancelOrderResponse:
        store.parse_uuid("order_id", request.order_id)
        if len(request.reason) > domain.MAX_NOTES:
            raise InvalidArgument.field("reason", f"at most {domain.MAX_NOTES} characters")

        async def work(conn: AsyncConnection) -> pb.CancelOrderResponse:
            order = await store.get_order(conn, request.order_id, for_update=True)
            self._check_order_access(order)
            row = await store.cancel_order(conn, order, request.reason or "cancelled by the buyer", utc_now())
            batch = await store.get_batch(conn, str(row["batch_id"]))
            return pb.CancelOrderResponse(order=order_message(row), batch=batch_message(batch))

        return await self._idempotent("CancelOrder", request, pb.CancelOrderResponse, work)

    # ------------------------------------------------------------ batches

    def _check_batch_access(self, row: RowMapping) -> None:
        require_self_or(current_caller(), str(row["supplier_id"]), ADMIN, SERVICE)

    async def GetBatch(self, request: pb.GetBatchRequest, context) -> pb.GetBatchResponse:
        async def work(conn: AsyncConnection) -> pb.GetBatchResponse:
            row = await store.get_batch(conn, request.batch_id)
            self._check_batch_access(row)
            return pb.GetBatchResponse(batch=batch_message(row))

        return await self._read(work)

    async def ListBatches(self, request: pb.ListBatchesRequest, context) -> pb.ListBatchesResponse:
        caller = current_caller()
        supplier_id = request.supplier_id
        if caller.is_(SUPPLIER):
            supplier_id = supplier_id or caller.subject
            require_self_or(caller, supplier_id)
        status = batch_status(request.status).value if request.status else ""
        limit = page_size(request.page_size)
        scope = f"batches:{status}:{request.category}:{supplier_id}:{request.needs_review}"
        after = cursor_values(decode_token(request.page_token, scope=scope))

        async def work(conn: AsyncConnection) -> pb.ListBatchesResponse:
            rows = await store.list_batches(conn, status, request.category, supplier_id, request.needs_review, after, limit)
            return pb.ListBatchesResponse(
                batches=[batch_message(r) for r in rows], next_page_token=next_token(rows, limit, scope)
            )

        return await self._read(work)

    async def WatchBatch(self, request: pb.WatchBatchRequest, context) -> AsyncIterator[pb.WatchBatchResponse]:
        store.parse_uuid("batch_id", request.batch_id)
        async with self._watcher.watch(request.batch_id) as changes:
            # Subscribed before the first read, so no change between the two is missed.
            first = await self._read(lambda conn: store.get_batch(conn, request.batch_id))
            self._check_batch_access(first)
            last = batch_message(first)
            yield pb.WatchBatchResponse(batch=last)
            while last.status not in (pb.BATCH_STATUS_COMPLETED, pb.BATCH_STATUS_CANCELLED):
                row = await changes.get()
                current = batch_message(row)
                if current != last:
                    last = current
                    yield pb.WatchBatchResponse(batch=current)

    async def AdvanceBatch(self, request: pb.AdvanceBatchRequest, context) -> pb.AdvanceBatchResponse:
        target = batch_status(request.status)
        store.parse_uuid("batch_id", request.batch_id)

        async def work(conn: AsyncConnection) -> pb.AdvanceBatchResponse:
            row = await store.advance_batch(conn, request.batch_id, target, utc_now())
            return pb.AdvanceBatchResponse(batch=batch_message(row))

        return await self._idempotent("AdvanceBatch", request, pb.AdvanceBatchResponse, work)

    async def ResolveReview(self, request: pb.ResolveReviewRequest, context) -> pb.ResolveReviewResponse:
        if request.decision not in (pb.REVIEW_DECISION_CONFIRM, pb.REVIEW_DECISION_CANCEL):
            raise InvalidArgument.field("decision", "must be REVIEW_DECISION_CONFIRM or REVIEW_DECISION_CANCEL")
        store.parse_uuid("batch_id", request.batch_id)
        if len(request.note) > domain.MAX_NOTES:
            raise InvalidArgument.field("note", f"at most {domain.MAX_NOTES} characters")

        async def work(conn: AsyncConnection) -> pb.ResolveReviewResponse:
            confirm = request.decision == pb.REVIEW_DECISION_CONFIRM
            refunded = await store.resolve_review(conn, request.batch_id, confirm, request.note, utc_now())
            batch = await store.get_batch(conn, request.batch_id)
            return pb.ResolveReviewResponse(batch=batch_message(batch), orders_refunded=refunded)

        return await self._idempotent("ResolveReview", request, pb.ResolveReviewResponse, work)

    async def Orchestrate(self, request: pb.OrchestrateRequest, context) -> pb.OrchestrateResponse:
        now = request.now.ToDatetime(tzinfo=UTC) if request.HasField("now") else utc_now()
        started = time.perf_counter()

        def response(counts: store.OrchestrationCounts) -> pb.OrchestrateResponse:
            return pb.OrchestrateResponse(
                batches_examined=counts.examined,
                batches_confirmed=counts.confirmed,
                supplier_orders_created=counts.supplier_orders,
                nearing_target_events=counts.nearing_target,
                closing_soon_events=counts.closing_soon,
                flagged_for_review=counts.flagged_for_review,
                batches_cancelled=counts.cancelled,
                orders_refunded=counts.refunded,
                duration_seconds=time.perf_counter() - started,
            )

        if request.dry_run:
            return await self._read(
                lambda conn: _then(store.orchestrate_dry_run(conn, self._thresholds, now), response)
            )

        async def work(conn: AsyncConnection) -> pb.OrchestrateResponse:
            return response(await store.orchestrate(conn, self._thresholds, now))

        return await self._idempotent("Orchestrate", request, pb.OrchestrateResponse, work)

    # ------------------------------------------------------------ prices and costs

    async def CapturePriceSnapshot(
        self, request: pb.CapturePriceSnapshotRequest, context
    ) -> pb.CapturePriceSnapshotResponse:
        captured = request.capture_time.ToDatetime(tzinfo=UTC) if request.HasField("capture_time") else utc_now()
        started = time.perf_counter()

        async def work(conn: AsyncConnection) -> pb.CapturePriceSnapshotResponse:
            previous = await store.latest_snapshot_prices(conn)
            rows = []
            for supplier in await store.active_suppliers(conn):
                price = domain.tier_price(supplier.price_tiers, supplier.moq)
                if price is None:
                    continue
                for category in supplier.categories:
                    change, market = domain.price_change(
                        previous.get((supplier.supplier_id, category)), price, self._settings.market_change_percent
                    )
                    rows.append(
                        {
                            "capture_time": captured, "supplier_id": supplier.supplier_id, "category": category,
                            "unit_price": price, "change_percent": change, "market_change": market,
                        }
                    )
            await store.insert_snapshots(conn, rows)
            return pb.CapturePriceSnapshotResponse(
                prices_recorded=len(rows),
                market_changes=sum(r["market_change"] for r in rows),
                duration_seconds=time.perf_counter() - started,
            )

        return await self._idempotent("CapturePriceSnapshot", request, pb.CapturePriceSnapshotResponse, work)

    async def GetPriceTrend(self, request: pb.GetPriceTrendRequest, context) -> pb.GetPriceTrendResponse:
        violations = Violations()
        domain.check_category(violations, "category", request.category)
        violations.check(0 <= request.months <= MAX_TREND_MONTHS, "months", f"must be between 0 and {MAX_TREND_MONTHS}")
        violations.raise_if_any()
        since = utc_now() - timedelta(days=round(30.44 * (request.months or 6)))

        async def work(conn: AsyncConnection) -> pb.GetPriceTrendResponse:
            rows = await store.price_history(conn, request.category, since)
            points = [
                pb.PricePoint(
                    capture_time=timestamp(r["capture_time"]), supplier_id=str(r["supplier_id"]),
                    unit_price=decimal_text(r["unit_price"]), change_percent=decimal_text(r["change_percent"]),
                    market_change=r["market_change"],
                )
                for r in rows
            ]
            return pb.GetPriceTrendResponse(
                category=request.category, points=points, average_points=self._averages(rows)
            )

        return await self._read(work)

    def _averages(self, rows: list[RowMapping]) -> list[pb.PricePoint]:
        by_time: dict[datetime, list[Decimal]] = {}
        for r in rows:
            by_time.setdefault(r["capture_time"], []).append(r["unit_price"])
        averages, previous = [], None
        for captured in sorted(by_time):
            prices = by_time[captured]
            mean = (sum(prices) / len(prices)).quantize(domain.PRICE_QUANTUM)
            change, market = domain.price_change(previous, mean, self._settings.market_change_percent)
            averages.append(
                pb.PricePoint(
                    capture_time=timestamp(captured), unit_price=decimal_text(mean),
                    change_percent=decimal_text(change), market_change=market,
                )
            )
            previous = mean
        return averages

    async def EstimateCost(self, request: pb.EstimateCostRequest, context) -> pb.EstimateCostResponse:
        violations = Violations()
        lines, indirect, overhead = domain.validate_cost_request(
            [(item.description, item.unit_cost, item.quantity) for item in request.line_items],
            request.indirect_cost_percent,
            request.overhead_percent,
            violations,
        )
        violations.check(
            not request.currency or (len(request.currency) == 3 and request.currency.isalpha()),
            "currency",
            "an ISO 4217 code such as USD",
        )
        violations.raise_if_any()
        estimate = domain.estimate_cost(lines, indirect, overhead)
        return pb.EstimateCostResponse(
            lines=[
                pb.CostLineTotal(
                    description=line.description, unit_cost=decimal_text(line.unit_cost), quantity=line.quantity,
                    total=str(total),
                )
                for line, total in estimate.lines
            ],
            direct_cost=str(estimate.direct_cost),
            indirect_cost=str(estimate.indirect_cost),
            overhead=str(estimate.overhead),
            total=str(estimate.total),
            currency=(request.currency or self._settings.currency).upper(),
        )

    async def PurgeOldData(self, request: pb.PurgeOldDataRequest, context) -> pb.PurgeOldDataResponse:
        now = utc_now()
        outbox_days = retention_days(request.retention_days, self._settings.outbox_retention_days)
        snapshot_days = retention_days(request.retention_days, self._settings.snapshot_retention_days)

        async def work(conn: AsyncConnection) -> pb.PurgeOldDataResponse:
            outbox, keys, snapshots = await store.purge(
                conn, now - timedelta(days=outbox_days), now - timedelta(days=outbox_days),
                now - timedelta(days=snapshot_days),
            )
            return pb.PurgeOldDataResponse(
                outbox_rows_deleted=outbox, idempotency_rows_deleted=keys, snapshots_deleted=snapshots
            )

        return await self._idempotent("PurgeOldData", request, pb.PurgeOldDataResponse, work)


async def _then(value: Awaitable, transform: Callable):
    return transform(await value)
