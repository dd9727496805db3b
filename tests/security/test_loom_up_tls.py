"""`loom up --tls`: the whole suite with mutual TLS on every gRPC hop and HTTPS at the gateway."""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from libs import tls
from libs.auth import mint_token
from libs.settings import SERVICE_NAMES, Settings
from tests.foundation.test_loom_up import stop_suite, suite_env, wait_for_banner  # noqa: F401 - fixture
from tests.security.conftest import mtls

pytestmark = pytest.mark.e2e


def start_tls_suite(env: dict[str, str]):
    import subprocess
    import sys

    from libs.scratch_db import ROOT

    return subprocess.Popen(
        [sys.executable, "-m", "libs.cli", "up", "--tls"],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def health(port: int, credentials: grpc.ChannelCredentials | None) -> int:
    target = f"127.0.0.1:{port}"
    with grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status


def test_loom_up_tls_serves_every_hop_over_mutual_tls(suite_env):  # noqa: F811
    process = start_tls_suite(suite_env)
    try:
        banner = wait_for_banner(process)
        assert "mutual TLS" in banner
        data = Path(suite_env["LOOM_DATA_DIR"])
        credentials = tls.channel_credentials(Settings(**mtls(data / "tls", "loom")))
        for name in SERVICE_NAMES:
            port = int(suite_env[f"LOOM_{name.upper()}_PORT"])
            assert health(port, credentials) == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.RpcError):
                health(port, None)

        token = mint_token((data / "jwt-secret").read_text().strip(), subject="ops", role="admin")
        verify = ssl.create_default_context(cafile=str(data / "tls" / "ca.pem"))
        gateway = f"https://127.0.0.1:{suite_env['LOOM_GATEWAY_PORT']}"
        assert httpx.get(f"{gateway}/healthz", verify=verify, timeout=10).status_code == 200
        # Browser -> HTTPS -> gateway -> mutual TLS -> batch, and back.
        reply = httpx.get(
            f"{gateway}/v1/batches?pageSize=1", headers={"authorization": f"Bearer {token}"}, verify=verify, timeout=10
        )
        assert reply.status_code == 200, reply.text
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{suite_env['LOOM_GATEWAY_PORT']}/healthz", timeout=5).raise_for_status()
    finally:
        leftovers = stop_suite(process) if process.poll() is None else []
    assert process.returncode == 0
    assert leftovers == []
