"""Tokens from an identity provider, checked against its JWKS served by a real HTTP server."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from loom.batch.v1 import batch_pb2

from libs.auth import Authenticator, IdentityProvider
from libs.errors import PermissionDenied, Unauthenticated
from tests.support import TEST_JWT_SECRET, serve, stub_for

ISSUER, AUDIENCE = "https://idp.example/realms/loom", "loom-api"
KEYS = {
    "rsa-1": ("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048), RSAAlgorithm),
    "ec-1": ("ES256", ec.generate_private_key(ec.SECP256R1()), ECAlgorithm),
    "ed-1": ("EdDSA", ed25519.Ed25519PrivateKey.generate(), OKPAlgorithm),
}


class Jwks:
    """A JWKS endpoint on loopback that counts its fetches; keys can be added (rotation)."""

    def __init__(self) -> None:
        self.published = ["rsa-1", "ec-1", "ed-1"]
        self.fetches = 0
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                jwks.fetches += 1
                body = json.dumps({"keys": [jwks.jwk(kid) for kid in jwks.published]}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def jwk(kid: str) -> dict:
        alg, key, algorithm = KEYS[kid]
        return {**algorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid, "alg": alg, "use": "sig"}


@pytest.fixture(scope="module")
def jwks():
    served = Jwks()
    yield served
    served.server.shutdown()


def idp_token(kid: str = "rsa-1", **claims) -> str:
    alg, key, _ = KEYS[kid]
    now = int(time.time())
    body = {"sub": "user-7", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300, **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm=alg, headers={"kid": kid})


def authenticator(jwks: Jwks, **provider) -> Authenticator:
    return Authenticator(TEST_JWT_SECRET, provider=IdentityProvider(jwks.url, ISSUER, AUDIENCE, **provider))


@pytest.mark.parametrize("kid", sorted(KEYS))
async def test_tokens_signed_with_each_supported_algorithm_are_accepted(jwks, kid):
    caller = await authenticator(jwks).caller(f"Bearer {idp_token(kid, role='buyer')}")
    assert (caller.subject, caller.role_name) == ("user-7", "buyer")


@pytest.mark.parametrize(
    ("path", "claims", "role_map", "role"),
    [
        ("app_metadata.role", {"app_metadata": {"role": "supplier"}}, {}, "supplier"),  # Supabase
        (
            "realm_access.roles",  # Keycloak: a list; the highest Loom role wins
            {"realm_access": {"roles": ["offline_access", "loom-buyer", "loom-admin"]}},
            {"loom-admin": "admin", "loom-buyer": "buyer"},
            "admin",
        ),
        ("https://loom.example/role", {"https://loom.example/role": "buyer"}, {}, "buyer"),  # Auth0 namespaced
    ],
)
async def test_the_role_is_read_from_the_configured_claim_path_and_mapped(jwks, path, claims, role_map, role):
    auth = authenticator(jwks, role_claim=path, role_map=role_map)
    caller = await auth.caller(f"Bearer {idp_token(**claims)}")
    assert caller.role_name == role


async def test_a_token_without_a_loom_role_is_denied(jwks):
    with pytest.raises(PermissionDenied):
        await authenticator(jwks).caller(f"Bearer {idp_token(role='authenticated')}")


async def test_an_identity_provider_cannot_grant_the_service_role(jwks):
    with pytest.raises(PermissionDenied):
        await authenticator(jwks).caller(f"Bearer {idp_token(role='service')}")


def _unsigned(claims: dict) -> str:
    return jwt.encode(claims, None, algorithm="none")


def _confused() -> str:
    """HS256 'signed' with the RSA public key, the classic algorithm-confusion forgery."""
    public = KEYS["rsa-1"][1].public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    now = int(time.time())
    claims = {"sub": "eve", "role": "admin", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 300}
    # Built by hand: PyJWT refuses to sign HS256 with a PEM public key.
    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    signing_input = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode()) + b"." + b64(
        json.dumps(claims).encode()
    )
    return (signing_input + b"." + b64(hmac.new(public, signing_input, hashlib.sha256).digest())).decode()


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: _unsigned({"sub": "eve", "role": "admin", "iss": ISSUER, "aud": AUDIENCE,
                                        "exp": int(time.time()) + 300}), id="alg-none"),
        pytest.param(_confused, id="hs256-signed-with-the-public-key"),
        pytest.param(lambda: idp_token(role="admin", iss="https://evil.example"), id="wrong-issuer"),
        pytest.param(lambda: idp_token(role="admin", aud="another-api"), id="wrong-audience"),
        pytest.param(lambda: idp_token(role="admin", aud=None), id="no-audience"),
        pytest.param(lambda: idp_token(role="admin", exp=int(time.time()) - 120), id="expired"),
        pytest.param(lambda: idp_token(role="admin", nbf=int(time.time()) + 120), id="not-yet-valid"),
        pytest.param(lambda: idp_token("ec-1", role="admin")[:-6] + "AAAAAA", id="bad-signature"),
    ],
)
async def test_forged_or_misaddressed_tokens_are_unauthenticated(jwks, make):
    with pytest.raises(Unauthenticated):
        await authenticator(jwks).caller(f"Bearer {make()}")


async def test_clock_skew_within_the_leeway_is_tolerated(jwks):
    caller = await authenticator(jwks).caller(f"Bearer {idp_token(role='buyer', nbf=int(time.time()) + 10)}")
    assert caller.role_name == "buyer"


async def test_keys_are_fetched_once_and_again_only_for_an_unknown_kid(jwks):
    auth = authenticator(jwks, refresh_interval=0)
    before = jwks.fetches
    for _ in range(5):
        await auth.caller(f"Bearer {idp_token('ec-1', role='buyer', jti=str(time.monotonic_ns()))}")
    assert jwks.fetches == before + 1

    KEYS["rsa-2"] = ("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048), RSAAlgorithm)
    jwks.published.append("rsa-2")  # the provider rotates in a new key
    caller = await auth.caller(f"Bearer {idp_token('rsa-2', role='supplier')}")
    assert caller.role_name == "supplier"
    assert jwks.fetches == before + 2


async def test_unknown_kids_do_not_refetch_within_the_refresh_interval(jwks):
    auth = authenticator(jwks, refresh_interval=60)
    await auth.caller(f"Bearer {idp_token('ed-1', role='buyer')}")
    before = jwks.fetches
    for attempt in range(3):
        forged = jwt.encode({"sub": "x"}, KEYS["rsa-1"][1], algorithm="RS256", headers={"kid": f"random-{attempt}"})
        with pytest.raises(Unauthenticated):
            await auth.caller(f"Bearer {forged}")
    assert jwks.fetches == before


async def test_a_server_configured_for_the_provider_admits_its_tokens_and_still_loom_tokens(database_url, jwks):
    settings = {
        "jwt_jwks_url": jwks.url,
        "jwt_idp_issuer": ISSUER,
        "jwt_audience": AUDIENCE,
        "jwt_role_claim": "app_metadata.role",
    }
    async with serve("batch", database_url, **settings) as running, stub_for("batch", running.target) as stub:
        admin = idp_token("ec-1", app_metadata={"role": "admin"})
        reply = await stub.ListBatches(batch_pb2.ListBatchesRequest(), metadata=(("authorization", f"Bearer {admin}"),))
        assert reply is not None
        buyer = idp_token("ed-1", app_metadata={"role": "buyer"})
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await stub.ListBatches(batch_pb2.ListBatchesRequest(), metadata=(("authorization", f"Bearer {buyer}"),))
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
