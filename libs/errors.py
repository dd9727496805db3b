"""Domain errors as gRPC statuses: the one table, and the client-side readers.

The errors themselves are plain exceptions in `libs.domain_errors` (re-exported here,
so `from libs.errors import InvalidArgument` keeps working). This module decides, in
one table keyed by exception class (looked up along the MRO, like Starlette's
exception handlers), the status code and the google.rpc details (BadRequest field
violations, ResourceInfo, PreconditionFailure, RetryInfo, ErrorInfo) each becomes.
The server interceptor turns a raised DomainError into `grpc_status_of(error)`;
clients read the details back with `status_details` and friends. Anything that is not
a DomainError becomes INTERNAL with no message from the exception (the interceptor).

A service registers its own error kinds with `register_status` (see
`libs.domain_errors` for when a subclass is enough).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from libs.domain_errors import (
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Violations,
)

__all__ = [
    "AlreadyExists", "DomainError", "FailedPrecondition", "FieldViolation", "InvalidArgument", "NotFound",
    "PermissionDenied", "ResourceExhausted", "Unauthenticated", "Unavailable", "Violations",
    "register_status", "status_code_of", "status_of", "grpc_status_of",
    "status_details", "field_violations", "retry_delay_seconds",
]

ERROR_DOMAIN = "loom"
E = TypeVar("E", bound=DomainError)


@dataclass(frozen=True)
class StatusMapping:
    code: grpc.StatusCode
    details: Callable[[Any], list[Message]]  # the kind's own details; ErrorInfo is added for every kind


STATUS_TABLE: dict[type[DomainError], StatusMapping] = {}


def register_status(
    error_class: type[E], code: grpc.StatusCode, details: Callable[[E], list[Message]] | None = None
) -> None:
    """error_class (and its subclasses without an entry of their own) become `code` with `details(error)`."""
    STATUS_TABLE[error_class] = StatusMapping(code, details or (lambda _: []))


def _mapping(error: DomainError) -> StatusMapping:
    for cls in type(error).__mro__:
        mapping = STATUS_TABLE.get(cls)
        if mapping is not None:
            return mapping
    raise AssertionError("DomainError is always registered")  # pragma: no cover


def status_code_of(error: DomainError) -> grpc.StatusCode:
    return _mapping(error).code


def status_of(error: DomainError) -> status_pb2.Status:
    """The google.rpc.Status a client receives for error: code, message, details."""
    mapping = _mapping(error)
    details = mapping.details(error)
    if error.reason:
        details.append(error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN))
    return status_pb2.Status(code=mapping.code.value[0], message=error.message, details=[_pack(d) for d in details])


def grpc_status_of(error: DomainError) -> grpc.Status:
    return rpc_status.to_status(status_of(error))


def _pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _bad_request(error: InvalidArgument) -> list[Message]:
    violations = [
        error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description) for v in error.violations
    ]
    return [error_details_pb2.BadRequest(field_violations=violations)]


def _resource_info(error: NotFound) -> list[Message]:
    return [error_details_pb2.ResourceInfo(resource_type=error.resource_type, resource_name=error.name)]


def _precondition_failure(error: FailedPrecondition) -> list[Message]:
    violation = error_details_pb2.PreconditionFailure.Violation(
        type=error.reason or "STATE", subject=error.subject, description=error.message
    )
    return [error_details_pb2.PreconditionFailure(violations=[violation])]


def _retry_info(error: ResourceExhausted) -> list[Message]:
    delay = duration_pb2.Duration()
    delay.FromMilliseconds(max(0, round(error.retry_after_seconds * 1000)))
    return [error_details_pb2.RetryInfo(retry_delay=delay)]


register_status(DomainError, grpc.StatusCode.UNKNOWN)
register_status(InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT, _bad_request)
register_status(NotFound, grpc.StatusCode.NOT_FOUND, _resource_info)
register_status(FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION, _precondition_failure)
register_status(AlreadyExists, grpc.StatusCode.ALREADY_EXISTS)
register_status(ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED, _retry_info)
register_status(Unauthenticated, grpc.StatusCode.UNAUTHENTICATED)
register_status(PermissionDenied, grpc.StatusCode.PERMISSION_DENIED)
register_status(Unavailable, grpc.StatusCode.UNAVAILABLE)


# ---------------------------------------------------------------- reading them back (clients, tests)


def status_details(error: grpc.aio.AioRpcError | grpc.RpcError) -> status_pb2.Status | None:
    """The google.rpc.Status a server attached to a failed call, if any."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    return None


def field_violations(error: grpc.aio.AioRpcError | grpc.RpcError) -> dict[str, str]:
    """{field: description} of the BadRequest detail of a failed call."""
    status = status_details(error)
    found: dict[str, str] = {}
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            found.update({v.field: v.description for v in bad_request.field_violations})
    return found


def retry_delay_seconds(error: grpc.aio.AioRpcError | grpc.RpcError) -> float | None:
    status = status_details(error)
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.ToMilliseconds() / 1000
    return None
