"""Wires the batch service into the shared server bootstrap."""

import asyncio

from loom.batch.v1 import batch_pb2_grpc

from libs.bootstrap import ServiceContext, ServiceSpec
from libs.sampling import start_sampler
from libs.tasks import cancel_and_wait
from services.batch import metrics
from services.batch.combiner import GroupCommitter
from services.batch.outbox import OutboxDispatcher
from services.batch.placement_group import OrderPlacement
from services.batch.server import BatchServicer
from services.batch.settings import BatchSettings
from services.batch.store.schema import IDEMPOTENCY
from services.batch.watch import BatchWatcher


async def setup(context: ServiceContext) -> None:
    """Registers the servicer and starts the watch listener and the outbox dispatcher."""
    settings = context.settings
    assert isinstance(settings, BatchSettings) and context.engine is not None
    watcher = BatchWatcher(context.engine, interval_seconds=settings.watch_interval_seconds)
    context.exit_stack.push_async_callback(watcher.close)
    dispatcher = OutboxDispatcher(
        context.engine,
        lambda: context.clients.rules,
        poll_seconds=settings.outbox_poll_seconds,
        max_backoff_seconds=settings.outbox_max_backoff_seconds,
    )
    if settings.outbox_dispatch:
        task = asyncio.create_task(dispatcher.run(), name="batch-outbox-dispatcher")
        context.exit_stack.push_async_callback(cancel_and_wait, task)
    orders = GroupCommitter(
        context.engine, IDEMPOTENCY, OrderPlacement(settings),
        attempts=settings.db_retry_attempts, max_group=settings.group_commit_max_orders,
    )
    context.exit_stack.push_async_callback(orders.close)
    start_sampler(context, metrics.sample)
    servicer = BatchServicer(context.engine, settings, watcher, dispatcher.wake, orders)
    servicer.serve_audit(context.auditor)
    batch_pb2_grpc.add_BatchServiceServicer_to_server(servicer, context.server)


SPEC = ServiceSpec(
    name="batch",
    settings_class=BatchSettings,
    grpc_services=("loom.batch.v1.BatchService",),
    setup=setup,
)
