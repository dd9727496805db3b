"""Rules and the real batch service together: events flow from batch's outbox dispatcher into
rules.DeliverEvents, rules' actions change orders in batch, e-mail reaches a real SMTP server.

Orchestrate touches every filling batch of its database, so this module has its own
(`own_database`, as the batch tests do). `smtp` is the module-scoped aiosmtpd server of conftest.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import uuid
from contextlib import AsyncExitStack

import psycopg
import pytest
from loom.batch.v1 import batch_pb2
from loom.rules.v1 import rules_pb2

from libs.bootstrap import start
from libs.scratch_db import plain_url
from tests.batch.conftest import create_supplier, place
from tests.rules.conftest import ADMIN, action, create, rule_message
from tests.rules.peers import eventually
from tests.support import free_port, settings_for, stub_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
async def stubs(own_database, smtp):
    """Batch and rules in-process on ports chosen up front, so each is told where the other is."""
    ports = {"batch": free_port(), "rules": free_port()}
    overrides = {
        "batch_target": f"127.0.0.1:{ports['batch']}",
        "rules_target": f"127.0.0.1:{ports['rules']}",
        "client_deadline_seconds": 5.0,
    }
    own = {
        "batch": {"outbox_poll_seconds": 0.1, "outbox_max_backoff_seconds": 0.5},
        "rules": {
            "smtp_host": "127.0.0.1",
            "smtp_port": smtp.port,
            "worker_poll_seconds": 0.2,
            "action_backoff_seconds": 0.05,
            "loop_max_depth": 2,  # the batch lifecycle has two moves after confirmed
        },
    }
    async with AsyncExitStack() as stack:
        for name in ("rules", "batch"):
            spec = importlib.import_module(f"services.{name}.wiring").SPEC
            running = await start(spec, settings_for(name, own_database, **overrides, **own[name]), port=ports[name])
            stack.push_async_callback(running.stop, 1)
        batch = await stack.enter_async_context(stub_for("batch", overrides["batch_target"]))
        rules = await stack.enter_async_context(stub_for("rules", overrides["rules_target"]))
        yield batch, rules


async def sql(database_url: str, statement: str) -> list[tuple]:
    """Off the event loop: the in-process services run on it, and a statement waiting for one of
    their row locks must not stop them from committing."""

    def run() -> list[tuple]:
        with psycopg.connect(plain_url(database_url), autocommit=True) as conn:
            cursor = conn.execute(statement)
            return cursor.fetchall() if cursor.description else []

    return await asyncio.to_thread(run)


async def finished_executions(rules, rule_id: str, count: int) -> list[rules_pb2.Execution] | None:
    listed = (await rules.ListExecutions(rules_pb2.ListExecutionsRequest(rule_id=rule_id), metadata=ADMIN)).executions
    done = [e for e in listed if e.status != rules_pb2.EXECUTION_STATUS_RUNNING]
    return done if len(done) == count else None


async def test_a_batch_crossing_75_percent_mails_once_and_moves_its_orders_into_production(stubs, smtp, own_database):
    batch, rules = stubs
    category = f"e2e_{uuid.uuid4().hex[:8]}"
    first_supplier = await create_supplier(batch, category, name="First Fabrics")
    orders = [(await place(batch, category, 40)).order for _ in range(2)]  # 80 of 100: the batch is at 80%
    assert orders[0].batch_id == orders[1].batch_id and orders[0].supplier_id == first_supplier.supplier_id
    second_supplier = await create_supplier(batch, category, name="Second Stitch")

    mail = await create(rules, rule_message(
        "mail ops when a batch is confirmed",
        event_types=["batch.confirmed"],
        conditions={"batch_fill_percentage": ">= 75", "batch_category": category},
        actions=[action("send_email", recipient="ops@example.com", subject="Batch {{batch.id}} confirmed",
                        body="{{batch.category}} reached {{batch.fill_percentage}}% with {{supplier.name}}")],
    ))
    production = await create(rules, rule_message(
        "confirmed orders go to the second supplier and into production",
        type=rules_pb2.RULE_TYPE_STATUS_UPDATE,
        event_types=["order.status_changed"],
        conditions={"order_status": "confirmed", "order_category": category},
        actions=[
            action("assign_supplier", entity="order", id="{{order.id}}", supplier_id=second_supplier.supplier_id, priority=5),
            action("update_status", entity="order", id="{{order.id}}", status="in_production", reason="rule: production"),
        ],
    ))

    orchestrated = await batch.Orchestrate(batch_pb2.OrchestrateRequest(request_id=str(uuid.uuid4())), metadata=ADMIN)
    assert orchestrated.batches_confirmed == 1

    (sent,) = await eventually(lambda: finished_executions(rules, mail.rule_id, 1), timeout=30)
    moved = await eventually(lambda: finished_executions(rules, production.rule_id, 2), timeout=30)
    assert sent.status == rules_pb2.EXECUTION_STATUS_SUCCESS
    assert [e.status for e in moved] == [rules_pb2.EXECUTION_STATUS_SUCCESS] * 2
    (message,) = smtp.sink.messages
    assert message.rcpt_tos == ["ops@example.com"]
    assert f"Subject: Batch {orders[0].batch_id} confirmed".encode() in message.content
    assert f"{category} reached 80.00% with First Fabrics".encode() in message.content
    for order in orders:
        current = (await batch.GetOrder(batch_pb2.GetOrderRequest(order_id=order.order_id), metadata=ADMIN)).order
        assert (current.status, current.supplier_id) == (batch_pb2.ORDER_STATUS_IN_PRODUCTION, second_supplier.supplier_id)

    # Batch's dispatcher offers every event again (as after a crash before marking them delivered).
    redelivered = await sql(own_database, "UPDATE batch.outbox SET delivered_time = NULL RETURNING id")
    assert len(redelivered) >= 5  # 2 placed, 1 confirmed, 2 confirmed orders, and the rule's own changes

    async def all_delivered() -> bool:
        return await sql(own_database, "SELECT count(*) FROM batch.outbox WHERE delivered_time IS NULL") == [(0,)]

    await eventually(all_delivered, timeout=30)

    async def all_evaluated() -> bool:
        return await sql(own_database, "SELECT count(*) FROM rules.events WHERE evaluated_time IS NULL") == [(0,)]

    await eventually(all_evaluated, timeout=30)
    assert await sql(own_database, "SELECT count(*) FROM rules.events") == [(len(redelivered),)]
    assert await finished_executions(rules, mail.rule_id, 1) and await finished_executions(rules, production.rule_id, 2)
    assert len(smtp.sink.messages) == 1


async def test_a_rule_advancing_its_own_batch_stops_at_the_loop_guard_with_the_chain_recorded(stubs, own_database):
    """Batch copies the chain the rule's action call carries onto the events it emits; the
    rule (opted in to rule-caused events) advances the batch on each until the guard refuses."""
    batch, rules = stubs
    category = f"loop_{uuid.uuid4().hex[:8]}"
    await create_supplier(batch, category)
    await place(batch, category, 40)
    placed = (await place(batch, category, 40)).order  # 80 of 100: Orchestrate confirms the batch
    advance = {"table": {
        "hit_policy": "FIRST",
        "inputs": ["batch.category", "batch.status"],
        "outputs": ["next"],
        "rules": [
            {"when": [category, "confirmed"], "then": {"next": "in_production"}},
            {"when": [category, "in_production"], "then": {"next": "completed"}},
            {"when": [category, "completed"], "then": {"next": "completed"}},
        ],
    }}
    rule = await create(rules, rule_message(
        "advance my batch",
        type=rules_pb2.RULE_TYPE_STATUS_UPDATE,
        event_types=["batch.confirmed", "batch.status_changed"],
        conditions=advance,
        actions=[action("update_status", entity="batch", id="{{batch.id}}", status="{{decision.next}}")],
        triggered_by_rules=True,
    ))
    await batch.Orchestrate(batch_pb2.OrchestrateRequest(request_id=str(uuid.uuid4())), metadata=ADMIN)

    async def refused() -> list[rules_pb2.Execution]:
        listed = (await rules.ListExecutions(rules_pb2.ListExecutionsRequest(rule_id=rule.rule_id), metadata=ADMIN)).executions
        return [e for e in listed if e.status == rules_pb2.EXECUTION_STATUS_REFUSED]

    (stopped,) = await eventually(refused, timeout=30)
    listed = (await rules.ListExecutions(rules_pb2.ListExecutionsRequest(rule_id=rule.rule_id), metadata=ADMIN)).executions
    runs = sorted((e for e in listed if e.status == rules_pb2.EXECUTION_STATUS_SUCCESS), key=lambda e: len(e.causation))
    assert [len(e.causation) for e in runs] == [0, 1]
    assert [(link.rule_id, link.execution_id) for link in stopped.causation] == [(rule.rule_id, e.execution_id) for e in runs]
    assert stopped.refused_reason.startswith("loop guard: the rule already ran 2 times")
    current = (await batch.GetBatch(batch_pb2.GetBatchRequest(batch_id=placed.batch_id), metadata=ADMIN)).batch
    assert current.status == batch_pb2.BATCH_STATUS_COMPLETED
    emitted = await sql(
        own_database,
        "SELECT data::text, causation::text FROM batch.outbox WHERE type = 'batch.status_changed' "
        f"AND data->'batch'->>'id' = '{placed.batch_id}' ORDER BY id",
    )
    assert [len(json.loads(chain)) for _, chain in emitted] == [1, 2]
