"""Business counters count what committed, once: a replayed request is not counted again."""

from __future__ import annotations

import uuid

from prometheus_client import REGISTRY

from tests.batch.conftest import create_supplier, place
from tests.support import serve, stub_for


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


async def test_an_order_is_counted_once_however_often_its_request_is_replayed(database_url):
    category = f"metrics_{uuid.uuid4().hex[:8]}"
    async with serve("batch", database_url, outbox_dispatch=False) as batch, stub_for("batch", batch.target) as stub:
        await create_supplier(stub, category)
        before = sample("loom_batch_orders_placed_total")
        rid = str(uuid.uuid4())
        first = await place(stub, category, 10, rid=rid)
        replayed = await place(stub, category, 10, rid=rid)
        assert replayed.order.order_id == first.order.order_id
        assert sample("loom_batch_orders_placed_total") == before + 1
