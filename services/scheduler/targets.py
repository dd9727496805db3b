"""Calling a job's target RPC: building its request from the run's parameters, and
turning the answer (or the failure) into what the job-run log records."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from libs.clients import ServiceClients
from libs.errors import InvalidArgument
from services.scheduler.domain import JobDefinition, is_transient

# Parameters of the scheduler's own housekeeping job (it has no request message).
LOCAL_PARAMS = {"retention_days"}


@dataclass(frozen=True)
class TargetFailure(Exception):
    """A failed call, worded for the job-run log."""

    message: str
    transient: bool

    def __str__(self) -> str:
        return self.message


def request_class(job: JobDefinition) -> type[Message] | None:
    """The target's request message type; None when its proto does not declare the RPC."""
    module = importlib.import_module(f"loom.{job.service}.v1.{job.service}_pb2")
    service = module.DESCRIPTOR.services_by_name.get(f"{job.service.capitalize()}Service")
    if service is None or job.method not in service.methods_by_name:
        return None
    return getattr(module, service.methods_by_name[job.method].input_type.name)


def validate_params(job: JobDefinition, params: dict[str, Any]) -> None:
    """Refuses parameters the target cannot take, before any run is recorded."""
    if "request_id" in params:
        raise InvalidArgument.field("params.request_id", "set by the scheduler (one per firing)")
    if job.service is None:
        unknown = set(params) - LOCAL_PARAMS
        if unknown:
            raise InvalidArgument.field("params", f"unknown: {', '.join(sorted(unknown))}; allowed: retention_days")
        days = params.get("retention_days", 1)
        if not isinstance(days, int | float) or days != int(days) or days < 1:
            raise InvalidArgument.field("params.retention_days", "a whole number of days, at least 1")
        return
    message_type = request_class(job)
    if message_type is not None:
        build_request(message_type, "validation", params)


def build_request(message_type: type[Message], request_id: str, params: dict[str, Any]) -> Message:
    request = message_type()
    try:
        json_format.ParseDict(params, request)
    except json_format.ParseError as error:
        raise InvalidArgument.field("params", f"not accepted by {message_type.DESCRIPTOR.full_name}: {error}") from None
    request.request_id = request_id  # type: ignore[attr-defined]
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
    job: JobDefinition,
    request_id: str,
    params: dict[str, Any],
    timeout: float,
) -> dict[str, Any]:
    """Calls the job's RPC once; raises TargetFailure saying what went wrong."""
    message_type = request_class(job)
    if message_type is None:
        raise TargetFailure(f"{job.target} is not declared in loom.{job.service}.v1 yet: nothing to call", False)
    request = build_request(message_type, request_id, params)
    method = getattr(clients.stub(job.service), job.method)
    try:
        response = await method(request, timeout=timeout)
    except grpc.aio.AioRpcError as error:
        raise TargetFailure(_describe(error, job, target_address), is_transient(error.code())) from None
    return result_of(response)


def _describe(error: grpc.aio.AioRpcError, job: JobDefinition, address: str) -> str:
    code = error.code()
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return f"UNIMPLEMENTED: the {job.service} service at {address} does not serve {job.target} yet"
    if code == grpc.StatusCode.UNAVAILABLE:
        return f"UNAVAILABLE: the {job.service} service at {address} cannot be reached: {error.details()}"
    return f"{code.name}: {job.target}: {error.details()}"
