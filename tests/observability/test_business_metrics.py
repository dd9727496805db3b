"""Business metrics: counters count what committed, once; gauges say what the alerts need."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY

from services.scheduler.domain.schedules import Schedule, build_trigger
from services.scheduler.metrics import period_seconds
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


@pytest.mark.parametrize(
    ("schedule", "period"),
    [
        (Schedule(interval_seconds=300), 300.0),
        (Schedule(cron="0 2 * * *", time_zone="UTC"), 86400.0),
        (Schedule(cron="0 3 * * 0", time_zone="UTC"), 7 * 86400.0),
        (Schedule(run_at=datetime(2030, 1, 1, tzinfo=UTC)), None),
    ],
)
def test_a_jobs_period_is_the_gap_between_its_next_two_firings(schedule, period):
    now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    assert period_seconds(build_trigger(schedule, "UTC"), now) == period
