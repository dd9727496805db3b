"""How fast a surviving replica finishes the work a replica killed with -9 was holding.

`scale.takeover` (the rules service): replica A leases a batch of order events and is
stuck in the first execution's action (the batch peer does not answer); replica B runs
beside it. A is killed; the figure is the time from the kill until every execution of
the batch has succeeded on B. The baseline is the same measurement with the leases this
project shipped before the heartbeat (events 30 s, executions 60 s, worker poll 1 s),
in the same run: what an operator waited before. It is long (about a minute per run),
so it runs BENCH_TAKEOVER_BASELINE_RUNS times (default 3, quick 1).

`scale.takeover.outbox` (the batch service): replica A holds the outbox dispatcher's
transaction lock while rules.DeliverEvents does not answer; B runs beside it. From
A's kill until B has delivered the event. PostgreSQL drops a dead session's locks at
once, so the baseline is the configured outbox poll interval (B's worst-case wait).

The scheduler's leader takeover is `scheduler.failover` (bench/scheduler_failover.py).
"""

from __future__ import annotations

import asyncio
import time

import grpc
import psycopg
from loom.rules.v1 import rules_pb2, rules_pb2_grpc

from bench.harness import BenchContext, Figure, benchmark, median
from libs.scratch_db import plain_url
from services.batch.settings import BatchSettings
from services.rules.settings import RulesSettings
from tests.rules.replicas import executions, held_work
from tests.support import ServiceProcess, free_port, process_env, wait_serving

EVENTS = 8
OLD_LEASES = {"event": 30.0, "execution": 60.0, "poll": 1.0}


async def _until(probe, timeout: float = 180.0, every: float = 0.01):
    deadline = time.monotonic() + timeout
    while not (answer := probe()):
        if time.monotonic() > deadline:
            raise TimeoutError("the work was not taken over")
        await asyncio.sleep(every)
    return answer


def _all_succeeded(database_url: str, rule_id: str) -> bool:
    rows = executions(database_url, rule_id)
    return len(rows) == EVENTS and all(status == "success" for _, status, _ in rows)


async def _one_rules_takeover(database_url: str, *, old: bool) -> float:
    if old:
        options: dict = {
            "poll_seconds": OLD_LEASES["poll"],
            "LOOM_EVENT_LEASE_SECONDS": str(OLD_LEASES["event"]),
            "LOOM_EXECUTION_LEASE_SECONDS": str(OLD_LEASES["execution"]),
        }
    else:
        options = {"poll_seconds": RulesSettings.model_fields["worker_poll_seconds"].default}
    async with held_work(database_url, EVENTS, lease_seconds=None, **options) as held:
        held.holder.process.kill()
        killed = time.perf_counter()
        held.hanging.gate.set()
        await _until(lambda: _all_succeeded(database_url, held.rule_id))
        return time.perf_counter() - killed


@benchmark("scale.takeover", figures=("scale.takeover", "scale.takeover.outbox"))
async def takeover(ctx: BenchContext) -> list[Figure]:
    now = median([await _one_rules_takeover(ctx.database_url, old=False) for _ in range(ctx.runs)])
    baseline_runs = ctx.size("BENCH_TAKEOVER_BASELINE_RUNS", 3, 1)
    before = median([await _one_rules_takeover(ctx.database_url, old=True) for _ in range(baseline_runs)])
    outbox = median([await _one_outbox_takeover(ctx.database_url) for _ in range(ctx.runs)])
    poll = BatchSettings.model_fields["outbox_poll_seconds"].default
    return [
        Figure("scale.takeover", now, "s", now / before, "the former 30 s/60 s leases, same run"),
        Figure("scale.takeover.outbox", outbox, "s", outbox / poll, "outbox poll interval"),
    ]


class _HangingRules(rules_pb2_grpc.RulesServiceServicer):
    """A rules service whose DeliverEvents waits for `gate` (set: it answers at once)."""

    def __init__(self) -> None:
        self.gate, self.arrived = asyncio.Event(), asyncio.Event()

    async def DeliverEvents(self, request, context):
        self.arrived.set()
        await self.gate.wait()
        return rules_pb2.DeliverEventsResponse(accepted=len(request.events))


async def _batch_replica(database_url: str, rules_target: str) -> ServiceProcess:
    port = free_port()
    process = ServiceProcess("batch", process_env("batch", database_url, port, LOOM_RULES_TARGET=rules_target)).start()
    await wait_serving(f"127.0.0.1:{port}", timeout=60)
    return process


async def _one_outbox_takeover(database_url: str) -> float:
    rules = _HangingRules()
    server = grpc.aio.server()
    rules_pb2_grpc.add_RulesServiceServicer_to_server(rules, server)
    target = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    await server.start()
    processes = []
    try:
        with psycopg.connect(plain_url(database_url), autocommit=True) as conn:
            # Nothing else pending: the one event the benchmark writes is the one held.
            conn.execute("UPDATE batch.outbox SET delivered_time = now() WHERE delivered_time IS NULL")
            processes.append(await _batch_replica(database_url, target))
            (outbox_id,) = conn.execute(
                "INSERT INTO batch.outbox (type, occurred_time, data) VALUES ('bench.takeover', now(), '{}') RETURNING id"
            ).fetchone()
            await asyncio.wait_for(rules.arrived.wait(), 60)
            processes.append(await _batch_replica(database_url, target))
            processes[0].kill()
            killed = time.perf_counter()
            rules.gate.set()
            delivered = "SELECT delivered_time IS NOT NULL FROM batch.outbox WHERE id = %s"
            await _until(lambda: conn.execute(delivered, (outbox_id,)).fetchone()[0])
            return time.perf_counter() - killed
    finally:
        for process in processes:
            if process.process.poll() is None:
                process.terminate()
        await server.stop(0)
