"""The causation chain across three real services: a rule's trigger_workflow starts the
scheduler's orchestrate-batches job, whose Orchestrate call to batch confirms a batch; the
batch.confirmed event carries the chain back to rules (libs/causation.py: the scheduler's
job call passes on what the rule's call brought)."""

from __future__ import annotations

import importlib
import uuid
from contextlib import AsyncExitStack

import pytest
from loom.rules.v1 import rules_pb2

from libs.bootstrap import start
from tests.batch.conftest import create_supplier, place
from tests.rules.conftest import ADMIN, action, create, rule_message
from tests.rules.peers import eventually
from tests.support import free_port, settings_for, stub_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
async def stubs(own_database):
    ports = {name: free_port() for name in ("batch", "rules", "scheduler")}
    targets = {f"{name}_target": f"127.0.0.1:{port}" for name, port in ports.items()}
    own = {
        "batch": {"outbox_poll_seconds": 0.1, "outbox_max_backoff_seconds": 0.5},
        "rules": {"worker_poll_seconds": 0.2, "action_backoff_seconds": 0.05},
        # Only the rule's run of the job, none on the schedule, may confirm the batch.
        "scheduler": {"scheduler_job_schedules": {"orchestrate-batches": "@every 86400s"}},
    }
    async with AsyncExitStack() as stack:
        for name in ("rules", "batch", "scheduler"):
            spec = importlib.import_module(f"services.{name}.wiring").SPEC
            settings = settings_for(name, own_database, **targets, client_deadline_seconds=5.0, **own[name])
            running = await start(spec, settings, port=ports[name])
            stack.push_async_callback(running.stop, 1)
        batch = await stack.enter_async_context(stub_for("batch", targets["batch_target"]))
        rules = await stack.enter_async_context(stub_for("rules", targets["rules_target"]))
        yield batch, rules


async def executions_of(rules, rule_id: str) -> list[rules_pb2.Execution]:
    reply = await rules.ListExecutions(rules_pb2.ListExecutionsRequest(rule_id=rule_id), metadata=ADMIN)
    return [e for e in reply.executions if e.status != rules_pb2.EXECUTION_STATUS_RUNNING]


async def test_an_event_a_rules_job_caused_carries_the_rules_execution(stubs):
    batch, rules = stubs
    category = f"chain_{uuid.uuid4().hex[:8]}"
    await create_supplier(batch, category)
    await place(batch, category, 40)  # 40 of 100: not yet enough to confirm
    starter = await create(rules, rule_message(
        "orchestrate when an order arrives",
        type=rules_pb2.RULE_TYPE_WORKFLOW,
        event_types=["order.placed"],
        conditions={"order_category": category},
        actions=[action("trigger_workflow", job="orchestrate-batches")],
    ))
    watcher = await create(rules, rule_message(
        "note confirmed batches, rule-caused ones too",
        event_types=["batch.confirmed"],
        conditions={"batch_category": category},
        actions=[action("notify", role="admin", subject="Batch {{batch.id}} confirmed", body="ok")],
        triggered_by_rules=True,
    ))
    bystander = await create(rules, rule_message(
        "note confirmed batches, not rule-caused ones",
        event_types=["batch.confirmed"],
        conditions={"batch_category": category},
        actions=[action("notify", role="admin", subject="Batch {{batch.id}} confirmed", body="ok")],
    ))
    await place(batch, category, 40)  # 80 of 100: the job's Orchestrate confirms the batch

    (started,) = await eventually(lambda: executions_of(rules, starter.rule_id), timeout=30)
    (noted,) = await eventually(lambda: executions_of(rules, watcher.rule_id), timeout=30)
    assert started.status == rules_pb2.EXECUTION_STATUS_SUCCESS and started.causation == []
    assert [(link.rule_id, link.execution_id, link.event_id) for link in noted.causation] == [
        (starter.rule_id, started.execution_id, started.event_id)
    ]
    assert await executions_of(rules, bystander.rule_id) == []
