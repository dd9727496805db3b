"""Engagement summary, trends and the funnel, read from the hourly counters and the rollups
(plus the raw events newer than the last aggregation)."""

from datetime import UTC, datetime, timedelta

import grpc
import psycopg
import pytest
from loom.tracking.v1 import tracking_pb2 as pb

from libs.scratch_db import plain_url
from tests.support import auth

ADMIN = auth("admin")
NOW = datetime.now(UTC).replace(minute=30, second=0, microsecond=0)


def item(session: str, type_, product: str = "funnel-p", days_ago: int = 0, user: str = "") -> pb.Interaction:
    interaction = pb.Interaction(type=type_, product_id=product, session_id=session, user_id=user)
    interaction.occurred_time.FromDatetime(min(NOW, datetime.now(UTC)) - timedelta(days=days_ago))
    return interaction


@pytest.fixture(scope="module")
async def loaded(stub):
    view, cart, quote = pb.INTERACTION_TYPE_VIEW_DETAILS, pb.INTERACTION_TYPE_ADD_TO_CART, pb.INTERACTION_TYPE_QUOTE_CLICK
    items = [
        item("f1", view), item("f1", cart), item("f1", quote),
        item("f2", view), item("f2", cart),
        item("f3", view), item("f4", view, user="buyer-1"),
        item("f5", cart),  # never viewed: not in the funnel past its first step
        item("t1", pb.INTERACTION_TYPE_HOVER, product="other", days_ago=2),
    ]
    reply = await stub.TrackInteractions(pb.TrackInteractionsRequest(interactions=items), metadata=ADMIN)
    assert reply.accepted == len(items)


async def test_summary_counts_by_type_with_the_authenticated_ratio(stub, loaded):
    summary = await stub.GetEngagementSummary(pb.GetEngagementSummaryRequest(), metadata=ADMIN)
    assert summary.total == 9 and summary.unique_sessions == 6 and summary.authenticated == 1
    assert {(c.type, c.count) for c in summary.by_type} == {
        (pb.INTERACTION_TYPE_VIEW_DETAILS, 4), (pb.INTERACTION_TYPE_ADD_TO_CART, 3),
        (pb.INTERACTION_TYPE_QUOTE_CLICK, 1), (pb.INTERACTION_TYPE_HOVER, 1),
    }
    assert summary.authenticated_ratio == pytest.approx(1 / 9)


async def test_daily_trend_has_a_point_per_day(stub, loaded):
    trend = await stub.GetEngagementTrend(pb.GetEngagementTrendRequest(granularity=pb.GRANULARITY_DAY), metadata=ADMIN)
    assert [p.count for p in trend.points] == [1, 8]
    assert trend.points[1].authenticated_ratio == pytest.approx(1 / 8)
    weekly = await stub.GetEngagementTrend(pb.GetEngagementTrendRequest(granularity=pb.GRANULARITY_WEEK), metadata=ADMIN)
    assert sum(p.count for p in weekly.points) == 9


async def test_funnel_counts_sessions_that_reached_each_step(stub, loaded):
    funnel = await stub.GetFunnel(pb.GetFunnelRequest(product_id="funnel-p"), metadata=ADMIN)
    assert [(s.sessions, round(s.conversion, 3)) for s in funnel.steps] == [(4, 1.0), (2, 0.5), (1, 0.5)]


async def test_a_reversed_time_range_is_invalid(stub):
    request = pb.GetEngagementSummaryRequest()
    request.start_time.FromDatetime(NOW)
    request.end_time.FromDatetime(NOW - timedelta(days=1))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetEngagementSummary(request, metadata=ADMIN)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_analytics_need_an_admin_or_service_token(stub):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetEngagementSummary(pb.GetEngagementSummaryRequest(), metadata=auth("buyer"))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def answers(stub) -> tuple:
    summary = await stub.GetEngagementSummary(pb.GetEngagementSummaryRequest(), metadata=ADMIN)
    funnel = await stub.GetFunnel(pb.GetFunnelRequest(product_id="funnel-p"), metadata=ADMIN)
    top = await stub.ListTopProducts(pb.ListTopProductsRequest(user_id="buyer-1"), metadata=ADMIN)
    return (
        summary.unique_sessions,
        [s.sessions for s in funnel.steps],
        [(p.product_id, p.count) for p in top.products],
    )


async def test_sessions_funnel_and_user_products_are_read_from_the_rollups_once_aggregated(stub, tracking_db, loaded):
    live = await answers(stub)
    assert live == (6, [4, 2, 1], [("funnel-p", 1)])
    request = pb.AggregatePopularityRequest(request_id="rollups")
    request.as_of_time.FromDatetime(datetime.now(UTC) + timedelta(days=1))  # every event's hour and day is covered
    await stub.AggregatePopularity(request, metadata=ADMIN)
    with psycopg.connect(plain_url(tracking_db)) as conn:  # no raw event left to scan
        conn.execute("DELETE FROM tracking.interactions")
    assert await answers(stub) == live
