"""Rules replicas as real `loom serve`-style processes on one database, and a batch peer whose
UpdateOrderStatus hangs until released: the replica running that action holds its work
(the execution, the events leased with it) for as long as the test wants."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import psycopg
from loom.rules.v1 import rules_pb2

from libs.scratch_db import plain_url
from tests.rules.conftest import ADMIN, SERVICE, action, create, event, rule_message
from tests.rules.peers import Peers
from tests.support import ServiceProcess, free_port, process_env, stub_for, wait_serving


@dataclass
class HangingUpdates:
    """Makes the fake batch service's UpdateOrderStatus wait for `gate` before it answers."""

    peers: Peers
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: list[str] = field(default_factory=list)  # request_id of every call, as it arrives

    def __post_init__(self) -> None:
        async def hang(request, context) -> None:
            self.arrived.append(request.request_id)
            await self.gate.wait()

        self.peers.batch.on_update = hang


@dataclass
class Replica:
    process: ServiceProcess
    target: str


def replica_env(
    database_url: str, peers: Peers, port: int, *, lease_seconds: float | None, poll_seconds: float = 0.2, **env: str
) -> dict[str, str]:
    """A rules process's environment, its peers the fakes; `lease_seconds` sets both leases
    (None: the defaults, or as `env` says)."""
    leases = {} if lease_seconds is None else {
        "LOOM_EVENT_LEASE_SECONDS": str(lease_seconds),
        "LOOM_EXECUTION_LEASE_SECONDS": str(lease_seconds),
    }
    return process_env(
        "rules",
        database_url,
        port,
        LOOM_BATCH_TARGET=peers.target,
        LOOM_SCHEDULER_TARGET=peers.target,
        LOOM_TRACKING_TARGET=peers.target,
        LOOM_WORKER_POLL_SECONDS=str(poll_seconds),
        LOOM_CLIENT_DEADLINE_SECONDS="120",  # a hanging action hangs; it does not time out and retry
        **leases,
        **env,
    )


async def start_replica(database_url: str, peers: Peers, **options) -> Replica:
    """One rules process (`options` as replica_env takes them), serving."""
    port = free_port()
    replica = Replica(ServiceProcess("rules", replica_env(database_url, peers, port, **options)).start(), f"127.0.0.1:{port}")
    await wait_serving(replica.target, timeout=60)
    return replica


async def confirm_rule_and_events(target: str, count: int) -> tuple[str, list[str]]:
    """Creates a rule confirming every placed order, then delivers `count` order events in one call
    (the receiving replica's worker, woken by it, leases them all in one batch)."""
    async with stub_for("rules", target) as stub:
        rule = await create(
            stub,
            rule_message(
                "takeover",
                event_types=["order.placed"],
                actions=[action("update_status", entity="order", id="{{order.id}}", status="confirmed")],
            ),
        )
        events = [event("order.placed", order={"id": f"takeover-{uuid.uuid4().hex[:8]}"}) for _ in range(count)]
        await stub.DeliverEvents(rules_pb2.DeliverEventsRequest(events=events), metadata=SERVICE)
    return rule.rule_id, [e.event_id for e in events]


async def delete_rule(target: str, rule_id: str) -> None:
    async with stub_for("rules", target) as stub:
        await stub.DeleteRule(rules_pb2.DeleteRuleRequest(request_id=str(uuid.uuid4()), rule_id=rule_id), metadata=ADMIN)


def executions(database_url: str, rule_id: str) -> list[tuple[str, str, str | None]]:
    """(event_id, status, lease_owner) of the rule's executions."""
    with psycopg.connect(plain_url(database_url), autocommit=True) as conn:
        query = "SELECT event_id, status, lease_owner::text FROM rules.executions WHERE rule_id = %s::uuid"
        return conn.execute(query, (rule_id,)).fetchall()


def event_owners(database_url: str, event_ids: list[str]) -> set[str | None]:
    """The lease owners of those events not evaluated yet."""
    with psycopg.connect(plain_url(database_url), autocommit=True) as conn:
        query = "SELECT lease_owner::text FROM rules.events WHERE event_id = ANY(%s) AND evaluated_time IS NULL"
        return {owner for (owner,) in conn.execute(query, (event_ids,)).fetchall()}


@dataclass
class HeldWork:
    peers: Peers
    hanging: HangingUpdates
    holder: Replica  # stuck in the first action, holding the execution and the other events
    survivor: Replica
    rule_id: str
    event_ids: list[str]


@contextlib.asynccontextmanager
async def held_work(database_url: str, events: int, **replica_options) -> AsyncIterator[HeldWork]:
    """Replica A stuck in the first action of `events` events it leased; replica B started beside it."""
    peers = Peers()
    await peers.server.start()
    hanging = HangingUpdates(peers)
    replicas: list[Replica] = []
    try:
        replicas.append(await start_replica(database_url, peers, **replica_options))
        rule_id, event_ids = await confirm_rule_and_events(replicas[0].target, events)
        deadline = time.monotonic() + 60
        while not hanging.arrived:
            assert time.monotonic() < deadline, "the first action was never called"
            await asyncio.sleep(0.01)
        replicas.append(await start_replica(database_url, peers, **replica_options))
        yield HeldWork(peers, hanging, replicas[0], replicas[1], rule_id, event_ids)
        hanging.gate.set()
        await delete_rule(replicas[1].target, rule_id)
    finally:
        hanging.gate.set()
        for replica in replicas:
            if replica.process.process.poll() is None:
                replica.process.terminate()
        await peers.server.stop(0)
