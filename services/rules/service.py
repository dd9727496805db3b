"""Wires the rules service into the shared server bootstrap."""

from libs.server import ServiceContext, ServiceSpec
from services.rules.settings import RulesSettings


async def setup(context: ServiceContext) -> None:
    """Registers the servicers (none yet: health and reflection only)."""


SPEC = ServiceSpec(
    name="rules",
    settings_class=RulesSettings,
    grpc_services=("loom.rules.v1.RulesService",),
    setup=setup,
)
