"""The gateway's protections over real HTTP: rate limits per address and per subject, security
headers on every answer, header and body size limits. A recording gRPC backend stands behind
it, so a refused request is seen not to reach any service."""

from __future__ import annotations

import ssl
import uuid

import grpc
import httpx
import pytest
from loom.tracking.v1 import tracking_pb2

from libs import tls
from libs.auth import mint_token
from services.gateway.protections import HSTS_HEADER, SECURITY_HEADERS, TokenBuckets
from tests.gateway.support import gateway_settings, recording_backend, run_gateway
from tests.support import token

pytestmark = pytest.mark.timeout(60)

IP_BURST, SUBJECT_BURST = 3, 2
RATE = 0.2  # tokens a second: slow enough that no bucket refills within a test
MAX_BODY = 2048
SECURITY_HEADER_NAMES = [name.decode() for name, _ in SECURITY_HEADERS]
OPEN = "/v1/products/p1/popularity"  # anonymous callers may ask


@pytest.fixture(scope="module")
async def backend():
    async with recording_backend() as running:

        async def get_post(request, context):
            return tracking_pb2.GetPostResponse(post=tracking_pb2.Post(post_id=request.post_id))

        async def get_popularity(request, context):
            return tracking_pb2.GetPopularityResponse(popularity=tracking_pb2.Popularity(product_id=request.product_id))

        running.answer("GetPost", get_post)
        running.answer("GetPopularity", get_popularity)
        yield running


def limited(targets: dict[str, str], **overrides):
    return gateway_settings(
        targets,
        rate_limit_ip_per_second=RATE,
        rate_limit_ip_burst=IP_BURST,
        rate_limit_subject_per_second=RATE,
        rate_limit_subject_burst=SUBJECT_BURST,
        max_body_bytes=MAX_BODY,
        max_header_bytes=4096,
        max_header_count=40,
        cors_origins=["https://shop.example"],
        **overrides,
    )


@pytest.fixture(scope="module")
async def gateway(backend):
    targets = dict.fromkeys(("batch", "rules", "tracking", "scheduler"), backend.target)
    async with run_gateway(limited(targets, trusted_proxies=["127.0.0.1/32"])) as running:
        yield running


@pytest.fixture
async def http(gateway):
    async with gateway.client() as client:
        yield client


def fresh_ip() -> str:
    """A client address no bucket has seen, as the trusted proxy in front of the gateway says."""
    return f"198.51.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250 + 1}"


def as_client(ip: str, **headers: str) -> dict[str, str]:
    return {"x-forwarded-for": ip, **headers}


def bearer(subject: str, secret: str | None = None) -> str:
    if secret is None:
        return f"Bearer {token('buyer', subject)}"
    return f"Bearer {mint_token(secret, subject=subject, role='buyer')}"


def assert_security_headers(reply: httpx.Response) -> None:
    missing = [name for name in SECURITY_HEADER_NAMES if name not in reply.headers]
    assert missing == [], f"{reply.request.method} {reply.request.url.path} ({reply.status_code}) lacks {missing}"


async def test_a_burst_beyond_the_address_limit_is_429_with_retry_after(backend, http):
    ip = fresh_ip()
    for _ in range(IP_BURST):
        assert (await http.get(OPEN, headers=as_client(ip))).status_code != 429
    arrived = len(backend.received)
    reply = await http.get(OPEN, headers=as_client(ip))
    assert reply.status_code == 429
    retry_after = int(reply.headers["retry-after"])
    body = reply.json()
    assert body["code"] == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    [retry_info] = [d for d in body["details"] if d["@type"].endswith("RetryInfo")]
    assert retry_info["retryDelay"] == f"{retry_after}s" and 1 <= retry_after <= 1 / RATE
    assert len(backend.received) == arrived  # refused at the edge: no service saw it


async def test_each_client_ip_has_its_own_bucket(http):
    crowded, other = fresh_ip(), fresh_ip()
    for _ in range(IP_BURST + 1):
        await http.get(OPEN, headers=as_client(crowded))
    assert (await http.get(OPEN, headers=as_client(crowded))).status_code == 429
    assert (await http.get(OPEN, headers=as_client(other))).status_code == 200


async def test_an_untrusted_caller_cannot_claim_a_fresh_address_for_a_fresh_bucket(backend):
    targets = dict.fromkeys(("batch", "rules", "tracking", "scheduler"), backend.target)
    async with run_gateway(limited(targets, trusted_proxies=[])) as untrusting, untrusting.client() as client:
        statuses = [(await client.get(OPEN, headers=as_client(fresh_ip()))).status_code for _ in range(IP_BURST + 1)]
    assert statuses[:IP_BURST] == [200] * IP_BURST and statuses[IP_BURST] == 429


async def test_each_subject_has_its_own_bucket_whatever_address_it_calls_from(http):
    alice, bob = f"alice-{uuid.uuid4().hex[:8]}", f"bob-{uuid.uuid4().hex[:8]}"
    for _ in range(SUBJECT_BURST):
        assert (await http.get("/v1/posts/p1", headers=as_client(fresh_ip(), authorization=bearer(alice)))).status_code == 200
    refused = await http.get("/v1/posts/p1", headers=as_client(fresh_ip(), authorization=bearer(alice)))
    assert refused.status_code == 429 and "subject" in refused.json()["message"]
    assert (await http.get("/v1/posts/p1", headers=as_client(fresh_ip(), authorization=bearer(bob)))).status_code == 200


async def test_a_forged_token_naming_someone_does_not_drain_their_bucket(http):
    victim = f"victim-{uuid.uuid4().hex[:8]}"
    for _ in range(SUBJECT_BURST + 2):
        forged_token = bearer(victim, "not-the-key-the-gateway-and-services-know")
        forged = await http.get("/v1/posts/p1", headers=as_client(fresh_ip(), authorization=forged_token))
        assert forged.status_code == 401  # the service refuses it; the gateway did not count it for the victim
    assert (await http.get("/v1/posts/p1", headers=as_client(fresh_ip(), authorization=bearer(victim)))).status_code == 200


async def test_a_refusal_carries_cors_headers_for_an_allowed_origin(http):
    ip = fresh_ip()
    for _ in range(IP_BURST):
        await http.get(OPEN, headers=as_client(ip))
    reply = await http.get(OPEN, headers=as_client(ip, origin="https://shop.example"))
    assert reply.status_code == 429
    assert reply.headers["access-control-allow-origin"] == "https://shop.example"


async def test_security_headers_are_on_every_kind_of_answer(backend, http):
    async def broken(request, context):
        await context.abort(grpc.StatusCode.INTERNAL, "database on fire")

    backend.answer("ListPosts", broken)
    admin = {"authorization": f"Bearer {token('admin', f'admin-{uuid.uuid4().hex[:8]}')}"}
    answers = [
        await http.get(OPEN, headers=as_client(fresh_ip())),  # 200, the fast path
        await http.get("/v1/posts", headers=as_client(fresh_ip(), **admin)),  # 500 from the service
        await http.get("/v1/nowhere", headers=as_client(fresh_ip())),  # 404
        await http.delete("/v1/posts", headers=as_client(fresh_ip())),  # 405
        await http.post("/v1/posts", content=b"x" * (MAX_BODY + 1), headers=as_client(fresh_ip(), **admin)),  # 413
        await http.get(OPEN, headers=as_client(fresh_ip(), **{f"x-pad-{n}": "y" for n in range(50)})),  # 431
        await http.get("/console/", headers=as_client(fresh_ip())),  # the console's page
        await http.get("/console/app.css", headers=as_client(fresh_ip())),  # and its files
        await http.get("/openapi.json", headers=as_client(fresh_ip())),
        await http.get("/healthz"),
    ]
    ip = fresh_ip()
    answers += [await http.get(OPEN, headers=as_client(ip)) for _ in range(IP_BURST + 1)]  # ends with a 429
    assert {reply.status_code for reply in answers} >= {200, 404, 405, 413, 429, 431, 500}
    for reply in answers:
        assert_security_headers(reply)
        assert "strict-transport-security" not in reply.headers  # plain HTTP: no HSTS
    assert answers[6].headers["content-security-policy"].startswith("default-src 'self'")


async def test_strict_transport_security_is_sent_over_https(backend, tmp_path):
    tls.make_ca(tmp_path)
    cert, key = tls.make_certificate(tmp_path, "gateway")
    targets = dict.fromkeys(("batch", "rules", "tracking", "scheduler"), backend.target)
    settings = gateway_settings(targets, tls_cert_file=cert, tls_key_file=key)
    trusting_the_ca = ssl.create_default_context(cafile=tmp_path / "ca.pem")
    async with run_gateway(settings) as secure, secure.client(verify=trusting_the_ca) as client:
        reply = await client.get(OPEN)
    assert reply.status_code == 200
    assert reply.headers["strict-transport-security"] == HSTS_HEADER[1].decode()
    assert_security_headers(reply)


async def test_an_oversized_body_is_413_and_reaches_no_service(backend, http):
    admin = {"authorization": f"Bearer {token('admin', f'admin-{uuid.uuid4().hex[:8]}')}"}
    arrived = len(backend.received)
    post = {"title": "t" * MAX_BODY, "url": "https://loom.example/p"}
    declared = await http.post("/v1/posts", json=post, headers=as_client(fresh_ip(), **admin))

    async def chunks():  # no Content-Length: the gateway must count as it reads
        yield b'{"title": "'
        for _ in range(8):
            yield b"t" * 512
        yield b'"}'

    streamed = await http.post("/v1/posts", content=chunks(), headers=as_client(fresh_ip(), **admin))
    assert (declared.status_code, streamed.status_code) == (413, 413)
    assert str(MAX_BODY) in declared.json()["message"]
    assert len(backend.received) == arrived


async def test_too_many_or_too_large_headers_are_431(backend, http):
    arrived = len(backend.received)
    many = await http.get(OPEN, headers=as_client(fresh_ip(), **{f"x-pad-{n}": "y" for n in range(50)}))
    large = await http.get(OPEN, headers=as_client(fresh_ip(), cookie="c" * 5000))
    assert (many.status_code, large.status_code) == (431, 431)
    assert large.json()["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert len(backend.received) == arrived


def test_buckets_of_idle_clients_are_dropped_so_memory_stays_bounded():
    buckets = TokenBuckets(rate=10, burst=5)  # a bucket is full again 0.5 s after its last request
    for n in range(1000):
        assert buckets.take(f"client-{n}", now=100.0) == 0.0
    assert len(buckets) == 1000
    buckets.take("late-comer", now=101.0)
    assert len(buckets) == 1
