"""Wires the rules service into the shared server bootstrap."""

import asyncio

import structlog
from loom.rules.v1 import rules_pb2_grpc

from libs.bootstrap import ServiceContext, ServiceSpec
from libs.connection_budget import RULES_HEARTBEAT_CONNECTIONS
from libs.db import make_engine, run_in_transaction
from libs.tasks import cancel_and_wait
from services.rules import store
from services.rules.evaluator import RuleEvaluator, Worker
from services.rules.leases import lease_keeper
from services.rules.server import RulesServicer
from services.rules.settings import RulesSettings
from services.rules.waits import Waits

log = structlog.get_logger("loom.rules")


async def setup(context: ServiceContext) -> None:
    """Registers the servicer and starts the evaluation worker and the lease heartbeat (stopped on shutdown)."""
    settings = context.settings
    assert isinstance(settings, RulesSettings) and context.engine is not None and settings.database_url
    # The heartbeat's own connection: a pool busy with slow work must not delay a renewal past the lease.
    heartbeat_engine = make_engine(
        settings.database_url, application_name="loom-rules-leases", pool_size=RULES_HEARTBEAT_CONNECTIONS, max_overflow=0
    )
    context.exit_stack.push_async_callback(heartbeat_engine.dispose)
    leases = lease_keeper(heartbeat_engine, settings)
    evaluator = RuleEvaluator(context.engine, context.clients, settings, leases)
    waits = Waits(context.engine, evaluator, settings)
    worker = Worker(context.engine, evaluator, settings, waits.resume_due)
    servicer = RulesServicer(context.engine, evaluator, worker, settings, context.clients)
    servicer.serve_audit(context.auditor)
    rules_pb2_grpc.add_RulesServiceServicer_to_server(servicer, context.server)
    heartbeat = asyncio.create_task(leases.run(), name="rules-leases")
    working = asyncio.create_task(worker.run(), name="rules-worker")

    async def stop_tasks() -> None:
        await cancel_and_wait(working)  # the worker first, then the heartbeat of what it held
        leases.stop()
        await heartbeat
        # What the stopped worker held goes back now: the other replicas need not wait for a lease.
        try:
            await run_in_transaction(heartbeat_engine, lambda conn: store.release_leases(conn, owner=leases.owner), attempts=1)
        except Exception as error:  # noqa: BLE001 - then the leases lapse on their own, seconds later
            log.warning("leases not released at shutdown", error=type(error).__name__)

    context.exit_stack.push_async_callback(stop_tasks)


SPEC = ServiceSpec(
    name="rules",
    settings_class=RulesSettings,
    grpc_services=("loom.rules.v1.RulesService",),
    setup=setup,
)
