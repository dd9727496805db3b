"""Wires the tracking service into the shared server bootstrap."""

from libs.server import ServiceContext, ServiceSpec
from services.tracking.settings import TrackingSettings


async def setup(context: ServiceContext) -> None:
    """Registers the servicers (none yet: health and reflection only)."""


SPEC = ServiceSpec(
    name="tracking",
    settings_class=TrackingSettings,
    grpc_services=("loom.tracking.v1.TrackingService",),
    setup=setup,
)
