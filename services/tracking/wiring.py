"""Wires the tracking service into the shared server bootstrap."""

from loom.tracking.v1 import tracking_pb2_grpc

from libs.bootstrap import ServiceContext, ServiceSpec
from services.tracking.enrichment import Enricher
from services.tracking.server import TrackingServicer
from services.tracking.settings import TrackingSettings


async def setup(context: ServiceContext) -> None:
    """Registers the servicer; its group-commit writers stop (and close their connections) after the server has drained."""
    assert context.engine is not None
    assert isinstance(context.settings, TrackingSettings)  # the bootstrap loads the service's own settings class
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
