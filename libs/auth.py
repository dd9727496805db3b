"""Bearer JWT authentication and the per-method access rules declared in the protos.

A token carries `sub` (who) and `role` (admin, buyer, supplier, service). Each
RPC's `(loom.common.v1.access)` option names the roles it admits; the server
interceptor calls `authorize` with the rule of the method being called. Methods
outside Loom's packages (health, reflection) are open; a Loom method without a
rule is closed to everyone.

Two kinds of token are accepted. HS256 tokens signed with the suite's own key
(`loom token`, service tokens) and, when an identity provider is configured,
RS256/ES256/EdDSA tokens it signed, checked against its JWKS with its issuer and
audience; the IdP's role claim (any dotted path) is mapped to admin, buyer or
supplier. The token header's `alg` only chooses which of the two checks runs;
each check admits its own algorithms alone, so `none` and an HS256 token "signed"
with the IdP's public key fail both.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import jwt
from google.protobuf import descriptor_pool
from loom.common.v1 import access_pb2

from libs.errors import PermissionDenied, Unauthenticated

ROLE_NAMES: dict[int, str] = {
    access_pb2.ROLE_ADMIN: "admin",
    access_pb2.ROLE_BUYER: "buyer",
    access_pb2.ROLE_SUPPLIER: "supplier",
    access_pb2.ROLE_SERVICE: "service",
}
ROLES_BY_NAME = {name: role for role, name in ROLE_NAMES.items()}
ALGORITHM = "HS256"
IDP_ALGORITHMS = ("RS256", "ES256", "EdDSA")
# Roles an identity provider's token may carry; the service role is only ever minted by Loom.
IDP_ROLES = ("admin", "supplier", "buyer")  # highest first: a token naming several gets the highest
LEEWAY_SECONDS = 30
# A service's token names it as `service:<name>`; under mutual TLS its certificate's
# common name must be that same name.
SERVICE_SUBJECT_PREFIX = "service:"
# A process that forwards its own callers' tokens (the gateway) shows its identity here.
FORWARDER_HEADER = "x-loom-forwarder"
FORWARDERS = ("gateway",)


@dataclass(frozen=True)
class Caller:
    """Who is calling: the token's subject and role, or an anonymous visitor."""

    subject: str = ""
    role: int = access_pb2.ROLE_UNSPECIFIED
    # The Loom service a service-role caller is (`service:<name>` in its token).
    service: str = ""
    # The Loom process the call verifiably arrives from (its client certificate or
    # forwarder token): the caller itself, or the gateway forwarding for it.
    via: str = ""

    @property
    def anonymous(self) -> bool:
        return self.role == access_pb2.ROLE_UNSPECIFIED

    @property
    def role_name(self) -> str:
        return ROLE_NAMES.get(self.role, "anonymous")

    def is_(self, *roles: int) -> bool:
        return self.role in roles


ANONYMOUS = Caller()
_current_caller: contextvars.ContextVar[Caller] = contextvars.ContextVar("loom_caller", default=ANONYMOUS)


def current_caller() -> Caller:
    """The caller of the RPC being served (set by the auth interceptor)."""
    return _current_caller.get()


def set_current_caller(caller: Caller) -> contextvars.Token:
    return _current_caller.set(caller)


def mint_token(key: str, *, subject: str, role: str, ttl_seconds: int = 3600, issuer: str = "loom") -> str:
    if role not in ROLES_BY_NAME:
        raise ValueError(f"unknown role {role!r}; choose one of {', '.join(ROLES_BY_NAME)}")
    now = int(time.time())
    claims = {"sub": subject, "role": role, "iss": issuer, "iat": now, "exp": now + ttl_seconds}
    return jwt.encode(claims, key, algorithm=ALGORITHM)


# Tokens already verified, until they expire: a client reuses its token for many calls,
# and decoding and checking one costs more CPU than a whole cheap RPC. Only successes
# are kept; every other check only gets easier to pass as time goes on.
_verified: dict[tuple[str, str, str], tuple[Caller, float]] = {}
VERIFIED_TOKENS_KEPT = 4096


def verify_token(key: str, token: str, *, issuer: str = "loom") -> Caller:
    known = _verified.get((key, issuer, token))
    if known is not None and time.time() < known[1]:
        return known[0]
    try:
        claims = jwt.decode(
            token, key, algorithms=[ALGORITHM], issuer=issuer, options={"require": ["sub", "role", "exp", "iss"]}
        )
    except jwt.ExpiredSignatureError:
        raise Unauthenticated("token expired", reason="TOKEN_EXPIRED") from None
    except jwt.PyJWTError:
        raise Unauthenticated("invalid token", reason="TOKEN_INVALID") from None
    role = ROLES_BY_NAME.get(claims["role"])
    if role is None:
        raise Unauthenticated("token names an unknown role", reason="TOKEN_INVALID")
    caller = Caller(subject=str(claims["sub"]), role=role)
    if len(_verified) >= VERIFIED_TOKENS_KEPT:
        _verified.clear()
    _verified[(key, issuer, token)] = (caller, float(claims["exp"]))
    return caller


def _claim(claims: Mapping, path: str):
    """The claim at a dotted path; a top-level claim whose name has dots (Auth0's
    namespaced `https://example.com/roles`) is matched whole first."""
    if path in claims:
        return claims[path]
    value = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


@dataclass
class IdentityProvider:
    """An OpenID provider's JWKS, issuer and audience, and where its tokens keep the role.

    Keys are cached by `kid`; an unknown `kid` (the provider rotated its keys) fetches
    the set again, at most once per `refresh_interval` so random kids cannot make Loom
    hammer the provider. PyJWKClient blocks, so fetches run in a worker thread.
    """

    jwks_url: str
    issuer: str
    audience: str
    role_claim: str = "role"
    role_map: Mapping[str, str] = field(default_factory=dict)
    refresh_interval: float = 10.0
    _keys: dict[str, jwt.PyJWK] = field(default_factory=dict, init=False)
    _fetched_at: float = field(default=float("-inf"), init=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)

    def __post_init__(self) -> None:
        self._client = jwt.PyJWKClient(self.jwks_url, cache_keys=False, cache_jwk_set=False, timeout=5)

    async def key(self, kid: str) -> jwt.PyJWK:
        found = self._keys.get(kid)
        if found is None:
            async with self._lock:
                if kid not in self._keys and time.monotonic() - self._fetched_at >= self.refresh_interval:
                    self._fetched_at = time.monotonic()
                    try:
                        keys = await asyncio.to_thread(self._client.get_signing_keys)
                    except jwt.PyJWKClientError:
                        raise Unauthenticated("the identity provider's keys are unavailable", reason="TOKEN_INVALID") from None
                    self._keys = {k.key_id: k for k in keys if k.key_id}
            found = self._keys.get(kid)
        if found is None:
            raise Unauthenticated("token signed by an unknown key", reason="TOKEN_INVALID")
        return found

    def role_of(self, claims: Mapping) -> int:
        value = _claim(claims, self.role_claim)
        named = value if isinstance(value, list) else [value]
        mapped = {self.role_map.get(str(v), str(v)) for v in named if v is not None}
        role = next((r for r in IDP_ROLES if r in mapped), None)
        if role is None:
            raise PermissionDenied("the token carries no Loom role", reason="ROLE_NOT_ALLOWED")
        return ROLES_BY_NAME[role]

    async def verify(self, token: str, header: Mapping) -> Caller:
        key = await self.key(str(header.get("kid") or ""))
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[key.algorithm_name] if key.algorithm_name in IDP_ALGORITHMS else [],
                issuer=self.issuer,
                audience=self.audience,
                leeway=LEEWAY_SECONDS,
                options={"require": ["sub", "exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token expired", reason="TOKEN_EXPIRED") from None
        except jwt.PyJWTError:
            raise Unauthenticated("invalid token", reason="TOKEN_INVALID") from None
        return Caller(subject=str(claims["sub"]), role=self.role_of(claims))


class Authenticator:
    """Who a call's `authorization` header names: Loom's own tokens, or the identity provider's."""

    def __init__(self, key: str, *, issuer: str = "loom", provider: IdentityProvider | None = None) -> None:
        self._key, self._issuer, self._provider = key, issuer, provider

    async def caller(self, authorization: str | None) -> Caller:
        if not authorization:
            return ANONYMOUS
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("authorization must be 'Bearer <token>'", reason="TOKEN_INVALID")
        known = _verified.get((self._key, self._issuer, token))
        if known is not None and time.time() < known[1]:
            return known[0]
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("invalid token", reason="TOKEN_INVALID") from None
        if header.get("alg") in IDP_ALGORITHMS and self._provider is not None:
            return await self._provider.verify(token, header)
        return verify_token(self._key, token, issuer=self._issuer)

    async def identify(self, metadata: Mapping[str, str], peer: str = "") -> Caller:
        """The caller, with the Loom service it comes through; `peer` is the common name
        of its verified client certificate ('' without mutual TLS)."""
        caller = await self.caller(metadata.get("authorization"))
        service = _service_named(caller.subject, caller.role)
        if peer and service and service != peer and peer not in FORWARDERS:
            raise Unauthenticated("the service token names another service than the certificate", reason="TOKEN_INVALID")
        via = peer
        if not via and metadata.get(FORWARDER_HEADER):
            forwarder = await self.caller(metadata[FORWARDER_HEADER])
            via = _service_named(forwarder.subject, forwarder.role)
            if not via:
                raise Unauthenticated("the forwarder token is not a service's", reason="TOKEN_INVALID")
        if not (service or via):
            return caller
        return Caller(caller.subject, caller.role, service, via)


def _service_named(subject: str, role: int) -> str:
    if role != access_pb2.ROLE_SERVICE or not subject.startswith(SERVICE_SUBJECT_PREFIX):
        return ""
    return subject.removeprefix(SERVICE_SUBJECT_PREFIX)


def identity_provider(settings) -> IdentityProvider | None:
    """The identity provider the settings configure, if any."""
    if not settings.jwt_jwks_url:
        return None
    if not settings.jwt_idp_issuer or not settings.jwt_audience:
        raise ValueError("LOOM_JWT_JWKS_URL needs LOOM_JWT_IDP_ISSUER and LOOM_JWT_AUDIENCE as well")
    return IdentityProvider(
        settings.jwt_jwks_url,
        settings.jwt_idp_issuer,
        settings.jwt_audience,
        role_claim=settings.jwt_role_claim,
        role_map=settings.jwt_role_map,
    )


@functools.cache
def access_rule(method_path: str) -> access_pb2.AccessRule | None:
    """The access rule of '/package.Service/Method'; None for methods Loom does not own."""
    service_name, _, method_name = method_path.lstrip("/").partition("/")
    if not service_name.startswith("loom."):
        return None
    try:
        service = descriptor_pool.Default().FindServiceByName(service_name)
    except KeyError:
        return access_pb2.AccessRule()
    method = service.methods_by_name.get(method_name)
    if method is None or not method.GetOptions().HasExtension(access_pb2.access):
        return access_pb2.AccessRule()
    return method.GetOptions().Extensions[access_pb2.access]


def authorize(caller: Caller, rule: access_pb2.AccessRule | None) -> None:
    if rule is None:
        return
    if caller.anonymous:
        if rule.allow_anonymous:
            return
        raise Unauthenticated("this method needs a bearer token", reason="TOKEN_MISSING")
    if caller.role not in rule.roles:
        raise PermissionDenied(f"role {caller.role_name} may not call this method", reason="ROLE_NOT_ALLOWED")
    if caller.role == access_pb2.ROLE_SERVICE and rule.services and caller.service not in rule.services:
        raise PermissionDenied(
            f"service {caller.service or caller.subject!r} may not call this method", reason="SERVICE_NOT_ALLOWED"
        )


def require_self_or(caller: Caller, subject: str, *privileged_roles: int) -> None:
    """Ownership check: a caller may act on its own data, privileged roles on anyone's."""
    if caller.role in privileged_roles or caller.subject == subject:
        return
    raise PermissionDenied("callers may only act on their own data", reason="NOT_OWNER")
