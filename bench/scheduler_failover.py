"""How fast a standby scheduler replica takes over when the leader is killed -9.

Two real scheduler processes share the database; the benchmark finds the leader
through the advisory lock it holds, SIGKILLs it, and times until the other
replica holds the leader lock. The baseline is the configured lock-poll interval
(a standby's worst-case wait once PostgreSQL has dropped the dead session).
"""

from __future__ import annotations

import asyncio
import time

import psycopg

from bench.harness import BenchContext, Figure, benchmark, median
from libs.scratch_db import plain_url
from services.scheduler.settings import SchedulerSettings
from services.scheduler.store import LEADER_LOCK_NAMESPACE
from tests.support import ServiceProcess, free_port, process_env, wait_serving

LEADER_QUERY = """
    SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid)
    WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objsubid = 2
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


def leader_pid(conn: psycopg.Connection) -> int | None:
    row = conn.execute(LEADER_QUERY, (LEADER_LOCK_NAMESPACE,)).fetchone()
    # application_name is "loom-scheduler <host>/<pid>/<nonce>".
    return int(row[0].split()[1].split("/")[1]) if row else None


async def _until(probe, timeout: float = 60.0, every: float = 0.005):
    deadline = time.monotonic() + timeout
    while (answer := probe()) is None:
        if time.monotonic() > deadline:
            raise TimeoutError("no scheduler leader")
        await asyncio.sleep(every)
    return answer


def _other_than(pid: int | None, old: int) -> int | None:
    return pid if pid != old else None


async def _one_failover(database_url: str) -> float:
    processes = {}
    for _ in range(2):
        port = free_port()
        process = ServiceProcess("scheduler", process_env("scheduler", database_url, port)).start()
        processes[process.process.pid] = process
        await wait_serving(f"127.0.0.1:{port}", timeout=60)
    try:
        with psycopg.connect(plain_url(database_url), autocommit=True) as conn:
            leader = await _until(lambda: leader_pid(conn))
            killed = time.perf_counter()
            processes[leader].kill()
            successor = await _until(lambda: _other_than(leader_pid(conn), leader))
            took = time.perf_counter() - killed
            assert successor in processes
            return took
    finally:
        for process in processes.values():
            if process.process.poll() is None:
                process.terminate()


@benchmark("scheduler.failover", figures=("scheduler.failover",))
async def failover(ctx: BenchContext) -> list[Figure]:
    takeovers = [await _one_failover(ctx.database_url) for _ in range(ctx.runs)]
    poll = SchedulerSettings.model_fields["scheduler_leader_poll_seconds"].default
    value = median(takeovers)
    return [Figure("scheduler.failover", value, "s", value / poll, "lock-poll interval")]
