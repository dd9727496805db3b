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
from tests.deploy.twin import Twin, eventually
from tests.faults.load import MixedLoad

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

KILL_ORDER = ("batch", "rules", "tracking", "scheduler", "gateway")
LOAD_BETWEEN_KILLS_SECONDS = 1.5
SETTLE_SECONDS = 60.0
MAX_DOWN_SECONDS = 5.0
FAST_RECOVERY = {"batch": {"LOOM_OUTBOX_MAX_BACKOFF_SECONDS": "1", "LOOM_OUTBOX_POLL_SECONDS": "0.2"}}


@pytest.fixture(scope="module")
def twin():
    with Twin(server_url=server_url(), extra_env=FAST_RECOVERY) as running:
        yield running


async def kill_and_restart(twin: Twin, load: MixedLoad, service: str) -> None:
    """kill -9, stay down until a client has met the dead service (at most a few seconds), start again."""
    process = twin.processes[service][0]
    met_before = sum(n for (s, _), n in load.retried.items() if s == service)
    process.kill()
    down_until = time.monotonic() + MAX_DOWN_SECONDS
    while service != "rules" and time.monotonic() < down_until:
        if sum(n for (s, _), n in load.retried.items() if s == service) > met_before:
            break
        await asyncio.sleep(0.05)
    process.start()
    await asyncio.to_thread(twin.wait_healthy, process, 60)


def rows(twin: Twin, query: str, *args) -> list[tuple]:
    with psycopg.connect(plain_url(twin.admin_url), autocommit=True) as conn:
        return conn.execute(query, args).fetchall()


async def test_kill_9_of_each_service_under_load_loses_nothing_and_duplicates_nothing(twin):
    load = MixedLoad(twin)
    await load.prepare()

    async def kill_each_in_turn() -> None:
        for service in KILL_ORDER:
            await asyncio.sleep(LOAD_BETWEEN_KILLS_SECONDS)
            await kill_and_restart(twin, load, service)
        await asyncio.sleep(LOAD_BETWEEN_KILLS_SECONDS)

    await load.around(kill_each_in_turn)

    assert not load.failures, load.failures
    assert all(load.acknowledged.values()), {kind: len(ids) for kind, ids in load.acknowledged.items()}
    # Clients met each dead service as UNAVAILABLE and went on by retrying (the rules service is
    # reached only through the outbox; the gateway, over HTTP, was unreachable).
    assert {(s, "UNAVAILABLE") for s in ("batch", "tracking", "scheduler")} <= set(load.retried), load.retried
    assert ("gateway", "unreachable") in load.retried, load.retried
    # Each row has its own id: a lost write is a missing id, a duplicate an extra one.
    assert load.stored() == load.acknowledged_ids()

    broken = rows(
        twin,
        "SELECT b.id FROM batch.batches b LEFT JOIN (SELECT batch_id, sum(quantity) AS q FROM batch.contributions "
        "GROUP BY batch_id) c ON c.batch_id = b.id WHERE b.category = %s "
        "AND (coalesce(c.q, 0) <> b.current_quantity OR b.current_quantity > b.capacity)",
        load.category,
    )
    assert not broken, "a batch quantity differs from the sum of its contributions"
    supplier_orders = rows(
        twin,
        "SELECT b.status, count(s.order_number) FROM batch.batches b LEFT JOIN batch.supplier_orders s "
        "ON s.batch_id = b.id WHERE b.category = %s GROUP BY b.id, b.status",
        load.category,
    )
    assert any(status == "confirmed" for status, _ in supplier_orders), "no batch was confirmed under the load"
    assert all(count == (status == "confirmed") for status, count in supplier_orders), supplier_orders
    shares = len(load.acknowledged["share"])
    assert rows(twin, "SELECT share_count FROM tracking.posts WHERE post_id = %s", load.post_id) == [(shares,)]

    orders = len(load.acknowledged["order"])

    def every_order_ran_the_rule_once():
        executed = rows(
            twin,
            "SELECT event_id, count(*) FROM rules.executions WHERE rule_id = %s::uuid GROUP BY event_id",
            load.rule_id,
        )
        if any(count != 1 for _, count in executed):
            return f"a rule ran twice for one event: {executed}"
        return len(executed) == orders or f"{len(executed)} of {orders} order events evaluated"

    assert await eventually(every_order_ran_the_rule_once, SETTLE_SECONDS) is True
