"""A durable wait survives a kill -9 of the rules service and fires exactly once after the restart."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from loom.rules.v1 import rules_pb2

from tests.rules.conftest import ADMIN, action, create, event, rule_message
from tests.rules.peers import Peers, eventually
from tests.rules.replicas import replica_env
from tests.support import ServiceProcess, free_port, stub_for, wait_serving


@pytest.mark.e2e
@pytest.mark.timeout(120)
async def test_a_wait_survives_kill_9_and_fires_once(database_url):
    peers = Peers()
    await peers.server.start()
    port = free_port()
    env = replica_env(database_url, peers, port, lease_seconds=2)
    target = f"127.0.0.1:{port}"
    process = ServiceProcess("rules", env).start()
    try:
        await wait_serving(target)
        async with stub_for("rules", target) as stub:
            rule = await create(
                stub, rule_message("waits", actions=[action("wait", seconds=3), action("trigger_workflow", job="after-crash")])
            )
            sample = event("order.placed", order={"id": "crash-wait"})
            (started,) = (await stub.EvaluateEvent(rules_pb2.EvaluateEventRequest(event=sample), metadata=ADMIN)).executions
            assert started.status == rules_pb2.EXECUTION_STATUS_WAITING
            process.kill()
            process = ServiceProcess("rules", env).start()
            await wait_serving(target)

            async def finished():
                listed = await stub.ListExecutions(rules_pb2.ListExecutionsRequest(event_id=sample.event_id), metadata=ADMIN)
                return [e for e in listed.executions if e.status == rules_pb2.EXECUTION_STATUS_SUCCESS]

            (execution,) = await eventually(finished, timeout=30)
            await asyncio.sleep(1.5)  # a second firing would have happened by now
            (wait,) = (await stub.ListWaits(rules_pb2.ListWaitsRequest(rule_id=rule.rule_id), metadata=ADMIN)).waits
            await stub.DeleteRule(rules_pb2.DeleteRuleRequest(request_id=str(uuid.uuid4()), rule_id=rule.rule_id), metadata=ADMIN)
    finally:
        process.terminate()
        await peers.server.stop(0)
    assert [run.job_name for run in peers.scheduler.runs] == ["after-crash"]
    assert wait.status == rules_pb2.WAIT_STATUS_RESUMED
    assert execution.finish_time.ToDatetime() >= wait.due_time.ToDatetime()
