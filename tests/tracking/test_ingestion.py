"""TrackInteraction(s): validation, enrichment, de-duplication and group commit against real PostgreSQL."""

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
import psycopg
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from loom.tracking.v1 import tracking_pb2 as pb

from libs.errors import field_violations
from libs.scratch_db import plain_url
from tests.support import auth, from_gateway

IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Version/17.0 Mobile/15E148 Safari/604.1"
FROM_LONDON = from_gateway("81.2.69.160")


def stamp(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def interaction(unique: str, **fields) -> pb.Interaction:
    values = {"type": pb.INTERACTION_TYPE_VIEW_DETAILS, "product_id": f"p-{unique}", "session_id": f"s-{unique}"}
    return pb.Interaction(**{**values, **fields})


def rows(database_url: str, sql: str, *params):
    with psycopg.connect(plain_url(database_url)) as conn:
        return conn.execute(sql, params).fetchall()


async def track(stub, item, metadata=()):
    return await stub.TrackInteraction(pb.TrackInteractionRequest(interaction=item), metadata=metadata)


async def test_an_interaction_is_stored_enriched_and_without_the_raw_ip(stub, tracking_db, unique):
    reply = await track(
        stub,
        interaction(unique, user_agent=IPHONE, referrer="https://www.google.com/search?q=tees", page="/p/1"),
        FROM_LONDON,
    )
    [row] = rows(
        tracking_db,
        "SELECT country, browser, os, device, referrer_host, page, ip_hash, interactions::text"
        " FROM tracking.interactions WHERE id = %s",
        reply.interaction_id,
    )
    assert row[:6] == ("GB", "Mobile Safari", "iOS", "mobile", "www.google.com", "/p/1")
    assert len(row[6]) == 16 and "81.2.69.160" not in row[7]
    assert not reply.duplicate


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"type": pb.INTERACTION_TYPE_UNSPECIFIED}, "interaction.type"),
        ({"session_id": ""}, "interaction.session_id"),
        ({"product_id": "bad id!"}, "interaction.product_id"),
        ({"user_agent": "x" * 5000}, "interaction.user_agent"),
        ({"occurred_time": stamp(datetime.now(UTC) + timedelta(days=1))}, "interaction.occurred_time"),
        ({"occurred_time": stamp(datetime.now(UTC) - timedelta(days=30))}, "interaction.occurred_time"),
    ],
)
async def test_bad_interactions_are_rejected_and_nothing_is_stored(stub, tracking_db, unique, fields, field):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await track(stub, interaction(unique, **fields))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in field_violations(caught.value)
    assert rows(tracking_db, "SELECT 1 FROM tracking.interactions WHERE session_id = %s", f"s-{unique}") == []


async def test_anonymous_callers_cannot_claim_a_user_and_buyers_only_their_own(stub, unique):
    for metadata in ((), auth("buyer", "alice")):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await track(stub, interaction(unique, user_id="mallory"), metadata)
        assert "interaction.user_id" in field_violations(caught.value)


async def test_64_concurrent_identical_events_are_stored_once(stub, tracking_db, unique):
    replies = await asyncio.gather(*(track(stub, interaction(unique)) for _ in range(64)))
    assert len({r.interaction_id for r in replies}) == 1
    assert sum(not r.duplicate for r in replies) == 1
    assert rows(tracking_db, "SELECT count(*) FROM tracking.interactions WHERE session_id = %s", f"s-{unique}") == [(1,)]
    summary = await stub.GetEngagementSummary(pb.GetEngagementSummaryRequest(), metadata=auth("admin"))
    hourly = rows(tracking_db, "SELECT sum(events) FROM tracking.engagement_hourly")[0][0]
    stored = rows(tracking_db, "SELECT count(*) FROM tracking.interactions")[0][0]
    assert summary.total == hourly == stored


async def test_the_same_event_after_the_session_window_is_stored_again(stub, tracking_db, unique):
    now = datetime.now(UTC)
    first = await track(stub, interaction(unique, occurred_time=stamp(now - timedelta(hours=2))))
    within = await track(stub, interaction(unique, occurred_time=stamp(now - timedelta(hours=2) + timedelta(minutes=29))))
    after = await track(stub, interaction(unique, occurred_time=stamp(now - timedelta(minutes=30))))
    assert within.duplicate and within.interaction_id == first.interaction_id
    assert not after.duplicate and after.interaction_id != first.interaction_id
    assert rows(tracking_db, "SELECT count(*) FROM tracking.interactions WHERE session_id = %s", f"s-{unique}") == [(2,)]


async def test_a_client_event_id_is_idempotent_forever(stub, tracking_db, unique):
    now = datetime.now(UTC)
    first = await track(stub, interaction(unique, client_event_id=f"c-{unique}", occurred_time=stamp(now - timedelta(days=2))))
    # Outside any session window, another product even: the client id alone decides.
    replay = await track(stub, interaction(unique, client_event_id=f"c-{unique}", product_id=f"other-{unique}"))
    assert replay.duplicate and replay.interaction_id == first.interaction_id
    await stub.PurgeOldData(pb.PurgeOldDataRequest(request_id=f"purge-{unique}", retention_days=1), metadata=auth("admin"))
    after_purge = await track(stub, interaction(unique, client_event_id=f"c-{unique}"))
    assert after_purge.duplicate and after_purge.interaction_id == first.interaction_id


async def test_a_new_client_id_for_an_event_in_an_open_window_answers_with_that_windows_event(stub, unique):
    first = await track(stub, interaction(unique, client_event_id=f"a-{unique}"))
    second = await track(stub, interaction(unique, client_event_id=f"b-{unique}"))
    replay = await track(stub, interaction(unique, client_event_id=f"b-{unique}"))
    assert second.duplicate and second.interaction_id == replay.interaction_id == first.interaction_id


async def test_a_batch_gives_a_result_per_item(stub, tracking_db, unique):
    items = [
        interaction(unique, client_event_id=f"1-{unique}"),
        interaction(unique, type=pb.INTERACTION_TYPE_ADD_TO_CART),
        interaction(unique),  # same session/product/type as the first
        interaction(unique, session_id=""),
        interaction(unique, client_event_id=f"1-{unique}", type=pb.INTERACTION_TYPE_HOVER),  # repeats item 0's id
    ]
    reply = await stub.TrackInteractions(pb.TrackInteractionsRequest(interactions=items))
    assert (reply.accepted, reply.duplicates, reply.rejected) == (2, 2, 1)
    results = reply.results
    assert [r.index for r in results] == [0, 1, 2, 3, 4]
    assert results[2].duplicate and results[2].interaction_id == results[0].interaction_id
    assert results[4].duplicate and results[4].interaction_id == results[0].interaction_id
    assert results[3].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and not results[3].interaction_id
    assert rows(tracking_db, "SELECT count(*) FROM tracking.interactions WHERE session_id = %s", f"s-{unique}") == [(2,)]


async def test_a_batch_replaying_a_stored_client_id_stores_the_rest_exactly_once(stub, tracking_db, unique):
    now = datetime.now(UTC)
    stored = await track(stub, interaction(unique, product_id=f"old-{unique}", client_event_id=f"old-{unique}"))
    items = [
        interaction(unique, product_id=f"new-{unique}", client_event_id=f"replay-{unique}"),  # different event, taken id
        interaction(unique, client_event_id=f"c1-{unique}", occurred_time=stamp(now - timedelta(hours=3))),
        interaction(unique, client_event_id=f"c2-{unique}", occurred_time=stamp(now - timedelta(hours=3, minutes=-5))),
        interaction(unique, client_event_id=f"c3-{unique}", occurred_time=stamp(now - timedelta(hours=1))),  # a later window
    ]
    items[0].client_event_id = f"old-{unique}"
    first = await stub.TrackInteractions(pb.TrackInteractionsRequest(interactions=items))
    again = await stub.TrackInteractions(pb.TrackInteractionsRequest(interactions=items))
    r = first.results
    assert r[0].duplicate and r[0].interaction_id == stored.interaction_id
    assert not r[1].duplicate and r[2].duplicate and r[2].interaction_id == r[1].interaction_id
    assert not r[3].duplicate and r[3].interaction_id != r[1].interaction_id
    assert [x.interaction_id for x in again.results] == [x.interaction_id for x in r]
    assert all(x.duplicate for x in again.results)
    assert rows(tracking_db, "SELECT count(*) FROM tracking.interactions WHERE session_id = %s", f"s-{unique}") == [(3,)]


async def test_free_text_is_stored_verbatim_whatever_its_characters(stub, tracking_db, unique):
    page = '/p/"quoted" {braces}, back\\slash\ttab NULL \u00e9'
    reply = await track(stub, interaction(unique, page=page, session_id="NULL", product_id="null"))
    assert rows(tracking_db, "SELECT page, session_id, product_id FROM tracking.interactions WHERE id = %s",
                reply.interaction_id) == [(page, "NULL", "null")]


async def test_a_malformed_id_rejects_only_its_own_item_in_a_batch(stub, tracking_db, unique):
    items = [
        interaction(unique, product_id=f"a-{unique}"),
        interaction(unique, product_id="bad id"),
        interaction(unique, product_id=f"c-{unique}", client_event_id="two\nlines"),
        interaction(unique, product_id=f"d-{unique}"),
    ]
    reply = await stub.TrackInteractions(pb.TrackInteractionsRequest(interactions=items))
    assert (reply.accepted, reply.rejected) == (2, 2)
    assert [bool(r.interaction_id) for r in reply.results] == [True, False, False, True]
    assert rows(tracking_db, "SELECT product_id FROM tracking.interactions WHERE session_id = %s ORDER BY 1", f"s-{unique}") == [
        (f"a-{unique}",), (f"d-{unique}",)
    ]


async def test_a_batch_must_hold_1_to_1000_items(stub, unique):
    for size in (0, 1001):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.TrackInteractions(pb.TrackInteractionsRequest(interactions=[interaction(unique)] * size))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_concurrent_calls_share_commits(stub, tracking_db, unique):
    # The table lock holds the first groups in flight, so every later call queues behind them.
    async with await psycopg.AsyncConnection.connect(plain_url(tracking_db)) as blocker:
        await blocker.execute("LOCK TABLE tracking.interactions IN EXCLUSIVE MODE")
        calls = asyncio.gather(*(track(stub, interaction(unique, product_id=f"p{n}-{unique}")) for n in range(64)))
        await asyncio.sleep(0.5)
    replies = await calls
    ids = [r.interaction_id for r in replies]
    [(transactions,)] = rows(
        tracking_db, "SELECT count(DISTINCT xmin::text) FROM tracking.interactions WHERE id = ANY(%s::uuid[])", ids
    )
    assert transactions < len(ids), "concurrent calls should have shared commits"


async def test_a_sessions_earlier_anonymous_events_are_attributed_once_it_is_identified(stub, unique):
    await track(stub, interaction(unique, product_id=f"early-{unique}"))
    await track(stub, interaction(unique, product_id=f"late-{unique}"), auth("buyer", f"u-{unique}"))
    top = await stub.ListTopProducts(pb.ListTopProductsRequest(user_id=f"u-{unique}"), metadata=auth("admin"))
    assert {p.product_id for p in top.products} == {f"early-{unique}", f"late-{unique}"}
