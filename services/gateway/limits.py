"""The sizes the gateway accepts, in one place: request headers (431 beyond) and bodies (413 beyond).

Every request passes `check_headers` before anything else looks at it (the fast path
and Starlette's routes alike); bodies are read only by `read_body`, which stops
reading as soon as the limit is crossed, so an oversized body never reaches a service.
The values are settings (`LOOM_MAX_HEADER_BYTES`, `LOOM_MAX_HEADER_COUNT`,
`LOOM_MAX_BODY_BYTES`). The HTTP parser (httptools) has already held the headers in
memory when the gateway sees them; the load balancer in front should cap them too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from google.rpc import code_pb2
from starlette.types import Receive

from services.gateway.settings import GatewaySettings
from services.gateway.status import HttpError, gateway_error

JSON_TYPE = "application/json"


@dataclass(frozen=True, slots=True)
class Limits:
    header_bytes: int  # names and values of all request headers together
    header_count: int
    body_bytes: int

    @classmethod
    def of(cls, settings: GatewaySettings) -> Limits:
        return cls(settings.max_header_bytes, settings.max_header_count, settings.max_body_bytes)

    def check_headers(self, headers: Sequence[tuple[bytes, bytes]]) -> HttpError | None:
        """431 when the request's headers are too many or too large together, else None."""
        if len(headers) > self.header_count:
            return _headers_too_large(f"more than {self.header_count} request headers")
        size = 0
        for name, value in headers:
            size += len(name) + len(value)
        if size > self.header_bytes:
            return _headers_too_large(f"the request headers exceed {self.header_bytes} bytes")
        return None

    async def read_body(self, receive: Receive, headers: Mapping[str, str]) -> bytes:
        """The JSON body, refused with 415 when it is not JSON and 413 past the limit (read no further)."""
        limit = self.body_bytes
        content_type = headers.get("content-type", JSON_TYPE).split(";", 1)[0].strip().lower()
        if content_type != JSON_TYPE and not content_type.endswith("+json"):
            raise gateway_error(415, code_pb2.INVALID_ARGUMENT, f"send the body as {JSON_TYPE}, not {content_type}")
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise body_too_large(limit)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise gateway_error(499, code_pb2.CANCELLED, "the client closed the request")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise body_too_large(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def body_too_large(limit: int) -> HttpError:
    return gateway_error(413, code_pb2.INVALID_ARGUMENT, f"the request body exceeds {limit} bytes")


def _headers_too_large(message: str) -> HttpError:
    return gateway_error(431, code_pb2.INVALID_ARGUMENT, message)
