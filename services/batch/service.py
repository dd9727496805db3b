"""Wires the batch service into the shared server bootstrap."""

from libs.server import ServiceContext, ServiceSpec
from services.batch.settings import BatchSettings


async def setup(context: ServiceContext) -> None:
    """Registers the servicers (none yet: health and reflection only)."""


SPEC = ServiceSpec(
    name="batch",
    settings_class=BatchSettings,
    grpc_services=("loom.batch.v1.BatchService",),
    setup=setup,
)
