"""A gateway on a real port, and a recording gRPC backend for transcoding tests.

The recording backend is a real grpc.aio server running Loom's real call
interceptor (so auth, request ids and error details behave as in a service);
each test decides what a method answers and reads back exactly what arrived.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import grpc
import httpx
import uvicorn
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from libs.interceptor import CallInterceptor
from libs.logs import Redactor
from libs.settings import SERVICE_NAMES
from services.gateway.app import create_app
from services.gateway.routes import Rpc, loom_services
from services.gateway.settings import GatewaySettings
from tests.support import TEST_JWT_SECRET, free_port


@dataclass
class Received:
    request: object
    metadata: dict[str, str]
    peer: str
    deadline_seconds: float | None

@dataclass
class RecordingBackend:
    """Serves every Loom service; `answer(method_name, fn)` decides what a method does."""

    server: grpc.aio.Server
    port: int
    behaviours: dict[str, Callable] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def answer(self, method: str, behaviour: Callable) -> None:
        self.behaviours[method] = behaviour

    def last(self) -> Received:
        return self.received[-1]

def _handler(backend: RecordingBackend, rpc: Rpc) -> grpc.RpcMethodHandler:
    name = rpc.descriptor.name

    def record(request, context) -> None:
        remaining = context.time_remaining()
        backend.received.append(
            Received(request, dict(context.invocation_metadata() or ()), context.peer(), remaining)
        )

    if rpc.server_streaming:

        async def stream(request, context):
            record(request, context)
            behaviour = backend.behaviours.get(name)
            if behaviour is None:
                await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{name} not implemented here")
            async for item in behaviour(request, context):
                yield item

        return grpc.unary_stream_rpc_method_handler(
            stream, request_deserializer=rpc.request_class.FromString, response_serializer=rpc.response_class.SerializeToString
        )

    async def unary(request, context):
        record(request, context)
        behaviour = backend.behaviours.get(name)
        if behaviour is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{name} not implemented here")
        return await behaviour(request, context)

    return grpc.unary_unary_rpc_method_handler(
        unary, request_deserializer=rpc.request_class.FromString, response_serializer=rpc.response_class.SerializeToString
    )

@asynccontextmanager
async def recording_backend() -> AsyncIterator[RecordingBackend]:
    server = grpc.aio.server(
        # validate=False: each test decides what the stand-in answers, whatever it is sent.
        interceptors=[
            CallInterceptor(jwt_key=TEST_JWT_SECRET, jwt_issuer="loom", redactor=Redactor(TEST_JWT_SECRET), validate=False)
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    backend = RecordingBackend(server, port)
    for _, service in loom_services():
        handlers = {m.name: _handler(backend, Rpc(m, "")) for m in service.methods}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await server.start()
    try:
        yield backend
    finally:
        await server.stop(0)

@dataclass
class RunningGateway:
    url: str
    settings: GatewaySettings

    def client(self, **kwargs) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, **{"timeout": 10, **kwargs})

def gateway_settings(targets: dict[str, str], **overrides) -> GatewaySettings:
    """Rate limits are off unless a test sets them: tests call from one address as fast as they can."""
    values = {"rate_limit_ip_per_second": 0, "rate_limit_subject_per_second": 0, **overrides}
    return GatewaySettings(
        jwt_secret=TEST_JWT_SECRET,
        log_level="warning",
        gateway_metrics_port=0,
        **{f"{name}_target": targets[name] for name in SERVICE_NAMES},
        **values,
    )

@asynccontextmanager
async def run_gateway(settings: GatewaySettings) -> AsyncIterator[RunningGateway]:
    """The gateway app under uvicorn on a free loopback port, in this event loop."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on", proxy_headers=False,
        # HTTPS when the settings name a certificate, as `python -m services.gateway` does.
        ssl_certfile=settings.tls_cert_file, ssl_keyfile=settings.tls_key_file,
        # As in production: open Server-Sent Events streams do not hold the shutdown up forever.
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 20
    while not server.started:
        if task.done():
            task.result()
        if time.monotonic() > deadline:
            raise TimeoutError("gateway did not start")
        await asyncio.sleep(0.02)
    try:
        yield RunningGateway(f"{'https' if settings.tls_cert_file else 'http'}://127.0.0.1:{port}", settings)
    finally:
        server.should_exit = True
        await task
