"""The access matrix, generated from the protos: every Loom RPC called by every role, by an
anonymous caller and by service identities, over real gRPC servers. Each call must be let
through or refused exactly as the method's `(loom.common.v1.access)` option declares.

"Let through" is judged by the refusal the auth check gives (ErrorInfo reason): the empty
request may well fail afterwards (bad input, not found, not the owner), which is fine.
"""

from __future__ import annotations

import asyncio
import re

import grpc
import pytest
from google.protobuf import descriptor_pool, symbol_database
from google.rpc import error_details_pb2
from loom.common.v1 import access_pb2

from libs.auth import ROLE_NAMES, access_rule
from libs.clients import open_channel
from libs.errors import status_details
from libs.scratch_db import create_database, drop_database, server_url
from libs.settings import SERVICE_NAMES
from services.gateway.routes import build_table
from tests.gateway.support import gateway_settings, run_gateway
from tests.support import auth, serve

ACCESS_REFUSALS = {"TOKEN_MISSING", "ROLE_NOT_ALLOWED", "SERVICE_NOT_ALLOWED"}
IDENTITIES = (
    "anonymous",
    "admin",
    "buyer",
    "supplier",
    *(f"service:{name}" for name in (*SERVICE_NAMES, "gateway")),
)
# An admitted stream waits for news: its deadline passing is what admission looks like.
STREAM_SECONDS = 3.0
# A unary call always answers; its deadline only guards against a hang (the suite may share
# the machine with heavy work, so it is generous).
UNARY_SECONDS = 30.0
# Hundreds of calls at once on a loaded 2-core machine would let a refusal take longer than
# a stream's deadline; a bounded number in flight keeps each answer prompt.
IN_FLIGHT = 16


def loom_methods() -> list[tuple[str, str, object]]:
    """(service, '/pkg.Service/Method', method descriptor) for every RPC of every Loom service."""
    pool = descriptor_pool.Default()
    found = []
    for name in SERVICE_NAMES:
        service = pool.FindServiceByName(f"loom.{name}.v1.{name.capitalize()}Service")
        found += [(name, f"/{service.full_name}/{m.name}", m) for m in service.methods]
    return found


def expected(rule: access_pb2.AccessRule, identity: str) -> str:
    if identity == "anonymous":
        return "allowed" if rule.allow_anonymous else "UNAUTHENTICATED"
    role = access_pb2.ROLE_SERVICE if identity.startswith("service:") else {v: k for k, v in ROLE_NAMES.items()}[identity]
    if role not in rule.roles:
        return "PERMISSION_DENIED"
    if role == access_pb2.ROLE_SERVICE and rule.services and identity.removeprefix("service:") not in rule.services:
        return "PERMISSION_DENIED"
    return "allowed"


def metadata_of(identity: str):
    if identity == "anonymous":
        return ()
    return auth("service", identity) if identity.startswith("service:") else auth(identity)


def refusal_reason(error: grpc.aio.AioRpcError) -> str | None:
    status = status_details(error)
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return None


async def outcome(channel: grpc.aio.Channel, path: str, method, identity: str) -> str:
    request_class = symbol_database.Default().GetSymbol(method.input_type.full_name)
    response_class = symbol_database.Default().GetSymbol(method.output_type.full_name)
    kind = channel.unary_stream if method.server_streaming else channel.unary_unary
    call = kind(path, request_serializer=request_class.SerializeToString, response_deserializer=response_class.FromString)
    try:
        if method.server_streaming:
            stream = call(request_class(), metadata=metadata_of(identity), timeout=STREAM_SECONDS)
            await stream.read()  # a refusal comes before any message
            stream.cancel()
        else:
            await call(request_class(), metadata=metadata_of(identity), timeout=UNARY_SECONDS)
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            return "allowed" if method.server_streaming else "DEADLINE_EXCEEDED"
        if refusal_reason(error) in ACCESS_REFUSALS:
            return error.code().name
    return "allowed"


@pytest.fixture(scope="module")
async def targets():
    admin_url = server_url()
    url = create_database(admin_url, prefix="loom_access")  # calls with empty requests change things
    try:
        async with (
            serve("batch", url, outbox_dispatch=False) as batch,
            serve("rules", url) as rules,
            serve("tracking", url) as tracking,
            serve("scheduler", url) as scheduler,
        ):
            yield {"batch": batch.target, "rules": rules.target, "tracking": tracking.target, "scheduler": scheduler.target}
    finally:
        drop_database(admin_url, url)


async def test_every_rpc_admits_exactly_the_callers_its_access_option_declares(targets):
    channels = {name: open_channel(target) for name, target in targets.items()}
    try:
        cases = [(s, p, m, who) for s, p, m in loom_methods() for who in IDENTITIES]
        in_flight = asyncio.Semaphore(IN_FLIGHT)

        async def bounded(service, path, method, who) -> str:
            async with in_flight:
                return await outcome(channels[service], path, method, who)

        seen = await asyncio.gather(*(bounded(*case) for case in cases))
    finally:
        for channel in channels.values():
            await channel.close()
    mismatches = [
        f"{path} as {who}: got {got}, declared {expected(access_rule(path), who)}"
        for (_, path, _, who), got in zip(cases, seen, strict=True)
        if got != expected(access_rule(path), who)
    ]
    assert len(cases) >= 40 * len(IDENTITIES)
    assert mismatches == []


HTTP_REFUSALS = {401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED"}
_VARIABLE = re.compile(r"\{[^}=]+(?:=([^}]+))?\}")


def concrete_path(template: str) -> str:
    """A path the template matches: each variable filled with `x` segments."""
    return _VARIABLE.sub(lambda m: (m.group(1) or "x").replace("**", "x").replace("*", "x"), template)


async def http_outcome(client, binding, identity: str) -> str:
    headers = dict(metadata_of(identity))
    path = concrete_path(binding.template.template)
    reply = await client.request(binding.http_method, path, headers=headers, json={} if binding.body else None)
    if reply.status_code == 504:
        return "DEADLINE_EXCEEDED"  # no evidence either way: reported, never taken for admission
    if reply.status_code in HTTP_REFUSALS and any(reason in reply.text for reason in ACCESS_REFUSALS):
        return HTTP_REFUSALS[reply.status_code]
    return "allowed"


async def test_every_route_of_the_gateway_admits_exactly_the_declared_callers(targets):
    table = build_table()
    async with run_gateway(gateway_settings(targets, default_deadline_seconds=UNARY_SECONDS)) as gateway:
        async with gateway.client(timeout=UNARY_SECONDS + 5) as client:
            cases = []
            for binding in table.bindings:
                matched = table.match(binding.http_method, concrete_path(binding.template.template))
                if matched is not None and matched[0].rpc.path == binding.rpc.path:
                    # Event streams are covered over gRPC above; over HTTP they would hold a connection each.
                    cases += [(binding, who) for who in IDENTITIES if not binding.rpc.server_streaming]
            gate = asyncio.Semaphore(IN_FLIGHT)  # within httpx's connection pool too

            async def bounded(binding, who):
                async with gate:
                    return await http_outcome(client, binding, who)

            seen = await asyncio.gather(*(bounded(binding, who) for binding, who in cases))
    mismatches = [
        f"{binding.http_method} {binding.template.template} as {who}: got {got}, "
        f"declared {expected(binding.rpc.access, who)}"
        for (binding, who), got in zip(cases, seen, strict=True)
        if got != expected(binding.rpc.access, who)
    ]
    assert len({binding.rpc.path for binding, _ in cases}) >= 40
    assert mismatches == []
