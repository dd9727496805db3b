"""Debian's Prometheus scrapes a running suite and evaluates Loom's own alert rules.

Every service runs as a process with its metrics port open; Prometheus gets a scrape
configuration naming them and `deploy/observability/alerts.yml` with one change: the
outbox alert's five minutes become two seconds, so the test need not wait five minutes
for the alert it proves.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest
import yaml
from loom.batch.v1 import batch_pb2

from libs.scratch_db import ROOT
from tests.batch.conftest import supplier_message
from tests.support import ServiceProcess, auth, free_port, process_env, stub_for, wait_serving

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
ALERTS = Path(ROOT) / "deploy/observability/alerts.yml"
SERVICES = ("batch", "rules", "tracking", "scheduler")


def test_the_alert_rules_and_their_unit_tests_pass_promtool():
    checked = subprocess.run([PROMTOOL, "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [PROMTOOL, "test", "rules", str(ALERTS.with_name("alerts_test.yml"))], capture_output=True, text=True
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


def fast_outbox_alert(path: Path) -> Path:
    rules = yaml.safe_load(ALERTS.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == "LoomOutboxStalled":
                rule["expr"] = rule["expr"].replace("> 300", "> 2")
                rule["for"] = "0s"
    path.write_text(yaml.safe_dump(rules))
    return path


async def prometheus_query(client: httpx.AsyncClient, path: str) -> dict:
    reply = await client.get(path)
    reply.raise_for_status()
    return reply.json()["data"]


@pytest.fixture(scope="module")
async def monitored_suite(database_url, tmp_path_factory):
    work = tmp_path_factory.mktemp("prometheus")
    ports = {name: free_port() for name in (*SERVICES, "gateway")}
    metrics = {name: free_port() for name in ports}
    shared = {
        **{f"LOOM_{name.upper()}_TARGET": f"127.0.0.1:{port}" for name, port in ports.items() if name != "gateway"},
        **{f"LOOM_{name.upper()}_METRICS_PORT": str(port) for name, port in metrics.items()},
        "LOOM_METRICS_SAMPLE_SECONDS": "0.5",
        "LOOM_OUTBOX_POLL_SECONDS": "0.2",
        "LOOM_OUTBOX_MAX_BACKOFF_SECONDS": "0.5",
    }
    processes = {
        name: ServiceProcess(name, {**process_env(name, database_url, ports[name]), **shared}).start()
        for name in (*SERVICES, "gateway")
    }
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(fast_outbox_alert(work / "alerts.yml"))],
        "scrape_configs": [
            {"job_name": f"loom-{name}", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
            for name, port in metrics.items()
        ],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    web_port = free_port()
    prometheus = subprocess.Popen(
        [PROMETHEUS, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
         f"--web.listen-address=127.0.0.1:{web_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        for name in SERVICES:
            try:
                await wait_serving(f"127.0.0.1:{ports[name]}", timeout=90)
            except TimeoutError:
                process = processes[name].process
                stderr = process.stderr.read().decode() if process.poll() is not None else "(still running)"
                raise AssertionError(f"{name} did not start: {stderr[-2000:]}") from None
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{web_port}", timeout=5) as client:
            yield client, ports, processes
    finally:
        prometheus.terminate()
        prometheus.wait(10)
        for process in processes.values():
            process.terminate()


async def eventually(check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = await check()
        except httpx.HTTPError:
            found = None
        if found:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"not true within {timeout}s")
        await asyncio.sleep(0.5)


async def test_prometheus_scrapes_every_service_of_the_suite(monitored_suite):
    client, _, _ = monitored_suite

    async def all_up():
        targets = (await prometheus_query(client, "/api/v1/targets"))["activeTargets"]
        return len(targets) == 5 and all(t["health"] == "up" for t in targets) and targets

    targets = await eventually(all_up)
    assert {t["labels"]["job"] for t in targets} == {f"loom-{name}" for name in (*SERVICES, "gateway")}

    async def orchestrate_period():
        # Its value is whatever schedule the session's database holds now (other tests reschedule it).
        query = 'loom_scheduler_job_period_seconds{job_name="orchestrate-batches"}'
        return (await prometheus_query(client, f"/api/v1/query?query={query}"))["result"]

    [series] = await eventually(orchestrate_period)
    assert float(series["value"][1]) > 0


async def test_the_outbox_alert_fires_when_rules_stops_and_events_back_up(monitored_suite):
    client, ports, processes = monitored_suite
    processes["rules"].terminate()
    category = f"alerts_{uuid.uuid4().hex[:8]}"
    async with stub_for("batch", f"127.0.0.1:{ports['batch']}") as batch:
        await batch.CreateSupplier(
            batch_pb2.CreateSupplierRequest(request_id=str(uuid.uuid4()), supplier=supplier_message(category)),
            metadata=auth("admin"),
        )
        await batch.PlaceOrder(
            batch_pb2.PlaceOrderRequest(
                request_id=str(uuid.uuid4()), category=category, quantity=10,
                style=batch_pb2.StyleDetails(style_count=1, colors=["black"], sizes=["M"]),
            ),
            metadata=auth("buyer"),
        )

    async def firing():
        alerts = (await prometheus_query(client, "/api/v1/alerts"))["alerts"]
        return [a for a in alerts if a["labels"]["alertname"] == "LoomOutboxStalled" and a["state"] == "firing"]

    assert await eventually(firing, timeout=60)
