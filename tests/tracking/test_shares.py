"""Posts and TrackShare: the per-IP hourly limit and the share counter under concurrency."""

import asyncio

import grpc
import psycopg
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from loom.tracking.v1 import tracking_pb2 as pb

from libs.errors import field_violations, retry_delay_seconds
from libs.scratch_db import plain_url
from tests.support import auth, from_gateway

ADMIN = auth("admin")


def from_ip(ip: str):
    return from_gateway(ip)


def ip_for(unique: str) -> str:
    """A test's own address, so limits of different tests never meet."""
    n = int(unique, 16)
    return f"10.{n % 250}.{(n >> 8) % 250}.{(n >> 16) % 250 + 1}"


async def create_post(stub, unique: str, **fields) -> pb.Post:
    values = {"post_id": f"post-{unique}", "title": "Spring drop", "url": "https://loom.example/posts/1", "published": True}
    post = pb.Post(**{**values, **fields})
    reply = await stub.CreatePost(pb.CreatePostRequest(request_id=f"create-{unique}", post=post), metadata=ADMIN)
    return reply.post


async def share(stub, post_id: str, ip: str, platform=pb.SHARE_PLATFORM_LINKEDIN, **fields):
    return await stub.TrackShare(pb.TrackShareRequest(post_id=post_id, platform=platform, **fields), metadata=from_ip(ip))


async def test_posts_are_created_read_updated_and_listed(stub, unique):
    created = await create_post(stub, unique, published=False)
    assert created.share_count == 0 and not created.HasField("publish_time")
    updated = await stub.UpdatePost(
        pb.UpdatePostRequest(
            request_id=f"update-{unique}", post=pb.Post(post_id=created.post_id, published=True, title="ignored"),
            update_mask=FieldMask(paths=["published"]),
        ),
        metadata=ADMIN,
    )
    assert updated.post.published and updated.post.title == "Spring drop" and updated.post.HasField("publish_time")
    fetched = await stub.GetPost(pb.GetPostRequest(post_id=created.post_id), metadata=ADMIN)
    assert fetched.post == updated.post
    listed, token = [], ""
    while True:
        page = await stub.ListPosts(pb.ListPostsRequest(page_size=1, page_token=token), metadata=ADMIN)
        listed += [p.post_id for p in page.posts]
        token = page.next_page_token
        if not token:
            break
    assert created.post_id in listed and len(listed) == len(set(listed))


async def test_creating_a_post_is_idempotent_and_an_id_is_taken_once(stub, unique):
    first = await create_post(stub, unique)
    assert await create_post(stub, unique) == first
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreatePost(
            pb.CreatePostRequest(request_id=f"again-{unique}", post=pb.Post(post_id=first.post_id, title="x", url="https://x.example")),
            metadata=ADMIN,
        )
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_a_post_needs_a_title_and_an_http_url(stub, unique):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreatePost(pb.CreatePostRequest(request_id=unique, post=pb.Post(url="javascript:alert(1)")), metadata=ADMIN)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(caught.value)) == {"post.title", "post.url"}


async def test_sharing_an_unknown_post_is_not_found(stub, unique):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await share(stub, f"missing-{unique}", ip_for(unique))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_sharing_an_unpublished_post_fails_its_precondition_and_counts_nothing(stub, unique):
    post = await create_post(stub, unique, published=False)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await share(stub, post.post_id, ip_for(unique))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    stats = await stub.GetShareStats(pb.GetShareStatsRequest(post_id=post.post_id), metadata=ADMIN)
    assert stats.total == 0
    assert (await stub.GetPost(pb.GetPostRequest(post_id=post.post_id), metadata=ADMIN)).post.share_count == 0


async def test_an_unknown_platform_is_invalid(stub, unique):
    post = await create_post(stub, unique)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await share(stub, post.post_id, ip_for(unique), platform=pb.SHARE_PLATFORM_UNSPECIFIED)
    assert "platform" in field_violations(caught.value)


async def test_64_concurrent_shares_from_one_ip_accept_exactly_10(stub, tracking_db, unique):
    post = await create_post(stub, unique)
    outcomes = await asyncio.gather(*(share(stub, post.post_id, ip_for(unique)) for _ in range(64)), return_exceptions=True)
    accepted = [o for o in outcomes if isinstance(o, pb.TrackShareResponse)]
    rejected = [o for o in outcomes if not isinstance(o, pb.TrackShareResponse)]
    assert len(accepted) == 10
    assert {e.code() for e in rejected} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert all(3000 < retry_delay_seconds(e) <= 3600 for e in rejected)
    assert sorted(o.share_count for o in accepted) == list(range(1, 11))
    assert sorted(o.remaining_in_window for o in accepted) == list(range(10))
    with psycopg.connect(plain_url(tracking_db)) as conn:
        stored = conn.execute("SELECT count(*) FROM tracking.shares WHERE post_id = %s", (post.post_id,)).fetchone()[0]
    counted = (await stub.GetPost(pb.GetPostRequest(post_id=post.post_id), metadata=ADMIN)).post.share_count
    assert stored == counted == 10
    stats = await stub.GetRateLimitStats(pb.GetRateLimitStatsRequest(), metadata=ADMIN)
    assert stats.rejected >= 54


async def test_shares_of_one_post_from_many_ips_are_all_counted(stub, unique):
    post = await create_post(stub, unique)
    await asyncio.gather(*(share(stub, post.post_id, f"192.0.2.{n + 1}") for n in range(40)))
    assert (await stub.GetPost(pb.GetPostRequest(post_id=post.post_id), metadata=ADMIN)).post.share_count == 40


async def test_a_replayed_share_request_is_counted_once(stub, unique):
    post = await create_post(stub, unique)
    first = await share(stub, post.post_id, ip_for(unique), request_id=f"share-{unique}")
    replay = await share(stub, post.post_id, ip_for(unique), request_id=f"share-{unique}")
    assert replay == first and replay.share_count == 1


async def test_share_stats_by_platform_and_day(stub, unique):
    post = await create_post(stub, unique)
    for platform in (pb.SHARE_PLATFORM_LINKEDIN, pb.SHARE_PLATFORM_WHATSAPP, pb.SHARE_PLATFORM_WHATSAPP):
        await share(stub, post.post_id, ip_for(unique), platform=platform)
    stats = await stub.GetShareStats(pb.GetShareStatsRequest(post_id=post.post_id), metadata=ADMIN)
    assert stats.total == 3
    assert {(c.platform, c.count) for c in stats.by_platform} == {
        (pb.SHARE_PLATFORM_LINKEDIN, 1), (pb.SHARE_PLATFORM_WHATSAPP, 2),
    }
    assert sum(d.count for d in stats.by_day) == 3 and len(stats.by_day[0].day) == 10


async def test_a_drifted_share_counter_is_repaired_by_the_aggregation(stub, tracking_db, unique):
    post = await create_post(stub, unique)
    await share(stub, post.post_id, ip_for(unique))
    with psycopg.connect(plain_url(tracking_db)) as conn:
        conn.execute("UPDATE tracking.posts SET share_count = 0 WHERE post_id = %s", (post.post_id,))
    reply = await stub.AggregatePopularity(pb.AggregatePopularityRequest(request_id=f"agg-{unique}"), metadata=ADMIN)
    assert reply.share_counts_repaired >= 1
    assert (await stub.GetPost(pb.GetPostRequest(post_id=post.post_id), metadata=ADMIN)).post.share_count == 1
