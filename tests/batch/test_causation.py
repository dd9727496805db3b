"""The causation chain a Loom service's call carries (libs/causation.py) goes onto the events the call writes."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from loom.batch.v1 import batch_pb2 as pb

from services.batch.outbox import event_message
from services.batch.records import StoredEvent
from tests.batch.conftest import ADMIN, create_supplier, place, request_id, unique_category
from tests.support import auth

RULES = auth("service", "service:rules")
CHAIN = [{"rule_id": str(uuid.uuid4()), "execution_id": str(uuid.uuid4()), "event_id": "e-1"}]


async def move_to_awaiting_supplier(stub, metadata) -> str:
    category = unique_category()
    await create_supplier(stub, category)
    order = (await place(stub, category, 10)).order
    await stub.UpdateOrderStatus(
        pb.UpdateOrderStatusRequest(request_id=request_id(), order_id=order.order_id, status=pb.ORDER_STATUS_AWAITING_SUPPLIER),
        metadata=metadata,
    )
    return order.order_id


def chain_of(sql, order_id: str):
    return sql.execute(
        "SELECT causation FROM batch.outbox WHERE type = 'order.status_changed' AND data->'order'->>'id' = %s", (order_id,)
    ).fetchone()[0]


async def test_a_services_chain_goes_onto_the_events_its_call_writes(stub, sql):
    order_id = await move_to_awaiting_supplier(stub, (*RULES, ("loom-causation", json.dumps(CHAIN))))
    assert chain_of(sql, order_id) == CHAIN


async def test_a_users_chain_is_ignored(stub, sql):
    """Else a user could make their changes look rule-caused, which most rules ignore."""
    order_id = await move_to_awaiting_supplier(stub, (*ADMIN, ("loom-causation", json.dumps(CHAIN))))
    assert chain_of(sql, order_id) is None


async def test_a_malformed_chain_is_ignored_and_the_call_succeeds(stub, sql):
    order_id = await move_to_awaiting_supplier(stub, (*RULES, ("loom-causation", '[{"rule_id": 1}')))
    assert chain_of(sql, order_id) is None


def test_the_delivered_event_carries_the_chain_in_its_data():
    stored = StoredEvent(1, uuid.uuid4(), "order.status_changed", datetime.now(UTC), {"order": {"id": "o"}}, "", CHAIN)
    data = event_message(stored).data
    assert [dict(link) for link in data["causation"]] == CHAIN and data["order"]["id"] == "o"
