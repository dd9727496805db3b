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


async def test_interactions_are_counted_by_outcome(database_url):
    from loom.tracking.v1 import tracking_pb2 as tracking_pb

    unique = uuid.uuid4().hex[:10]
    item = tracking_pb.Interaction(
        type=tracking_pb.INTERACTION_TYPE_VIEW_DETAILS, product_id=f"p-{unique}", session_id=f"s-{unique}"
    )
    names = {outcome: "loom_tracking_interactions_total" for outcome in ("stored", "duplicate", "rejected")}
    before = {o: REGISTRY.get_sample_value(n, {"outcome": o}) or 0.0 for o, n in names.items()}
    async with serve("tracking", database_url) as tracking, stub_for("tracking", tracking.target) as stub:
        for _ in range(2):  # the second is a duplicate within the session window
            await stub.TrackInteraction(tracking_pb.TrackInteractionRequest(interaction=item))
        too_old = tracking_pb.Interaction()
        too_old.CopyFrom(item)
        too_old.occurred_time.FromSeconds(1)
        reply = await stub.TrackInteractions(tracking_pb.TrackInteractionsRequest(interactions=[too_old]))
        assert reply.rejected == 1
    after = {o: REGISTRY.get_sample_value(n, {"outcome": o}) or 0.0 for o, n in names.items()}
    assert {o: after[o] - before[o] for o in names} == {"stored": 1, "duplicate": 1, "rejected": 1}
    assert (REGISTRY.get_sample_value("loom_tracking_group_commit_events_count") or 0) >= 2
