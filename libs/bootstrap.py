"""The bootstrap every Loom gRPC service runs.

A service describes itself with a `ServiceSpec` (its name, settings class,
proto services and a `setup` coroutine that registers servicers and starts
background work). `start` brings it up on a grpc.aio server with health
checking, reflection, the call interceptor and Prometheus metrics; `main`
runs it as a process until SIGTERM/SIGINT, then drains in-flight calls.
"""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server
from sqlalchemy.ext.asyncio import AsyncEngine

from libs import audit, logs, tls, tracing
from libs.auth import identity_provider
from libs.clients import ServiceClients
from libs.db import make_engine
from libs.interceptor import CallInterceptor
from libs.settings import Settings

log = structlog.get_logger("loom.server")


@dataclass
class ServiceContext:
    """What a service's setup gets to build its servicers and background work."""

    name: str
    settings: Settings
    server: grpc.aio.Server
    engine: AsyncEngine | None
    clients: ServiceClients
    exit_stack: AsyncExitStack
    redactor: logs.Redactor
    # The service's audit trail (`<schema>.audit_events`); its table is None without a database.
    auditor: audit.Auditor = field(default_factory=lambda: audit.Auditor(None))


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    settings_class: type[Settings]
    grpc_services: tuple[str, ...]
    setup: Callable[[ServiceContext], Awaitable[None]]
    uses_database: bool = True


@dataclass
class RunningService:
    spec: ServiceSpec
    context: ServiceContext
    port: int
    health: health.aio.HealthServicer
    _stopped: bool = field(default=False)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self, grace: float | None = None) -> None:
        if self._stopped:
            return
        self._stopped = True
        await self.health.enter_graceful_shutdown()
        await self.context.server.stop(grace if grace is not None else self.context.settings.shutdown_grace_seconds)
        await self.context.exit_stack.aclose()


def server_options(settings: Settings) -> tuple[tuple[str, int], ...]:
    """gRPC server options: the largest request, no port sharing, and the maximum connection age."""
    options = [("grpc.max_receive_message_length", settings.grpc_max_message_bytes), ("grpc.so_reuseport", 0)]
    if settings.grpc_max_connection_age_seconds > 0:
        # A connection past its age gets GOAWAY: the client re-resolves its target and reconnects,
        # so a replica started after a client connected gets its share of that client's calls.
        options += [
            ("grpc.max_connection_age_ms", round(settings.grpc_max_connection_age_seconds * 1000)),
            ("grpc.max_connection_age_grace_ms", round(settings.grpc_max_connection_age_grace_seconds * 1000)),
        ]
    return tuple(options)


async def start(spec: ServiceSpec, settings: Settings, *, port: int | None = None) -> RunningService:
    """Starts the service; port 0 picks a free one (tests)."""
    redactor = logs.Redactor(settings.jwt_key)
    auditor = audit.Auditor(spec.name if spec.uses_database else None)
    server = grpc.aio.server(
        interceptors=[
            CallInterceptor(
                jwt_key=settings.jwt_key,
                jwt_issuer=settings.jwt_issuer,
                redactor=redactor,
                identity_provider=identity_provider(settings),
                auditor=auditor,
            )
        ],
        options=server_options(settings),
    )
    exit_stack = AsyncExitStack()
    engine = None
    if spec.uses_database:
        if not settings.database_url:
            raise RuntimeError("DATABASE_URL is not set; `loom up` provides it, or set it yourself")
        engine = make_engine(
            settings.database_url,
            application_name=f"loom-{spec.name}",
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            prepared_statements=settings.db_prepared_statements,
        )
        exit_stack.push_async_callback(engine.dispose)
        auditor.engine = engine
        exit_stack.push_async_callback(auditor.drain)  # before the engine goes
    clients = ServiceClients(settings, caller=spec.name)
    exit_stack.push_async_callback(clients.close)
    context = ServiceContext(spec.name, settings, server, engine, clients, exit_stack, redactor, auditor)
    try:
        await spec.setup(context)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(
            (*spec.grpc_services, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        address = f"{settings.bind_host}:{settings.port_of(spec.name) if port is None else port}"
        credentials = tls.server_credentials(settings)
        bound = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
        await server.start()
    except BaseException:
        await exit_stack.aclose()
        raise
    for name in ("", *spec.grpc_services):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningService(spec, context, bound, health_servicer)


async def serve(spec: ServiceSpec, settings: Settings) -> None:
    metrics_port = settings.metrics_port_of(spec.name)
    if metrics_port:
        start_http_server(metrics_port, addr=settings.bind_host)
    running = await start(spec, settings)
    # What start-up loaded (protos, ORM metadata, GeoIP and user-agent data...) lives as
    # long as the process; left to the collector, every full collection would walk
    # those ~100k objects again, stalling all calls for tens of milliseconds.
    gc.freeze()
    log.info("serving", port=running.port, metrics_port=metrics_port or None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("draining", grace_seconds=settings.shutdown_grace_seconds)
    await running.stop()
    log.info("stopped")


def main(spec: ServiceSpec) -> None:
    settings = spec.settings_class()
    tracing.configure(spec.name)
    logs.configure(service=spec.name, level=settings.log_level, redaction_key=settings.jwt_key)
    asyncio.run(serve(spec, settings))
