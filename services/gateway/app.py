"""The gateway's ASGI application: HTTP/JSON in, gRPC to the Loom services, JSON out.

Every route comes from the route table built from the protos' `google.api.http`
annotations (services/gateway/routes.py); this module only does what is the
same for all of them: read and bound the body, forward identity, request id,
client IP and deadline, call, and write JSON, an error, or Server-Sent Events.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import grpc
import orjson
import structlog
from google.rpc import code_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import Counter, Histogram
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from libs.clients import forwarding_channel
from libs.interceptor import REQUEST_ID_HEADER
from libs.settings import SERVICE_NAMES
from services.gateway import forwarding
from services.gateway.console import console_routes
from services.gateway.limits import Limits
from services.gateway.openapi import openapi_document
from services.gateway.protections import CLIENT_IP_KEY, Protections
from services.gateway.routes import Binding, RouteTable, Rpc, build_table
from services.gateway.settings import GatewaySettings
from services.gateway.status import HttpError, bad_request, from_rpc_error, gateway_error, internal_error
from services.gateway.streams import ResubscribingStream
from services.gateway.transcode import FieldError, build_request, fill_user_agent, response_payload

HEALTH_TIMEOUT_SECONDS = 2.0
# How long a server-streaming call may take to send its first message before the
# gateway commits to 200 and an event stream; an error within it gets its real status.
FIRST_EVENT_GRACE_SECONDS = 0.5
JSON_TYPE = "application/json"
JSON_TYPE_BYTES = JSON_TYPE.encode()
REQUEST_ID_HEADER_BYTES = REQUEST_ID_HEADER.encode()
REFUSAL_KEY = "loom.refusal"

log = structlog.get_logger("loom.gateway")
HANDLED = Counter(
    "loom_gateway_requests_total", "HTTP requests answered, by route template and status.", ["method", "route", "status"]
)
LATENCY = Histogram(
    "loom_gateway_request_seconds",
    "Time from reading a request to its response (streams: to the first event).",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class Backends:
    """One channel per Loom service and one cached callable per method."""

    def __init__(self, settings: GatewaySettings) -> None:
        self._settings = settings
        self.channels: dict[str, grpc.aio.Channel] = {}
        self._callables: dict[str, grpc.aio.UnaryUnaryMultiCallable | grpc.aio.UnaryStreamMultiCallable] = {}

    def open(self) -> None:
        # grpc.aio channels belong to the event loop they are made in: uvicorn's, so in lifespan.
        self.channels = {name: forwarding_channel(self._settings, name) for name in SERVICE_NAMES}

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()
        self._callables.clear()

    def callable_for(self, rpc: Rpc):
        found = self._callables.get(rpc.path)
        if found is None:
            channel = self.channels[rpc.backend]
            make = channel.unary_stream if rpc.server_streaming else channel.unary_unary
            found = make(
                rpc.path,
                request_serializer=rpc.request_class.SerializeToString,
                response_deserializer=rpc.response_class.FromString,
                # As generated stubs do: the channel registers the method once instead of per call.
                _registered_method=True,
            )
            self._callables[rpc.path] = found
        return found


@dataclass(slots=True)
class JsonReply:
    """A complete JSON answer, sent as two ASGI messages (no Starlette Response on the hot path)."""

    status_code: int
    body: bytes
    headers: list[tuple[bytes, bytes]]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


def json_reply(payload: dict, request_id: str, status: int = 200, headers: dict[str, str] | None = None) -> JsonReply:
    body = orjson.dumps(payload)
    raw_headers = [
        (b"content-length", str(len(body)).encode()),
        (b"content-type", JSON_TYPE_BYTES),
        (REQUEST_ID_HEADER_BYTES, request_id.encode()),
    ]
    if headers:
        raw_headers += [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
    return JsonReply(status, body, raw_headers)


def error_reply(error: HttpError, request_id: str) -> JsonReply:
    return json_reply(error.body(), request_id, error.http_status, error.headers)


def header_dict(scope: Scope) -> dict[str, str]:
    """The request headers by lower-case name, the first of repeated ones (as Starlette's `Headers.get`)."""
    headers: dict[str, str] = {}
    for name, value in scope["headers"]:
        key = name.decode("latin-1")
        if key not in headers:
            headers[key] = value.decode("latin-1")
    return headers


def raw_path(scope: Scope) -> str:
    return (scope.get("raw_path") or scope["path"].encode()).decode("latin-1").split("?", 1)[0]


class Transcoder:
    """The one endpoint behind every annotated RPC, as a plain ASGI app."""

    def __init__(self, settings: GatewaySettings, table: RouteTable, backends: Backends) -> None:
        self._settings = settings
        self._table = table
        self._backends = backends
        self._limits = Limits.of(settings)
        self._log = log.bind()  # resolved once: the lazy proxy re-binds on every call otherwise
        self._metrics: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.serve(scope, receive, send, header_dict(scope), None)

    async def serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: dict[str, str],
        found: tuple[Binding, dict[str, str]] | None,
    ) -> None:
        """Answers one request; `found` is the route when the caller has matched it already."""
        started = time.perf_counter()
        request_id = forwarding.request_id(headers)
        method = scope["method"]
        route = "-"
        try:
            binding, variables = found or self._route(method, scope)
            route = binding.template.template
            response = await self._handle(scope, receive, headers, binding, variables, request_id)
        except FieldError as error:
            response = error_reply(bad_request(error.field, error.description), request_id)
        except HttpError as error:
            response = error_reply(error, request_id)
        except grpc.aio.AioRpcError as error:
            response = error_reply(from_rpc_error(error), request_id)
        except Exception:  # noqa: BLE001 - a gateway bug is a bare 500, never a traceback to the client
            self._log.exception("gateway failure", request_id=request_id)
            response = error_reply(internal_error(), request_id)
        elapsed = time.perf_counter() - started
        self._observe(method, route, response.status_code, elapsed)
        self._log.info(
            "http",
            request_id=request_id,
            method=method,
            route=route,
            status=response.status_code,
            duration_ms=round(elapsed * 1000, 3),
        )
        await response(scope, receive, send)

    def _observe(self, method: str, route: str, status: int, elapsed: float) -> None:
        key = (method, route, status)
        children = self._metrics.get(key)
        if children is None:  # few distinct keys: HTTP methods are a fixed set, routes come from the protos
            children = self._metrics[key] = (HANDLED.labels(method, route, str(status)), LATENCY.labels(route))
        children[0].inc()
        children[1].observe(elapsed)

    def _route(self, method: str, scope: Scope) -> tuple[Binding, dict[str, str]]:
        path = raw_path(scope)
        found = self._table.match(method, path)
        if found is not None:
            return found
        allowed = self._table.allowed_methods(path)
        if allowed:
            raise gateway_error(
                405, code_pb2.UNIMPLEMENTED, f"{method} is not allowed here", headers={"allow": ", ".join(allowed)}
            )
        raise gateway_error(404, code_pb2.NOT_FOUND, f"no route for {method} {scope['path']}")

    async def _handle(
        self,
        scope: Scope,
        receive: Receive,
        headers: dict[str, str],
        binding: Binding,
        variables: dict[str, str],
        request_id: str,
    ) -> JsonReply | StreamingResponse:
        body = await self._limits.read_body(receive, headers) if binding.body else b""
        query = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True) if scope["query_string"] else ()
        message = build_request(binding, body, variables, query)
        fill_user_agent(message, headers.get("user-agent", ""))
        # The client IP as the protections resolved it (X-Forwarded-For walked back through
        # LOOM_TRUSTED_PROXIES) before the request was let in.
        metadata = forwarding.call_metadata(headers, request_id=request_id, client=scope[CLIENT_IP_KEY])
        streaming = binding.rpc.server_streaming
        timeout = forwarding.deadline_seconds(
            headers,
            default=None if streaming else self._settings.default_deadline_seconds,
            maximum=self._settings.max_deadline_seconds,
        )
        method = self._backends.callable_for(binding.rpc)
        if streaming:
            stream = ResubscribingStream(
                lambda remaining: method(message, timeout=remaining, metadata=metadata), timeout, method=binding.rpc.path
            )
            return await self._event_stream(stream, binding, request_id)
        reply = await method(message, timeout=timeout, metadata=metadata)
        return json_reply(response_payload(binding, reply), request_id)

    async def _event_stream(self, stream: ResubscribingStream, binding: Binding, request_id: str) -> StreamingResponse:
        """Server-Sent Events: one `data:` line per message, `event: error` with the status on failure."""
        # an error before the first message answers with its own HTTP status
        pending = await stream.first_message_or_failure(FIRST_EVENT_GRACE_SECONDS)
        headers = {REQUEST_ID_HEADER: request_id, "cache-control": "no-cache", "x-accel-buffering": "no"}
        events = self._events(stream, pending, binding)
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)

    async def _events(self, stream: ResubscribingStream, pending: asyncio.Future, binding: Binding) -> AsyncIterator[bytes]:
        keepalive = self._settings.sse_keepalive_seconds
        try:
            while True:
                await asyncio.wait({pending}, timeout=keepalive)
                if not pending.done():
                    yield b": keepalive\n\n"
                    continue
                item = pending.result()
                if item is grpc.aio.EOF:
                    yield b"event: end\ndata: {}\n\n"
                    return
                yield _event(None, response_payload(binding, item))
                pending = asyncio.ensure_future(stream.read())
        except grpc.aio.AioRpcError as error:
            yield _event("error", from_rpc_error(error).body())
        finally:
            pending.cancel()
            stream.cancel()


class Gateway:
    """The ASGI entry point: an RPC route goes straight to the transcoder, the rest through Starlette.

    Starlette's router and middleware cost about as much CPU per request as the
    transcoding itself (measured with py-spy, bench/gateway_vs_envoy.py), so a request
    that matches an RPC route skips them. A request with an `Origin` header takes the
    Starlette path even then, so CORS is answered by its middleware, in one place.
    """

    def __init__(
        self, app: Starlette, transcoder: Transcoder, table: RouteTable, protections: Protections, cors: dict[str, Any]
    ) -> None:
        self.app, self._transcoder, self._table, self._protections = app, transcoder, table, protections
        # Refusals answered before routing still carry CORS headers, so a browser can read them.
        self._refusals = CORSMiddleware(_answer_refusal, **cors)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = header_dict(scope)
            send = self._protections.secure(scope, send)
            refusal = await self._protections.admit(scope, headers)
            if refusal is not None:
                scope[REFUSAL_KEY] = error_reply(refusal, forwarding.request_id(headers))
                await self._refusals(scope, receive, send)
                return
            if "origin" not in headers:
                found = self._table.match(scope["method"], raw_path(scope))
                if found is not None:
                    await self._transcoder.serve(scope, receive, send, headers, found)
                    return
        await self.app(scope, receive, send)


async def _answer_refusal(scope: Scope, receive: Receive, send: Send) -> None:
    await scope[REFUSAL_KEY](scope, receive, send)


def _event(name: str | None, payload: dict) -> bytes:
    return (f"event: {name}\n" if name else "").encode() + b"data: " + orjson.dumps(payload) + b"\n\n"


def create_app(settings: GatewaySettings) -> Gateway:
    table = build_table()
    backends = Backends(settings)
    transcoder = Transcoder(settings, table, backends)
    document = orjson.dumps(openapi_document(table))

    async def backend_status(name: str) -> str:
        stub = health_pb2_grpc.HealthStub(backends.channels[name])
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=HEALTH_TIMEOUT_SECONDS)
        except Exception:  # noqa: BLE001 - any failure means "not serving" to a health check
            return "UNAVAILABLE"
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    async def healthz(_: Request) -> JSONResponse:
        statuses = await asyncio.gather(*(backend_status(name) for name in SERVICE_NAMES))
        backends_status = dict(zip(SERVICE_NAMES, statuses, strict=True))
        healthy = all(status == "SERVING" for status in statuses)
        return JSONResponse({"status": "ok" if healthy else "degraded", "backends": backends_status}, 200 if healthy else 503)

    async def openapi(_: Request) -> Response:
        return Response(document, media_type=JSON_TYPE)

    @asynccontextmanager
    async def lifespan(_: Starlette):
        backends.open()
        yield
        await backends.close()

    methods = sorted({"GET", "PUT", "POST", "PATCH", "DELETE"})
    routes: list[BaseRoute] = [
        Route("/healthz", healthz),
        Route("/openapi.json", openapi),
        *console_routes(),
    ]
    cors: dict[str, Any] = {
        "allow_origins": settings.cors_origins,
        "allow_methods": methods,
        "allow_headers": ["authorization", "content-type", REQUEST_ID_HEADER, forwarding.GRPC_TIMEOUT_HEADER],
        "expose_headers": [REQUEST_ID_HEADER, "retry-after"],
        "max_age": 600,
    }
    middleware = [Middleware(CORSMiddleware, **cors)]
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    # Everything the fixed routes do not match is the transcoder's: as the router's default
    # rather than a catch-all route, so even paths a route pattern cannot match (a %0A in an
    # id) get a JSON answer.
    app.router.default = transcoder
    return Gateway(app, transcoder, table, Protections(settings), cors)

