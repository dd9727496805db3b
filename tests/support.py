"""What tests share: a fresh migrated database, settings, tokens, and real servers.

In-process servers (`serve`) bind real gRPC ports on loopback; `ServiceProcess`
runs a service as its own OS process for end-to-end and crash tests.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from libs.auth import FORWARDER_HEADER, mint_token
from libs.bootstrap import RunningService, start
from libs.clients import STUBS, open_channel
from libs.scratch_db import ROOT
from libs.settings import SERVICE_NAMES, Settings

TEST_JWT_SECRET = "loom-test-secret-not-for-production"


def settings_for(service: str, database_url: str, **overrides) -> Settings:
    """The service's own settings class, pointed at the test database, metrics off."""
    import importlib

    settings_class = importlib.import_module(f"services.{service}.settings").SETTINGS_CLASS
    values = {
        "database_url": database_url,
        "jwt_secret": TEST_JWT_SECRET,
        "log_level": "warning",
        "bind_host": "127.0.0.1",
        **{f"{name}_metrics_port": 0 for name in (*SERVICE_NAMES, "gateway")},
        **overrides,
    }
    return settings_class(**values)


def token(role: str, subject: str | None = None, *, ttl_seconds: int = 3600) -> str:
    return mint_token(TEST_JWT_SECRET, subject=subject or role, role=role, ttl_seconds=ttl_seconds)


def from_gateway(ip: str) -> tuple[tuple[str, str], ...]:
    """Call metadata of the gateway forwarding a client's IP: only the gateway is believed."""
    return (("x-forwarded-for", ip), (FORWARDER_HEADER, f"Bearer {token('service', 'service:gateway')}"))


def auth(role: str, subject: str | None = None) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying a bearer token of that role."""
    return (("authorization", f"Bearer {token(role, subject)}"),)


@asynccontextmanager
async def serve(service: str, database_url: str, **overrides) -> AsyncIterator[RunningService]:
    """Runs a service in-process on a free loopback port for the duration of the block."""
    spec = __import__(f"services.{service}.wiring", fromlist=["SPEC"]).SPEC
    running = await start(spec, settings_for(service, database_url, **overrides), port=0)
    try:
        yield running
    finally:
        await running.stop(grace=1)


@asynccontextmanager
async def stub_for(service: str, target: str) -> AsyncIterator:
    """A plain stub (no service token): tests pass `metadata=auth(...)` themselves."""
    channel = open_channel(target)
    try:
        yield STUBS[service](channel)
    finally:
        await channel.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Whether nothing listens on (or holds) this loopback port right now."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class ServiceProcess:
    """One service as a real OS process, for end-to-end and crash tests."""

    def __init__(self, service: str, env: dict[str, str], *, stdout=subprocess.DEVNULL) -> None:
        self.service = service
        self.env = {**os.environ, **env}
        self.stdout = stdout
        self.process: subprocess.Popen | None = None

    def start(self) -> ServiceProcess:
        self.process = subprocess.Popen(
            [sys.executable, "-m", f"services.{self.service}"],
            env=self.env,
            cwd=ROOT,
            stdout=self.stdout,
            stderr=subprocess.PIPE,
        )
        return self

    def kill(self) -> None:
        """SIGKILL: no chance to drain or clean up."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def terminate(self, timeout: float = 15) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


async def wait_serving(target: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{target} not serving after {timeout}s")
            await asyncio.sleep(0.1)


def process_env(service: str, database_url: str, port: int, **extra: str) -> dict[str, str]:
    """Environment for a ServiceProcess: test database and secret, its port, metrics off."""
    return {
        "DATABASE_URL": database_url,
        "LOOM_JWT_SECRET": TEST_JWT_SECRET,
        f"LOOM_{service.upper()}_PORT": str(port),
        f"LOOM_{service.upper()}_METRICS_PORT": "0",
        "LOOM_LOG_LEVEL": "warning",
        **extra,
    }
