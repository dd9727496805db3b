"""The BatchService servicer: proto <-> records, who may see what, one transaction per call.

Steps that need coordinating live in `services.batch.usecases`; conversions in
`services.batch.messages`; PlaceOrder goes through the group commit (`placement_group`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TypeAlias, TypeVar

import grpc
from google.protobuf.message import Message
from loom.batch.v1 import batch_pb2 as pb
from loom.batch.v1 import batch_pb2_grpc
from loom.common.v1 import access_pb2
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from libs import audit
from libs.auth import current_caller, require_self_or
from libs.db import after_commit, carry_trace, run_in_transaction
from libs.domain_errors import FailedPrecondition, InvalidArgument, NotFound, Violations
from libs.idempotency import run_idempotent
from libs.pagination import decode_token, page_size
from libs.retention import retention_days
from services.batch import domain, metrics
from services.batch.combiner import GroupCommitter
from services.batch.facts import WindowedFacts  # CountRecentOrders, CountConfirmedBatches (rules' windowed facts)
from services.batch.messages import (
    OrderItem,
    batch_message,
    batch_status,
    cursor_values,
    decimal_text,
    next_token,
    order_message,
    order_status,
    supplier_message,
    supplier_terms_of,
    timestamp,
)
from services.batch.records import Batch, OrchestrationCounts, Order
from services.batch.settings import BatchSettings
from services.batch.store import batches, orders, suppliers
from services.batch.store.prices import price_history
from services.batch.store.retention import purge
from services.batch.store.schema import IDEMPOTENCY, parse_uuid
from services.batch.usecases import batches as batch_usecases
from services.batch.usecases import orchestration, prices
from services.batch.usecases import orders as order_usecases
from services.batch.usecases.suppliers import recommend_supplier
from services.batch.watch import BatchWatcher

M = TypeVar("M", bound=Message)
T = TypeVar("T")
# The servicer context every method receives (client address, metadata).
Context: TypeAlias = grpc.aio.ServicerContext
ADMIN, BUYER, SUPPLIER, SERVICE = (
    access_pb2.ROLE_ADMIN,
    access_pb2.ROLE_BUYER,
    access_pb2.ROLE_SUPPLIER,
    access_pb2.ROLE_SERVICE,
)
SUPPLIER_FIELDS = (
    "name", "categories", "moq", "capacity", "price_tiers", "lead_time_days", "rating", "active",
    "max_styles_per_batch", "contact_email",
)


def utc_now() -> datetime:
    return datetime.now(UTC)


class BatchServicer(audit.AuditTrail, WindowedFacts, batch_pb2_grpc.BatchServiceServicer):
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

        async def traced(conn: AsyncConnection) -> M:
            await carry_trace(conn)  # the events it writes link back to this call
            return await work(conn)

        response = await run_idempotent(
            self._engine, IDEMPOTENCY, method, request, response_type, traced,
            attempts=self._settings.db_retry_attempts,
        )
        self._wake_dispatcher()
        return response

    async def _read(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        return await run_in_transaction(self._engine, work, attempts=self._settings.db_retry_attempts)

    # ------------------------------------------------------------ suppliers

    async def CreateSupplier(self, request: pb.CreateSupplierRequest, context: Context) -> pb.CreateSupplierResponse:
        violations = Violations()
        terms = supplier_terms_of(request.supplier, str(uuid.uuid4()), violations)
        violations.raise_if_any()

        async def work(conn: AsyncConnection) -> pb.CreateSupplierResponse:
            saved = await suppliers.save_supplier(
                conn, terms, request.supplier.name.strip(), request.supplier.contact_email, utc_now()
            )
            return pb.CreateSupplierResponse(supplier=supplier_message(saved))

        return await self._idempotent("CreateSupplier", request, pb.CreateSupplierResponse, work)

    async def GetSupplier(self, request: pb.GetSupplierRequest, context: Context) -> pb.GetSupplierResponse:
        require_self_or(current_caller(), request.supplier_id, ADMIN, SERVICE)

        async def work(conn: AsyncConnection) -> pb.GetSupplierResponse:
            return pb.GetSupplierResponse(supplier=supplier_message(await suppliers.get_supplier(conn, request.supplier_id)))

        return await self._read(work)

    async def ListSuppliers(self, request: pb.ListSuppliersRequest, context: Context) -> pb.ListSuppliersResponse:
        limit = page_size(request.page_size)
        scope = f"suppliers:{request.category}:{request.active_only}"
        after = cursor_values(decode_token(request.page_token, scope=scope))

        async def work(conn: AsyncConnection) -> pb.ListSuppliersResponse:
            found = await suppliers.list_suppliers(conn, request.category, request.active_only, after, limit)
            return pb.ListSuppliersResponse(
                suppliers=[supplier_message(s) for s in found], next_page_token=next_token(found, limit, scope)
            )

        return await self._read(work)

    async def UpdateSupplier(self, request: pb.UpdateSupplierRequest, context: Context) -> pb.UpdateSupplierResponse:
        paths = list(request.update_mask.paths) or list(SUPPLIER_FIELDS)
        unknown = [p for p in paths if p not in SUPPLIER_FIELDS]
        if unknown:
            raise InvalidArgument.field("update_mask", f"unknown or read-only fields: {', '.join(unknown)}")
        parse_uuid("supplier.supplier_id", request.supplier.supplier_id)

        async def work(conn: AsyncConnection) -> pb.UpdateSupplierResponse:
            merged = supplier_message(await suppliers.get_supplier(conn, request.supplier.supplier_id, for_update=True))
            for path in paths:
                if path in ("categories", "price_tiers"):
                    del getattr(merged, path)[:]
                    getattr(merged, path).extend(getattr(request.supplier, path))
                else:
                    setattr(merged, path, getattr(request.supplier, path))
            violations = Violations()
            terms = supplier_terms_of(merged, merged.supplier_id, violations)
            violations.raise_if_any()
            saved = await suppliers.save_supplier(conn, terms, merged.name.strip(), merged.contact_email, utc_now())
            return pb.UpdateSupplierResponse(supplier=supplier_message(saved))

        return await self._idempotent("UpdateSupplier", request, pb.UpdateSupplierResponse, work)

    async def RecommendSupplier(self, request: pb.RecommendSupplierRequest, context: Context) -> pb.RecommendSupplierResponse:
        # The proto bounds quantity below (gt 0); the upper bound is configured.
        if request.quantity > self._settings.max_order_quantity:
            raise InvalidArgument.field("quantity", f"must be between 1 and {self._settings.max_order_quantity}")

        async def work(conn: AsyncConnection) -> pb.RecommendSupplierResponse:
            try:
                chosen = await recommend_supplier(conn, request.category, request.quantity)
            except (InvalidArgument, FailedPrecondition):
                raise NotFound("supplier", f"for {request.category} x {request.quantity}") from None
            supplier = await suppliers.get_supplier(conn, chosen.supplier_id)
            return pb.RecommendSupplierResponse(
                supplier=supplier_message(supplier),
                unit_price=decimal_text(domain.tier_price(chosen.price_tiers, chosen.moq)),
            )

        return await self._read(work)

    # ------------------------------------------------------------ orders

    async def PlaceOrder(self, request: pb.PlaceOrderRequest, context: Context) -> pb.PlaceOrderResponse:
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

    def _check_order_access(self, order: Order) -> None:
        require_self_or(current_caller(), order.buyer_id, ADMIN, SERVICE)

    async def GetOrder(self, request: pb.GetOrderRequest, context: Context) -> pb.GetOrderResponse:
        async def work(conn: AsyncConnection) -> pb.GetOrderResponse:
            order = await orders.get_order(conn, request.order_id)
            self._check_order_access(order)
            return pb.GetOrderResponse(order=order_message(order))

        return await self._read(work)

    async def ListOrders(self, request: pb.ListOrdersRequest, context: Context) -> pb.ListOrdersResponse:
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
            found = await orders.list_orders(conn, buyer_id, status, request.batch_id, after, limit)
            return pb.ListOrdersResponse(
                orders=[order_message(o) for o in found], next_page_token=next_token(found, limit, scope)
            )

        return await self._read(work)

    async def UpdateOrderStatus(self, request: pb.UpdateOrderStatusRequest, context: Context) -> pb.UpdateOrderStatusResponse:
        target = order_status(request.status)

        async def work(conn: AsyncConnection) -> pb.UpdateOrderStatusResponse:
            order = await order_usecases.update_order_status(conn, request.order_id, target, request.reason, utc_now())
            return pb.UpdateOrderStatusResponse(order=order_message(order))

        return await self._idempotent("UpdateOrderStatus", request, pb.UpdateOrderStatusResponse, work)

    async def AssignSupplier(self, request: pb.AssignSupplierRequest, context: Context) -> pb.AssignSupplierResponse:
        if bool(request.order_id) == bool(request.batch_id):
            raise InvalidArgument.field("order_id", "give exactly one of order_id and batch_id")

        async def work(conn: AsyncConnection) -> pb.AssignSupplierResponse:
            now = utc_now()
            if request.order_id:
                order = await order_usecases.assign_order_supplier(
                    conn, request.order_id, request.supplier_id, request.priority, now
                )
                return pb.AssignSupplierResponse(order=order_message(order))
            batch = await batch_usecases.assign_batch_supplier(
                conn, request.batch_id, request.supplier_id, request.priority, now
            )
            return pb.AssignSupplierResponse(batch=batch_message(batch))

        return await self._idempotent("AssignSupplier", request, pb.AssignSupplierResponse, work)

    async def CancelOrder(self, request: pb.CancelOrderRequest, context: Context) -> pb.CancelOrderResponse:
        async def work(conn: AsyncConnection) -> pb.CancelOrderResponse:
            order = await orders.get_order(conn, request.order_id, for_update=True)
            self._check_order_access(order)
            cancelled = await order_usecases.cancel_order(
                conn, order, request.reason or "cancelled by the buyer", utc_now()
            )
            batch = await batches.get_batch(conn, cancelled.batch_id)
            return pb.CancelOrderResponse(order=order_message(cancelled), batch=batch_message(batch))

        return await self._idempotent("CancelOrder", request, pb.CancelOrderResponse, work)

    # ------------------------------------------------------------ batches

    def _check_batch_access(self, batch: Batch) -> None:
        require_self_or(current_caller(), batch.supplier_id, ADMIN, SERVICE)

    async def GetBatch(self, request: pb.GetBatchRequest, context: Context) -> pb.GetBatchResponse:
        async def work(conn: AsyncConnection) -> pb.GetBatchResponse:
            batch = await batches.get_batch(conn, request.batch_id)
            self._check_batch_access(batch)
            return pb.GetBatchResponse(batch=batch_message(batch))

        return await self._read(work)

    async def ListBatches(self, request: pb.ListBatchesRequest, context: Context) -> pb.ListBatchesResponse:
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
            found = await batches.list_batches(
                conn, status, request.category, supplier_id, request.needs_review, after, limit
            )
            return pb.ListBatchesResponse(
                batches=[batch_message(b) for b in found], next_page_token=next_token(found, limit, scope)
            )

        return await self._read(work)

    async def WatchBatch(self, request: pb.WatchBatchRequest, context: Context) -> AsyncIterator[pb.WatchBatchResponse]:
        async with self._watcher.watch(request.batch_id) as changes:
            # Subscribed before the first read, so no change between the two is missed.
            first = await self._read(lambda conn: batches.get_batch(conn, request.batch_id))
            self._check_batch_access(first)
            last = batch_message(first)
            yield pb.WatchBatchResponse(batch=last)
            while last.status not in (pb.BATCH_STATUS_COMPLETED, pb.BATCH_STATUS_CANCELLED):
                current = batch_message(await changes.get())
                if current != last:
                    last = current
                    yield pb.WatchBatchResponse(batch=current)

    async def AdvanceBatch(self, request: pb.AdvanceBatchRequest, context: Context) -> pb.AdvanceBatchResponse:
        target = batch_status(request.status)

        async def work(conn: AsyncConnection) -> pb.AdvanceBatchResponse:
            batch = await batch_usecases.advance_batch(conn, request.batch_id, target, utc_now())
            return pb.AdvanceBatchResponse(batch=batch_message(batch))

        return await self._idempotent("AdvanceBatch", request, pb.AdvanceBatchResponse, work)

    async def ResolveReview(self, request: pb.ResolveReviewRequest, context: Context) -> pb.ResolveReviewResponse:
        async def work(conn: AsyncConnection) -> pb.ResolveReviewResponse:
            confirm = request.decision == pb.REVIEW_DECISION_CONFIRM
            refunded = await orchestration.resolve_review(conn, request.batch_id, confirm, request.note, utc_now())
            after_commit(lambda: metrics.count_resolution(confirm, refunded))
            batch = await batches.get_batch(conn, request.batch_id)
            return pb.ResolveReviewResponse(batch=batch_message(batch), orders_refunded=refunded)

        return await self._idempotent("ResolveReview", request, pb.ResolveReviewResponse, work)

    async def Orchestrate(self, request: pb.OrchestrateRequest, context: Context) -> pb.OrchestrateResponse:
        now = request.now.ToDatetime(tzinfo=UTC) if request.HasField("now") else utc_now()
        started = time.perf_counter()

        def response(counts: OrchestrationCounts) -> pb.OrchestrateResponse:
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

            async def dry_run(conn: AsyncConnection) -> pb.OrchestrateResponse:
                return response(await orchestration.orchestrate_dry_run(conn, self._thresholds, now))

            return await self._read(dry_run)

        async def work(conn: AsyncConnection) -> pb.OrchestrateResponse:
            counts = await orchestration.orchestrate(conn, self._thresholds, now)
            after_commit(lambda: metrics.count_orchestration(counts))
            return response(counts)

        return await self._idempotent("Orchestrate", request, pb.OrchestrateResponse, work)

    # ------------------------------------------------------------ prices and costs

    async def CapturePriceSnapshot(
        self, request: pb.CapturePriceSnapshotRequest, context: Context
    ) -> pb.CapturePriceSnapshotResponse:
        captured = request.capture_time.ToDatetime(tzinfo=UTC) if request.HasField("capture_time") else utc_now()
        started = time.perf_counter()

        async def work(conn: AsyncConnection) -> pb.CapturePriceSnapshotResponse:
            snapshots = await prices.capture_price_snapshot(conn, captured, self._settings.market_change_percent)
            return pb.CapturePriceSnapshotResponse(
                prices_recorded=len(snapshots),
                market_changes=sum(s.market_change for s in snapshots),
                duration_seconds=time.perf_counter() - started,
            )

        return await self._idempotent("CapturePriceSnapshot", request, pb.CapturePriceSnapshotResponse, work)

    async def GetPriceTrend(self, request: pb.GetPriceTrendRequest, context: Context) -> pb.GetPriceTrendResponse:
        since = utc_now() - timedelta(days=round(30.44 * (request.months or 6)))

        async def work(conn: AsyncConnection) -> pb.GetPriceTrendResponse:
            snapshots = await price_history(conn, request.category, since)
            points = [
                pb.PricePoint(
                    capture_time=timestamp(s.capture_time), supplier_id=s.supplier_id,
                    unit_price=decimal_text(s.unit_price), change_percent=decimal_text(s.change_percent),
                    market_change=s.market_change,
                )
                for s in snapshots
            ]
            averages = [
                pb.PricePoint(
                    capture_time=timestamp(a.capture_time), unit_price=decimal_text(a.unit_price),
                    change_percent=decimal_text(a.change_percent), market_change=a.market_change,
                )
                for a in prices.average_prices(snapshots, self._settings.market_change_percent)
            ]
            return pb.GetPriceTrendResponse(category=request.category, points=points, average_points=averages)

        return await self._read(work)

    async def EstimateCost(self, request: pb.EstimateCostRequest, context: Context) -> pb.EstimateCostResponse:
        violations = Violations()
        lines, indirect, overhead = domain.validate_cost_request(
            [(item.description, item.unit_cost, item.quantity) for item in request.line_items],
            request.indirect_cost_percent,
            request.overhead_percent,
            violations,
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

    async def PurgeOldData(self, request: pb.PurgeOldDataRequest, context: Context) -> pb.PurgeOldDataResponse:
        now = utc_now()
        outbox_days = retention_days(request.retention_days, self._settings.outbox_retention_days)
        snapshot_days = retention_days(request.retention_days, self._settings.snapshot_retention_days)

        async def work(conn: AsyncConnection) -> pb.PurgeOldDataResponse:
            purged = await purge(
                conn, now - timedelta(days=outbox_days), now - timedelta(days=outbox_days),
                now - timedelta(days=snapshot_days),
            )
            return pb.PurgeOldDataResponse(
                outbox_rows_deleted=purged.outbox_rows, idempotency_rows_deleted=purged.idempotency_rows,
                snapshots_deleted=purged.snapshots,
                audit_events_deleted=await audit.purge(conn, self.audit_table, self._settings.audit_retention_days),
            )

        return await self._idempotent("PurgeOldData", request, pb.PurgeOldDataResponse, work)

