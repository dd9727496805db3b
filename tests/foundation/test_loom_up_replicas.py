"""`loom up --replicas 2`: two of batch, rules, tracking and the gateway, two schedulers, on
the ports the banner prints, each client balancing over every replica of what it calls."""

from __future__ import annotations

import os
import re
import subprocess
import time

import httpx
import pytest
from grpc_health.v1 import health_pb2

from libs.replicas import REPLICA_PORT_STEP, instances
from libs.settings import SERVICE_NAMES
from tests.foundation.test_loom_up import health_status, start_suite, stop_suite, wait_for_banner
from tests.support import TEST_JWT_SECRET, free_port, port_is_free, token

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

REPLICAS = 2
PROCESSES = (*SERVICE_NAMES, "gateway")
LIST_SUPPLIERS = 'loom_grpc_server_handled_total{grpc_code="OK",grpc_method="/loom.batch.v1.BatchService/ListSuppliers"}'


def port_block() -> int:
    """A base B with B..B+2*step-1 free: every process's port and metrics port, both replicas."""
    for _ in range(100):
        base = free_port() // REPLICA_PORT_STEP * REPLICA_PORT_STEP
        if base + 2 * REPLICA_PORT_STEP < 65535 and all(port_is_free(base + i) for i in range(2 * REPLICA_PORT_STEP)):
            return base
    raise RuntimeError("no free block of ports")


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    base = port_block()
    # each process's port and metrics port end in a digit of their own, as the defaults do
    ports = {f"LOOM_{name.upper()}_PORT": str(base + 1 + i) for i, name in enumerate(PROCESSES)}
    metrics = {f"LOOM_{name.upper()}_METRICS_PORT": str(base + (6 + i) % 10) for i, name in enumerate(PROCESSES)}
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "LOOM_DATABASE_URL")}
    env = {
        **env, **ports, **metrics, "LOOM_JWT_SECRET": TEST_JWT_SECRET,
        "LOOM_DATA_DIR": str(tmp_path_factory.mktemp("replicas") / "data"), "LOOM_LOG_LEVEL": "warning",
    }
    process = start_suite(env, "--replicas", str(REPLICAS))
    try:
        banner = wait_for_banner(process) + rest_of_banner(process)
        yield env, banner
    finally:
        leftovers = stop_suite(process) if process.poll() is None else []
    assert process.returncode == 0
    assert leftovers == []


def rest_of_banner(process: subprocess.Popen) -> str:
    """The lines after "Loom is up", through the last one (the banner is printed in one write)."""
    lines = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (lines and "Ctrl-C" in lines[-1]):
        line = process.stdout.readline()
        if line:
            lines.append(line)
        else:
            time.sleep(0.05)
    return "".join(lines)


def port_of(env: dict[str, str], process: str, replica: int, *, metrics: bool = False) -> int:
    variable = f"LOOM_{process.upper()}_{'METRICS_' if metrics else ''}PORT"
    return int(env[variable]) + REPLICA_PORT_STEP * replica


def test_the_banner_prints_every_replica_on_its_predictable_port(suite):
    env, banner = suite
    for instance in instances(REPLICAS):
        port = port_of(env, instance.process, instance.replica)
        assert re.search(rf"^  {re.escape(instance.name)} .*127\.0\.0\.1:{port}\b", banner, re.MULTILINE), banner
    names = {instance.name for instance in instances(REPLICAS)}
    assert names == {*PROCESSES, "batch-2", "rules-2", "tracking-2", "scheduler-2", "gateway-2"}


def test_every_replica_of_every_service_serves(suite):
    env, _ = suite
    for service in SERVICE_NAMES:
        for replica in range(REPLICAS):
            assert health_status(port_of(env, service, replica)) == health_pb2.HealthCheckResponse.SERVING


def test_each_gateway_replica_spreads_its_calls_over_both_batch_replicas(suite):
    env, _ = suite
    admin = {"authorization": f"Bearer {token('admin')}"}
    for gateway in range(REPLICAS):
        url = f"http://127.0.0.1:{port_of(env, 'gateway', gateway)}"
        assert httpx.get(f"{url}/healthz", timeout=10).json()["backends"] == dict.fromkeys(SERVICE_NAMES, "SERVING")
        before = [handled(env, replica) for replica in range(REPLICAS)]
        with httpx.Client(base_url=url, timeout=10) as http:
            for _ in range(20):
                assert http.get("/v1/suppliers", headers=admin).status_code == 200
        after = [handled(env, replica) for replica in range(REPLICAS)]
        served = [b - a for a, b in zip(before, after, strict=True)]
        assert sum(served) == 20
        assert all(count >= 5 for count in served), served  # round robin: 10 each, give or take a reconnect


def handled(env: dict[str, str], replica: int) -> float:
    """ListSuppliers calls the batch replica answered OK, from its Prometheus endpoint."""
    text = httpx.get(f"http://127.0.0.1:{port_of(env, 'batch', replica, metrics=True)}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(LIST_SUPPLIERS):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
