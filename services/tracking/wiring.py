"""Wires the tracking service into the shared server bootstrap."""

from datetime import UTC, datetime

import structlog
from loom.tracking.v1 import tracking_pb2_grpc

from libs.bootstrap import ServiceContext, ServiceSpec
from libs.db import run_in_transaction
from libs.domain_errors import Unavailable
from services.tracking.enrichment import Enricher
from services.tracking.server import TrackingServicer
from services.tracking.settings import TrackingSettings
from services.tracking.store import partitions

log = structlog.get_logger("loom.tracking")


async def setup(context: ServiceContext) -> None:
    """Registers the servicer; its group-commit writers stop (and close their connections) after the server has drained."""
    assert context.engine is not None
    assert isinstance(context.settings, TrackingSettings)  # the bootstrap loads the service's own settings class
    # This month's and next month's partitions, should the daily purge not have run lately.
    try:
        await run_in_transaction(context.engine, lambda conn: partitions.ensure(conn, datetime.now(UTC)))
    except Unavailable:  # the default partitions hold the rows meanwhile; the next purge makes them
        log.warning("engagement partitions not created at startup: their tables are busy")
    servicer = TrackingServicer(context.engine, context.settings, Enricher())
    context.exit_stack.push_async_callback(servicer.close)
    servicer.serve_audit(context.auditor)
    tracking_pb2_grpc.add_TrackingServiceServicer_to_server(servicer, context.server)


SPEC = ServiceSpec(
    name="tracking",
    settings_class=TrackingSettings,
    grpc_services=("loom.tracking.v1.TrackingService",),
    setup=setup,
)
