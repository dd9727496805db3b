"""Wires the rules service into the shared server bootstrap."""

import asyncio
import contextlib

from loom.rules.v1 import rules_pb2_grpc

from libs.bootstrap import ServiceContext, ServiceSpec
from services.rules.evaluator import RuleEvaluator, Worker
from services.rules.server import RulesServicer
from services.rules.settings import RulesSettings
from services.rules.waits import Waits


async def setup(context: ServiceContext) -> None:
    """Registers the servicer and starts the evaluation worker (stopped on shutdown)."""
    settings = context.settings
    assert isinstance(settings, RulesSettings) and context.engine is not None
    evaluator = RuleEvaluator(context.engine, context.clients, settings)
    waits = Waits(context.engine, evaluator, settings)
    worker = Worker(context.engine, evaluator, settings, waits.resume_due)
    servicer = RulesServicer(context.engine, evaluator, worker, settings)
    servicer.serve_audit(context.auditor)
    rules_pb2_grpc.add_RulesServiceServicer_to_server(servicer, context.server)
    task = asyncio.create_task(worker.run(), name="rules-worker")

    async def stop_worker() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    context.exit_stack.push_async_callback(stop_worker)


SPEC = ServiceSpec(
    name="rules",
    settings_class=RulesSettings,
    grpc_services=("loom.rules.v1.RulesService",),
    setup=setup,
)
