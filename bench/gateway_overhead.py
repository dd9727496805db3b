"""What the HTTP/JSON gateway costs against calling the service directly over gRPC.

The tracking service runs in this process; the gateway runs as its own OS
process (`python -m services.gateway`), as deployed. 32 concurrent clients
make a simple GET (GetPost) and TrackInteraction calls, first directly over
gRPC, then over HTTP through the gateway, interleaved run by run. The HTTP
clients are lean keep-alive HTTP/1.1 connections, so the figure measures the
gateway rather than an HTTP client library.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid

from loom.tracking.v1 import tracking_pb2

from bench.harness import BenchContext, Figure, benchmark, closed_loop, median, percentile
from libs.scratch_db import ROOT
from tests.support import TEST_JWT_SECRET, auth, free_port, serve, stub_for, token

CLIENTS = 32


class KeepAliveConnection:
    """One persistent HTTP/1.1 connection: request, then read exactly one response."""

    def __init__(self, host: str, port: int) -> None:
        self._host, self._port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        lines = [f"{method} {path} HTTP/1.1", f"host: {self._host}:{self._port}", f"content-length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = next(
            int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        )
        return status, await self._reader.readexactly(length)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            await self._writer.wait_closed()


def start_gateway(tracking_target: str, port: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "LOOM_JWT_SECRET": TEST_JWT_SECRET,
        "LOOM_TRACKING_TARGET": tracking_target,
        "LOOM_GATEWAY_PORT": str(port),
        "LOOM_GATEWAY_METRICS_PORT": "0",
        "LOOM_LOG_LEVEL": "warning",
        # The load comes from one address and one token: limits far above it keep the
        # protections' checks on every request without refusing any.
        "LOOM_RATE_LIMIT_IP_PER_SECOND": "1000000",
        "LOOM_RATE_LIMIT_SUBJECT_PER_SECOND": "1000000",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "services.gateway"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


async def wait_listening(port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited: {process.stderr.read().decode()[-2000:]}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on port {port}") from None
            await asyncio.sleep(0.1)


def interaction(i: int, run: str) -> dict[str, str]:
    """One distinct interaction (no de-duplication shortcut), by proto field name."""
    return {
        "client_event_id": f"{run}-{i}",
        "type": "INTERACTION_TYPE_VIEW_DETAILS",
        "product_id": f"product-{i % 50}",
        "session_id": f"session-{run}-{i}",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
    }


def _as_message(fields: dict[str, str]) -> tracking_pb2.Interaction:
    return tracking_pb2.Interaction(**{**fields, "type": tracking_pb2.InteractionType.Value(fields["type"])})


def _as_json(fields: dict[str, str]) -> dict[str, str]:
    by_name = tracking_pb2.Interaction.DESCRIPTOR.fields_by_name
    return {by_name[name].json_name: value for name, value in fields.items()}


async def _http_rate(port: int, total: int, make_request) -> tuple[float, list[float]]:
    connections = [KeepAliveConnection("127.0.0.1", port) for _ in range(CLIENTS)]
    free = asyncio.Queue()
    for connection in connections:
        free.put_nowait(connection)

    async def call(i: int) -> None:
        connection = free.get_nowait()  # closed_loop runs exactly CLIENTS callers: one each
        try:
            status, body = await make_request(connection, i)
            if status != 200:
                raise RuntimeError(f"gateway answered {status}: {body[:300]!r}")
        finally:
            free.put_nowait(connection)

    try:
        return await closed_loop(call, clients=CLIENTS, total=total)
    finally:
        for connection in connections:
            await connection.close()


@benchmark("gateway.overhead", figures=("gateway.get", "gateway.get.p99", "gateway.track", "gateway.track.p99"))
async def gateway_overhead(ctx: BenchContext) -> list[Figure]:
    total = ctx.size("BENCH_GATEWAY_CALLS", full=6_000, quick=600)
    port = free_port()
    async with serve("tracking", ctx.database_url) as tracking, stub_for("tracking", tracking.target) as stub:
        admin = auth("admin")
        created = await stub.CreatePost(
            tracking_pb2.CreatePostRequest(
                request_id=str(uuid.uuid4()), post=tracking_pb2.Post(title="Bench", url="https://example.com/b", published=True)
            ),
            metadata=admin,
        )
        post_id = created.post.post_id
        gateway = start_gateway(tracking.target, port)
        try:
            await wait_listening(port, gateway)
            headers = {"authorization": f"Bearer {token('admin')}"}
            get_request = tracking_pb2.GetPostRequest(post_id=post_id)

            async def grpc_get(_: int):
                return await stub.GetPost(get_request, metadata=admin)

            async def http_get(connection: KeepAliveConnection, _: int):
                return await connection.request("GET", f"/v1/posts/{post_id}", headers)

            def grpc_track(run: str):
                async def call(i: int):
                    message = _as_message(interaction(i, run))
                    return await stub.TrackInteraction(tracking_pb2.TrackInteractionRequest(interaction=message))

                return call

            def http_track(run: str):
                json_headers = {"content-type": "application/json"}

                async def call(connection: KeepAliveConnection, i: int):
                    body = json.dumps({"interaction": _as_json(interaction(i, run))}).encode()
                    return await connection.request("POST", "/v1/interactions", json_headers, body)

                return call

            await _http_rate(port, CLIENTS * 4, http_get)  # warm up both paths and the gateway's channel
            await closed_loop(grpc_get, clients=CLIENTS, total=CLIENTS * 4)
            results: dict[str, list[tuple[float, list[float]]]] = {k: [] for k in ("gg", "hg", "gt", "ht")}
            for _ in range(ctx.runs):
                results["gg"].append(await closed_loop(grpc_get, clients=CLIENTS, total=total))
                results["hg"].append(await _http_rate(port, total, http_get))
                results["gt"].append(await closed_loop(grpc_track(uuid.uuid4().hex), clients=CLIENTS, total=total))
                results["ht"].append(await _http_rate(port, total, http_track(uuid.uuid4().hex)))
        finally:
            gateway.terminate()
            gateway.wait(15)
    figures = []
    for name, direct, over_http in (("gateway.get", "gg", "hg"), ("gateway.track", "gt", "ht")):
        rate, baseline = median([r for r, _ in results[over_http]]), median([r for r, _ in results[direct]])
        p99 = median([percentile(lat, 99) * 1000 for _, lat in results[over_http]])
        p99_direct = median([percentile(lat, 99) * 1000 for _, lat in results[direct]])
        figures.append(Figure(name, rate, "req/s", rate / baseline, "direct gRPC"))
        figures.append(Figure(f"{name}.p99", p99, "ms", p99 / p99_direct, "direct gRPC p99"))
    return figures

