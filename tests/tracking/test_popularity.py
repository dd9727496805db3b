"""AggregatePopularity on a synthetic data set whose scores and pairings are worked out by hand.

People (last 30 days): session s1 used A, B, C; s2 used A, B; s3 used A; user u1 used D
(anonymously, in session s4, which later carried u1), A (in s4) and B (in s5).
Events: A 5 in 30 days (4 in the last 7), B 3 (2), C 1 (1, plus one 58 days ago), D 1 (1).

Score w = 2 x 7d + 30d: A 13, B 7, C 3, D 3 -> 100, 53.85, 23.08, 23.08.
Pairs: A->B 3 of A's 4 people = 75%, B->A 3/3 = 100%, A->C = A->D = 25%,
B->C = B->D = 1/3 = 33.33%, C->A = C->B = D->A = D->B = 100%.
"""

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from loom.tracking.v1 import tracking_pb2 as pb

from libs.scratch_db import plain_url
from tests.support import auth

ADMIN = auth("admin")
NOW = datetime.now(UTC)


def item(product: str, session: str, days_ago: float, type_=pb.INTERACTION_TYPE_VIEW_DETAILS, user: str = ""):
    interaction = pb.Interaction(type=type_, product_id=product, session_id=session, user_id=user)
    interaction.occurred_time.FromDatetime(NOW - timedelta(days=days_ago))
    return interaction


@pytest.fixture(scope="module")
async def data_set(stub, tracking_db):
    recent = [
        item("A", "s1", 1, pb.INTERACTION_TYPE_HOVER),
        item("A", "s1", 1),
        item("B", "s1", 1),
        item("C", "s1", 1),
        item("A", "s2", 2),
        item("B", "s2", 2),
        item("D", "s4", 3),
        item("A", "s4", 3, user="u1"),
    ]
    reply = await stub.TrackInteractions(pb.TrackInteractionsRequest(interactions=recent), metadata=ADMIN)
    assert reply.accepted == len(recent)
    # Older than the API accepts as new: loaded the way a backfill would be.
    with psycopg.connect(plain_url(tracking_db)) as conn:
        for product, session, user, days_ago in (("A", "s3", None, 11), ("B", "s5", "u1", 21), ("C", "s6", None, 58)):
            conn.execute(
                "INSERT INTO tracking.interactions (id, occurred_at, type, product_id, session_id, user_id)"
                " VALUES (gen_random_uuid(), %s, 8, %s, %s, %s)",
                (NOW - timedelta(days=days_ago), product, session, user),
            )
    return await aggregate(stub, "first-run")


async def aggregate(stub, request_id: str) -> pb.AggregatePopularityResponse:
    request = pb.AggregatePopularityRequest(request_id=request_id)
    request.as_of_time.FromDatetime(NOW)
    return await stub.AggregatePopularity(request, metadata=ADMIN)


async def popularity(stub, product: str) -> pb.Popularity:
    return (await stub.GetPopularity(pb.GetPopularityRequest(product_id=product), metadata=ADMIN)).popularity


async def snapshot(stub):
    return {p: await popularity(stub, p) for p in "ABCD"}


async def test_scores_and_usage_counts_match_the_hand_computation(stub, data_set):
    assert data_set.interactions_scanned == 11 and data_set.products_scored == 4
    found = {p: (x.count_7d, x.count_30d, x.score) for p, x in (await snapshot(stub)).items()}
    assert found == {"A": (4, 5, 100.0), "B": (2, 3, 53.85), "C": (1, 1, 23.08), "D": (1, 1, 23.08)}


async def test_co_occurrence_percentages_match_the_hand_computation(stub, data_set):
    paired = {p: {(q.product_id, q.percentage, q.together_count) for q in x.paired} for p, x in (await snapshot(stub)).items()}
    assert paired == {
        "A": {("B", 75.0, 3), ("C", 25.0, 1), ("D", 25.0, 1)},
        "B": {("A", 100.0, 3), ("C", 33.33, 1), ("D", 33.33, 1)},
        "C": {("A", 100.0, 1), ("B", 100.0, 1)},
        "D": {("A", 100.0, 1), ("B", 100.0, 1)},
    }


async def test_aggregating_again_changes_nothing(stub, data_set):
    before = await snapshot(stub)
    again = await aggregate(stub, "second-run")
    after = await snapshot(stub)
    assert again.pairs_updated == data_set.pairs_updated
    assert {p: (x.count_7d, x.count_30d, x.score, list(x.paired)) for p, x in before.items()} == {
        p: (x.count_7d, x.count_30d, x.score, list(x.paired)) for p, x in after.items()
    }


async def test_recommendations_come_from_co_occurrence_with_own_history(stub, data_set):
    for_session = await stub.GetRecommendations(pb.GetRecommendationsRequest(session_id="s2", limit=5))
    assert [(r.product_id, r.score) for r in for_session.recommendations] == [("C", 33.33), ("D", 33.33)]
    assert for_session.recommendations[0].reason == "people who interacted with B also interacted with this: 33.33%"
    for_user = await stub.GetRecommendations(pb.GetRecommendationsRequest(user_id="u1", limit=5), metadata=auth("buyer", "u1"))
    assert [r.product_id for r in for_user.recommendations] == ["C"]


async def test_a_buyer_cannot_read_another_users_recommendations(stub, data_set):
    import grpc

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetRecommendations(pb.GetRecommendationsRequest(user_id="u1"), metadata=auth("buyer", "u2"))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_purging_raw_events_keeps_the_aggregates(stub, tracking_db, data_set):
    purged = await stub.PurgeOldData(pb.PurgeOldDataRequest(request_id="purge", retention_days=15), metadata=ADMIN)
    assert purged.interactions_deleted == 2
    with psycopg.connect(plain_url(tracking_db)) as conn:
        assert conn.execute("SELECT count(*) FROM tracking.interactions").fetchone()[0] == 9
    await aggregate(stub, "after-purge")
    assert (await popularity(stub, "B")).count_30d == 3
