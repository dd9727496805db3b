"""Service identities: each service calls as itself, only where the protos let it, and
forwarded client IPs are believed from the gateway's identity alone."""

from __future__ import annotations

import uuid

import grpc
import jwt
import pytest
from loom.batch.v1 import batch_pb2, batch_pb2_grpc
from loom.rules.v1 import rules_pb2
from loom.tracking.v1 import tracking_pb2

from libs import tls
from libs.auth import FORWARDER_HEADER
from libs.clients import ServiceToken, open_channel
from libs.settings import Settings
from tests.security.conftest import mtls
from tests.support import TEST_JWT_SECRET, auth, from_gateway, serve, stub_for, token
from tests.tracking.conftest import tracking_db  # noqa: F401 - a database of this module's own


def test_a_service_token_carries_the_service_role_and_its_own_name_for_minutes():
    header = ServiceToken(TEST_JWT_SECRET, subject="service:rules", issuer="loom").header()
    claims = jwt.decode(header.removeprefix("Bearer "), TEST_JWT_SECRET, algorithms=["HS256"], issuer="loom")
    assert (claims["role"], claims["sub"]) == ("service", "service:rules")
    assert claims["exp"] - claims["iat"] <= 300


@pytest.mark.parametrize(("caller", "allowed"), [("service:batch", True), ("service:scheduler", False)])
async def test_only_the_services_the_proto_names_may_call_a_method(database_url, caller, allowed):
    async with serve("rules", database_url) as rules, stub_for("rules", rules.target) as stub:
        call = stub.DeliverEvents(rules_pb2.DeliverEventsRequest(), metadata=auth("service", caller))
        if allowed:
            await call
        else:
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await call
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_under_mutual_tls_a_service_token_must_name_the_certificates_service(database_url, pki):
    async with serve("batch", database_url, **mtls(pki, "batch")) as batch:
        channel = open_channel(batch.target, credentials=tls.channel_credentials(Settings(**mtls(pki, "rules"))))
        stub = batch_pb2_grpc.BatchServiceStub(channel)
        request = batch_pb2.ListBatchesRequest()
        try:
            await stub.ListBatches(request, metadata=auth("service", "service:rules"))
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.ListBatches(request, metadata=auth("service", "service:scheduler"))
        finally:
            await channel.close()
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_forwarded_ips_from_anyone_but_the_gateway_get_no_new_share_quota(tracking_db):  # noqa: F811
    async with serve("tracking", tracking_db) as tracking, stub_for("tracking", tracking.target) as stub:
        post = f"post-{uuid.uuid4().hex[:8]}"
        await stub.CreatePost(
            tracking_pb2.CreatePostRequest(
                request_id=post, post=tracking_pb2.Post(post_id=post, title="Drop", url="https://x.example", published=True)
            ),
            metadata=auth("admin"),
        )

        def share(metadata):
            request = tracking_pb2.TrackShareRequest(post_id=post, platform=tracking_pb2.SHARE_PLATFORM_LINKEDIN)
            return stub.TrackShare(request, metadata=metadata)

        def spoofed(n: int):
            return (("x-forwarded-for", f"203.0.113.{n}"),)

        for n in range(1, 11):  # the loopback peer's own ten
            await share(spoofed(n))
        rules_forwarder = (FORWARDER_HEADER, f"Bearer {token('service', 'service:rules')}")
        for metadata in (spoofed(11), (*spoofed(12), rules_forwarder)):
            with pytest.raises(grpc.aio.AioRpcError) as limited:
                await share(metadata)
            assert limited.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

        await share(from_gateway("198.51.100.7"))  # the gateway's word is taken: a new client, a new quota
