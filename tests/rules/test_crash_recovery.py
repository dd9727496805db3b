"""Killing the rules service while events arrive: after a restart every event is evaluated
exactly once per rule, and every action's effect happens once (one request_id per action)."""

import asyncio
import uuid

import grpc
import pytest
from loom.rules.v1 import rules_pb2

from tests.rules.conftest import ADMIN, SERVICE, action, create, event, rule_message
from tests.rules.peers import Peers, eventually
from tests.rules.replicas import replica_env
from tests.support import ServiceProcess, free_port, stub_for, wait_serving

EVENTS = 60


async def deliver_at_least_once(stub, events) -> None:
    """What the batch outbox does: retry a batch until it is acknowledged."""
    while True:
        try:
            await stub.DeliverEvents(rules_pb2.DeliverEventsRequest(events=events), metadata=SERVICE, timeout=2)
            return
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.1)


@pytest.mark.e2e
@pytest.mark.timeout(120)
async def test_every_event_is_evaluated_exactly_once_per_rule_across_a_crash(database_url):
    peers = Peers()
    await peers.server.start()

    async def slowly(request, context):
        await asyncio.sleep(0.02)  # so that the kill lands while actions run

    # A hook: the servicer's methods were bound when it was added to the server.
    peers.batch.on_update = slowly
    port = free_port()
    env = replica_env(database_url, peers, port, lease_seconds=2)
    target = f"127.0.0.1:{port}"
    process = ServiceProcess("rules", env).start()
    try:
        await wait_serving(target)
        async with stub_for("rules", target) as stub:
            update = await create(
                stub,
                rule_message(
                    "confirm",
                    event_types=["order.placed"],
                    actions=[action("update_status", entity="order", id="{{order.id}}", status="confirmed")],
                ),
            )
            notify = await create(
                stub,
                rule_message(
                    "notify",
                    event_types=["order.placed"],
                    actions=[action("send_email", recipient="ops@example.com", subject="{{order.id}}", body="placed")],
                ),
            )
            events = [event("order.placed", order={"id": f"crash-{i}"}) for i in range(EVENTS)]
            for start in range(0, EVENTS // 2, 5):
                await deliver_at_least_once(stub, events[start : start + 5])
            process.kill()
            process = ServiceProcess("rules", env).start()
            # The sender redelivers what it is unsure of, and goes on.
            for start in range(EVENTS // 2 - 5, EVENTS, 5):
                await deliver_at_least_once(stub, events[start : start + 5])
            await wait_serving(target)

            async def finished_executions():
                listed = await stub.ListExecutions(rules_pb2.ListExecutionsRequest(page_size=1000), metadata=ADMIN)
                mine = [e for e in listed.executions if e.rule_id in (update.rule_id, notify.rule_id)]
                done = [e for e in mine if e.status == rules_pb2.EXECUTION_STATUS_SUCCESS]
                return mine if len(done) == 2 * EVENTS else None

            executions = await eventually(finished_executions, timeout=60)
            await stub.DeleteRule(
                rules_pb2.DeleteRuleRequest(request_id=str(uuid.uuid4()), rule_id=update.rule_id), metadata=ADMIN
            )
            await stub.DeleteRule(
                rules_pb2.DeleteRuleRequest(request_id=str(uuid.uuid4()), rule_id=notify.rule_id), metadata=ADMIN
            )
    finally:
        process.terminate()
        await peers.server.stop(0)
    pairs = [(e.rule_id, e.event_id) for e in executions]
    assert len(pairs) == len(set(pairs)) == 2 * EVENTS
    assert {e.event_id for e in executions} == {e.event_id for e in events}
    calls = peers.batch.requests("UpdateOrderStatus")
    # A call interrupted by the kill may be repeated, but always with the same request_id.
    assert len({c.request_id for c in calls}) == EVENTS
    assert {c.order_id for c in calls} == {f"crash-{i}" for i in range(EVENTS)}
