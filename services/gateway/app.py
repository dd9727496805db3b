"""The gateway's ASGI application."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from libs.clients import open_channel
from libs.settings import SERVICE_NAMES
from services.gateway.settings import GatewaySettings

HEALTH_TIMEOUT_SECONDS = 2.0


def create_app(settings: GatewaySettings) -> Starlette:
    # grpc.aio channels belong to the event loop they are made in: uvicorn's, so in lifespan.
    channels: dict[str, grpc.aio.Channel] = {}

    async def backend_status(name: str) -> str:
        stub = health_pb2_grpc.HealthStub(channels[name])
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=HEALTH_TIMEOUT_SECONDS)
        except Exception:  # noqa: BLE001 - any failure means "not serving" to a health check
            return "UNAVAILABLE"
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    async def healthz(_: Request) -> JSONResponse:
        statuses = await asyncio.gather(*(backend_status(name) for name in SERVICE_NAMES))
        backends = dict(zip(SERVICE_NAMES, statuses, strict=True))
        healthy = all(status == "SERVING" for status in statuses)
        return JSONResponse({"status": "ok" if healthy else "degraded", "backends": backends}, 200 if healthy else 503)

    @asynccontextmanager
    async def lifespan(_: Starlette):
        channels.update({name: open_channel(settings.target_of(name)) for name in SERVICE_NAMES})
        yield
        for channel in channels.values():
            await channel.close()

    return Starlette(routes=[Route("/healthz", healthz)], lifespan=lifespan)
