"""Wires the scheduler service into the shared server bootstrap."""

from libs.server import ServiceContext, ServiceSpec
from services.scheduler.settings import SchedulerSettings


async def setup(context: ServiceContext) -> None:
    """Registers the servicers (none yet: health and reflection only)."""


SPEC = ServiceSpec(
    name="scheduler",
    settings_class=SchedulerSettings,
    grpc_services=("loom.scheduler.v1.SchedulerService",),
    setup=setup,
)
