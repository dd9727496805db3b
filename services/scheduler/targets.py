"""A job's target RPC: the allow-list declared in the protos (the
`loom.common.v1.schedulable` method option), payloads checked against the target's
request message, and the call itself with its failure worded for the run log.

The run's logical time (its scheduled time, or a backfill slot's) travels as the
`loom-logical-time` call metadata (RFC 3339), and in the request's own
`logical_time` Timestamp field when its message has one.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

import grpc
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from loom.common.v1 import access_pb2

from libs.clients import ServiceClients
from libs.settings import SERVICE_NAMES
from services.scheduler.domain.errors import Violation

LOGICAL_TIME_METADATA = "loom-logical-time"

# Failures a later attempt may not meet: the target down or overloaded, a deadline,
# a conflict, or an unexplained server error. The target RPCs are idempotent per
# request_id, so repeating one is safe.
TRANSIENT_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,
    }
)


def is_transient(code: grpc.StatusCode | None) -> bool:
    """Whether a failed call is worth another attempt (None: not a gRPC failure)."""
    return code in TRANSIENT_CODES


@dataclass(frozen=True)
class TargetFailure(Exception):
    """A failed call, worded for the job-run log."""

    message: str
    transient: bool

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Target:
    name: str  # "loom.batch.v1.BatchService/Orchestrate"
    service: str  # "batch"
    method: str
    request_type: type[Message]
    schedulable: bool


@cache
def declared_targets() -> dict[str, Target]:
    """Every unary RPC of every Loom service, by full name."""
    found: dict[str, Target] = {}
    for service in SERVICE_NAMES:
        module = importlib.import_module(f"loom.{service}.v1.{service}_pb2")
        for descriptor in module.DESCRIPTOR.services_by_name.values():
            for method in descriptor.methods:
                if method.client_streaming or method.server_streaming:
                    continue
                name = f"{descriptor.full_name}/{method.name}"
                found[name] = Target(
                    name, service, method.name, message_factory.GetMessageClass(method.input_type),
                    method.GetOptions().Extensions[access_pb2.schedulable],
                )
    return found


def schedulable_targets() -> list[Target]:
    return sorted((t for t in declared_targets().values() if t.schedulable), key=lambda t: t.name)


def check_target(name: str, field: str) -> list[Violation]:
    target = declared_targets().get(name)
    if target is None or not target.schedulable:
        allowed = ", ".join(t.name for t in schedulable_targets())
        return [Violation(field, f"{name!r} is not a schedulable Loom RPC; one of: {allowed}")]
    return []


def check_payload(target_name: str, payload: dict[str, Any], field: str) -> list[Violation]:
    """Every field of the payload the target's request message refuses, each named."""
    target = declared_targets().get(target_name)
    if target is None:
        return []
    message_type = target.request_type
    fields = {f.name: f for f in message_type.DESCRIPTOR.fields} | {
        f.json_name: f for f in message_type.DESCRIPTOR.fields
    }
    violations = []
    for key, value in payload.items():
        if _has_nul(key) or _has_nul(value):
            violations.append(Violation(f"{field}.{key}", "NUL characters cannot be stored"))
        elif key in ("request_id", "requestId"):
            violations.append(Violation(f"{field}.{key}", "set by the scheduler (one per firing)"))
        elif key not in fields:
            violations.append(Violation(f"{field}.{key}", f"no such field in {message_type.DESCRIPTOR.full_name}"))
        else:
            try:
                json_format.ParseDict({key: value}, message_type())
            except json_format.ParseError as error:
                expected = _TYPE_NAMES.get(fields[key].type, "a value")
                violations.append(Violation(f"{field}.{key}", f"expected {expected}: {_parse_problem(error)}"))
    return violations


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _parse_problem(error: json_format.ParseError) -> str:
    # ParseError reads "Failed to parse retention_days field: Couldn't parse integer: 'x'."
    text = str(error)
    return text.split(": ", 1)[1] if text.startswith("Failed to parse") and ": " in text else text


def build_request(target: Target, request_id: str, payload: dict[str, Any], logical_time: datetime | None) -> Message:
    request = target.request_type()
    json_format.ParseDict(payload, request)
    request.request_id = request_id  # type: ignore[attr-defined]  # every schedulable request has one
    fields = request.DESCRIPTOR.fields_by_name
    if logical_time is not None and "logical_time" in fields and fields["logical_time"].message_type is not None:
        request.logical_time.FromDatetime(logical_time)  # type: ignore[attr-defined]  # checked in DESCRIPTOR above
    return request


def result_of(response: Message) -> dict[str, Any]:
    """The response's fields (the counts the RPC returned), zeros included."""
    found = json_format.MessageToDict(
        response, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    for field in response.DESCRIPTOR.fields:
        # JSON renders 64-bit integers as strings; the log keeps them as numbers.
        if field.type in _INT64_TYPES and not field.is_repeated and field.name in found:
            found[field.name] = int(found[field.name])
    return found


_TYPE_NAMES = {
    value: name.removeprefix("TYPE_").lower()
    for name, value in vars(FieldDescriptor).items()
    if name.startswith("TYPE_") and isinstance(value, int)
}

_INT64_TYPES = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}


async def call_target(
    clients: ServiceClients,
    target_address: str,
    target_name: str,
    request_id: str,
    payload: dict[str, Any],
    logical_time: datetime | None,
    timeout: float,
) -> dict[str, Any]:
    """Calls the job's RPC once; raises TargetFailure saying what went wrong."""
    target = declared_targets().get(target_name)
    if target is None:
        raise TargetFailure(f"{target_name} is not declared in the Loom protos: nothing to call", False)
    try:
        request = build_request(target, request_id, payload, logical_time)
    except json_format.ParseError as error:
        raise TargetFailure(f"the payload no longer fits {target.request_type.DESCRIPTOR.full_name}: {error}",
                            False) from None
    method = getattr(clients.stub(target.service), target.method)
    metadata = ((LOGICAL_TIME_METADATA, logical_time.isoformat()),) if logical_time is not None else None
    try:
        response = await method(request, timeout=timeout, metadata=metadata)
    except grpc.aio.AioRpcError as error:
        raise TargetFailure(_describe(error, target, target_address), is_transient(error.code())) from None
    return result_of(response)


def _describe(error: grpc.aio.AioRpcError, target: Target, address: str) -> str:
    code = error.code()
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return f"UNIMPLEMENTED: the {target.service} service at {address} does not serve {target.name} yet"
    if code == grpc.StatusCode.UNAVAILABLE:
        return f"UNAVAILABLE: the {target.service} service at {address} cannot be reached: {error.details()}"
    return f"{code.name}: {target.name}: {error.details()}"
