"""The gateway's ASGI application: HTTP/JSON in, gRPC to the Loom services, JSON out.

Every route comes from the route table built from the protos' `google.api.http`
annotations (services/gateway/routes.py); this module only does what is the
same for all of them: read and bound the body, forward identity, request id,
client IP and deadline, call, and write JSON, an error, or Server-Sent Events.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import structlog
from prometheus_client import Counter, Histogram
from google.rpc import code_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route, request_response

from libs.client_ip import parse_networks
from libs.clients import forwarding_channel
from libs.interceptor import REQUEST_ID_HEADER
from libs.settings import SERVICE_NAMES
from services.gateway import forwarding
from services.gateway.console import console_routes
from services.gateway.openapi import openapi_document
from services.gateway.routes import Binding, Rpc, RouteTable, build_table
from services.gateway.settings import GatewaySettings
from services.gateway.status import HttpError, bad_request, from_rpc_error, gateway_error, internal_error
from services.gateway.transcode import FieldError, build_request, fill_user_agent, response_payload

HEALTH_TIMEOUT_SECONDS = 2.0
# How long a server-streaming call may take to send its first message before the
# gateway commits to 200 and an event stream; an error within it gets its real status.
FIRST_EVENT_GRACE_SECONDS = 0.5
JSON_TYPE = "application/json"

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
            )
            self._callables[rpc.path] = found
        return found


def json_response(payload: dict, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(body, status, headers=headers, media_type=JSON_TYPE)


def error_response(error: HttpError, request_id: str) -> Response:
    return json_response(error.body(), error.http_status, {**error.headers, REQUEST_ID_HEADER: request_id})


class Transcoder:
    """The one endpoint behind every annotated RPC."""

    def __init__(self, settings: GatewaySettings, table: RouteTable, backends: Backends) -> None:
        self._settings = settings
        self._table = table
        self._backends = backends
        self._trusted_proxies = parse_networks(settings.trusted_proxies)

    async def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        request_id = forwarding.request_id(request.headers)
        route = "-"
        try:
            binding, variables = self._route(request)
            route = binding.template.template
            response = await self._handle(request, binding, variables, request_id)
        except FieldError as error:
            response = error_response(bad_request(error.field, error.description), request_id)
        except HttpError as error:
            response = error_response(error, request_id)
        except grpc.aio.AioRpcError as error:
            response = error_response(from_rpc_error(error), request_id)
        except Exception:  # noqa: BLE001 - a gateway bug is a bare 500, never a traceback to the client
            log.exception("gateway failure", request_id=request_id)
            response = error_response(internal_error(), request_id)
        elapsed = time.perf_counter() - started
        HANDLED.labels(request.method, route, str(response.status_code)).inc()
        LATENCY.labels(route).observe(elapsed)
        log.info(
            "http",
            request_id=request_id,
            method=request.method,
            route=route,
            status=response.status_code,
            duration_ms=round(elapsed * 1000, 3),
        )
        return response

    def _route(self, request: Request) -> tuple[Binding, dict[str, str]]:
        raw_path = request.scope.get("raw_path") or request.scope["path"].encode()
        path = raw_path.decode("latin-1").split("?", 1)[0]
        found = self._table.match(request.method, path)
        if found is not None:
            return found
        allowed = self._table.allowed_methods(path)
        if allowed:
            raise gateway_error(
                405, code_pb2.UNIMPLEMENTED, f"{request.method} is not allowed here", headers={"allow": ", ".join(allowed)}
            )
        raise gateway_error(404, code_pb2.NOT_FOUND, f"no route for {request.method} {request.url.path}")

    async def _handle(self, request: Request, binding: Binding, variables: dict[str, str], request_id: str) -> Response:
        body = await self._read_body(request) if binding.body else b""
        message = build_request(binding, body, variables, request.query_params.multi_items())
        fill_user_agent(message, request.headers.get("user-agent", ""))
        peer = request.client.host if request.client else ""
        metadata = forwarding.call_metadata(
            request.headers,
            request_id=request_id,
            client=forwarding.client_address(peer, request.headers.get("x-forwarded-for", ""), self._trusted_proxies),
        )
        streaming = binding.rpc.server_streaming
        timeout = forwarding.deadline_seconds(
            request.headers,
            default=None if streaming else self._settings.default_deadline_seconds,
            maximum=self._settings.max_deadline_seconds,
        )
        call = self._backends.callable_for(binding.rpc)(message, timeout=timeout, metadata=metadata)
        if streaming:
            return await self._event_stream(call, binding, request_id)
        reply = await call
        return json_response(response_payload(binding, reply), headers={REQUEST_ID_HEADER: request_id})

    async def _read_body(self, request: Request) -> bytes:
        limit = self._settings.max_body_bytes
        content_type = request.headers.get("content-type", JSON_TYPE).split(";", 1)[0].strip().lower()
        if content_type != JSON_TYPE and not content_type.endswith("+json"):
            raise gateway_error(415, code_pb2.INVALID_ARGUMENT, f"send the body as {JSON_TYPE}, not {content_type}")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _too_large(limit)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
        return b"".join(chunks)

    async def _event_stream(self, call: grpc.aio.UnaryStreamCall, binding: Binding, request_id: str) -> Response:
        """Server-Sent Events: one `data:` line per message, `event: error` with the status on failure."""
        pending = asyncio.ensure_future(call.read())
        try:
            await asyncio.wait({pending}, timeout=FIRST_EVENT_GRACE_SECONDS)
            if pending.done():
                pending.result()  # an error before the first message answers with its own HTTP status
        except BaseException:
            pending.cancel()
            call.cancel()
            raise
        headers = {REQUEST_ID_HEADER: request_id, "cache-control": "no-cache", "x-accel-buffering": "no"}
        events = self._events(call, pending, binding)
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)

    async def _events(self, call: grpc.aio.UnaryStreamCall, pending: asyncio.Future, binding: Binding) -> AsyncIterator[bytes]:
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
                pending = asyncio.ensure_future(call.read())
        except grpc.aio.AioRpcError as error:
            yield _event("error", from_rpc_error(error).body())
        finally:
            pending.cancel()
            call.cancel()


def _event(name: str | None, payload: dict) -> bytes:
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return (f"event: {name}\n" if name else "").encode() + f"data: {data}\n\n".encode()


def _too_large(limit: int) -> HttpError:
    return gateway_error(413, code_pb2.INVALID_ARGUMENT, f"the request body exceeds {limit} bytes")


def create_app(settings: GatewaySettings) -> Starlette:
    table = build_table()
    backends = Backends(settings)
    transcoder = Transcoder(settings, table, backends)
    document = json.dumps(openapi_document(table), separators=(",", ":")).encode()

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
    middleware = [
        Middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=methods,
            allow_headers=["authorization", "content-type", REQUEST_ID_HEADER, forwarding.GRPC_TIMEOUT_HEADER],
            expose_headers=[REQUEST_ID_HEADER, "retry-after"],
            max_age=600,
        )
    ]
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    # Everything the fixed routes do not match is the transcoder's: as the router's default
    # rather than a catch-all route, so even paths a route pattern cannot match (a %0A in an
    # id) get a JSON answer.
    app.router.default = request_response(transcoder.handle)
    return app

