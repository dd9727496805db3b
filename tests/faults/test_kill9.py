"""kill -9 each service in turn during a mixed load, then restart it.

The compose topology runs as processes (tests/deploy/twin.py). Clients keep each
operation's idempotency key across attempts: they see UNAVAILABLE while a
service is down and succeed on retry; afterwards the database holds exactly the
acknowledged writes — none lost, none twice — and the outbox has carried every
order event to the rules service, where each ran the rule exactly once.
"""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest

from libs.scratch_db import plain_url, server_url
from tests.deploy.twin import Twin
from tests.faults.load import MixedLoad

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

KILL_ORDER = ("batch", "rules", "tracking", "scheduler", "gateway")
LOAD_BETWEEN_KILLS_SECONDS = 1.5
SETTLE_SECONDS = 60.0
FAST_RECOVERY = {"batch": {"LOOM_OUTBOX_MAX_BACKOFF_SECONDS": "1", "LOOM_OUTBOX_POLL_SECONDS": "0.2"}}


@pytest.fixture(scope="module")
def twin():
    with Twin(server_url=server_url(), extra_env=FAST_RECOVERY) as running:
        yield running


async def restart(twin: Twin, service: str) -> None:
    process = twin.processes[service][0]
    process.kill()
    await asyncio.sleep(0.3)
    process.start()
    await asyncio.to_thread(twin.wait_healthy, process, 60)


def rows(twin: Twin, query: str, *args) -> list[tuple]:
    with psycopg.connect(plain_url(twin.admin_url), autocommit=True) as conn:
        return conn.execute(query, args).fetchall()


async def eventually(check, timeout: float = SETTLE_SECONDS):
    deadline = time.monotonic() + timeout
    while True:
        outcome = check()
        if outcome is True or time.monotonic() > deadline:
            return outcome
        await asyncio.sleep(0.5)


async def test_kill_9_of_each_service_under_load_loses_nothing_and_duplicates_nothing(twin):
    load = MixedLoad(twin)
    await load.prepare()
    stop = asyncio.Event()
    running = asyncio.create_task(load.run(stop))
    try:
        for service in KILL_ORDER:
            await asyncio.sleep(LOAD_BETWEEN_KILLS_SECONDS)
            await restart(twin, service)
        await asyncio.sleep(LOAD_BETWEEN_KILLS_SECONDS)
    finally:
        stop.set()
        await running
        await load.close()

    assert not load.failures, load.failures
    for kind in ("order", "interaction", "share", "job_run"):
        assert load.acknowledged[kind], f"no {kind} was acknowledged"
    # Clients met the dead services (the rules service is only reached through the outbox).
    assert {"batch", "tracking", "scheduler", "gateway"} <= set(load.retried), load.retried

    orders = load.acknowledged["order"]
    stored = rows(twin, "SELECT id::text FROM batch.orders WHERE category = %s", load.category)
    assert sorted(i for (i,) in stored) == sorted(orders.values()), "orders lost or stored twice"
    broken = rows(
        twin,
        "SELECT b.id FROM batch.batches b LEFT JOIN (SELECT batch_id, sum(quantity) AS q FROM batch.contributions "
        "GROUP BY batch_id) c ON c.batch_id = b.id WHERE b.category = %s "
        "AND (coalesce(c.q, 0) <> b.current_quantity OR b.current_quantity > b.capacity)",
        load.category,
    )
    assert not broken, "a batch quantity differs from the sum of its contributions"
    assert rows(twin, "SELECT count(*) = count(DISTINCT batch_id) FROM batch.supplier_orders") == [(True,)]

    interactions = load.acknowledged["interaction"]
    stored = rows(
        twin, "SELECT id::text FROM tracking.interactions WHERE client_event_id LIKE ANY(%s)",
        [f"ix-{load.category}-%", f"web-{load.category}-%"],
    )
    assert sorted(i for (i,) in stored) == sorted(interactions.values()), "interactions lost or stored twice"

    shares = load.acknowledged["share"]
    stored = rows(twin, "SELECT id::text FROM tracking.shares WHERE post_id = %s", load.post_id)
    assert sorted(i for (i,) in stored) == sorted(shares.values()), "shares lost or stored twice"
    assert rows(twin, "SELECT share_count FROM tracking.posts WHERE post_id = %s", load.post_id) == [(len(shares),)]

    runs = load.acknowledged["job_run"]
    stored = rows(twin, "SELECT id::text FROM scheduler.job_runs WHERE id::text = ANY(%s)", list(runs.values()))
    assert len(stored) == len(set(runs.values())) == len(runs), "job runs lost or one request started two runs"

    def every_order_ran_the_rule_once():
        executed = rows(
            twin,
            "SELECT event_id, count(*) FROM rules.executions WHERE rule_id = %s::uuid GROUP BY event_id",
            load.rule_id,
        )
        if any(count != 1 for _, count in executed):
            return f"a rule ran twice for one event: {executed}"
        return len(executed) == len(orders) or f"{len(executed)} of {len(orders)} order events evaluated"

    assert await eventually(every_order_ran_the_rule_once) is True
