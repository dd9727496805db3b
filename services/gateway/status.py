"""gRPC status -> HTTP status and the JSON error body, as grpc-gateway maps them.

The body is a google.rpc.Status in canonical JSON: `{code, message, details}`,
where details carry the server's google.rpc details (BadRequest field
violations, RetryInfo, ResourceInfo...). The message is the server's status
message, which Loom servers never fill with a stack trace or SQL; failures of
the gateway itself say only "internal error".
"""

from __future__ import annotations

import math

import grpc
from google.protobuf import any_pb2, json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2

HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


class HttpError(Exception):
    """A failure to answer with an HTTP status and a google.rpc.Status body."""

    def __init__(self, http_status: int, status: status_pb2.Status, headers: dict[str, str] | None = None) -> None:
        super().__init__(status.message)
        self.http_status, self.status, self.headers = http_status, status, headers or {}

    def body(self) -> dict:
        return status_json(self.status)


def from_rpc_error(error: grpc.aio.AioRpcError) -> HttpError:
    code = error.code()
    status = _attached_status(error) or status_pb2.Status()
    status.code = code.value[0]
    status.message = error.details() or status.message or code.name.lower().replace("_", " ")
    headers = {}
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        headers["retry-after"] = str(retry_after_seconds(status))
    if code == grpc.StatusCode.UNAUTHENTICATED:
        headers["www-authenticate"] = "Bearer"
    return HttpError(HTTP_STATUS.get(code, 500), status, headers)


def gateway_error(
    http_status: int, code: int, message: str, *details, headers: dict[str, str] | None = None
) -> HttpError:
    """An error the gateway itself answers (bad JSON, unknown route, body too large...)."""
    packed = []
    for detail in details:
        any_detail = any_pb2.Any()
        any_detail.Pack(detail)
        packed.append(any_detail)
    return HttpError(http_status, status_pb2.Status(code=code, message=message, details=packed), headers)


def bad_request(field: str, description: str) -> HttpError:
    violation = error_details_pb2.BadRequest.FieldViolation(field=field, description=description)
    message = f"invalid argument: {field}: {description}" if field else f"invalid argument: {description}"
    return gateway_error(400, code_pb2.INVALID_ARGUMENT, message, error_details_pb2.BadRequest(field_violations=[violation]))


def internal_error() -> HttpError:
    return gateway_error(500, code_pb2.INTERNAL, "internal error")


def retry_after_seconds(status: status_pb2.Status) -> int:
    """Whole seconds of the RetryInfo delay, rounded up; 1 when the server gave none."""
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return max(1, math.ceil(info.retry_delay.ToNanoseconds() / 1e9))
    return 1


def status_json(status: status_pb2.Status) -> dict:
    return {"code": status.code, "message": status.message, "details": [_detail_json(d) for d in status.details]}


def _detail_json(detail: any_pb2.Any) -> dict:
    try:
        return json_format.MessageToDict(detail)
    except (TypeError, KeyError, json_format.Error):
        # A detail type this gateway's protos do not know: say what it is, drop the bytes.
        return {"@type": detail.type_url}


def _attached_status(error: grpc.aio.AioRpcError) -> status_pb2.Status | None:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except Exception:  # noqa: BLE001 - a garbled detail must not turn a clean error into a 500
                return None
    return None

