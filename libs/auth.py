"""Bearer JWT authentication and the per-method access rules declared in the protos.

A token carries `sub` (who) and `role` (admin, buyer, supplier, service). Each
RPC's `(loom.common.v1.access)` option names the roles it admits; the server
interceptor calls `authorize` with the rule of the method being called. Methods
outside Loom's packages (health, reflection) are open; a Loom method without a
rule is closed to everyone.
"""

from __future__ import annotations

import contextvars
import functools
import time
from dataclasses import dataclass

import jwt
from google.protobuf import descriptor_pool
from loom.common.v1 import access_pb2

from libs.errors import PermissionDenied, Unauthenticated

ROLE_NAMES = {
    access_pb2.ROLE_ADMIN: "admin",
    access_pb2.ROLE_BUYER: "buyer",
    access_pb2.ROLE_SUPPLIER: "supplier",
    access_pb2.ROLE_SERVICE: "service",
}
ROLES_BY_NAME = {name: role for role, name in ROLE_NAMES.items()}
ALGORITHM = "HS256"


@dataclass(frozen=True)
class Caller:
    """Who is calling: the token's subject and role, or an anonymous visitor."""

    subject: str = ""
    role: int = access_pb2.ROLE_UNSPECIFIED

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


def caller_from_metadata(key: str, authorization: str | None, *, issuer: str = "loom") -> Caller:
    """The caller an `authorization` header names; anonymous when there is none."""
    if not authorization:
        return ANONYMOUS
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("authorization must be 'Bearer <token>'", reason="TOKEN_INVALID")
    return verify_token(key, token.strip(), issuer=issuer)


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


def require_self_or(caller: Caller, subject: str, *privileged_roles: int) -> None:
    """Ownership check: a caller may act on its own data, privileged roles on anyone's."""
    if caller.role in privileged_roles or caller.subject == subject:
        return
    raise PermissionDenied("callers may only act on their own data", reason="NOT_OWNER")
