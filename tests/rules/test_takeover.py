"""Two rules replicas on one database: a killed replica's leased work is taken over within
seconds, while a live replica keeps its work however long an action takes (the heartbeat)."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.rules.peers import eventually
from tests.rules.replicas import event_owners, executions, held_work

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

LEASE_SECONDS = 1.5
EVENTS = 8
# A lapsed lease plus a worker poll, with room for a loaded 2-core machine.
TAKEOVER_LIMIT_SECONDS = 5.0


@pytest.fixture
async def held(database_url, request):
    """Replica A stuck in the first action of EVENTS leased events; replica B beside it.
    The leases last LEASE_SECONDS, or the test's indirect parameter."""
    async with held_work(database_url, EVENTS, lease_seconds=getattr(request, "param", LEASE_SECONDS)) as work:
        yield work


async def all_succeeded(database_url: str, rule_id: str):
    rows = executions(database_url, rule_id)
    return rows if len(rows) == EVENTS and all(status == "success" for _, status, _ in rows) else None


async def test_a_killed_replicas_events_and_executions_finish_on_the_survivor_within_seconds_once_each(held, database_url):
    rule_id, event_ids = held.rule_id, held.event_ids
    (running,) = executions(database_url, rule_id)
    assert running[1] == "running" and event_owners(database_url, event_ids) == {running[2]}, "A holds the work"

    held.holder.process.kill()
    killed = time.monotonic()
    held.hanging.gate.set()
    rows = await eventually(lambda: all_succeeded(database_url, rule_id), timeout=60, interval=0.02)
    took = time.monotonic() - killed

    assert took <= TAKEOVER_LIMIT_SECONDS, f"took over in {took:.1f}s"
    assert sorted(event_id for event_id, _, _ in rows) == sorted(event_ids)  # one execution per (rule, event)
    calls = held.peers.batch.requests("UpdateOrderStatus")
    # The call the kill interrupted is made again, with the same request_id: its effect happens once.
    assert len({c.request_id for c in calls}) == EVENTS == len({c.order_id for c in calls})


async def test_an_action_longer_than_the_lease_is_not_taken_over_while_its_replica_lives(held, database_url):
    rule_id, event_ids = held.rule_id, held.event_ids
    (running,) = executions(database_url, rule_id)
    await asyncio.sleep(3 * LEASE_SECONDS)  # the survivor polls every 0.2 s meanwhile

    assert executions(database_url, rule_id) == [running]
    assert event_owners(database_url, event_ids) == {running[2]}
    assert len(held.hanging.arrived) == 1, "another replica ran the action again"
    held.hanging.gate.set()
    await eventually(lambda: all_succeeded(database_url, rule_id), timeout=30)
    assert len(held.hanging.arrived) == EVENTS  # every action called once, all by the replica holding it


@pytest.mark.parametrize("held", [30.0], indirect=True)
async def test_a_replica_stopped_gracefully_hands_its_work_over_without_waiting_for_the_lease(held, database_url):
    held.holder.process.terminate()  # SIGTERM: drains, stops its worker, releases what it held
    stopped = time.monotonic()
    held.hanging.gate.set()
    await eventually(lambda: all_succeeded(database_url, held.rule_id), timeout=60, interval=0.02)

    assert time.monotonic() - stopped < 10.0, "waited for the 30 s lease"
    calls = held.peers.batch.requests("UpdateOrderStatus")
    assert len({c.request_id for c in calls}) == EVENTS
